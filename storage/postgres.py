"""PostgreSQL behind the same port as SQLite, through psycopg 3's synchronous connection on
one worker thread (as aiosqlite drives sqlite3): the storage callbacks stay plain DB-API
code, shared by both engines, and an engine step is one hop (bench/pg_driver_bench.py: this
beat asyncpg's one await per statement).

The adapter makes psycopg look like ``sqlite3`` to the storage code: ``?`` placeholders
(translated once per statement text and cached), rows readable as ``row["col"]`` and
``row[0]``, integers for booleans and sums, and the few SQLite functions the SQL uses
(``fold``, ``instr``, ``json_extract``, ``json_remove``, ``json_valid``) created as SQL
functions by the migration. The schema comes from the same storage/migrations files,
translated by ``pg_schema``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.rows import RowMaker, tuple_row

from bot.errors import DatabaseLockedError, DatabaseUnavailableError, SchemaError, StorageError
from storage.database import AsyncCursor, Conn, Cursor, Follow, migrations, newer_schema
from storage.pg_dialect import FUNCTIONS, pg_schema, pg_sql
from storage.pg_keylocks import BatchedKeyLocks
from storage.pg_pipeline import Piped, PipelinedGroups
from storage.pg_sessions import (
    KEY_WAIT_FIRST,
    KEY_WAIT_MAX,
    Session,
    key_lock_id,
    on_thread,
    server_reason,
    unavailable,
    unreachable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# pg_advisory_xact_lock key: "supportbot" migrating.
MIGRATION_LOCK = 0x5355_5050_4D49_47
VERSION_TABLE = "supportbot_schema"


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


# ---------------------------------------------------------------- rows and values


class PgRow:
    """A row read like ``sqlite3.Row``: by position, by column name, ``keys()``."""

    __slots__ = ("_index", "_names", "_values")

    def __init__(self, values: tuple[Any, ...], names: list[str], index: dict[str, int]):
        self._values = values
        self._names = names
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PgRow):
            return self._values == other._values
        return self._values == other

    def __hash__(self) -> int:
        return hash(self._values)

    def __repr__(self) -> str:
        return f"PgRow{self._values!r}"

    def keys(self) -> list[str]:
        return list(self._names)


def _rows(cursor: Any) -> RowMaker[PgRow]:
    """The row maker of one result (psycopg asks for one per statement): its column names
    read from the result itself, and their index shared by every result of the same
    columns (``cursor.description`` built a Column object per column per statement)."""
    result = cursor.pgresult
    fields = tuple(result.fname(i) for i in range(result.nfields)) if result is not None else ()
    names, index = _columns(fields)

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(tuple(values), names, index)

    return make


@functools.lru_cache(maxsize=512)
def _columns(fields: tuple[bytes | None, ...]) -> tuple[list[str], dict[str, int]]:
    names = [(f or b"").decode() for f in fields]
    return names, {name: i for i, name in enumerate(names)}


class _NumericLoader(Loader):
    """``sum()`` of integers and ``avg()`` come back as numbers, not ``Decimal``: an
    integer when whole in the text (as SQLite gives them), else a float."""

    def load(self, data: Buffer) -> int | float:
        text = bytes(data).decode("ascii")
        if "." in text or "e" in text or "N" in text:
            return float(text)
        return int(text)


class _BoolDumper(Dumper):
    """Python booleans stored as 0/1 integers, as ``sqlite3`` does (INTEGER columns)."""

    oid = psycopg.adapters.types["int8"].oid

    def dump(self, obj: Any) -> Buffer:
        return b"1" if obj else b"0"


# ---------------------------------------------------------------- the connection


class PgConn:
    """A psycopg connection that storage callbacks use exactly like ``sqlite3``."""

    def __init__(self, conn: psycopg.Connection[PgRow]) -> None:
        self.pg = conn
        self.pipe: psycopg.Pipeline | None = None  # set while a group is pipelined

    def execute(self, sql: str, parameters: Any = ()) -> Cursor:
        cur = self.pg.execute(pg_sql(sql), list(parameters))
        if self.pipe is not None:
            return cast(Cursor, Piped(cur, self.pipe))
        return cast(Cursor, cur)

    def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        cur = self.pg.cursor()
        cur.executemany(pg_sql(sql), [list(p) for p in parameters])
        return cast(Cursor, cur)


def _connect(url: str, *, prepared: bool = False) -> psycopg.Connection[PgRow]:
    """A connection of ours; ``prepared``: its statements are prepared server-side.

    Prepared, a statement is parsed and planned once per connection, not at each use:
    planning the step's one statement took longer than running it (180 µs to parse and
    230 to plan for 335 to execute, from the server's log at ``load_bench``). The
    write, read and lock connections prepare; the others (migrations, whose scripts hold
    several commands, ``check``, ``db copy``) do not.

    Prepared on their *first* use (``prepare_threshold = 0``), not psycopg's fifth: psycopg
    checks a statement's first result before keeping its name, but takes the fifth use's
    name on trust, so a pipeline that failed before the server prepared it left a name the
    server never had, and the group's works, run again alone, failed with "prepared
    statement does not exist" (tests/test_group_commit_engines.py). A pooler in front of
    the database must keep prepared statements (PgBouncer ≥ 1.21:
    ``max_prepared_statements``)."""
    conn = psycopg.connect(url, autocommit=True, row_factory=_rows, application_name="supportbot")
    conn.prepare_threshold = 0 if prepared else None
    conn.adapters.register_loader("numeric", _NumericLoader)
    conn.adapters.register_dumper(bool, _BoolDumper)
    return conn


def _read_version(conn: psycopg.Connection[PgRow]) -> int:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [VERSION_TABLE]).fetchone()
    if row is None or not row[0]:
        return 0
    found = conn.execute(f"SELECT version FROM {VERSION_TABLE}").fetchone()
    return int(found[0]) if found else 0


class PgDatabase(PipelinedGroups):
    """A PostgreSQL database, shared by any number of processes: the write connection on
    one worker thread (writes are serialized, as on SQLite), reads on a second connection
    (a failing read never aborts another caller's open transaction), and the advisory
    locks that keep a conversation to one process at a time on a third."""

    engine = "postgresql"
    shared = True
    claim_lock = "FOR UPDATE SKIP LOCKED"

    def __init__(self, conn: psycopg.Connection[PgRow], url: str, lock_timeout_ms: int = 0):
        super().__init__(redact(url))
        self.url = url
        self.pg = conn
        self._conn = PgConn(conn)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supportbot-pg")
        self._lock_timeout_ms = lock_timeout_ms
        connect = functools.partial(_connect, prepared=True)
        self._reader = Session(url, connect, self._setup, "supportbot-pg-read")
        self._locker = Session(url, connect, lambda conn: None, "supportbot-pg-lock")
        self._keys = BatchedKeyLocks(self._locker)

    def _setup(self, conn: psycopg.Connection[PgRow]) -> None:
        if self._lock_timeout_ms:
            conn.execute(f"SET lock_timeout = {self._lock_timeout_ms}")

    @classmethod
    async def connect(cls, url: str, busy_timeout: timedelta) -> PgDatabase:
        where = redact(url)
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(None, _connect, url)
        except psycopg.Error as exc:
            raise StorageError(f"cannot open database {where}: {server_reason(exc)}") from None
        db = cls(conn, url, int(busy_timeout.total_seconds() * 1000))
        try:
            await db._run(db._setup, conn)
            await db._run(db._migrate)
            conn.prepare_threshold = 0  # as ``_connect(prepared=True)``, once migrated
        except (psycopg.Error, DatabaseUnavailableError) as exc:
            await db.close()
            raise StorageError(f"cannot use database {where}: {server_reason(exc)}") from None
        except BaseException:
            await db.close()
            raise
        return db

    @staticmethod
    async def pending(url: str) -> tuple[int, int]:
        """(schema version, latest known) of the database at ``url``, without migrating."""

        def read() -> int:
            with _connect(url) as conn:
                return _read_version(conn)

        try:
            current = await asyncio.get_running_loop().run_in_executor(None, read)
        except psycopg.Error as exc:
            raise StorageError(
                f"cannot open database {redact(url)}: {server_reason(exc)}"
            ) from None
        return current, len(migrations())

    def _migrate(self) -> None:
        """Every pending migration in one transaction, under an advisory lock, so that two
        processes starting together do not both migrate (the second waits, then sees the
        new version)."""
        known = migrations()
        with self.pg.transaction():
            self.pg.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
            self.pg.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version BIGINT NOT NULL)")
            current = _read_version(self.pg)
            if current > len(known):
                raise newer_schema(self.path, current, len(known))
            if current == len(known):
                return
            self.pg.execute(FUNCTIONS)
            for version, name, sql in known[current:]:
                log.info("migrating %s to schema version %d (%s)", self.path, version, name)
                try:
                    self.pg.execute(pg_schema(sql))
                except psycopg.Error as exc:
                    raise SchemaError(f"migration {name} failed: {server_reason(exc)}") from None
            self.pg.execute(f"DELETE FROM {VERSION_TABLE}")
            self.pg.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", [len(known)])

    async def hold_instance_lock(self) -> None:
        """Nothing to hold: any number of ``supportbot run`` may share a PostgreSQL
        database (conversations are held per step, rows are claimed with leases)."""
        return

    # -- one conversation, one process at a time

    @asynccontextmanager
    async def hold_key(
        self, key: str, follow: Follow | None = None
    ) -> AsyncIterator[list[Any] | None]:
        """A session advisory lock on ``key`` on the lock connection, for one step.

        ``pg_try_advisory_lock`` tried again after short pauses rather than a blocking
        ``pg_advisory_lock``: a wait must not stop this process's other conversations
        (the lock connection serves them all). The server drops the lock if this process
        dies, even on kill -9. Tries and releases go in batches (storage/pg_keylocks.py)."""
        lock_id = key_lock_id(key)
        pause = KEY_WAIT_FIRST
        while not (taken := await self._keys.try_lock(lock_id, follow))[0]:
            await asyncio.sleep(pause)
            pause = min(pause * 2, KEY_WAIT_MAX)
        try:
            yield taken[1]
        finally:
            self._keys.release(lock_id)

    # -- the write connection

    @property
    def raw(self) -> Conn:
        return self._conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await on_thread(self._thread, fn, *args)

    def _ensure(self) -> None:
        """A new write connection if the server closed the old one (a restarted
        PostgreSQL): the call that met the closed connection failed, the next one works."""
        if self.pg.closed or self.pg.broken:
            log.warning("database connection to %s lost; reconnecting", self.path)
            self.pg.close()
            conn = _connect(self.url, prepared=True)
            self._setup(conn)
            self.pg = conn
            self._conn = PgConn(conn)

    def _failure(self, exc: BaseException) -> BaseException:
        """As on SQLite, a lock held past ``busy_timeout`` (lock_timeout) is named; so is a
        server out of reach (both are waited out: bot/conversation/busy.py)."""
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return DatabaseLockedError(f"database {self.path} is locked")
        if unreachable(exc):
            return unavailable(exc)
        return exc

    def _piping(self, pipe: psycopg.Pipeline | None) -> None:
        self._conn.pipe = pipe

    def _begin(self) -> None:
        self._ensure()
        try:
            self.pg.execute("BEGIN")
        except psycopg.OperationalError:  # closed by the server since: nothing done yet
            if not self.pg.broken:
                raise
            self._ensure()
            self.pg.execute("BEGIN")

    def _commit(self) -> None:
        try:
            self.pg.execute("COMMIT")
        except psycopg.Error:
            self._rollback()
            raise

    def _rollback(self) -> None:
        self._leave_pipeline(quiet=True)
        if self.pg.closed or self.pg.broken:
            return
        if self.pg.info.transaction_status != pq.TransactionStatus.IDLE:
            self.pg.execute("ROLLBACK")

    # -- reads, on their own connection

    async def read(self, work: Callable[[Conn], T]) -> T:
        """Reads on the read connection: never inside another caller's transaction, and
        not waiting for the writes."""
        return await self._reader.run(self._reader.retried, lambda c: work(PgConn(c)))

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._reader.run(self._reader.retried, lambda c: _fetch(c, sql, params))

    async def tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._reader.run(self._reader.retried, lambda c: _tuples(c, sql, params))

    def _statement_now(self, sql: str, params: Any) -> AsyncCursor:
        self._ensure()
        cur = self._conn.execute(sql, params)
        rows = cur.fetchall() if _has_rows(cur) else []
        return AsyncCursor(rows, cur.rowcount)

    def _tuples_now(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        self._ensure()
        return _tuples(self.pg, sql, params)

    async def schema_version(self) -> int:
        return await self._reader.run(self._reader.retried, _read_version)

    async def ping(self) -> None:
        """Both connections answer (each reconnected once if the server had closed it)."""
        try:
            await self._run(self._ping_now)
            await self._reader.run(self._reader.retried, lambda c: c.execute("SELECT 1"))
        except (psycopg.Error, DatabaseUnavailableError, RuntimeError) as exc:
            # (RuntimeError: the executor is shut down, the database closing)
            raise StorageError(f"database {self.path} does not answer: {exc}") from None

    def _ping_now(self) -> None:
        self._ensure()
        try:
            self.pg.execute("SELECT 1")
        except psycopg.OperationalError:
            if not self.pg.broken:
                raise
            self._ensure()
            self.pg.execute("SELECT 1")

    async def close(self) -> None:
        if not self.pg.closed:
            await self._run(self.pg.close)
        self._thread.shutdown(wait=False)
        await self._keys.drain()
        for session in (self._reader, self._locker):
            if session.conn is not None:
                await session.run(session.close)
            session.thread.shutdown(wait=False)


def _fetch(conn: psycopg.Connection[PgRow], sql: str, params: Sequence[Any]) -> list[Any]:
    cur = conn.execute(pg_sql(sql), list(params))
    return cur.fetchall() if _has_rows(cur) else []


def _has_rows(cur: Any) -> bool:
    """Did the statement return rows (a SELECT, a RETURNING)? Asked of the result itself:
    ``cursor.description`` builds a Column object per column each time."""
    result = cur.pgresult
    return result is not None and result.status == pq.ExecStatus.TUPLES_OK


def _tuples(
    conn: psycopg.Connection[PgRow], sql: str, params: Sequence[Any]
) -> list[tuple[Any, ...]]:
    cur = conn.cursor(row_factory=tuple_row)
    cur.execute(pg_sql(sql), list(params))
    return cur.fetchall()
