"""Outbox rows: what an engine step enqueues, and what a delivery records.

Beside ``step_writes.py`` because both the step (``apply_step``) and a delivery's record
write them, on the database thread inside one ``Database.write``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.conversation.store import Delivery, NewOutbox, OutboxItem
from storage.database import Conn, Later, Row, later
from storage.statements import ReturnedId, Statement, execute_all


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


@dataclass(frozen=True, slots=True)
class Claim:
    """Who enqueues (and so first delivers) outbox items, and until when (ms)."""

    owner: str
    until: int
    shared: bool = False  # other processes deliver too: enqueue checks lane order


def enqueue(
    conn: Conn,
    outbox: Sequence[NewOutbox],
    conversation_id: int | None,
    message_ids: Sequence[int | ReturnedId],
    now: int,
    claim: Claim | None = None,
    writes: Sequence[Statement] = (),
) -> Later[tuple[OutboxItem, ...]]:
    """Insert a step's outbox items (after ``writes``, in the same ``execute_all``),
    claimed by the process that will deliver them; their ids are read after the COMMIT
    (``Later``)."""
    if not outbox:
        execute_all(conn, writes)
        return Later(tuple)
    owner, until = (claim.owner, claim.until) if claim else (None, None)
    links = [message_ids[o.message] or None if o.message is not None else None for o in outbox]
    rows = [
        (conversation_id, o.lane, o.op, json.dumps(o.payload, ensure_ascii=False), link, now,
         owner, until)
        for o, link in zip(outbox, links, strict=True)
    ]  # fmt: skip
    marks, params = _values(rows)
    shared = claim is not None and claim.shared
    # Each new row's id and message, and on a shared database whether it waits behind
    # another process's item of its lane (then its first attempt claims it as usual).
    behind = f", {_BEHIND}" if shared else ", 0"
    insert = (
        "INSERT INTO outbox (conversation_id, lane, op, payload, message_id, created_at,"
        f" claimed_by, claimed_until) VALUES {marks} RETURNING id, message_id{behind}",
        [*params, owner] if shared else params,
    )
    cursor = execute_all(conn, writes, insert)
    assert cursor is not None

    def items(result: list[Any]) -> tuple[OutboxItem, ...]:
        # Ids of one statement are assigned in the order of its rows: sorted, they match.
        inserted = sorted((int(row[0]), row[1], bool(row[2])) for row in result)
        return tuple(
            OutboxItem(
                id=i,
                conversation_id=conversation_id,
                lane=o.lane,
                op=o.op,
                payload=o.payload,
                message_id=message_id,
                claimed_until=until if shared and not waits else None,
            )  # fmt: skip
            for (i, message_id, waits), o in zip(inserted, outbox, strict=True)
        )

    return later(conn, cursor, items)


# Whether an earlier undelivered item of the new row's lane is not ours.
_BEHIND = (
    "EXISTS (SELECT 1 FROM outbox o WHERE o.lane = outbox.lane AND o.id < outbox.id"
    " AND o.sent_at IS NULL AND o.failed_at IS NULL"
    " AND (o.claimed_by IS NULL OR o.claimed_by <> ?))"
)


def record_sent(
    conn: Conn, item: OutboxItem, now: int, effects: Delivery, claim: Claim | None = None
) -> Later[tuple[OutboxItem, ...]]:
    """A delivery's record (on the database thread, inside ``Database.write``)."""
    writes: list[tuple[str, Sequence[Any]]] = [
        ("UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?", (now, item.id))
    ]
    if item.message_id is not None:
        writes.append(("UPDATE messages SET delivered_at = ? WHERE id = ?", (now, item.message_id)))
    if item.conversation_id is not None:
        sets: list[str] = []
        params: list[Any] = []
        if effects.customer_response:
            sets.append("first_response_at = COALESCE(first_response_at, ?)")
            params.append(now)
            if effects.agent_response:
                sets.append("first_agent_response_at = COALESCE(first_agent_response_at, ?)")
                params.append(now)
        if effects.thread is not None:
            sets.append("desk_thread = ?, desk_header = ?")
            params += [effects.thread, effects.header_message]
        if sets:
            sql = f"UPDATE conversations SET {', '.join(sets)} WHERE id = ?"
            writes.append((sql, [*params, item.conversation_id]))
    return enqueue(conn, effects.follow_up, item.conversation_id, [], now, claim, writes)


# What ``claim_item`` answers before each delivery.
MINE = "mine"  # deliver it: claimed by this process until the lease's end
DONE = "done"  # drop it: delivered, failed, or another live process has it
WAIT = "wait"  # an earlier item of its lane is undelivered: released, for a later sweep


# One statement (one round trip on PostgreSQL): the item still undelivered and not held by
# another live process (its row locked, or skipped if another transaction has it), then
# claimed by us, or released when an earlier item of its lane is undelivered.
_CLAIM_ITEM = """UPDATE outbox
SET claimed_by = CASE WHEN lane_ahead.earlier THEN NULL ELSE ? END,
    claimed_until = CASE WHEN lane_ahead.earlier THEN NULL ELSE ? END
FROM (SELECT EXISTS (SELECT 1 FROM outbox WHERE lane = ? AND id < ? AND sent_at IS NULL
                     AND failed_at IS NULL) AS earlier) lane_ahead
WHERE outbox.id = (SELECT id FROM outbox WHERE id = ? AND sent_at IS NULL
                   AND failed_at IS NULL AND (claimed_by IS NULL OR claimed_by = ?
                   OR claimed_until IS NULL OR claimed_until <= ?) {lock})
RETURNING outbox.claimed_by"""


def claim_item(conn: Conn, item_id: int, lane: str, claim: Claim, now: int, lock: str) -> str:
    """Claim (or renew) one outbox item before a delivery attempt, keeping lane order
    across processes: an item waits while an earlier one of its lane is undelivered."""
    row = conn.execute(
        _CLAIM_ITEM.format(lock=lock),
        (claim.owner, claim.until, lane, item_id, item_id, claim.owner, now),
    ).fetchone()
    if row is None:  # delivered, failed, or another live process has it
        return DONE
    return WAIT if row[0] is None else MINE


def claim_pending(
    conn: Conn, claim: Claim, now: int, lock: str, *, take_over: bool, limit: int = 1000
) -> list[Row]:
    """Undelivered items nobody holds (lease run out, or never claimed), now claimed by
    this process, oldest first; ``take_over``: every undelivered item (a lone process
    restarting: any claim is a dead run's)."""
    free = "" if take_over else " AND (claimed_until IS NULL OR claimed_until <= ?)"
    params: tuple[Any, ...] = () if take_over else (now,)
    rows = conn.execute(
        "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT id FROM"
        f" outbox WHERE sent_at IS NULL AND failed_at IS NULL{free} ORDER BY id LIMIT ? {lock})"
        " RETURNING *",
        (claim.owner, claim.until, *params, limit),
    ).fetchall()
    return sorted(rows, key=lambda r: int(r["id"]))


def rows_statement(
    head: str, rows: Sequence[Sequence[Any]], tail: str = ""
) -> tuple[str, list[Any]]:
    """``head VALUES (…), (…) tail`` and its parameters: one statement for all the rows
    (on PostgreSQL an ``executemany`` sends one command per row)."""
    marks, params = _values(rows)
    return f"{head} VALUES {marks} {tail}".rstrip(), params


def _values(rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """The ``(?, ?), (?, ?)`` of rows of one width, and their parameters in order."""
    row = "(" + ",".join("?" * len(rows[0])) + ")"
    return ",".join([row] * len(rows)), [value for values in rows for value in values]
