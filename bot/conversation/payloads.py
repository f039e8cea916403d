"""JSON shapes of outbox payloads: what the engine writes and the dispatcher reads back.

Kept in one place so that a payload written before a restart is read the same way after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bot.conversation.model import Address, Choice, Media, ThreadHeader, TranscriptLine

# Outbox operations, by lane kind.
SEND = "send"  # customer lane
SEND_MEDIA = "send_media"  # customer lane
OPEN_THREAD = "open_thread"  # desk lane
UPDATE_HEADER = "update_header"
POST = "post"
POST_MEDIA = "post_media"
MARK_RELAYED = "mark_relayed"
CLOSE_THREAD = "close_thread"
REOPEN_THREAD = "reopen_thread"
ALERT = "alert"
POST_CHOICES = "post_choices"  # desk lane: a post with rows of agent buttons (menus)
MENTION = "mention"  # desk lane: a post that notifies one person or group

CUSTOMER_OPS = frozenset({SEND, SEND_MEDIA})


def customer_lane(address: Address) -> str:
    return f"c:{address.key}"


def desk_lane(conversation_id: int | None) -> str:
    return f"d:{conversation_id}" if conversation_id is not None else "d:alerts"


def address_json(address: Address) -> dict[str, Any]:
    # By hand: ``asdict`` deep-copies through every field, and this runs for every reply.
    return {"channel": address.channel, "chat_id": address.chat_id, "thread_id": address.thread_id}


def address_from(data: dict[str, Any]) -> Address:
    return Address(**data)


def choices_json(rows: Sequence[Sequence[Choice]]) -> list[list[dict[str, str]]]:
    return [[{"label": c.label, "token": c.token} for c in row] for row in rows]


def choices_from(data: list[list[dict[str, str]]]) -> tuple[tuple[Choice, ...], ...]:
    return tuple(tuple(Choice(c["label"], c["token"]) for c in row) for row in data)


def media_json(media: Media) -> str:
    return json.dumps(asdict(media), ensure_ascii=False)


def media_from(data: str | dict[str, Any]) -> Media:
    return Media(**(json.loads(data) if isinstance(data, str) else data))


def header_json(header: ThreadHeader) -> dict[str, Any]:
    return asdict(header)


def header_from(data: dict[str, Any]) -> ThreadHeader:
    fields = dict(data)
    fields["transcript"] = tuple(TranscriptLine(**line) for line in fields["transcript"])
    fields["buttons"] = tuple(Choice(**b) for b in fields["buttons"])
    return ThreadHeader(**fields)
