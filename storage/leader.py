"""Leadership of a named role among the processes sharing one database.

Some work must be done by one process at a time even when several serve the same
database: Telegram answers 409 to a second ``getUpdates`` poller of the same bot. The
role's leader does it; the others do everything else and compete again every ``retry``
seconds, so that another one takes over within seconds when the leader dies.

On PostgreSQL the lease is a session-level advisory lock held on a DEDICATED connection
(not the engine's, whose thread may be busy for seconds): the server drops it the moment
the process dies, kill -9 included, with no lease time to wait out. A leader whose lease
connection breaks may have lost the lock: it steps down at once and competes again.
On SQLite one process serves a database (the instance lock): it is always the leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from abc import ABC, abstractmethod

import psycopg

from storage.database import Database
from storage.postgres import redact

log = logging.getLogger(__name__)

RETRY_S = 2.0  # how often a non-leader tries again (and a leader checks its connection)
CONNECT_TIMEOUT_S = 5


def role_key(role: str) -> int:
    """The advisory lock key of a role: a stable signed 64-bit hash of its name."""
    digest = hashlib.blake2b(
        role.encode("utf-8"), digest_size=8, person=b"supportbot-lead"
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


class Lease(ABC):
    """Leadership of ``role``: ``start`` competes in the background; ``leading`` and
    ``lost`` are set and cleared as the lease is won and lost."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost.set()

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    @abstractmethod
    async def start(self) -> None:
        """Begin competing (returns at once; the first attempt may already have won)."""

    @abstractmethod
    async def stop(self) -> None:
        """Give the role up (the lock is released) and stop competing."""

    def _took(self) -> None:
        self.lost.clear()
        self.leading.set()

    def _lost(self) -> None:
        self.leading.clear()
        self.lost.set()


class SoleLease(Lease):
    """SQLite: the one process of the database always leads (bot/instance.py)."""

    async def start(self) -> None:
        self._took()

    async def stop(self) -> None:
        self._lost()


class PgLease(Lease):
    """A session advisory lock on a connection of its own, tried every ``retry`` seconds."""

    def __init__(self, url: str, role: str, *, retry: float = RETRY_S) -> None:
        super().__init__(role)
        self.url = url
        self.retry = retry
        self.key = role_key(role)
        self._conn: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._attempt()  # a lone process leads from its start, without a retry's wait
        self._task = asyncio.create_task(self._compete(), name=f"lease:{self.role}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        was_leader = self.is_leader
        await self._close()  # ending the session releases the lock
        self._lost()
        if was_leader:
            log.info("leadership of %s given up", self.role)

    async def _compete(self) -> None:
        while True:
            if self.is_leader:
                await self._watch()
            else:
                await asyncio.sleep(self.retry)
                await self._attempt()

    async def _attempt(self) -> None:
        """One try at the lock, (re)connecting first if needed; a failure is a 'not yet'."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    application_name="supportbot-lease",
                    connect_timeout=CONNECT_TIMEOUT_S,
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=2,
                )
            cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", [self.key])
            row = await cur.fetchone()
        except psycopg.Error as exc:
            log.debug("lease %s: cannot reach %s: %s", self.role, redact(self.url), exc)
            await self._close()
            return
        if row is not None and row[0]:
            self._took()
            log.info("leadership of %s taken (this process does it now)", self.role)

    async def _watch(self) -> None:
        """While leading: wait on the connection (a server that ends the session wakes it
        at once), checking it every ``retry`` seconds; step down as soon as it breaks."""
        conn = self._conn
        try:
            if conn is None or conn.closed:
                raise psycopg.OperationalError("the connection is closed")
            async for _ in conn.notifies(timeout=self.retry):
                pass  # nobody LISTENs here: this only waits on the socket
            await conn.execute("SELECT 1")
        except psycopg.Error as exc:
            self._lost()
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning(
                "leadership of %s lost: its database connection broke (%s)", self.role, reason
            )
            await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()


def lease_for(db: Database, role: str, *, retry: float = RETRY_S) -> Lease:
    """The lease of ``role`` among the processes of ``db``'s database."""
    url = getattr(db, "url", None)
    if db.engine == "postgresql" and isinstance(url, str):
        return PgLease(url, role, retry=retry)
    return SoleLease(role)
