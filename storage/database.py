"""The supportbot database: SQLite (the default, one file) or PostgreSQL, behind one port.

Every storage function is plain synchronous DB-API code run on the engine's own thread:
``write(work)`` runs ``work(conn)`` as one write transaction in one hop (the engine's hot
path: a step of about ten statements), ``read(work)`` the same without a transaction.
``conn`` is a ``sqlite3.Connection`` on SQLite and a sqlite3-like adapter over psycopg 3 on
PostgreSQL (storage/postgres.py): the SQL is written once, with ``?`` placeholders, in the
subset both engines understand. ``transaction()`` gives async callers the same connection,
one hop per statement. All writes are serialized on the one connection, so concurrent
conversations never share an open transaction.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

import aiosqlite
import psycopg

from bot.errors import DatabaseLockedError, SchemaError, StorageError
from bot.knowledge.text import fold

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a failing statement raises, on either engine.
DB_ERRORS = (sqlite3.Error, psycopg.Error)


class Row(Protocol):
    """A result row: by position (``row[0]``) and by column name (``row["id"]``)."""

    def __getitem__(self, key: int | str, /) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """The part of a DB-API cursor that storage code uses."""

    @property
    def rowcount(self) -> int: ...
    @property
    def description(self) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A synchronous connection, inside a callback of ``write``/``read``: ``sqlite3`` calls."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...


def is_sqlite(conn: Conn) -> bool:
    """For the few SQLite-only statements (``PRAGMA``) that have no PostgreSQL twin."""
    return isinstance(conn, sqlite3.Connection)


def table_columns_of(conn: Conn, table: str) -> list[str]:
    """The columns of ``table`` (none when it does not exist), on either engine."""
    if is_sqlite(conn):
        return [str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")]
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
        (table,),
    )
    return [str(row[0]) for row in rows]


def is_postgresql_url(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


def migrations() -> list[tuple[int, str, str]]:
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


def newer_schema(where: str, current: int, known: int) -> SchemaError:
    """The same refusal on both engines."""
    return SchemaError(
        f"database {where} has schema version {current}, newer than this "
        f"supportbot ({known}): upgrade supportbot"
    )


async def schema_status(target: Path | str) -> tuple[int, int]:
    """(schema version, latest this code knows) of the database at ``target``, read
    without migrating it (``supportbot check``)."""
    if is_postgresql_url(target):
        from storage.postgres import PgDatabase  # psycopg only when used

        return await PgDatabase.pending(str(target))
    return await SqliteDatabase.pending(target)


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


class AsyncCursor:
    """A statement's result, fetched in the same hop as the statement (aiosqlite-shaped)."""

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None = None) -> None:
        self.rows = rows
        self.rowcount = rowcount
        self.lastrowid = lastrowid  # SQLite only: new code says RETURNING id

    async def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[Any]:
        return self.rows

    async def close(self) -> None:
        """Nothing to release: the rows were fetched with the statement."""


class _Pending:
    """``await conn.execute(...)`` or ``async with conn.execute(...) as cur``."""

    def __init__(self, run: Awaitable[AsyncCursor]) -> None:
        self._run = run

    def __await__(self) -> Generator[Any, None, AsyncCursor]:
        return self._run.__await__()

    async def __aenter__(self) -> AsyncCursor:
        return await self._run

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


def _run_statement(conn: Conn, sql: str, params: Any) -> AsyncCursor:
    cur = conn.execute(sql, params)
    rows = cur.fetchall() if cur.description is not None else []
    return AsyncCursor(rows, cur.rowcount, getattr(cur, "lastrowid", None))


def _run_many(conn: Conn, sql: str, params: Iterable[Any]) -> AsyncCursor:
    cur = conn.executemany(sql, list(params))
    return AsyncCursor([], cur.rowcount)


