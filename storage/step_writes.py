"""One engine step's writes, on the database thread inside ``Database.write``
(``SqliteStore.apply``): the redelivery check, the conversation's changes, messages,
events, timers, surveys, follow-ups, complaints and the outbox items it queues."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import psycopg

from bot.conversation.model import State
from bot.conversation.store import OutboxItem, Unit
from storage.complaints import write_complaint
from storage.database import Conn, Later
from storage.followups import write_followup_changes
from storage.kb_questions import kb_writes
from storage.outbox_rows import Claim, enqueue, rows_statement
from storage.privacy import erase_customer
from storage.statements import ReturnedId, Statement


def redelivered(exc: BaseException) -> bool:
    """Did a step fail on its inbound key, i.e. was its update stored already? (A step's
    ``INSERT INTO inbound`` has no ``ON CONFLICT``: a redelivery, rare, fails and rolls
    back the whole step, so a fresh update's check costs no round trip of its own.)"""
    if isinstance(exc, sqlite3.IntegrityError):
        return "inbound.dedup_key" in str(exc)
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return exc.diag.table_name == "inbound"
    return False


def apply_step(conn: Conn, unit: Unit, claim: Claim | None = None) -> Later[tuple[OutboxItem, ...]]:
    """One engine step's writes (on the database thread, inside ``Database.write``).

    The writes to a table touched once go out together at the end, the outbox items
    last (``execute_all``: one statement on PostgreSQL; the rows that point at a new
    message name it by ``ReturnedId``); the rare ones run in place."""
    now = unit.now
    batch: list[Statement] = []
    if unit.dedup_key is not None:
        batch.append(("INSERT INTO inbound (dedup_key, at) VALUES (?, ?)", (unit.dedup_key, now)))
    conv = unit.conversation
    conversation_id = conv.id if conv else None
    customer_id = conv.customer_id if conv else unit.customer_id
    if conv is not None and conv.changes:
        names = list(conv.changes)
        sets = ", ".join(f"{name} = ?" for name in names)
        batch.append((
            f"UPDATE conversations SET {sets}, updated_at = ? WHERE id = ?",
            [*(_db(conv.changes[n]) for n in names), now, conv.id],
        ))  # fmt: skip
        conv.changes.clear()
    message_ids: list[int | ReturnedId] = [0] * len(unit.messages)
    if conversation_id is not None and unit.messages:
        batch.append(rows_statement(
            "INSERT INTO messages (conversation_id, direction, author, agent_key, text, media,"
            " created_at)",
            [(conversation_id, m.direction, m.author, m.agent_key, m.text, m.media, now)
             for m in unit.messages],
            "RETURNING id",
        ))  # fmt: skip
        message_ids = [ReturnedId(len(batch) - 1, k) for k in range(len(unit.messages))]
    if unit.events:
        batch.append(rows_statement(
            "INSERT INTO events (conversation_id, customer_id, at, kind, actor, data)",
            [
                (
                    conversation_id,
                    customer_id,
                    now,
                    e.kind,
                    e.actor,
                    json.dumps(e.data, ensure_ascii=False) if e.data else None,
                )
                for e in unit.events
            ],
        ))  # fmt: skip
    if conversation_id is not None:
        if unit.clear_all_timers:
            conn.execute("DELETE FROM timers WHERE conversation_id = ?", (conversation_id,))
        elif unit.timers_clear:
            kinds = sorted(unit.timers_clear)
            conn.execute(
                f"DELETE FROM timers WHERE conversation_id = ? AND kind IN "
                f"({','.join('?' * len(kinds))})",
                (conversation_id, *kinds),
            )
        if unit.timers_set:  # after the DELETE above, which ran in place
            batch.append(rows_statement(
                "INSERT INTO timers (conversation_id, kind, due_at)",
                [(conversation_id, kind, due) for kind, due in unit.timers_set.items()],
                "ON CONFLICT (conversation_id, kind) DO UPDATE SET due_at = excluded.due_at,"
                " claimed_by = NULL, claimed_until = NULL",
            ))  # fmt: skip
        if unit.survey_new is not None:
            cols = {"conversation_id": conversation_id, **unit.survey_new}
            conn.execute(
                f"INSERT INTO surveys ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                list(cols.values()),
            )
        if unit.survey_update:
            names = list(unit.survey_update)
            conn.execute(
                f"UPDATE surveys SET {', '.join(f'{n} = ?' for n in names)} "
                "WHERE conversation_id = ?",
                [*(unit.survey_update[n] for n in names), conversation_id],
            )
    if conversation_id is not None:
        batch += kb_writes(unit, conversation_id, message_ids)
        write_followup_changes(conn, unit, conversation_id, customer_id)
        if unit.complaint is not None:
            write_complaint(conn, conversation_id, unit.complaint, now)
    if customer_id is not None:
        _customer_changes(conn, unit, customer_id)
    items = enqueue(conn, unit.outbox, conversation_id, message_ids, now, claim, batch)
    if unit.customer_forget and customer_id is not None:
        # Last, so that this step's own messages and payloads are erased too.
        erase_customer(conn, customer_id, now, "customer")
    return items


def _customer_changes(conn: Conn, unit: Unit, cid: int) -> None:
    if unit.customer_reachable is not None:
        reachable, reason = unit.customer_reachable
        conn.execute("UPDATE customers SET reachable = ? WHERE id = ?", (int(reachable), cid))
        conn.execute(
            "INSERT INTO customer_reachability (customer_id, at, reachable, reason) "
            "VALUES (?, ?, ?, ?)",
            (cid, unit.now, int(reachable), reason),
        )
    if unit.customer_surveyed:
        conn.execute("UPDATE customers SET last_surveyed_at = ? WHERE id = ?", (unit.now, cid))


def _db(value: Any) -> Any:
    """Enum members are stored as their value."""
    return value.value if isinstance(value, State) else value
