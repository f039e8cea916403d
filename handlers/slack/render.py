"""Our plain texts → Slack text and Block Kit, escaped so nobody can inject markup.

Two kinds of text reach Slack:

* text written by customers (and their names) shown to agents: rendered as
  ``plain_text`` blocks, which Slack shows literally (no mentions, no ``*bold*``), with an
  escaped fallback ``text`` for notifications;
* text written by agents or the bot shown to customers: ``mrkdwn`` so that an agent's
  formatting and links survive, but with ``&``, ``<``, ``>`` escaped (``<!channel>`` typed
  by anyone never pings) and ``verbatim`` so Slack does not parse mentions by itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot.conversation.model import Choice, Media, ThreadHeader, TranscriptLine

Block = dict[str, Any]

SECTION_LIMIT = 3000  # characters in a section's text
HEADER_LIMIT = 150
BUTTON_LIMIT = 75
FIELD_LIMIT = 2000
TEXT_LIMIT = 40000  # a message's top-level text
MAX_TEXT_SECTIONS = 40  # of the 50 blocks a message may have, keep room for buttons
FALLBACK_LIMIT = 3000  # notification text of a message that has blocks

LABELS: dict[str, dict[str, str]] = {
    "fr": {
        "closed": "🔒 Conversation close.",
        "reopened": "🔓 Conversation rouverte.",
        "working": "⏳ Calcul des indicateurs…",
        "unavailable": "Les indicateurs ne sont pas disponibles.",
        "truncated": "(tronqué)",
    },
    "en": {
        "closed": "🔒 Conversation closed.",
        "reopened": "🔓 Conversation reopened.",
        "working": "⏳ Computing the KPIs…",
        "unavailable": "The KPIs are not available.",
        "truncated": "(truncated)",
    },
}

AUTHOR_ICONS = {"customer": "👤", "bot": "🤖", "agent": "🧑‍💼", "note": "📝", "system": "ℹ️"}

# A bare URL in escaped text. Never "|" (``<url|label>`` is Slack's masked link: an agent
# typing ``<https://evil|cliquez ici>`` must show the customer the real address) and
# never an escaped ``<`` or ``>``, which end the URL as they would in the raw text.
_URL = re.compile(r"https?://(?:(?!&[lg]t;)[^\s<>|])*(?:(?!&[lg]t;)[^\s<>|.,;:!?)\]'\"])")


def label(language: str, key: str) -> str:
    return LABELS.get(language, LABELS["en"])[key]


def escape(text: str) -> str:
    """Slack's three control characters as entities: the text can no longer mention anyone."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def safe_mrkdwn(text: str) -> str:
    """Escaped text whose bare URLs become links again (``<https://…>``)."""
    return _URL.sub(lambda m: f"<{m.group(0)}>", escape(text))


def plain(text: str) -> dict[str, Any]:
    """A ``plain_text`` object: shown literally by Slack (never empty, which Slack refuses)."""
    return {"type": "plain_text", "text": text if text.strip() else "—", "emoji": True}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _cost(ch: str) -> int:
    return 5 if ch == "&" else 4 if ch in "<>" else 1


def escaped_length(text: str) -> int:
    """``len(escape(text))`` without building it: ``&`` costs 5, ``<`` and ``>`` 4."""
    return len(text) + 4 * text.count("&") + 3 * (text.count("<") + text.count(">"))


def split(text: str, limit: int, *, escaped: bool) -> list[str]:
    """Cut ``text`` into pieces that fit ``limit`` (once escaped), at line or word ends."""
    if (escaped_length(text) if escaped else len(text)) <= limit:
        # Nearly every message fits: no walk over its characters (this runs on every
        # message to a customer, twice).
        return [text] if text.strip() else []
    pieces: list[str] = []
    start, used, last_break = 0, 0, -1
    i = 0
    while i < len(text):
        ch = text[i]
        used += _cost(ch) if escaped else 1
        if ch in "\n ":
            last_break = i
        if used > limit:
            cut = last_break + 1 if last_break >= start + limit // 2 else i
            pieces.append(text[start:cut])
            start, i, used, last_break = cut, cut, 0, -1
            continue
        i += 1
    if start < len(text):
        pieces.append(text[start:])
    return [p for p in pieces if p.strip()] or ([text] if text.strip() else [])


def _capped(pieces: list[str], language: str) -> list[str]:
    if len(pieces) <= MAX_TEXT_SECTIONS:
        return pieces
    return [*pieces[: MAX_TEXT_SECTIONS - 1], label(language, "truncated")]


def plain_sections(text: str, language: str = "en") -> list[Block]:
    """Sections of ``plain_text`` carrying any amount of text (for customer-written text)."""
    pieces = _capped(split(text, SECTION_LIMIT, escaped=False), language)
    return [{"type": "section", "text": plain(p)} for p in pieces]


