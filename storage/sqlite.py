"""The SQLite engine (the default): one file through aiosqlite's thread, WAL, and the
pragmas that keep personal data private (storage/database.py has the port).

Writes are group-committed. Each ``write(work)`` used to take the write lock and one hop
to the database thread for itself; under load the lock was held about four times as long
as the SQL ran (the hop there, then the result's way back through a busy event loop:
``call_soon_threadsafe``, the future's callback, the writer's task resuming, the lock
handed to the next waiter's task, each a pass of the loop), and each Slack message needs
two writes. Now ``write`` queues the work and one flusher task drains the queue: on the
database thread it takes up to ``GROUP_MAX`` queued works in one transaction (BEGIN
IMMEDIATE; a SAVEPOINT per work, released, or rolled back to on that work's exception,
which goes to its caller alone; one COMMIT), hands the outcomes back to the loop in one
wake-up and, without waiting for the loop, goes on with the works queued meanwhile (up to
``HOP_MAX`` per hop, then the lock goes to ``read``/``transaction`` waiters). Each caller
returns only after the COMMIT that holds its work; a failed COMMIT fails the whole group.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from bot.errors import DatabaseLockedError, StorageError
from bot.knowledge.text import fold
from storage.database import Conn, Database, migrations, newer_schema, owner_only

log = logging.getLogger(__name__)

T = TypeVar("T")

Work = Callable[[Conn], Any]
# (True, result) or (False, exception): what one work's caller gets.
Outcome = tuple[bool, Any]

GROUP_MAX = 64  # works in one transaction: a failed COMMIT fails at most this many
HOP_MAX = 256  # works in one hop to the thread before read()/transaction() get the lock
_SAVEPOINT = "supportbot_work"


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _fold(value: object) -> str | None:
    return None if value is None else fold(str(value))


def _settle(futures: list[asyncio.Future[Any]], outcomes: list[Outcome]) -> None:
    """On the event loop: give each caller of a group its own result or exception."""
    for future, (ok, value) in zip(futures, outcomes, strict=True):
        if future.done():  # its caller was cancelled meanwhile
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class SqliteDatabase(Database):
    """One SQLite file through aiosqlite's thread."""

    engine = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        super().__init__(path)
        self.conn = conn
        # Works waiting for the flusher; appended on the loop, taken on the database
        # thread (deque.append and popleft are atomic).
        self._queued: deque[tuple[Work, asyncio.Future[Any]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, path: Path | str, busy_timeout: timedelta) -> SqliteDatabase:
        target = str(path)
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            owner_only(Path(target), create=True)
        try:
            conn = await aiosqlite.connect(target, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {target}: {exc}") from None
        conn.row_factory = sqlite3.Row
        db = cls(conn, target)
        try:
            ms = int(busy_timeout.total_seconds() * 1000)
            await conn.execute(f"PRAGMA busy_timeout = {ms}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute("PRAGMA foreign_keys = ON")
            # Deleted or overwritten personal data is zeroed, not left in free pages.
            await conn.execute("PRAGMA secure_delete = ON")
            # fold(x): lower case, no accents, for searches that ignore both.
            await conn.create_function("fold", 1, _fold, deterministic=True)
            if target != ":memory:":
                for suffix in ("-wal", "-shm", "-journal"):
                    owner_only(Path(target + suffix))
            await db._migrate()
        except sqlite3.OperationalError as exc:
            await conn.close()
            if _is_locked(exc):
                raise DatabaseLockedError(
                    f"database {target} stayed locked by another process for "
                    f"{busy_timeout.total_seconds():g}s"
                ) from None
            raise StorageError(f"cannot use database {target}: {exc}") from None
        except BaseException:
            await conn.close()
            raise
        return db

    @staticmethod
    async def pending(path: Path | str) -> tuple[int, int]:
        """(schema version, latest known) of the file at ``path``, without migrating it."""
        conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = list(await conn.execute_fetchall("PRAGMA user_version"))
        finally:
            await conn.close()
        return int(rows[0][0]), len(migrations())

    async def _migrate(self) -> None:
        known = migrations()
        current = await self.schema_version()
        if current > len(known):
            raise newer_schema(self.path, current, len(known))
        for version, name, sql in known[current:]:
            log.info("migrating %s to schema version %d (%s)", self.path, version, name)
            script = f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
            try:
                await self.conn.executescript(script)
            except sqlite3.Error:
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise

    @property
    def raw(self) -> Conn:
        return cast(Conn, self.conn._conn)

    def _run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Queue a plain function on aiosqlite's one thread (as its own methods do)."""
        on_thread = cast(Callable[..., Awaitable[T]], self.conn._execute)
        return on_thread(fn, *args)

    async def schema_version(self) -> int:
        rows = list(await self.conn.execute_fetchall("PRAGMA user_version"))
        return int(rows[0][0]) if rows else 0

    async def ping(self) -> None:
        try:
            await self.conn.execute_fetchall("SELECT 1")
        except (sqlite3.Error, ValueError) as exc:  # aiosqlite: ValueError once closed
            raise StorageError(f"database {self.path} does not answer: {exc}") from None

    async def close(self) -> None:
        await self.conn.close()

    async def checkpoint(self, attempts: int = 20) -> bool:
        """Copy the WAL into the database file and truncate it to zero bytes.

        False when other connections' readers kept it busy for every attempt (each waits
        up to busy_timeout); the next checkpoint then finishes the job.
        """
        for _ in range(attempts):
            row = await self.fetchone("PRAGMA wal_checkpoint(TRUNCATE)")
            if row is not None and int(row[0]) == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    # -- group commit

    async def write(self, work: Callable[[Conn], T]) -> T:
        """Run ``work`` as one write transaction, committed with the writes queued with it.

        Same contract as ``Database.write``: ``work`` runs on the database thread, its
        changes are stored when this returns, and its exception (its changes undone, the
        others' kept) is raised here. Callers that run concurrently share a COMMIT.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queued.append((work, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="sqlite-group-commit")
        return await future

    async def _flush(self) -> None:
        """Drain the queue, one hop to the thread per turn of the write lock."""
        loop = asyncio.get_running_loop()
        try:
            while self._queued:
                async with self._write_lock:
                    try:
                        await self._run(self._drain, loop)
                    except Exception as exc:  # the hop never ran: the connection is closed
                        self._fail_queued(exc)
        except asyncio.CancelledError:
            # Shutting down: the works the thread has not taken will not run.
            self._fail_queued(None)
            raise
        finally:
            self._flusher = None

    def _fail_queued(self, exc: BaseException | None) -> None:
        """Fail (or, with None, cancel) every work still queued."""
        while self._queued:
            _, future = self._queued.popleft()
            if future.done():
                continue
            if exc is None:
                future.cancel()
            else:
                future.set_exception(exc)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the database thread: commit queued works group after group, FIFO, without
        waiting for the loop between groups (it is told each group's outcomes at once)."""
        taken = 0
        while self._queued and taken < HOP_MAX:
            group: list[tuple[Work, asyncio.Future[Any]]] = []
            while len(group) < GROUP_MAX:
                try:
                    item = self._queued.popleft()
                except IndexError:
                    break
                if not item[1].cancelled():  # cancelled before it ran: it never runs
                    group.append(item)
            if not group:
                continue
            taken += len(group)
            try:
                outcomes = self._commit_group([work for work, _ in group])
            except Exception as exc:  # a ROLLBACK failed too: no caller may hang
                outcomes = [(False, exc)] * len(group)
            try:
                loop.call_soon_threadsafe(_settle, [future for _, future in group], outcomes)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _commit_group(self, works: list[Work]) -> list[Outcome]:
        """The outcome of each work, in order; a transaction SQLite undid by itself (disk
        full, I/O error) fails the works in it, and the rest go on in a new one."""
        outcomes: list[Outcome] = []
        while len(outcomes) < len(works):
            outcomes.extend(self._one_transaction(works[len(outcomes) :]))
        return outcomes

    def _one_transaction(self, works: list[Work]) -> list[Outcome]:
        """Run ``works`` in one transaction, each in its own savepoint; the outcomes of
        the works it got to (all of them unless SQLite rolled the transaction back)."""
        raw = self.conn._conn
        try:
            self._begin()
        except Exception as exc:  # locked by another process past busy_timeout
            return [(False, exc)] * len(works)
        outcomes: list[Outcome] = []
        try:
            for work in works:
                raw.execute(f"SAVEPOINT {_SAVEPOINT}")
                try:
                    result = work(raw)
                except BaseException as exc:
                    if not raw.in_transaction:  # SQLite undid the whole transaction
                        return [*_lost(outcomes, exc), (False, exc)]
                    raw.execute(f"ROLLBACK TO {_SAVEPOINT}")
                    raw.execute(f"RELEASE {_SAVEPOINT}")
                    outcomes.append((False, exc))
                    continue
                raw.execute(f"RELEASE {_SAVEPOINT}")
                outcomes.append((True, result))
        except Exception as exc:  # a savepoint statement failed: nothing is kept
            self._rollback()
            return [(False, exc)] * len(works)
        try:
            self._commit()
        except Exception as exc:  # nothing of the group was stored
            return _lost(outcomes, exc)
        return outcomes

    def _tuples_now(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        cur = self.conn._conn.execute(sql, params)
        cur.row_factory = None
        return list(cur.fetchall())

    def _begin(self) -> None:
        """BEGIN IMMEDIATE (on the database thread); a lock held elsewhere is named."""
        try:
            self.conn._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise DatabaseLockedError(
                    f"database {self.path} is locked by another process"
                ) from None
            raise

    def _commit(self) -> None:
        """COMMIT (on the database thread), or roll back and say why.

        A COMMIT refused by a deferred foreign key (IntegrityError) leaves the
        transaction open: it is rolled back too, so the next BEGIN finds none.
        """
        raw = self.conn._conn
        try:
            raw.execute("COMMIT")
        except sqlite3.Error as exc:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _is_locked(exc):
                raise DatabaseLockedError(f"database {self.path} is locked") from None
            raise

    def _rollback(self) -> None:
        if self.conn._conn.in_transaction:
            self.conn._conn.execute("ROLLBACK")


def _lost(outcomes: list[Outcome], exc: BaseException) -> list[Outcome]:
    """The outcomes of a transaction that was not stored: each success becomes ``exc``."""
    return [(False, exc) if ok else (ok, value) for ok, value in outcomes]
