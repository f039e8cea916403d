"""Meaning-based scores: how close a message is to each entry's questions and answer.

Every example question and every answer of the knowledge base is encoded once
(or read from the embedding cache); a message is then one encoding and two
matrix products. Per entry: ``question`` = best cosine with one of its example
questions, ``answer`` = best cosine with its answer (French or English).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.knowledge.encoder import Encoder, Matrix
from bot.knowledge.entries import LANGUAGES, KbEntry

log = logging.getLogger(__name__)

Vector = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Similarities:
    """Per entry (in the knowledge base's order): best question and answer cosines."""

    question: Vector
    answer: Vector


def _texts(entries: Sequence[KbEntry]) -> tuple[list[str], list[int], list[str], list[int]]:
    questions: list[str] = []
    question_starts: list[int] = []
    answers: list[str] = []
    answer_starts: list[int] = []
    for entry in entries:
        question_starts.append(len(questions))
        for language in LANGUAGES:
            questions.extend(entry.questions.get(language, ()))
        answer_starts.append(len(answers))
        answers.extend(
            entry.answers[language] for language in LANGUAGES if language in entry.answers
        )
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
    """The encoded questions and answers of every entry."""

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
        self._questions = np.ascontiguousarray(vectors[: len(questions)])
        self._answers = np.ascontiguousarray(vectors[len(questions) :])

    def encode(self, text: str) -> Vector:
        vector: Vector = self.encoder.encode([text])[0]
        return vector

    def similarities(self, vector: Vector) -> Similarities:
        """Best question and answer cosine of each entry for one encoded message."""
        question = np.maximum.reduceat(self._questions @ vector, self._question_starts)
        answer = np.maximum.reduceat(self._answers @ vector, self._answer_starts)
        return Similarities(question.astype(np.float32), answer.astype(np.float32))