def mrkdwn_sections(text: str, language: str = "en") -> list[Block]:
    """Sections of escaped mrkdwn (for text written by agents and the bot)."""
    # keep ~10% for the brackets of re-linked URLs
    pieces = _capped(split(text, SECTION_LIMIT * 9 // 10, escaped=True), language)
    out: list[Block] = []
    for piece in pieces:
        rendered = safe_mrkdwn(piece)
        if len(rendered) > SECTION_LIMIT:
            rendered = escape(piece)
        out.append({"type": "section", "text": mrkdwn(rendered)})
    return out


def fallback(text: str, limit: int = FALLBACK_LIMIT) -> str:
    """The escaped top-level ``text`` of a message that also has blocks."""
    return escape(truncate(text, limit))


def message_text(text: str) -> str:
    """The top-level ``text`` of a message without blocks (agents'/bot's text, for customers)."""
    pieces = split(text, TEXT_LIMIT - 100, escaped=True)
    return safe_mrkdwn(pieces[0] + ("…" if len(pieces) > 1 else "")) if pieces else " "


def buttons(rows: Sequence[Sequence[Choice]], prefix: str) -> list[Block]:
    """One ``actions`` block per row; ``action_id`` is unique in the message, value = token."""
    blocks: list[Block] = []
    for r, row in enumerate(rows):
        elements = [
            {
                "type": "button",
                "action_id": f"sb_{prefix}{r}_{c}",
                "text": plain(truncate(choice.label, BUTTON_LIMIT)),
                "value": choice.token,
            }
            for c, choice in enumerate(row)
        ]
        if elements:
            blocks.append({"type": "actions", "block_id": f"sb_{prefix}{r}", "elements": elements})
    return blocks


def customer_blocks(text: str, rows: Sequence[Sequence[Choice]], language: str) -> list[Block]:
    """A message to a customer with rows of buttons (help? NPS 0–10, five smileys…)."""
    return [*mrkdwn_sections(text, language), *buttons(rows, "c")]


def chosen_blocks(original: Sequence[Mapping[str, Any]], chosen: str) -> list[Block]:
    """The question as it was, its buttons replaced by the answer given."""
    kept = [dict(b) for b in original if b.get("type") != "actions"]
    kept.append({"type": "context", "elements": [plain(truncate(f"✅ {chosen}", 2000))]})
    return kept


def _transcript_line(line: TranscriptLine) -> str:
    icon = AUTHOR_ICONS.get(line.author, "•")
    who = f"{icon} {line.name}".rstrip() if line.name else icon
    return f"{who}: {line.text}"


def transcript_sections(lines: Sequence[TranscriptLine], budget: int = 2) -> list[Block]:
    """The latest transcript lines that fit ``budget`` sections (older ones elided)."""
    rendered = [truncate(_transcript_line(line), SECTION_LIMIT - 2) for line in lines]
    sections: list[list[str]] = [[]]
    size = 0
    for text in reversed(rendered):
        if size + len(text) + 1 > SECTION_LIMIT - 2:
            if len(sections) == budget:
                sections[-1].insert(0, "…")
                break
            sections.append([])
            size = 0
        sections[-1].insert(0, text)
        size += len(text) + 1
    return [{"type": "section", "text": plain("\n".join(s))} for s in reversed(sections) if s]


def header_blocks(header: ThreadHeader) -> list[Block]:
    """The head message of a conversation's thread: who, where, why, status, history, buttons."""
    fields = [
        plain(truncate(f"👤 {header.customer_name}", FIELD_LIMIT)),
        plain(f"💬 {header.channel}"),
        plain(f"🌐 {header.language}"),
        plain(truncate(f"🏷️ {header.topic or '—'}", FIELD_LIMIT)),
    ]
    blocks: list[Block] = [
        {"type": "header", "text": plain(truncate(header.title, HEADER_LIMIT))},
        {"type": "section", "fields": fields},
        {"type": "section", "text": plain(truncate(f"❓ {header.reason}", SECTION_LIMIT))},
        {"type": "context", "elements": [plain(truncate(f"📌 {header.status}", 2000))]},
    ]
    if header.context:
        context = {"type": "context", "elements": [plain(truncate(f"🗂️ {header.context}", 2000))]}
        blocks.insert(3, context)
    if header.transcript:
        blocks.append({"type": "divider"})
        blocks.extend(transcript_sections(header.transcript))
    blocks.extend(buttons([list(header.buttons)], "h") if header.buttons else [])
    return blocks


def header_fallback(header: ThreadHeader) -> str:
    return fallback(f"{header.title} — {header.status}")


def post_blocks(text: str, author: str, name: str, language: str) -> list[Block]:
    """A line in a thread: who wrote it (small) then what they wrote (literal)."""
    icon = AUTHOR_ICONS.get(author, "•")
    if author == "system":
        return [{"type": "context", "elements": [plain(truncate(f"{icon} {text}", 2000))]}]
    who = f"{icon} {name}".strip() if name else icon
    return [
        {"type": "context", "elements": [plain(truncate(who, 2000))]},
        *plain_sections(text, language),
    ]


def post_fallback(text: str, author: str, name: str) -> str:
    icon = AUTHOR_ICONS.get(author, "•")
    who = f"{icon} {name}".strip() if name else icon
    return fallback(f"{who}: {text}")


def media_line(media: Media) -> str:
    """``📎 <url|name>`` (escaped) for a file we do not download."""
    name = media.name or media.kind
    if media.url:
        return f"📎 <{escape(media.url)}|{escape(name).replace('|', '¦')}>"
    return f"📎 {escape(name)} ({escape(media.kind)}, {escape(media.channel)})"


def media_blocks(media: Media, caption: str, *, caption_plain: bool, language: str) -> list[Block]:
    blocks: list[Block] = [{"type": "section", "text": mrkdwn(media_line(media))}]
    if caption.strip():
        blocks += plain_sections(caption, language) if caption_plain else mrkdwn_sections(caption)
    return blocks
