"""Meaning-based scores: how close a message is to each entry's questions and answer.

Every example question, every answer, each answer's sentences and each topic
are encoded once (or read from the embedding cache). A message is encoded in
one batch with its clauses (``text.clauses``: a long message's question is
often one of them), then a few matrix products give, per entry:

- ``question``: best cosine of the message or one of its clauses with one of
  the entry's example questions;
- ``pair``: mean of the message's two best cosines with the entry's questions
  (one lucky question is weaker evidence than two close ones);
- ``answer``: best cosine of the message with the entry's whole answer, one
  sentence of it, or its topic (French or English).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.knowledge import text as textmod
from bot.knowledge.encoder import Encoder, Matrix
from bot.knowledge.entries import LANGUAGES, KbEntry
from bot.knowledge.forward import HUGE_PAGE, packed, release_free_memory
from bot.knowledge.respell import Respeller

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]


MESSAGE_CACHE = 512
"""Encoded messages kept (keyed by folded text): customers repeat themselves."""

_SENTENCE_END = re.compile(r"(?<=[.;:!?])\s+")


@dataclass(frozen=True, slots=True)
class Similarities:
    """Per entry (in the knowledge base's order): the cosines described above."""

    question: Vector
    pair: Vector
    answer: Vector


def _sentences(answer: str) -> list[str]:
    return [s for s in (p.strip() for p in _SENTENCE_END.split(answer)) if len(s) > 3]


def _texts(entries: Sequence[KbEntry]) -> tuple[list[str], list[int], list[str], list[int]]:
    """Questions and answer-side texts (whole answers, their sentences, the topic),
    flat, with each entry's first index in each list."""
    questions: list[str] = []
    question_starts: list[int] = []
    answers: list[str] = []
    answer_starts: list[int] = []
    for entry in entries:
        question_starts.append(len(questions))
        for language in LANGUAGES:
            questions.extend(entry.questions.get(language, ()))
        answer_starts.append(len(answers))
        for language in LANGUAGES:
            if language in entry.answers:
                answers.append(entry.answers[language])
                sentences = _sentences(entry.answers[language])
                if len(sentences) > 1:
                    answers.extend(sentences)
        answers.append(entry.topic)
    return questions, question_starts, answers, answer_starts


class EmbeddingCache:
    """One file of entry embeddings, valid while the texts and the encoder are the same.

    The key is a digest of the encoder's name and every encoded text, stored in
    the file: a changed knowledge base or encoder rebuilds it, and so does a
    file that cannot be read. Written 0600, atomically.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def key(encoder: Encoder, texts: Sequence[str]) -> str:
        digest = hashlib.sha256(encoder.name.encode())
        for text in texts:
            digest.update(b"\x00" + text.encode())
        return digest.hexdigest()

    def read(self, key: str) -> Matrix | None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["key"]) != key:
                    log.info("embedding cache %s is for other entries: rebuilding", self.path)
                    return None
                vectors: Matrix = np.asarray(data["vectors"], dtype=np.float32)
                return vectors
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any damage means "rebuild"
            log.warning("embedding cache %s unreadable (%s): rebuilding", self.path, exc)
            return None

    def write(self, key: str, vectors: Matrix) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            try:
                os.fchmod(handle, 0o600)
                with os.fdopen(handle, "wb") as stream:
                    np.savez(stream, key=np.array(key), vectors=vectors)
                os.replace(temporary, self.path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            log.warning("embedding cache %s not written (%s)", self.path, exc)


class SemanticIndex:
    """The encoded questions and answer texts of every entry."""

    def __init__(
        self, encoder: Encoder, entries: Sequence[KbEntry], cache: EmbeddingCache | None = None
    ) -> None:
        self.encoder = encoder
        questions, self._question_starts, answers, self._answer_starts = _texts(entries)
        texts = questions + answers
        key = EmbeddingCache.key(encoder, texts)
        vectors = cache.read(key) if cache is not None else None
        if vectors is None or vectors.shape[0] != len(texts):
            vectors = encoder.encode(texts)
            if cache is not None:
                cache.write(key, vectors)
        self._texts = texts
        self._rows: dict[str, int] | None = None  # text → its column, on demand
        # One column per distinct text (512 × texts): a message's row times this matrix
        # runs the kernel that streams it from memory at full speed (``v @ columns``),
        # where the rows' layout (``rows @ v``) took 0.5–0.6 ms instead of 0.3 for 200
        # entries (a match reads them all once, and no CPU cache keeps them between
        # messages). A text asked twice has one column, hence one cosine: two entries
        # asked alike tie exactly, whatever the kernel's order of operations per column.
        # Questions come first in ``texts``, so their columns are the first ones.
        column: dict[str, int] = {}
        firsts: list[int] = []  # the row of each column's text
        for row, text in enumerate(texts):
            if column.setdefault(text, len(firsts)) == len(firsts):
                firsts.append(row)
        self._column_of = np.asarray([column[text] for text in texts], dtype=np.intp)
        distinct = vectors[firsts] if len(firsts) < len(texts) else vectors
        (self._columns,) = packed([distinct.T])
        del distinct
        if cache is not None and vectors.nbytes >= HUGE_PAGE:  # a long-lived index: the
            del vectors  # copy read or encoded is no longer needed (not worth it for the
            release_free_memory()  # short-lived ones of ``KnowledgeBase.collisions``)
        self._question_count = len(questions)
        self._question_of = self._column_of[: len(questions)]
        self._question_columns = self._columns[:, : int(self._question_of.max(initial=-1)) + 1]
        self._answer_of = self._column_of[len(questions) :]
        self._starts = np.asarray(self._question_starts, dtype=np.intp)
        self._answer_first = np.asarray(self._answer_starts, dtype=np.intp)
        counts = np.diff([*self._question_starts, len(questions)])
        self._owner = np.repeat(np.arange(len(counts)), counts)  # entry of each question
        self._single = counts < 2  # entries with one question: their "pair" is that one
        self.respell = Respeller(texts)
        self._recent: OrderedDict[str, Matrix] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, text: str) -> Matrix:
        """The message's vector (row 0) and its clauses' (rows 1…), in one batch.

        The message is first respelled (``respell.py``: shorthands written out,
        missing accents restored from the knowledge base's own words)."""
        key = " ".join(textmod.folded_words(text))
        with self._lock:
            cached = self._recent.get(key)
            if cached is not None:
                self._recent.move_to_end(key)
                return cached
        text = self.respell(text)
        vectors = self.encoder.encode([text, *textmod.clauses(text)])
        with self._lock:
            self._recent[key] = vectors
            while len(self._recent) > MESSAGE_CACHE:
                self._recent.popitem(last=False)
        return vectors

    @property
    def _questions(self) -> Matrix:
        """The example questions' vectors, a row each (a copy: for the rare paths)."""
        rows: Matrix = self._columns.T[self._question_of]
        return rows

    @property
    def _answers(self) -> Matrix:
        """The answer-side texts' vectors, a row each (a copy)."""
        rows: Matrix = self._columns.T[self._answer_of]
        return rows

    def similarities(self, vectors: Matrix) -> Similarities:
        """Per-entry cosines for one encoded message (``encode``'s rows)."""
        # The message's row against every distinct text at once; each clause's against
        # the questions only, which that first pass left in cache.
        whole = vectors[0] @ self._columns
        on_questions = whole[self._question_of]
        starts = self._starts
        best = np.maximum.reduceat(on_questions, starts)
        closest = on_questions
        for clause in vectors[1:]:
            closest = np.maximum(closest, (clause @ self._question_columns)[self._question_of])
        question = np.maximum.reduceat(closest, starts) if len(vectors) > 1 else best
        # Second best per entry: mask each entry's best once, take the max again.
        masked = np.where(on_questions >= best[self._owner], -2.0, on_questions)
        second = np.maximum.reduceat(masked, starts)
        pair = np.where(self._single | (second < -1.5), best, (best + second) / 2)
        answer = np.maximum.reduceat(whole[self._answer_of], self._answer_first)
        return Similarities(
            question.astype(np.float32, copy=False),
            pair.astype(np.float32, copy=False),
            answer.astype(np.float32, copy=False),
        )

    def known(self, texts: Sequence[str]) -> Matrix | None:
        """The stored vectors of ``texts`` if every one is an entry text, else None."""
        if self._rows is None:
            self._rows = dict(zip(self._texts, self._column_of.tolist(), strict=True))
        columns = [self._rows.get(text) for text in texts]
        if any(column is None for column in columns):
            return None
        known: Matrix = self._columns.T[[column for column in columns if column is not None]]
        return known

    def look_alikes(self, floor: float) -> list[tuple[int, str, int]]:
        """(entry, example question, other entry) for each example question closer to
        another entry's question than to its own entry's others, by a cosine of at least
        ``floor``; closest first. Entries with a single question have no "own others"."""
        questions = self._questions
        cosines = questions @ questions.T
        owner = self._owner
        same = owner[:, None] == owner[None, :]
        np.fill_diagonal(cosines, -2.0)
        own = np.where(same, cosines, -2.0).max(axis=1)
        other = np.where(same, -2.0, cosines)
        closest, nearest = other.max(axis=1), other.argmax(axis=1)
        found = np.flatnonzero((closest >= floor) & (closest > own) & (own > -1.5))
        found = found[np.argsort(-closest[found], kind="stable")]
        return [(int(owner[n]), self._texts[n], int(owner[nearest[n]])) for n in found]


class ReusedEncoder:
    """An encoder that answers from a semantic index's stored vectors, and encodes only
    what it does not hold: rebuilding a knowledge base from the same texts costs no
    encoding (``KnowledgeBase.collisions``)."""

    def __init__(self, index: SemanticIndex) -> None:
        self._index = index

    @property
    def name(self) -> str:
        return self._index.encoder.name

    def encode(self, texts: Sequence[str]) -> Matrix:
        known = self._index.known(texts)
        return known if known is not None else self._index.encoder.encode(texts)
