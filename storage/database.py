"""The supportbot database: SQLite (the default, one file) or PostgreSQL, behind one port.

Every storage function is plain synchronous DB-API code run on the engine's own thread:
``write(work)`` runs ``work(conn)`` as one write transaction in one hop (the engine's hot
path: a step of about ten statements), ``read(work)`` the same without a transaction.
``conn`` is a ``sqlite3.Connection`` on SQLite and a sqlite3-like adapter over psycopg 3 on
PostgreSQL (storage/postgres.py): the SQL is written once, with ``?`` placeholders, in the
subset both engines understand. ``transaction()`` gives async callers the same connection,
one hop per statement. All writes are serialized on the one connection, so concurrent
conversations never share an open transaction.

Several processes may share one PostgreSQL database (``shared``): each conversation's step
is held under ``hold_key`` (an advisory lock across processes), and rows that a process
works for a while (outbox items, timers, stored requests) are claimed with ``claim_lock``
(``FOR UPDATE SKIP LOCKED``) and a lease. SQLite is one process (bot/instance.py): no
lock clause, and ``hold_key`` holds nothing.
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
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar, cast

import psycopg

from bot.errors import SchemaError

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


@dataclass(frozen=True, slots=True)
class Follow:
    """A read to send with a key's lock (``Database.hold_key``) where taking the lock is a
    round trip of its own (PostgreSQL): the step's first read comes back with the lock.

    ``sql`` takes one array (``= ANY(?)``): the keys of one batch that follow with the
    same statement share it, and each row goes to the key whose ``value`` it holds in
    ``column``. It runs after the lock is taken, with a snapshot of its own (READ
    COMMITTED): it sees whatever the key's previous holder committed before releasing it.
    """

    sql: str
    column: str
    value: Any


@dataclass(frozen=True, slots=True)
class Later(Generic[T]):
    """What a work of ``write_later`` gives back: its result, read once its transaction
    has committed. On PostgreSQL a group's statements go out as one pipeline, and rows
    read inside a work wait for a round trip of their own; rows read after the COMMIT
    came with it."""

    read: Callable[[], T]


def later(conn: Conn, cursor: Cursor, finish: Callable[[list[Any]], T]) -> Later[T]:
    """``finish(rows)`` of ``cursor``'s rows, after the COMMIT (SQLite reads them now: its
    statements cost no trip, and a cursor is read before its transaction ends)."""
    if is_sqlite(conn):
        rows = cursor.fetchall()
        return Later(lambda: finish(rows))
    return Later(lambda: finish(cursor.fetchall()))


def settled(ok: bool, value: Any) -> tuple[bool, Any]:
    """A work's outcome with its ``Later`` read (on the database thread, after COMMIT)."""
    if not ok or not isinstance(value, Later):
        return ok, value
    try:
        return True, value.read()
    except Exception as exc:
        return False, exc


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
    from storage.sqlite import SqliteDatabase

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
    shared = False  # may other processes work on this database at the same time?
    claim_lock = ""  # what a claim's inner SELECT adds to skip rows another process holds

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
        from storage.sqlite import SqliteDatabase

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

    def hold_key(
        self, key: str, follow: Follow | None = None
    ) -> AbstractAsyncContextManager[list[Any] | None]:
        """Hold ``key`` (a conversation's address) against the other processes sharing
        the database, for one engine step; nothing to hold when the process is alone.
        Gives the rows that ``follow`` read once the key was held, or None if it was not
        sent (here: the caller reads as usual)."""
        return nullcontext()

    # -- the port, the same on both engines

    async def write(self, work: Callable[[Conn], T]) -> T:
        """Run ``work`` as one write transaction in ONE hop to the database thread.

        ``transaction()`` costs a thread hop (and an event-loop wake-up) per statement;
        on the hot path a step has about ten statements, so the engine's steps and the
        outbox's records go through here instead. ``work`` runs on the database thread:
        plain DB-API calls only, no awaiting, nothing touching the event loop, and no
        effect but on the connection: a work whose group failed may run again
        (storage/pg_pipeline.py).
        """
        async with self._write_lock:
            return await self._run(self._write_now, work)

    async def write_later(self, work: Callable[[Conn], Later[T]]) -> T:
        """``write``, for a work whose result is read after the COMMIT (``Later``)."""
        return cast(T, await self.write(work))

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
        if isinstance(result, Later):
            return cast(T, result.read())
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