class AsyncConn:
    """The connection inside ``transaction()``: each statement is one hop to the thread."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def execute(self, sql: str, params: Any = ()) -> _Pending:
        return _Pending(self._db._run(_run_statement, self._db.raw, sql, params))

    async def execute_fetchall(self, sql: str, params: Any = ()) -> list[Any]:
        cur = await self._db._run(_run_statement, self._db.raw, sql, params)
        return cur.rows

    async def executemany(self, sql: str, params: Iterable[Any]) -> AsyncCursor:
        return await self._db._run(_run_many, self._db.raw, sql, params)


class Database:
    """An open supportbot database; ``open`` picks the engine from the target."""

    engine = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path  # a file path, or the PostgreSQL URL without its password
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, target: Path | str, busy_timeout: timedelta = timedelta(seconds=10)
    ) -> Database:
        """Open (creating if needed) and migrate the database at ``target``: a SQLite
        file path, or a ``postgresql://`` URL."""
        if is_postgresql_url(target):
            from storage.postgres import PgDatabase  # psycopg only when used

            return await PgDatabase.connect(str(target), busy_timeout)
        return await SqliteDatabase.connect(target, busy_timeout)

    # -- what each engine provides

    @property
    def raw(self) -> Conn:
        raise NotImplementedError

    def _run(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Run a plain function on the engine's one thread."""
        raise NotImplementedError

    def _begin(self) -> None:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _read_now(self, work: Callable[[Conn], T]) -> T:
        return work(self.raw)

    async def schema_version(self) -> int:
        raise NotImplementedError

    async def ping(self) -> None:
        """``SELECT 1``: does the database answer? (``GET /readyz``); StorageError if not."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def checkpoint(self, attempts: int = 20) -> bool:
        """Fold the write-ahead log into the database (SQLite); nothing to do elsewhere."""
        return True

    async def hold_instance_lock(self) -> None:
        """One ``supportbot run`` per database. SQLite: the flock of bot/instance.py,
        taken before the database is opened; PostgreSQL overrides this."""
        return

    # -- the port, the same on both engines

    async def write(self, work: Callable[[Conn], T]) -> T:
        """Run ``work`` as one write transaction in ONE hop to the database thread.

        ``transaction()`` costs a thread hop (and an event-loop wake-up) per statement;
        on the hot path a step has about ten statements, so the engine's steps and the
        outbox's records go through here instead. ``work`` runs on the database thread:
        plain DB-API calls only, no awaiting, nothing touching the event loop.
        """
        async with self._write_lock:
            return await self._run(self._write_now, work)

    async def read(self, work: Callable[[Conn], T]) -> T:
        """Run ``work`` (plain DB-API reads) in one hop to the database thread."""
        async with self._write_lock:  # never inside another caller's open transaction
            return await self._run(self._read_now, work)

    def _write_now(self, work: Callable[[Conn], T]) -> T:
        self._begin()
        try:
            result = work(self.raw)
        except BaseException:
            self._rollback()
            raise
        self._commit()
        return result

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConn]:
        """Run the block as one write transaction (BEGIN … COMMIT)."""
        async with self._write_lock:
            await self._run(self._begin)
            try:
                yield AsyncConn(self)
            except BaseException:
                await self._run(self._rollback)
                raise
            await self._run(self._commit)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a query and fetch its rows in one hop to the database thread."""
        cur = await self._run(self._statement_now, sql, params)
        return cur.rows

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: much cheaper than named rows for big fetches."""
        return await self._run(self._tuples_now, sql, params)

    def _statement_now(self, sql: str, params: Any) -> AsyncCursor:
        """A statement outside ``write``: its own transaction on PostgreSQL (autocommit)."""
        return _run_statement(self.raw, sql, params)

    def _tuples_now(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run a statement for many rows inside its own transaction."""
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)


class SqliteDatabase(Database):
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
        """COMMIT (on the database thread), or roll back and say why."""
        raw = self.conn._conn
        try:
            raw.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raw.execute("ROLLBACK")
            if _is_locked(exc):
                raise DatabaseLockedError(f"database {self.path} is locked") from None
            raise

    def _rollback(self) -> None:
        if self.conn._conn.in_transaction:
            self.conn._conn.execute("ROLLBACK")
