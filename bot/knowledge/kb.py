"""The knowledge base: entries plus the matcher that picks one for a message."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from bot.errors import KnowledgeBaseError
from bot.knowledge.entries import DEFAULT_THRESHOLD, KbEntry, KbMatch
from bot.knowledge.lexical import LexicalIndex, Synonyms, confidence
from bot.knowledge.loader import parse

log = logging.getLogger(__name__)


class KnowledgeBase:
    """Entries plus their search index; ``match`` is the only hot path."""

    def __init__(
        self,
        entries: Sequence[KbEntry],
        threshold: float = DEFAULT_THRESHOLD,
        synonyms: Sequence[Sequence[str]] = (),
    ) -> None:
        if not entries:
            raise KnowledgeBaseError("entries", "the knowledge base has no entry")
        if not 0.0 <= threshold <= 1.0:
            raise KnowledgeBaseError("threshold", f"{threshold} is not between 0 and 1")
        self.entries: tuple[KbEntry, ...] = tuple(entries)
        self.threshold = float(threshold)
        self._index = LexicalIndex(self.entries, Synonyms(synonyms))

    @classmethod
    def from_entries(
        cls,
        entries: Sequence[KbEntry],
        threshold: float = DEFAULT_THRESHOLD,
        synonyms: Sequence[Sequence[str]] = (),
    ) -> KnowledgeBase:
        return cls(entries, threshold, synonyms)

    @classmethod
    def load(cls, path: Path, threshold: float | None = None) -> KnowledgeBase:
        """Read and validate knowledge.yaml; ``threshold`` (from config) beats the file's."""
        entries, file_threshold, synonyms = parse(path)
        chosen = threshold if threshold is not None else file_threshold
        kb = cls(entries, DEFAULT_THRESHOLD if chosen is None else chosen, synonyms)
        log.info("knowledge base %s: %d entries, threshold %.2f", path, len(entries), kb.threshold)
        return kb

    def get(self, entry_id: str) -> KbEntry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    def match(self, text: str, language: str | None = None) -> KbMatch:
        """The best entry for ``text`` and a confidence in [0, 1].

        ``language`` (the conversation's) only breaks ties when the message itself
        does not tell its language: customers often write in another one.
        """
        ranked = self.rank(text, language)
        if not ranked:
            return KbMatch(None, 0.0, False)
        entry, score = ranked[0]
        return KbMatch(entry, score, score >= self.threshold)

    def rank(self, text: str, language: str | None = None) -> list[tuple[KbEntry, float]]:
        """Entries with a non-zero confidence for ``text``, best first."""
        evidence = self._index.evidence(text, language)
        scored = [(confidence(e), number) for number, e in evidence]
        scored.sort(key=lambda item: (-item[0], item[1]))  # ties: the file's order
        return [(self.entries[number], score) for score, number in scored if score > 0.0]
