"""Outbox rows: what an engine step enqueues, and what a delivery records.

Beside ``conversations.py`` because both the step (``_apply``) and a delivery's record
write them, on the database thread inside one ``Database.write``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bot.conversation.store import Delivery, NewOutbox, OutboxItem
from storage.database import Conn, Row


def outbox_item(row: Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        conversation_id=row["conversation_id"],
        lane=row["lane"],
        op=row["op"],
        payload=json.loads(row["payload"]),
        message_id=row["message_id"],
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
    )


def enqueue(
    conn: Conn,
    outbox: Sequence[NewOutbox],
    conversation_id: int | None,
    message_ids: Sequence[int],
    now: int,
) -> tuple[OutboxItem, ...]:
    if not outbox:
        return ()
    links = [message_ids[o.message] or None if o.message is not None else None for o in outbox]
    rows = [
        (conversation_id, o.lane, o.op, json.dumps(o.payload, ensure_ascii=False), link, now)
        for o, link in zip(outbox, links, strict=True)
    ]
    ids = insert_many(
        conn, "outbox (conversation_id, lane, op, payload, message_id, created_at)", rows
    )
    return tuple(
        OutboxItem(
            id=i,
            conversation_id=conversation_id,
            lane=o.lane,
            op=o.op,
            payload=o.payload,
            message_id=link,
        )  # fmt: skip
        for i, o, link in zip(ids, outbox, links, strict=True)
    )


def record_sent(
    conn: Conn, item: OutboxItem, now: int, effects: Delivery
) -> tuple[OutboxItem, ...]:
    """A delivery's record (on the database thread, inside ``Database.write``)."""
    conn.execute(
        "UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?",
        (now, item.id),
    )
    if item.message_id is not None:
        conn.execute("UPDATE messages SET delivered_at = ? WHERE id = ?", (now, item.message_id))
    if item.conversation_id is not None:
        if effects.customer_response:
            agent = (
                ", first_agent_response_at = COALESCE(first_agent_response_at, ?)"
                if effects.agent_response
                else ""
            )
            conn.execute(
                "UPDATE conversations SET first_response_at = "
                f"COALESCE(first_response_at, ?){agent} WHERE id = ?",
                (now, now, item.conversation_id)
                if effects.agent_response
                else (now, item.conversation_id),
            )
        if effects.thread is not None:
            conn.execute(
                "UPDATE conversations SET desk_thread = ?, desk_header = ? WHERE id = ?",
                (effects.thread, effects.header_message, item.conversation_id),
            )
    return enqueue(conn, effects.follow_up, item.conversation_id, [], now)


def insert_many(conn: Conn, table: str, rows: Sequence[tuple[Any, ...]]) -> list[int]:
    """Insert rows in one statement (one hop); return their ids in insertion order.

    Rowids of one statement are assigned in processing order within our single-writer
    transaction, so sorting the RETURNING ids restores the order of ``rows``.
    """
    width = len(rows[0])
    marks = ",".join(["(" + ",".join("?" * width) + ")"] * len(rows))
    params = [value for row in rows for value in row]
    result = conn.execute(f"INSERT INTO {table} VALUES {marks} RETURNING id", params).fetchall()
    return sorted(int(row[0]) for row in result)
