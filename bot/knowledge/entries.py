"""Knowledge-base entries and the outcome of matching a message against them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.knowledge.text import LANGUAGES

__all__ = ["LANGUAGES", "Candidate", "Collision", "KbEntry", "KbMatch"]


@dataclass(frozen=True, slots=True)
class KbEntry:
    """One question the business answers, with example phrasings and the answer."""

    id: str
    topic: str
    questions: Mapping[str, tuple[str, ...]] = field(hash=False)
    answers: Mapping[str, str] = field(hash=False)
    touchpoint: str | None = None  # KPI breakdown; knowledge.yaml's default is the topic
    stage: str | None = None  # before | during | after the purchase, if given

    def answer(self, language: str) -> str:
        """The answer in ``language``, else in the other available language."""
        if language in self.answers:
            return self.answers[language]
        for other in LANGUAGES:
            if other in self.answers:
                return self.answers[other]
        return next(iter(self.answers.values()))


@dataclass(frozen=True, slots=True)
class Candidate:
    """An entry that may answer the message, and how plausible it is on its own (0..1)."""

    entry: KbEntry
    score: float


@dataclass(frozen=True, slots=True)
class KbMatch:
    """The best entry for a message, how sure we are, and whether that is enough.

    ``score`` is the calibrated confidence (0..1) and ``answered`` is
    ``score >= threshold``. ``language`` is the message's own language ("fr",
    "en") or None when it does not tell. ``candidates`` are the three best
    entries, best first, each scored as if it had no rival; ``ambiguous`` is
    True when the bot should not answer but two or three of them are plausible
    and close: ask "did you mean …?" rather than decline.
    """

    entry: KbEntry | None
    score: float
    answered: bool
    language: str | None = None
    candidates: tuple[Candidate, ...] = field(default=(), compare=False)
    ambiguous: bool = False

    @property
    def id(self) -> str | None:
        return self.entry.id if self.entry else None

    @property
    def topic(self) -> str | None:
        return self.entry.topic if self.entry else None

    def answer(self, language: str) -> str:
        """The matched entry's answer (the engine sends it only when ``answered``)."""
        if self.entry is None:
            raise LookupError("no knowledge-base entry matched")
        return self.entry.answer(language)


@dataclass(frozen=True, slots=True)
class Collision:
    """An example question of ``entry`` that, asked by a customer, would get ``other``'s
    answer (with confidence ``score``) if the knowledge base did not list it: the two
    entries are asked alike, a hint for the knowledge author (reword, or merge them)."""

    entry: KbEntry
    question: str
    other: KbEntry
    score: float
