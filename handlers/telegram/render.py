"""Our plain texts → what Telegram shows: escaped HTML, split to its limits, keyboards.

Every piece of text that comes from a person (customer, agent, knowledge base) goes
through ``html.escape``, so a customer typing ``<b>`` or ``<a href="tg://user?id=1">``
can never format or mention anything on the desk. Labels are icons, so the header
needs no translation of its own: the engine localizes the values.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.conversation.model import Choice, ThreadHeader, TranscriptLine

MAX_TEXT = 4096  # visible characters (UTF-16 units) of a message, after entity parsing
MAX_CAPTION = 1024
MAX_TOPIC_NAME = 128
MAX_CALLBACK_ANSWER = 200

AUTHOR_ICONS = {
    "customer": "👤",
    "bot": "🤖",
    "agent": "🧑‍💼",
    "note": "📝",
    "system": "ℹ️",
}
CHOICE_MARK = "\n→ "
TRANSCRIPT_BELOW = "📜 ⤵"


def utf16_len(text: str) -> int:
    """Telegram measures texts in UTF-16 code units (an emoji often counts two)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: str) -> str:
    return html.escape(text, quote=False)


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-16 units, with "…" when something was cut."""
    if utf16_len(text) <= limit:
        return text
    return _fit(text, limit - 1).rstrip() + "…"


def _fit(text: str, limit: int) -> str:
    """The longest prefix of ``text`` within ``limit`` UTF-16 units (never half a character)."""
    if limit <= 0:
        return ""
    cut = min(len(text), limit)
    while utf16_len(text[:cut]) > limit:
        cut -= max(1, (utf16_len(text[:cut]) - limit) // 2)
    return text[:cut]


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Parts of at most ``limit`` UTF-16 units, cut at a paragraph, line or word boundary
    when there is one in the second half of a part, else hard."""
    if limit < 2:  # an astral character takes two units: no progress could be made
        raise ValueError(f"cannot split a text into parts of {limit} UTF-16 units")
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        head = _fit(rest, limit)
        cut = -1
        for separator in ("\n\n", "\n", " "):
            at = head.rfind(separator)
            if at >= len(head) // 2:
                cut = at
                break
        if cut <= 0:
            parts.append(head)
            rest = rest[len(head) :]
        else:
            parts.append(head[:cut].rstrip())
            rest = rest[cut:].lstrip()
    if rest.strip() or not parts:
        parts.append(rest)
    return parts


def keyboard(rows: Sequence[Sequence[Choice]]) -> InlineKeyboardMarkup | None:
    """Rows of our choices as an inline keyboard (callback data = the choice token)."""
    buttons = [
        [InlineKeyboardButton(c.label, callback_data=c.token) for c in row] for row in rows if row
    ]
    return InlineKeyboardMarkup(buttons) if buttons else None


class Rich:
    """HTML built from plain pieces, counting the visible length as it goes."""

    def __init__(self) -> None:
        self._html: list[str] = []
        self.size = 0

    def text(self, value: str) -> Rich:
        self._html.append(escape(value))
        self.size += utf16_len(value)
        return self

    def bold(self, value: str) -> Rich:
        if value:
            self._html.append(f"<b>{escape(value)}</b>")
            self.size += utf16_len(value)
        return self

    def extend(self, other: Rich) -> Rich:
        self._html.extend(other._html)
        self.size += other.size
        return self

    def html(self) -> str:
        return "".join(self._html)


def byline(author: str, name: str) -> tuple[str, str]:
    """(icon, name) naming who wrote a desk post."""
    return AUTHOR_ICONS.get(author, "💬"), name


def post_parts(text: str, author: str, name: str) -> list[str]:
    """A desk post as HTML parts, each prefixed with who wrote it and within the limit."""
    icon, who = byline(author, truncate(name, MAX_TOPIC_NAME))  # a name leaves room for text

    def prefix() -> Rich:
        return Rich().text(icon + " ").bold(who).text("\n" if who else "")

    budget = MAX_TEXT - prefix().size
    return [prefix().text(chunk).html() for chunk in split_text(text.strip() or "…", budget)]


def topic_name(header: ThreadHeader) -> str:
    return truncate(header.title.strip() or f"#{header.conversation_id}", MAX_TOPIC_NAME)


def _transcript_line(line: TranscriptLine, into: Rich) -> Rich:
    icon, who = byline(line.author, line.name)
    into.text(icon + " ").bold(who).text(": " if who else "").text(line.text)
    return into


def render_header(header: ThreadHeader) -> tuple[str, bool]:
    """The header message's HTML, and whether the transcript fitted in it (if not, it is
    posted below the header with ``transcript_parts``)."""
    head = Rich().bold(header.title).text("\n")
    head.text("👤 ").bold(header.customer_name).text(f" · {header.channel} · {header.language}\n")
    if header.topic:
        head.text(f"🏷 {header.topic}\n")
    head.text(f"❓ {header.reason}\n")
    if header.context:
        head.text(f"🗂 {header.context}\n")
    head.text(f"📌 {header.status}")
    if not header.transcript:
        return head.html(), True
    body = Rich()
    for line in header.transcript:
        body.text("\n")
        _transcript_line(line, body)
    if head.size + 1 + body.size <= MAX_TEXT:
        return head.html() + "\n" + body.html(), True
    return head.html() + "\n\n" + escape(TRANSCRIPT_BELOW), False


def transcript_parts(header: ThreadHeader) -> list[str]:
    """The transcript as HTML messages within the limit (lines longer than a message are
    split themselves)."""
    parts: list[str] = []
    current = Rich()
    for line in header.transcript:
        rendered = _transcript_line(line, Rich())
        if rendered.size > MAX_TEXT:
            icon, who = byline(line.author, line.name)
            parts.extend(post_parts(line.text, line.author, who or icon))
            continue
        if current.size and current.size + 1 + rendered.size > MAX_TEXT:
            parts.append(current.html())
            current = Rich()
        if current.size:
            current.text("\n")
        current.extend(rendered)
    if current.size:
        parts.append(current.html())
    return parts


def with_choice(text: str, chosen: str) -> str:
    """A question's text once answered: the choice is shown under it."""
    return truncate(text, MAX_TEXT - utf16_len(CHOICE_MARK + chosen)) + CHOICE_MARK + chosen
