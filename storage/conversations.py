"""SQLite implementation of ``bot.conversation.store.Store``: conversations, messages, events,
outbox.

Each engine step is one ``apply`` transaction, redelivery check included; the hot
path (a customer message answered by the bot) costs one read and one write
transaction, and on PostgreSQL the read comes back with the conversation's lock.
"""

from __future__ import annotations

import json
from asyncio import current_task
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from bot.clock import Clock, SystemClock, to_ms
from bot.conversation.model import Address, Customer, State, TranscriptLine
from bot.conversation.store import (
    Applied,
    ComplaintRecord,
    ConversationRecord,
    Delivery,
    DueTimer,
    KbQuestionRecord,
    OutboxItem,
    SurveyRecord,
    Unit,
)
from storage.complaints import load_complaint
from storage.customer_history import customer_context as _customer_context
from storage.database import DB_ERRORS, Conn, Database, Follow, Later, Row
from storage.followups import SqliteFollowups
from storage.inbound_queue import process_owner
from storage.kb_questions import latest_kb_question
from storage.outbox_rows import (
    Claim,
    claim_item,
    claim_pending,
    outbox_item,
    record_sent,
)
from storage.pg_sessions import key_lock_id
from storage.routing import RoutingQueries
from storage.step_writes import apply_step, redelivered

_SELECT = """
SELECT c.*, cu.key AS customer_key, cu.name AS customer_name,
       cu.reachable AS customer_reachable, cu.last_surveyed_at AS last_surveyed_at
FROM conversations c JOIN customers cu ON cu.id = c.customer_id
"""

# The open conversations at some addresses, and conversations by id (``Follow``s: the
# reads that come back with a conversation's key on PostgreSQL).
_OPEN_AT_ANY = _SELECT + "WHERE c.address_key = ANY(?) AND c.state <> 'closed' ORDER BY c.id"
_IDS_ANY = _SELECT + "WHERE c.id = ANY(?)"
# What the held key brought back: (store, task, what, rows). A context variable, so that
# steps of other conversations never see it; and tied to the task, since tasks started
# inside the step inherit the variable (and may run after the step's writes).
_HELD: ContextVar[tuple[SqliteStore, object, tuple[str, object], list[Row]] | None] = ContextVar(
    "supportbot_held_read", default=None
)

# How long a claimed outbox item or timer stays this process's without being renewed: a
# delivery attempt takes seconds; a lease this long run out is a dead process.
CLAIM_LEASE = timedelta(seconds=60)


