"""Everything stored about one customer, as one JSON-ready document (``customer export``).

Read-only: the erase and retention functions beside it (``storage/privacy.py``) share
only ``table_columns``, to handle the optional tables (follow-ups…) that may not exist.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from storage.database import Conn, Row, table_columns_of

# Tables other features may add, and their free-text columns to clear (rows by conversation).
OPTIONAL_TEXT = {
    "followups": ("note", "outcome_note", "outcome"),
    "complaints": ("note", "solution_note"),
}


def table_columns(conn: Conn, table: str) -> set[str]:
    return set(table_columns_of(conn, table))


def _iso(ms: object) -> object:
    if isinstance(ms, int) and not isinstance(ms, bool):
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return ms


def _plain(row: Row, drop: Iterable[str] = ()) -> dict[str, Any]:
    """A row as JSON-ready values: *_at columns as ISO 8601 UTC, JSON columns decoded."""
    out: dict[str, Any] = {}
    skip = set(drop)
    for key in row.keys():  # noqa: SIM118 - Row iterates values, not keys
        if key in skip:
            continue
        value = row[key]
        if key == "at" or key.endswith("_at") or key == "last_surveyed_at":
            value = _iso(value)
        elif key in ("data", "media", "choices") and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        elif isinstance(value, bytes):
            continue
        out[key] = value
    return out


# ---------------------------------------------------------------------- export


def export_customer(conn: Conn, key: str) -> dict[str, Any] | None:
    """Everything stored about the customer ``key`` as one JSON-ready document."""
    customer = conn.execute("SELECT * FROM customers WHERE key = ?", (key,)).fetchone()
    if customer is None:
        return None
    cid = int(customer["id"])
    reach = conn.execute(
        "SELECT at, reachable, reason FROM customer_reachability WHERE customer_id = ? "
        "ORDER BY at, id",
        (cid,),
    ).fetchall()
    conversations = []
    web_chats: list[str] = []
    optional = [t for t in OPTIONAL_TEXT if table_columns(conn, t) >= {"conversation_id"}]
    for conv in conn.execute(
        "SELECT * FROM conversations WHERE customer_id = ? ORDER BY id", (cid,)
    ).fetchall():
        conv_id = int(conv["id"])
        if conv["channel"] == "web":
            web_chats.append(str(conv["chat_id"]))
        messages = conn.execute(
            "SELECT id, direction, author, agent_key, text, media, created_at, delivered_at "
            "FROM messages WHERE conversation_id = ? ORDER BY id",
            (conv_id,),
        ).fetchall()
        survey = conn.execute(
            "SELECT * FROM surveys WHERE conversation_id = ?", (conv_id,)
        ).fetchone()
        events = conn.execute(
            "SELECT at, kind, actor, data FROM events WHERE conversation_id = ? ORDER BY id",
            (conv_id,),
        ).fetchall()
        item = _plain(conv, drop=("customer_id",))
        item["messages"] = [_plain(m) for m in messages]
        item["survey"] = _plain(survey, drop=("customer_id", "conversation_id")) if survey else None
        item["events"] = [_plain(e) for e in events]
        for table in optional:
            rows = conn.execute(
                f"SELECT * FROM {table} WHERE conversation_id = ? ORDER BY conversation_id",
                (conv_id,),
            ).fetchall()
            item[table] = [_plain(r, drop=("conversation_id",)) for r in rows]
        conversations.append(item)
    other_events = conn.execute(
        "SELECT at, kind, actor, data FROM events WHERE customer_id = ? "
        "AND conversation_id IS NULL ORDER BY id",
        (cid,),
    ).fetchall()
    if customer["channel"] == "web":
        web_chats.append(str(customer["user_id"]))
    transcript: list[dict[str, Any]] = []
    for visitor in dict.fromkeys(web_chats):
        rows = conn.execute(
            "SELECT visitor, seq, at, author, text, choices, chosen FROM web_messages "
            "WHERE visitor = ? ORDER BY seq",
            (visitor,),
        ).fetchall()
        transcript.extend(_plain(r) for r in rows)
    return {
        "customer": _plain(customer, drop=("id",)),
        "reachability": [_plain(r) for r in reach],
        "conversations": conversations,
        "events": [_plain(e) for e in other_events],
        "web_transcript": transcript,
        "followups": [f for c in conversations for f in c.get("followups", [])],
    }


# ---------------------------------------------------------------------- erase
