"""The knowledge base: entries plus the matcher that picks one for a message.

With a sentence encoder (the default), each entry is scored on words (the
lexical matcher, ``lexical.py``) and on meaning (``semantic.py``), and the
evidence is fused into one calibrated confidence (``calibration.py``). With
``knowledge.encoder: none`` the lexical confidence alone decides, against its
own threshold.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from bot.errors import KnowledgeBaseError
from bot.knowledge import calibration
from bot.knowledge.encoder import BUILTIN, Encoder, load_encoder, single_threaded_blas
from bot.knowledge.entries import Candidate, Collision, KbEntry, KbMatch
from bot.knowledge.language import detect_language, warm_up
from bot.knowledge.lexical import LexicalIndex, Synonyms
from bot.knowledge.loader import parse
from bot.knowledge.semantic import EmbeddingCache, ReusedEncoder, SemanticIndex

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger(__name__)

LEXICAL_THRESHOLD: Final = 0.39
"""Threshold of the lexical-only matcher (``knowledge.encoder: none``). On the shop's
eval set, 0.36–0.39 all keep accuracy ≥ 90 % with out-of-scope rejection ≥ 86 %."""

DEFAULT_THRESHOLD: Final = calibration.DEFAULT_THRESHOLD
CANDIDATES: Final = 3
MATCHED_CHARS: Final = 1_000
"""A message is matched on its first thousand characters: a question is shorter, and the
encoder's cost grows with the length (40,000 characters took 21 s of CPU)."""
LONE_MARGIN: Final = 3.0
"""The scaled margin of an entry with no rival (a knowledge base of one entry, or of no
more than the candidates): as clear as 90 % of the right answers of the tuning sets."""
AMBIGUOUS_SHARE: Final = 0.6
"""A "did you mean" candidate needs, on its own, this share of the answer threshold."""
AMBIGUOUS_GAP: Final = 0.25
"""Candidates whose rank is within this of the best one's are "close" (rank units).
Both chosen on the tuning sets (shop, telecom, elearning), with the calibration of
``calibration.py``; checked again on the six tuning sets after its refit: "did you mean"
offers the right entry for 8.9 % of the in-scope messages on average (4.6 % with a share
of 0.8) and asks 2.8 % of the out-of-scope ones (a gap of 0.35 or 0.45 changes neither)."""
LOOK_ALIKE_COSINE: Final = 0.6
"""``collisions`` checks the example questions this close (cosine) to another entry's
question, and closer to it than to their own entry's other questions."""
COLLISION_CHECKS: Final = 40
"""At most this many of them are checked (closest first): each rebuilds the word index."""


