"""The inbound queue: what a platform POSTed to us, stored before we answer 200.

Telegram (webhook) and Slack (Events API, interactivity) consider an update delivered
once we acknowledge it: an update acknowledged but only held in memory is lost when the
process dies. So the raw request is written here first, acknowledged, then handled, and
marked handled when its engine step is done. A row nobody finished (the process was
killed, or handling failed) is claimed again once its lease has run out, by whichever
process sweeps first; the engine's inbound keys make a second pass a no-op.

The claim is one ``UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING``: on an engine with
row locks the inner SELECT takes ``FOR UPDATE SKIP LOCKED`` (``claim_lock``), so several
processes sweeping at once split the rows instead of taking the same ones.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from bot.clock import Clock, to_ms
from storage.database import Conn, Database, Row

log = logging.getLogger(__name__)

LEASE = timedelta(seconds=30)  # a step takes milliseconds; a lease this long is a dead process
MAX_ATTEMPTS = 5  # an update that failed this often is given up (logged), not retried forever
_COLUMNS = "id, channel, delivery_key, body, headers, received_at, attempts"


@dataclass(frozen=True, slots=True)
class StoredDelivery:
    """One stored request, as a transport needs it to handle (or replay) it."""

    id: int
    channel: str
    key: str
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)
    received_at: int = 0
    attempts: int = 0


def process_owner() -> str:
    """Who claims rows: this host, this process, and a nonce (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def _delivery(row: Row) -> StoredDelivery:
    headers = json.loads(row["headers"]) if row["headers"] else {}
    return StoredDelivery(
        id=row["id"],
        channel=row["channel"],
        key=row["delivery_key"],
        body=row["body"],
        headers=headers,
        received_at=row["received_at"],
        attempts=row["attempts"],
    )


class InboundQueue:
    """Store, claim, finish and prune received requests, with leases from the app's clock."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        owner: str | None = None,
        lease: timedelta = LEASE,
        max_attempts: int = MAX_ATTEMPTS,
        claim_lock: str = "",
    ) -> None:
        self.db = db
        self.clock = clock
        self.owner = owner or process_owner()
        self.lease_ms = int(lease.total_seconds() * 1000)
        self.max_attempts = max_attempts
        self.claim_lock = claim_lock  # "FOR UPDATE SKIP LOCKED" where rows can be locked

    def _now(self) -> int:
        return to_ms(self.clock.now())

    async def store(
        self,
        channel: str,
        key: str,
        body: str,
        headers: Mapping[str, str] | None = None,
    ) -> StoredDelivery | None:
        """Write a received request, claimed by this process; None when ``key`` was stored
        already (a redelivery: acknowledge it, whoever has the first copy handles it)."""
        now = self._now()
        kept = json.dumps(dict(headers)) if headers else None
        params = (channel, key, body, kept, now, self.owner, now + self.lease_ms)

        def insert(conn: Conn) -> int | None:
            rows = conn.execute(
                "INSERT INTO inbound_queue (channel, delivery_key, body, headers, received_at,"
                " attempts, claimed_by, claimed_until) VALUES (?, ?, ?, ?, ?, 1, ?, ?)"
                " ON CONFLICT (delivery_key) DO NOTHING RETURNING id",
                params,
            ).fetchall()
            return int(rows[0][0]) if rows else None

        row_id = await self.db.write(insert)
        if row_id is None:
            log.debug("inbound %s stored already: acknowledged again", key)
            return None
        return StoredDelivery(row_id, channel, key, body, dict(headers or {}), now, 1)

    async def claim(
        self, channels: Collection[str], limit: int = 100, *, take_over: bool = False
    ) -> list[StoredDelivery]:
        """Rows of ``channels`` nobody finished whose lease ran out, now leased to this
        process (oldest first). ``take_over``: every unfinished row, leases ignored — only
        for a process that knows it is alone on the database (SQLite's instance lock).

        Rows that already failed ``max_attempts`` times are given up instead (logged)."""
        if not channels:
            return []
        now = self._now()
        until = now + self.lease_ms
        marks = ", ".join("?" for _ in channels)
        free = f"handled_at IS NULL AND channel IN ({marks})"
        free_params: tuple[str | int, ...] = tuple(channels)
        if not take_over:
            free, free_params = f"{free} AND claimed_until <= ?", (*free_params, now)

        def work(conn: Conn) -> tuple[list[Row], list[Row]]:
            spent = conn.execute(
                "UPDATE inbound_queue SET handled_at = ?, body = '', headers = NULL,"
                " claimed_by = NULL, claimed_until = NULL, error = ?"
                f" WHERE {free} AND attempts >= ? RETURNING id, delivery_key, error",
                (now, f"given up after {self.max_attempts} attempts", *free_params,
                 self.max_attempts),
            ).fetchall()  # fmt: skip
            taken = conn.execute(
                "UPDATE inbound_queue SET claimed_by = ?, claimed_until = ?,"
                " attempts = attempts + 1 WHERE id IN (SELECT id FROM inbound_queue"
                f" WHERE {free} ORDER BY id LIMIT ? {self.claim_lock})"
                f" RETURNING {_COLUMNS}",
                (self.owner, until, *free_params, limit),
            ).fetchall()
            return spent, taken

        spent, taken = await self.db.write(work)
        for row in spent:
            log.warning("inbound %s: %s; dropped", row["delivery_key"], row["error"])
        return sorted((_delivery(r) for r in taken), key=lambda d: d.id)

    async def handled(self, delivery_id: int) -> None:
        """The request was handled: keep its key (redeliveries stay acknowledged-only),
        drop its body (the conversation keeps what matters; no second copy of anyone's
        words lingers here)."""
        now = self._now()
        await self.db.write(
            lambda conn: conn.execute(
                "UPDATE inbound_queue SET handled_at = ?, body = '', headers = NULL,"
                " claimed_by = NULL, claimed_until = NULL, error = NULL WHERE id = ?",
                (now, delivery_id),
            )
        )

    async def failed(self, delivery_id: int, error: str) -> None:
        """Handling failed: the lease is left to run out, then a sweep tries again."""
        await self.db.write(
            lambda conn: conn.execute(
                "UPDATE inbound_queue SET error = ? WHERE id = ? AND handled_at IS NULL",
                (error[:500], delivery_id),
            )
        )

    async def prune(self, before: int) -> int:
        """Delete handled rows older than ``before`` (ms); unfinished rows are kept."""

        def delete(conn: Conn) -> int:
            cur = conn.execute(
                "DELETE FROM inbound_queue WHERE handled_at IS NOT NULL AND handled_at < ?",
                (before,),
            )
            return int(cur.rowcount)

        return await self.db.write(delete)

    async def unfinished(self) -> int:
        """How many stored requests are not handled yet (operations, tests)."""
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM inbound_queue WHERE handled_at IS NULL", ()
        )
        return int(row[0]) if row else 0
