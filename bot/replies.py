"""Saved replies: the answers agents send often, kept in replies.yaml and sent by shortcut.

An agent types ``/r SHORTCUT`` (Telegram topic), ``!r SHORTCUT`` (Slack thread) or picks
one in the console; the text goes to the customer in the conversation's language with
``{customer}`` and ``{agent}`` filled in. The file is validated like the knowledge base:
each mistake names ``file:line``, the key and the reason, so ``supportbot check`` and the
start refuse a file that would fail in front of a customer.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from bot.errors import SavedRepliesError
from bot.yaml_files import read_yaml

if TYPE_CHECKING:
    from bot.config import Settings

LANGUAGES: Final = ("fr", "en")
PLACEHOLDERS: Final = ("customer", "agent")
_ENTRY_KEYS: Final = frozenset({"shortcut", "title", "text"})
_SHORTCUT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True, slots=True)
class SavedReply:
    """One saved reply: its shortcut, an optional title for lists, its text per language."""

    shortcut: str
    texts: Mapping[str, str]
    title: str = ""

    def render(self, language: str, *, customer: str, agent: str) -> str:
        """The text in ``language`` (else French) with the placeholders filled in."""
        template = self.texts.get(language) or self.texts["fr"]
        return template.format(customer=customer, agent=agent)


class SavedReplies:
    """The loaded replies.yaml (possibly empty: no file configured)."""

    def __init__(self, replies: tuple[SavedReply, ...] = (), source: Path | None = None) -> None:
        self._by_shortcut = {r.shortcut: r for r in replies}
        self.source = source

    @classmethod
    def configured(cls, settings: Settings) -> SavedReplies:
        """The file named by ``replies.path`` in config.yaml; none when it is not set."""
        path = settings.replies.path
        return cls() if path is None else load(path)

    def __iter__(self) -> Iterator[SavedReply]:
        return iter(self._by_shortcut.values())

    def __len__(self) -> int:
        return len(self._by_shortcut)

    def get(self, shortcut: str) -> SavedReply | None:
        return self._by_shortcut.get(shortcut.strip().lower().removeprefix("/"))

    def close_to(self, shortcut: str, limit: int = 3) -> list[str]:
        """Shortcuts an agent probably meant: the same start, else the nearest spellings."""
        wanted = shortcut.strip().lower()
        names = sorted(self._by_shortcut)
        starts = [n for n in names if wanted and (n.startswith(wanted) or wanted.startswith(n))]
        near = difflib.get_close_matches(wanted, names, n=limit, cutoff=0.5)
        return list(dict.fromkeys([*starts, *near]))[:limit]

    def listing(self, language: str, width: int = 60) -> str:
        """One line per reply: shortcut, then its title or the start of its text."""
        lines = []
        for reply in self:
            text = reply.title or (reply.texts.get(language) or reply.texts["fr"])
            text = " ".join(text.split())
            if len(text) > width:
                text = text[: width - 1].rstrip() + "…"
            lines.append(f"{reply.shortcut} — {text}")
        return "\n".join(lines)


def load(path: Path) -> SavedReplies:
    """Read and validate replies.yaml, or raise ``SavedRepliesError`` naming the place."""
    missing = "file not found (replies.path in config.yaml)"
    data, lines = read_yaml(path, SavedRepliesError, missing)
    return SavedReplies(_Validator(path, lines).document(data), path)


def placeholders(template: str) -> list[str]:
    """The ``{names}`` of a text; ValueError for a lone brace or a format spec."""
    found = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format (write {{{name}}})")
        found.append(name)
    return found


class _Validator:
    def __init__(self, path: Path, lines: Mapping[str, int]) -> None:
        self.path = path
        self.lines = lines

    def fail(self, where: str, reason: str) -> SavedRepliesError:
        probe = where
        while probe and probe not in self.lines:
            probe = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", probe)
        line = self.lines.get(probe)
        place = f"{self.path}:{line}" if line else str(self.path)
        return SavedRepliesError(place, f"{where}: {reason}" if where else reason)

    def document(self, data: Any) -> tuple[SavedReply, ...]:
        if not isinstance(data, dict) or "replies" not in data:
            raise self.fail("", "expected a mapping with a 'replies' list")
        unknown = [str(k) for k in data if k != "replies"]
        if unknown:
            raise self.fail(unknown[0], "unknown key (expected only 'replies')")
        raw = data["replies"]
        if not isinstance(raw, list) or not raw:
            raise self.fail("replies", "must be a non-empty list of replies")
        seen: dict[str, int] = {}
        replies = []
        for number, item in enumerate(raw):
            reply = self.entry(item, f"replies[{number}]")
            if reply.shortcut in seen:
                first = seen[reply.shortcut]
                raise self.fail(
                    f"replies[{number}].shortcut",
                    f"duplicate shortcut {reply.shortcut!r} (already replies[{first}])",
                )
            seen[reply.shortcut] = number
            replies.append(reply)
        return tuple(replies)

    def entry(self, raw: Any, where: str) -> SavedReply:
        if not isinstance(raw, dict):
            raise self.fail(where, "must be a mapping with shortcut and text")
        for key in raw:
            if key not in _ENTRY_KEYS:
                raise self.fail(
                    f"{where}.{key}", f"unknown key (expected one of {sorted(_ENTRY_KEYS)})"
                )
        shortcut = raw.get("shortcut")
        if not isinstance(shortcut, str) or not _SHORTCUT.match(shortcut):
            raise self.fail(
                f"{where}.shortcut",
                "must be lower-case letters, digits, '-' or '_' (up to 32), e.g. delai",
            )
        title = raw.get("title", "")
        if not isinstance(title, str):
            raise self.fail(f"{where}.title", "must be a string")
        return SavedReply(shortcut, MappingProxyType(self.texts(raw.get("text"), where)), title)

    def texts(self, raw: Any, where: str) -> dict[str, str]:
        place = f"{where}.text"
        if not isinstance(raw, dict):
            raise self.fail(place, "must map each language (fr, en) to the reply's text")
        for language in raw:
            if language not in LANGUAGES:
                raise self.fail(f"{place}.{language}", "unknown language (use fr and en)")
        out: dict[str, str] = {}
        for language in LANGUAGES:
            value = raw.get(language)
            key = f"{place}.{language}"
            if value is None:
                raise self.fail(key, "missing: every reply needs fr and en")
            if not isinstance(value, str) or not value.strip():
                raise self.fail(key, "must be a non-empty string")
            try:
                names = placeholders(value)
            except ValueError as exc:
                reason = str(exc)
                if "format" not in reason:
                    reason = f"{reason} (write {{{{ or }}}} for a literal brace)"
                raise self.fail(key, reason) from None
            for name in names:
                if name not in PLACEHOLDERS:
                    known = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                    raise self.fail(key, f"unknown placeholder {{{name}}} (known: {known})")
            out[language] = value.strip()
        return out
