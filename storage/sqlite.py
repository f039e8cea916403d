"""The SQLite engine (the default): one file through aiosqlite's thread, WAL, and the
pragmas that keep personal data private (storage/database.py has the port).

Writes are group-committed (storage/group_commit.py): writes queued while one runs share
one transaction, each in its own savepoint.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from bot.errors import DatabaseLockedError, StorageError
from bot.knowledge.text import fold
from storage.database import Conn, migrations, newer_schema, owner_only
from storage.group_commit import GroupCommitted

log = logging.getLogger(__name__)

T = TypeVar("T")


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _fold(value: object) -> str | None:
    return None if value is None else fold(str(value))


class SqliteDatabase(GroupCommitted):
    """One SQLite file through aiosqlite's thread."""

    engine = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        super().__init__(path)
        self.conn = conn

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

    def _in_transaction(self) -> bool:
        return self.conn._conn.in_transaction

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
