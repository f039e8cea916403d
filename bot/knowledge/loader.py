"""knowledge.yaml read and validated, with the exact place of each mistake."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from bot.errors import KnowledgeBaseError
from bot.knowledge.entries import LANGUAGES, KbEntry
from bot.knowledge.lexical import synonym_key
from bot.yaml_files import read_yaml

_TOP_KEYS: Final = frozenset({"entries", "threshold", "synonyms"})
_ENTRY_KEYS: Final = frozenset({"id", "topic", "touchpoint", "stage", "questions", "answer"})
STAGES: Final = ("before", "during", "after")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse(path: Path) -> tuple[list[KbEntry], float | None, list[list[str]]]:
    """knowledge.yaml → entries, the file's threshold, synonym groups; or KnowledgeBaseError."""
    data, lines = read_yaml(path, KnowledgeBaseError)
    return _Validator(path, lines).document(data)


class _Validator:
    """Checks the parsed document and names the exact place of each mistake."""

    def __init__(self, path: Path, lines: Mapping[str, int]) -> None:
        self.path = path
        self.lines = lines

    def fail(self, where: str, reason: str) -> KnowledgeBaseError:
        probe = where
        while probe and probe not in self.lines:
            probe = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe)
        line = self.lines.get(probe)
        suffix = f" ({self.path.name} line {line})" if line else ""
        return KnowledgeBaseError(where or str(self.path), reason + suffix)

    def document(self, data: Any) -> tuple[list[KbEntry], float | None, list[list[str]]]:
        if not isinstance(data, dict):
            raise self.fail("", "expected a mapping with an 'entries' list")
        for key in data:
            if key not in _TOP_KEYS:
                raise self.fail(str(key), f"unknown key (expected one of {sorted(_TOP_KEYS)})")
        threshold = data.get("threshold")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not 0.0 <= threshold <= 1.0
        ):
            raise self.fail("threshold", "must be a number between 0 and 1")
        synonyms = self.synonyms(data.get("synonyms"))
        raw_entries = data.get("entries")
        if not isinstance(raw_entries, list) or not raw_entries:
            raise self.fail("entries", "must be a non-empty list of entries")
        entries: list[KbEntry] = []
        first_seen: dict[str, int] = {}
        for number, raw in enumerate(raw_entries):
            entry = self.entry(raw, f"entries[{number}]")
            if entry.id in first_seen:
                raise self.fail(
                    f"entries[{number}].id",
                    f"duplicate id {entry.id!r} (first used by entries[{first_seen[entry.id]}])",
                )
            first_seen[entry.id] = number
            entries.append(entry)
        return entries, None if threshold is None else float(threshold), synonyms

    def synonyms(self, raw: Any) -> list[list[str]]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise self.fail("synonyms", "must be a list of lists of words")
        groups: list[list[str]] = []
        owner: dict[str, int] = {}
        for number, group in enumerate(raw):
            where = f"synonyms[{number}]"
            if not isinstance(group, list) or len(group) < 2:
                raise self.fail(where, "must be a list of at least two words or phrases")
            for position, item in enumerate(group):
                if not isinstance(item, str) or not synonym_key(item):
                    raise self.fail(
                        f"{where}[{position}]", "must be a word or phrase that is not a stop word"
                    )
                key = " ".join(synonym_key(item))
                if key in owner and owner[key] != number:
                    raise self.fail(
                        f"{where}[{position}]", f"{item!r} is already in synonyms[{owner[key]}]"
                    )
                owner[key] = number
            groups.append([str(item) for item in group])
        return groups

    def entry(self, raw: Any, where: str) -> KbEntry:
        if not isinstance(raw, dict):
            raise self.fail(where, "must be a mapping with id, topic, questions and answer")
        for key in raw:
            if key not in _ENTRY_KEYS:
                raise self.fail(
                    f"{where}.{key}", f"unknown key (expected one of {sorted(_ENTRY_KEYS)})"
                )
        entry_id = self.text(raw, "id", where)
        if not _ID.match(entry_id):
            raise self.fail(f"{where}.id", "use letters, digits, '.', '_' or '-' without spaces")
        topic = self.text(raw, "topic", where)
        if "questions" not in raw:
            raise self.fail(f"{where}.questions", "missing: give example questions under fr: / en:")
        questions = self.questions(raw["questions"], f"{where}.questions")
        answers = self.answers(raw.get("answer"), f"{where}.answer")
        touchpoint = self.text(raw, "touchpoint", where) if "touchpoint" in raw else topic
        stage = raw.get("stage")
        if stage is not None and stage not in STAGES:
            raise self.fail(f"{where}.stage", f"must be one of {', '.join(STAGES)}")
        return KbEntry(
            id=entry_id,
            topic=topic,
            questions=MappingProxyType(questions),
            answers=MappingProxyType(answers),
            touchpoint=touchpoint,
            stage=stage,
        )

    def text(self, raw: Mapping[str, Any], key: str, where: str) -> str:
        value = raw.get(key)
        if value is None:
            raise self.fail(f"{where}.{key}", "missing")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", "must be a non-empty string")
        return value.strip()

    def questions(self, raw: Any, where: str) -> dict[str, tuple[str, ...]]:
        if not raw:
            raise self.fail(where, "empty: give at least one example question")
        if not isinstance(raw, dict):
            raise self.fail(where, "must map a language (fr, en) to a list of questions")
        out: dict[str, tuple[str, ...]] = {}
        for language, items in raw.items():
            place = f"{where}.{language}"
            if language not in LANGUAGES:
                raise self.fail(place, f"unknown key: languages are {', '.join(LANGUAGES)}")
            if isinstance(items, str):
                items = [items]
            if not isinstance(items, list) or not items:
                raise self.fail(place, "must be a non-empty list of questions")
            for number, item in enumerate(items):
                if not isinstance(item, str) or not item.strip():
                    raise self.fail(f"{place}[{number}]", "must be a non-empty string")
            out[language] = tuple(item.strip() for item in items)
        if not out:
            raise self.fail(where, "empty: give at least one example question")
        return out

    def answers(self, raw: Any, where: str) -> dict[str, str]:
        if raw is None:
            raise self.fail(where, "missing: give the answer under fr: and en:")
        if not isinstance(raw, dict):
            raise self.fail(where, "must map each language (fr, en) to the answer text")
        for language in raw:
            if language not in LANGUAGES:
                raise self.fail(
                    f"{where}.{language}", f"unknown key: languages are {', '.join(LANGUAGES)}"
                )
        out: dict[str, str] = {}
        for language in LANGUAGES:
            value = raw.get(language)
            if value is None:
                raise self.fail(f"{where}.{language}", "missing: every answer needs fr and en")
            if not isinstance(value, str) or not value.strip():
                raise self.fail(f"{where}.{language}", "must be a non-empty string")
            out[language] = value.strip()
        return out