def _record(row: Row) -> ConversationRecord:
    return ConversationRecord(
        id=row["id"],
        customer_id=row["customer_id"],
        customer_key=row["customer_key"],
        customer_name=row["customer_name"],
        customer_reachable=bool(row["customer_reachable"]),
        last_surveyed_at=row["last_surveyed_at"],
        channel=row["channel"],
        address=Address(row["channel"], row["chat_id"], row["thread_id"]),
        language=row["language"],
        state=State(row["state"]),
        started_at=row["started_at"],
        awaiting=row["awaiting"],
        misses=row["misses"],
        topic=row["topic"],
        kb_entry=row["kb_entry"],
        first_response_at=row["first_response_at"],
        handed_off_at=row["handed_off_at"],
        handoff_reason=row["handoff_reason"],
        agent_key=row["agent_key"],
        agent_name=row["agent_name"],
        first_agent_response_at=row["first_agent_response_at"],
        last_customer_at=row["last_customer_at"],
        pending_since=row["pending_since"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        tag=row["tag"],
        abandoned_at=row["abandoned_at"],
        abandon_reason=row["abandon_reason"],
        closed_at=row["closed_at"],
        close_reason=row["close_reason"],
        desk=row["desk"],
        desk_thread=row["desk_thread"],
        desk_header=row["desk_header"],
        touchpoint=row["touchpoint"],
        stage=row["stage"],
        customer_context=row["customer_context"],
    )


class SqliteStore(RoutingQueries):
    """Conversation storage on one ``Database`` (SQLite or PostgreSQL: the name is old).

    On a database other processes share, outbox items and timers are claimed by this
    store's ``owner`` with a lease of ``lease`` from ``clock``; see storage/outbox_rows.py.
    """

    def __init__(
        self,
        db: Database,
        *,
        clock: Clock | None = None,
        owner: str | None = None,
        lease: timedelta = CLAIM_LEASE,
    ) -> None:
        self.db = db
        self.followups = SqliteFollowups(db)
        self.clock: Clock = clock or SystemClock()
        self.owner = owner or process_owner()
        self.lease_ms = int(lease.total_seconds() * 1000)

    @property
    def shared(self) -> bool:
        """Do other processes work on this database (so deliveries are claimed)?"""
        return self.db.shared

    def _claim(self, now: int | None = None) -> Claim:
        until = (now if now is not None else self._now()) + self.lease_ms
        return Claim(self.owner, until, self.db.shared)

    def _now(self) -> int:
        return to_ms(self.clock.now())

    @asynccontextmanager
    async def hold(
        self, key: str, *, load_open: bool = False, load_id: int | None = None
    ) -> AsyncIterator[None]:
        """Hold a conversation's address against the other processes for one step.

        ``load_open`` / ``load_id``: the step begins with ``load_open(key)`` /
        ``load(load_id)``. Where holding the key is a round trip (PostgreSQL), that
        conversation comes back with it, and that first read takes it instead of reading
        again (the key held, nobody else changed it since)."""
        wanted: tuple[str, object]
        if load_open:
            wanted, follow = ("open", key), Follow(_OPEN_AT_ANY, "address_key", key)
        elif load_id is not None:
            wanted, follow = ("id", load_id), Follow(_IDS_ANY, "id", load_id)
        else:
            async with self.db.hold_key(key):
                yield
            return
        async with self.db.hold_key(key, follow) as rows:
            token = _HELD.set(None if rows is None else (self, current_task(), wanted, rows))
            try:
                yield
            finally:
                _HELD.reset(token)

    def _held(self, wanted: tuple[str, object]) -> list[Row] | None:
        """The rows read with this task's key, if they are what the step asks first."""
        held = _HELD.get()
        if held is None or held[:3] != (self, current_task(), wanted):
            return None
        _HELD.set(None)  # the first read only: the step may write, then read again
        return held[3]

    async def load_open(self, address_key: str) -> ConversationRecord | None:
        if (held := self._held(("open", address_key))) is not None:
            return _record(held[0]) if held else None
        row = await self.db.fetchone(
            _SELECT + "WHERE c.address_key = ? AND c.state <> 'closed'", (address_key,)
        )
        return _record(row) if row else None

    async def load(self, conversation_id: int) -> ConversationRecord | None:
        if (held := self._held(("id", conversation_id))) is not None:
            return _record(held[0]) if held else None
        row = await self.db.fetchone(_SELECT + "WHERE c.id = ?", (conversation_id,))
        return _record(row) if row else None

    async def load_by_thread(self, desk: str, thread: str) -> ConversationRecord | None:
        row = await self.db.fetchone(
            _SELECT + "WHERE c.desk = ? AND c.desk_thread = ? ORDER BY c.id DESC LIMIT 1",
            (desk, thread),
        )
        return _record(row) if row else None

    async def open_for_customer(self, customer_key: str) -> list[ConversationRecord]:
        rows = await self.db.fetchall(
            _SELECT + "WHERE cu.key = ? AND c.state <> 'closed' ORDER BY c.id", (customer_key,)
        )
        return [_record(row) for row in rows]

    async def open_conversation(
        self, customer: Customer, address: Address, language: str, now: int
    ) -> ConversationRecord:
        async with self.db.transaction() as conn:
            if self.db.shared:  # two processes opening together: the second waits here
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(?)", (key_lock_id(address.key, "open"),)
                )
            existing = await conn.execute_fetchall(
                _SELECT + "WHERE c.address_key = ? AND c.state <> 'closed' ORDER BY c.id",
                (address.key,),
            )
            if existing:  # opened meanwhile (by another process): that one
                return _record(existing[0])
            cust_rows = await conn.execute_fetchall(
                """INSERT INTO customers (key, channel, user_id, name, language, first_seen_at)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT(key) DO UPDATE SET
                     name = CASE WHEN excluded.name <> '' THEN excluded.name
                                 ELSE customers.name END,
                     language = excluded.language
                   RETURNING id, name, reachable, last_surveyed_at""",
                (customer.key, customer.channel, customer.user_id, customer.name, language, now),
            )
            cust = next(iter(cust_rows))
            conv_rows = await conn.execute_fetchall(
                """INSERT INTO conversations (customer_id, channel, address_key, chat_id,
                     thread_id, language, state, started_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, 'bot', ?, ?) RETURNING id""",
                (
                    cust["id"],
                    address.channel,
                    address.key,
                    address.chat_id,
                    address.thread_id,
                    language,
                    now,
                    now,
                ),
            )
            conv = next(iter(conv_rows))
            await conn.execute(
                "INSERT INTO events (conversation_id, customer_id, at, kind, actor) "
                "VALUES (?, ?, ?, 'conversation_started', 'customer')",
                (conv["id"], cust["id"], now),
            )
        return ConversationRecord(
            id=conv["id"],
            customer_id=cust["id"],
            customer_key=customer.key,
            customer_name=cust["name"],
            customer_reachable=bool(cust["reachable"]),
            last_surveyed_at=cust["last_surveyed_at"],
            channel=address.channel,
            address=address,
            language=language,
            state=State.BOT,
            started_at=now,
        )

    async def customer_record(self, key: str) -> tuple[int, bool] | None:
        row = await self.db.fetchone("SELECT id, reachable FROM customers WHERE key = ?", (key,))
        return (int(row["id"]), bool(row["reachable"])) if row else None

    async def seen(self, dedup_key: str) -> bool:
        row = await self.db.fetchone("SELECT 1 FROM inbound WHERE dedup_key = ?", (dedup_key,))
        return row is not None

    async def apply(self, unit: Unit) -> Applied:
        try:
            claim = self._claim(unit.now)
            items = await self.db.write_later(lambda conn: apply_step(conn, unit, claim))
        except DB_ERRORS as exc:
            if redelivered(exc):
                return Applied(applied=False)
            raise
        return Applied(applied=True, outbox=items)

    async def transcript(self, conversation_id: int, limit: int) -> list[TranscriptLine]:
        lines = await transcript_lines(self.db, conversation_id, limit)
        return [TranscriptLine(author=a, name=n, text=t) for a, n, t, _at in lines]

    async def media_messages(self, conversation_id: int) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT media FROM messages WHERE conversation_id = ? AND author = 'customer' "
            "AND media IS NOT NULL ORDER BY id",
            (conversation_id,),
        )
        return [str(row["media"]) for row in rows]

    async def previous_thread(self, customer_id: int, desk: str) -> str | None:
        row = await self.db.fetchone(
            "SELECT desk_thread FROM conversations WHERE customer_id = ? AND desk = ? "
            "AND desk_thread IS NOT NULL ORDER BY id DESC LIMIT 1",
            (customer_id, desk),
        )
        return str(row["desk_thread"]) if row else None

    async def customer_context(self, customer_id: int, before: int) -> dict[str, Any] | None:
        return await _customer_context(self.db, customer_id, before)

    async def survey(self, conversation_id: int) -> SurveyRecord | None:
        row = await self.db.fetchone(
            "SELECT id, conversation_id, sent_at, nps, csat, comment, completed_at, expired_at "
            "FROM surveys WHERE conversation_id = ?",
            (conversation_id,),
        )
        return SurveyRecord(*row) if row else None

    async def kb_question(self, conversation_id: int) -> KbQuestionRecord | None:
        return await latest_kb_question(self.db, conversation_id)

    async def due_timers(self, now: int, limit: int) -> list[DueTimer]:
        """Due timers, claimed by this process (with a lease, so that another process
        fires them if this one dies first); those another process holds are skipped. A
        lone process (SQLite) takes every due timer: any other claim is a dead process's
        (killed between claiming a timer and firing it), not one to wait a lease for."""
        claim, lock = self._claim(now), self.db.claim_lock
        free = ""
        params: tuple[str | int, ...] = (claim.owner, claim.until, now)
        if self.db.shared:
            free = " AND (claimed_until IS NULL OR claimed_until <= ? OR claimed_by = ?)"
            params = (*params, now, claim.owner)

        def work(conn: Conn) -> list[Row]:
            return conn.execute(
                "UPDATE timers SET claimed_by = ?, claimed_until = ?"
                " WHERE (conversation_id, kind) IN (SELECT conversation_id, kind FROM timers"
                f" WHERE due_at <= ?{free} ORDER BY due_at LIMIT ? {lock})"
                " RETURNING conversation_id, kind, due_at",
                (*params, limit),
            ).fetchall()

        rows = await self.db.write(work)
        due = [DueTimer(r["conversation_id"], r["kind"], r["due_at"]) for r in rows]
        return sorted(due, key=lambda t: (t.due_at, t.conversation_id, t.kind))

    async def complaint(self, conversation_id: int) -> ComplaintRecord | None:
        return await load_complaint(self.db, conversation_id)

    async def pending_outbox(self, *, take_over: bool | None = None) -> list[OutboxItem]:
        """Undelivered items this process may deliver, claimed: those nobody holds, and
        its own. A lone process (SQLite) takes over every one (``take_over``)."""
        now = self._now()
        claim, lock = self._claim(now), self.db.claim_lock
        alone = not self.db.shared if take_over is None else take_over
        rows = await self.db.write(
            lambda conn: claim_pending(conn, claim, now, lock, take_over=alone)
        )
        return [outbox_item(r) for r in rows]

    async def claim_outbox(self, item: OutboxItem, now: int) -> str:
        """Before a delivery attempt: MINE (deliver), DONE (drop) or WAIT (released: an
        earlier item of its lane is another process's); see ``claim_item``."""
        claim, lock = self._claim(now), self.db.claim_lock
        return await self.db.write(
            lambda conn: claim_item(conn, item.id, item.lane, claim, now, lock)
        )

    async def outbox_sent(
        self, item: OutboxItem, now: int, effects: Delivery
    ) -> tuple[OutboxItem, ...]:
        return await self.db.write_later(self.sent_record(item, now, effects))

    def sent_record(
        self, item: OutboxItem, now: int, effects: Delivery
    ) -> Callable[[Conn], Later[tuple[OutboxItem, ...]]]:
        claim = self._claim(now)
        return lambda conn: record_sent(conn, item, now, effects, claim)

    async def outbox_retry(self, item: OutboxItem, next_attempt_at: int, error: str) -> None:
        """The lease runs to the next attempt and beyond: a waiting item stays ours."""
        until = next_attempt_at + self.lease_ms
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?, error = ?,"
                " claimed_until = CASE WHEN claimed_by = ? THEN ? ELSE claimed_until END"
                " WHERE id = ?",
                (next_attempt_at, error[:500], self.owner, until, item.id),
            )

    async def outbox_failed(self, item: OutboxItem, now: int, error: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, failed_at = ?, error = ? WHERE id = ?",
                (now, error[:500], item.id),
            )

    async def prune_inbound(self, before: int) -> int:
        async with self.db.transaction() as conn:
            cur = await conn.execute("DELETE FROM inbound WHERE at < ?", (before,))
            return int(cur.rowcount)


async def transcript_lines(
    db: Database, conversation_id: int, limit: int
) -> list[tuple[str, str, str, int]]:
    """The last ``limit`` lines of a conversation, oldest first: (author, name, text, at ms);
    an attachment is shown as its kind before the caption."""
    rows = await db.fetchall(
        """SELECT m.author, m.text, m.media, m.agent_key, m.created_at, cu.name AS customer
           FROM messages m JOIN conversations c ON c.id = m.conversation_id
           JOIN customers cu ON cu.id = c.customer_id
           WHERE m.conversation_id = ? ORDER BY m.id DESC LIMIT ?""",
        (conversation_id, limit),
    )
    lines = []
    for row in reversed(rows):
        text = row["text"]
        if row["media"]:
            kind = json.loads(row["media"]).get("kind", "file")
            text = f"[{kind}] {text}".strip()
        name = row["customer"] if row["author"] == "customer" else (row["agent_key"] or "")
        lines.append((row["author"], name, text, row["created_at"]))
    return lines
