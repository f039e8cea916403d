"""One SQLite database through aiosqlite: pragmas, versioned migrations, write transactions.

All writes go through ``transaction()``, which serializes them on one connection
(SQLite has a single writer anyway) so that concurrent conversations never share
an open transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from bot.errors import DatabaseLockedError, SchemaError, StorageError
from bot.knowledge.text import fold

log = logging.getLogger(__name__)

Row = sqlite3.Row
T = TypeVar("T")


def _migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every file in storage/migrations, in order."""
    found = []
    for entry in resources.files("storage.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise SchemaError(f"migration {name} is out of sequence (expected {expected:04d}_…)")
    return found


def owner_only(path: Path, *, create: bool = False) -> None:
    """Make ``path`` readable by its owner only (creating it empty if asked).

    The database holds every customer's messages. SQLite gives the -wal and -shm files
    the database's own mode, so a database created 0600 keeps them private too; files
    left with looser modes by an older version are tightened here.
    """
    if create:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return
        except FileExistsError:
            pass
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except FileNotFoundError:
        pass
    except PermissionError as exc:
        log.warning("cannot make %s private: %s", path, exc.strerror)


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _fold(value: object) -> str | None:
    return None if value is None else fold(str(value))


class Database:
    """An open supportbot database."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path | str, busy_timeout: timedelta = timedelta(seconds=10)
    ) -> Database:
        """Open (creating if needed) and migrate the database at ``path``."""
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

    async def _migrate(self) -> None:
        migrations = _migrations()
        async with self.conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        if current > len(migrations):
            raise SchemaError(
                f"database {self.path} has schema version {current}, newer than this "
                f"supportbot ({len(migrations)}): upgrade supportbot"
            )
        for version, name, sql in migrations[current:]:
            log.info("migrating %s to schema version %d (%s)", self.path, version, name)
            script = f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
            try:
                await self.conn.executescript(script)
            except sqlite3.Error:
                if self.conn.in_transaction:
                    await self.conn.execute("ROLLBACK")
                raise

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def ping(self) -> None:
        """``SELECT 1``: does the database answer? (``GET /readyz``); StorageError if not."""
        try:
            await self.conn.execute_fetchall("SELECT 1")
        except (sqlite3.Error, ValueError) as exc:  # aiosqlite: ValueError once closed
            raise StorageError(f"database {self.path} does not answer: {exc}") from None

    async def close(self) -> None:
        await self.conn.close()

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` as one write transaction in ONE hop to the database thread.

        ``transaction()`` costs a thread hop (and an event-loop wake-up) per statement;
        on the hot path a step has about ten statements, so the engine's steps and the
        outbox's records go through here instead. ``work`` runs on aiosqlite's thread:
        plain ``sqlite3`` calls only, no awaiting, nothing touching the event loop.
        """
        async with self._write_lock:
            return await self._on_thread(self._write_now, work)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (plain ``sqlite3`` reads) in one hop to the database thread."""
        async with self._write_lock:  # never inside another caller's open transaction
            return await self._on_thread(work, self.conn._conn)

    async def checkpoint(self, attempts: int = 20) -> bool:
        """Copy the WAL into the database file and truncate it to zero bytes.

        False when other connections' readers kept it busy for every attempt (each waits
        up to busy_timeout); the next checkpoint then finishes the job.
        """
        for _ in range(attempts):
            async with self._write_lock:
                row = await self.fetchone("PRAGMA wal_checkpoint(TRUNCATE)")
            if row is not None and int(row[0]) == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    def _on_thread(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Queue a plain function on aiosqlite's one thread (as its own methods do)."""
        on_thread = cast(Callable[..., Awaitable[T]], self.conn._execute)
        return on_thread(fn, *args)

    def _write_now(self, work: Callable[[sqlite3.Connection], T]) -> T:
        raw = self.conn._conn
        self._begin()
        try:
            result = work(raw)
        except BaseException:
            raw.execute("ROLLBACK")
            raise
        self._commit()
        return result

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
        """COMMIT (on the database thread), or roll back and say why."""
        raw = self.conn._conn
        try:
            raw.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raw.execute("ROLLBACK")
            if _is_locked(exc):
                raise DatabaseLockedError(f"database {self.path} is locked") from None
            raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run the block as one write transaction (BEGIN IMMEDIATE … COMMIT)."""
        async with self._write_lock:
            await self._on_thread(self._begin)
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            await self._on_thread(self._commit)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and fetch its rows in one hop to the database thread."""
        return list(await self.conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.conn.execute_fetchall(sql, params)
        for row in rows:
            return row
        return None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run a statement for many rows inside its own transaction."""
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)
