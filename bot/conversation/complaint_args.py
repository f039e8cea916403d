"""What an agent types after ``/resolve`` (``!resolve`` on Slack): a tag, then complaint
fields as ``key=value``.

    /resolve livraison cause=retard de livraison solution=partial_refund geste de 10 €

- the words before the first ``key=`` are the resolution tag (as before this issue);
- ``cause=`` and ``category=`` (``catégorie=``) take the longest run of words that names
  a configured label (accents, case, ``_`` and ``-`` do not matter), or a "quoted" label;
- ``solution=`` takes one of ``SOLUTIONS`` (or its label, ``free delivery`` …);
- ``note=`` takes everything up to the next key; words left after a value join the note.

An unknown label is refused with the list of valid ones, never stored as typed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_KEYS = {
    "cause": "cause",
    "solution": "solution",
    "category": "category",
    "categorie": "category",
    "note": "note",
}
_KEY = re.compile(r"(?<!\S)(cause|solution|category|cat[ée]gorie|note)\s*=\s*", re.I)
_QUOTED = re.compile(r"^[\"«“']\s*(.+?)\s*[\"»”']")


def normalized(text: str) -> str:
    """Compare labels as people type them: no accents, no case, ``_``/``-`` as spaces."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[_\-]+", " ", plain).split())


@dataclass(frozen=True, slots=True)
class ResolveArgs:
    """The parsed arguments; None where not given."""

    tag: str | None = None
    category: str | None = None
    cause: str | None = None
    solution: str | None = None
    note: str | None = None

    @property
    def complaint_fields(self) -> dict[str, str]:
        """The complaint columns given (category, cause, solution, note)."""
        values = {
            "category": self.category,
            "cause": self.cause,
            "solution": self.solution,
            "note": self.note,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True, slots=True)
class Refusal:
    """An unknown value: which field, what was typed, and what would have been valid."""

    field: str  # cause | category | solution
    given: str
    valid: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Choices:
    """The valid values of each field. ``solutions`` maps every accepted spelling (key or
    label, normalized) to its key."""

    causes: Sequence[str]
    categories: Sequence[str]
    solutions: Mapping[str, str]
    solution_keys: Sequence[str]

    def options(self, field: str) -> tuple[str, ...]:
        if field == "cause":
            return tuple(self.causes)
        if field == "category":
            return tuple(self.categories)
        return tuple(self.solution_keys)

    def lookup(self, field: str) -> dict[str, str]:
        if field == "solution":
            return dict(self.solutions)
        return {normalized(v): v for v in self.options(field)}


def _take_label(value: str, table: Mapping[str, str]) -> tuple[str | None, str]:
    """(label, rest): a quoted label, else the longest run of leading words naming one."""
    quoted = _QUOTED.match(value)
    if quoted:
        return table.get(normalized(quoted.group(1))), value[quoted.end() :].strip()
    words = value.split()
    for n in range(len(words), 0, -1):
        found = table.get(normalized(" ".join(words[:n])))
        if found is not None:
            return found, " ".join(words[n:])
    return None, value


def parse_resolve(text: str, choices: Choices) -> ResolveArgs | Refusal:
    """``/resolve`` arguments → ``ResolveArgs``, or the ``Refusal`` of the first bad value."""
    matches = list(_KEY.finditer(text))
    head = text[: matches[0].start()] if matches else text
    values: dict[str, str] = {}
    notes: list[str] = []
    for i, match in enumerate(matches):
        field = _KEYS[normalized(match.group(1))]
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        value = text[match.end() : end].strip()
        if field == "note":
            if value:
                notes.append(value)
            continue
        label, rest = _take_label(value, choices.lookup(field))
        if label is None:
            given = value if len(value) <= 60 else value[:59] + "…"
            return Refusal(field, given, choices.options(field))
        values[field] = label
        if rest:
            notes.append(rest)
    return ResolveArgs(
        tag=head.strip() or None,
        category=values.get("category"),
        cause=values.get("cause"),
        solution=values.get("solution"),
        note=" ".join(notes)[:1000] or None,
    )


def check_details(details: Sequence[tuple[str, str]], choices: Choices) -> ResolveArgs | Refusal:
    """The console's selects: the same validation, one exact field at a time."""
    values: dict[str, str] = {}
    for name, raw in details:
        field = _KEYS.get(normalized(name))
        value = raw.strip()
        if field is None or not value:
            continue
        if field == "note":
            values["note"] = value[:1000]
            continue
        label = choices.lookup(field).get(normalized(value))
        if label is None:
            return Refusal(field, value[:60], choices.options(field))
        values[field] = label
    return ResolveArgs(
        category=values.get("category"),
        cause=values.get("cause"),
        solution=values.get("solution"),
        note=values.get("note"),
    )