class KnowledgeBase:
    """Entries plus their indexes; ``match`` is the only hot path."""

    def __init__(
        self,
        entries: Sequence[KbEntry],
        threshold: float | None = None,
        synonyms: Sequence[Sequence[str]] = (),
        encoder: Encoder | None = None,
        cache: EmbeddingCache | None = None,
    ) -> None:
        if not entries:
            raise KnowledgeBaseError("entries", "the knowledge base has no entry")
        if threshold is None:
            threshold = DEFAULT_THRESHOLD if encoder is not None else LEXICAL_THRESHOLD
        if not 0.0 <= threshold <= 1.0:
            raise KnowledgeBaseError("threshold", f"{threshold} is not between 0 and 1")
        self.entries: tuple[KbEntry, ...] = tuple(entries)
        self.threshold = float(threshold)
        self._synonyms = tuple(tuple(group) for group in synonyms)
        self._lexical = LexicalIndex(self.entries, Synonyms(synonyms))
        if encoder is not None:
            single_threaded_blas()
        self._semantic = SemanticIndex(encoder, self.entries, cache) if encoder else None
        warm_up()

    @property
    def encoder(self) -> str:
        """The encoder's name, or "none" for the lexical-only matcher."""
        return self._semantic.encoder.name if self._semantic else "none"

    @classmethod
    def from_entries(
        cls,
        entries: Sequence[KbEntry],
        threshold: float | None = None,
        synonyms: Sequence[Sequence[str]] = (),
        encoder: Encoder | None = None,
    ) -> KnowledgeBase:
        return cls(entries, threshold, synonyms, encoder)

    @classmethod
    def load(
        cls,
        path: Path,
        threshold: float | None = None,
        encoder: str | Path | None = BUILTIN,
        cache_path: Path | None = None,
    ) -> KnowledgeBase:
        """Read and validate knowledge.yaml; ``threshold`` (from config) beats the file's.

        ``encoder`` is ``knowledge.encoder`` ("none" or None: lexical only);
        ``cache_path`` the embedding cache file (None: no disk cache).
        """
        entries, file_threshold, synonyms = parse(path)
        chosen = threshold if threshold is not None else file_threshold
        cache = EmbeddingCache(cache_path) if cache_path is not None else None
        kb = cls(entries, chosen, synonyms, load_encoder(encoder), cache)
        log.info(
            "knowledge base %s: %d entries, encoder %s, threshold %.2f",
            path, len(entries), kb.encoder, kb.threshold,
        )  # fmt: skip
        return kb

    @classmethod
    def configured(cls, settings: Settings) -> KnowledgeBase:
        """The knowledge base config.yaml describes; embeddings cached beside the database."""
        database = settings.storage.path
        cache = None if str(database) == ":memory:" else database.with_name(
            database.name + ".kb-embeddings.npz"
        )  # fmt: skip
        knowledge = settings.knowledge
        return cls.load(knowledge.path, knowledge.threshold, knowledge.encoder, cache)

    def get(self, entry_id: str) -> KbEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def collisions(self, checks: int = COLLISION_CHECKS) -> list[Collision]:
        """Example questions that the matcher would answer with another entry if they were
        not listed: leave-one-out, each suspect (``SemanticIndex.look_alikes``) matched
        against the knowledge base without it. Empty for the lexical-only matcher.

        A hint for ``supportbot check``: two entries asked alike make the bot hesitate
        or answer the wrong one on every customer phrasing between them.
        """
        if self._semantic is None:
            return []
        reused = ReusedEncoder(self._semantic)
        found: list[Collision] = []
        for number, question, _other in self._semantic.look_alikes(LOOK_ALIKE_COSINE)[:checks]:
            entry = self.entries[number]
            kept = {
                language: tuple(q for q in asked if q != question)
                for language, asked in entry.questions.items()
            }
            lighter = KbEntry(
                entry.id, entry.topic, {k: v for k, v in kept.items() if v}, entry.answers
            )
            others = [lighter if e is entry else e for e in self.entries]
            match = KnowledgeBase(others, self.threshold, self._synonyms, reused).match(question)
            if match.answered and match.entry is not None and match.entry.id != entry.id:
                found.append(Collision(entry, question, match.entry, match.score))
        return found

    def match(self, text: str, language: str | None = None) -> KbMatch:
        """The best entry for ``text``, its calibrated confidence, and close alternatives.

        ``language`` (the conversation's) only breaks ties when the message itself
        does not tell its language: customers often write in another one. With an
        encoder, encoding the message costs 1–3 ms of CPU: run ``match`` in a
        thread when the event loop must stay responsive.
        """
        text = text[:MATCHED_CHARS]
        detected = detect_language(text)
        ranked = self._ranked(text, detected or language)
        if not ranked:
            return KbMatch(None, 0.0, False, detected)
        best, score = ranked[0][0], ranked[0][1]
        candidates = tuple(Candidate(entry, alone) for entry, _score, alone, _rank in ranked)
        answered = score >= self.threshold
        top_rank = ranked[0][3]
        close = [
            c
            for c, (_entry, _score, _alone, rank) in zip(candidates, ranked, strict=True)
            if c.score >= self.threshold * AMBIGUOUS_SHARE and top_rank - rank <= AMBIGUOUS_GAP
        ]
        ambiguous = not answered and len(close) >= 2
        return KbMatch(best, score, answered, detected, candidates, ambiguous)

    def rank(self, text: str, language: str | None = None) -> list[tuple[KbEntry, float]]:
        """The best entries for ``text`` (at most three), with their confidence."""
        return [(entry, score) for entry, score, _alone, _rank in self._ranked(text, language)]

    def _ranked(self, text: str, language: str | None) -> list[tuple[KbEntry, float, float, float]]:
        """Up to three (entry, confidence, confidence without rival, rank), best first."""
        lexical, unknown = self._lexical.scores(text, language)
        if self._semantic is None:
            by_score = sorted(lexical.items(), key=lambda item: (-item[1], item[0]))
            return [
                (self.entries[number], score, score, score)
                for number, score in by_score[:CANDIDATES]
                if score > 0.0
            ]
        similarities = self._semantic.similarities(self._semantic.encode(text))
        question, answer = similarities.question, similarities.answer
        words = np.zeros(len(self.entries), dtype=np.float32)
        for number, value in lexical.items():
            words[number] = value
        ranks = calibration.rank_score(words, question, similarities.pair, answer)
        count = min(CANDIDATES + 1, len(ranks))
        order = [int(n) for n in np.argsort(-ranks, kind="stable")[:count]]
        scale = calibration.spread(ranks)
        out: list[tuple[KbEntry, float, float, float]] = []
        for number in order[:CANDIDATES]:
            rank = float(ranks[number])
            rivals = [n for n in order[:2] if n != number]
            margin = (
                calibration.scaled_margin(rank, float(ranks[rivals[0]]), scale)
                if rivals
                else LONE_MARGIN
            )
            pair = similarities.pair
            values = (float(words[number]), float(pair[number]), float(answer[number]))
            tie = float(pair[number] - pair[rivals[0]]) if rivals else 1.0
            score = calibration.confidence(calibration.Features(*values, margin, unknown, tie))
            # As if the other candidates were not there: the margin to the first entry
            # that is not a candidate.
            apart = (
                calibration.scaled_margin(rank, float(ranks[order[CANDIDATES]]), scale)
                if count > CANDIDATES
                else LONE_MARGIN
            )
            tie = float(pair[number] - pair[order[CANDIDATES]]) if count > CANDIDATES else 1.0
            alone = calibration.confidence(calibration.Features(*values, apart, unknown, tie))
            out.append((self.entries[number], score, alone, float(ranks[number])))
        return out
