"""The extra PostgreSQL connections of storage/postgres.py: one for reads, one for the
advisory locks that keep a conversation to one process at a time; each on its own
thread, opened when first used and again after the server closed it."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeGuard, TypeVar

import psycopg

from bot.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")
Connect = Callable[[str], psycopg.Connection[Any]]


def key_lock_id(key: str, purpose: str = "step") -> int:
    """A stable signed 64-bit advisory-lock id for ``key`` (the same in every process)."""
    digest = hashlib.blake2b(f"{purpose}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def server_reason(exc: BaseException) -> str:
    """The server's message, first line (never the connection string)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# The server is going away or not there yet: admin_shutdown, crash_shutdown,
# cannot_connect_now (a restart, a failover); class 08 is "connection exception".
_GOING_AWAY = frozenset({"57P01", "57P02", "57P03"})


def unreachable(exc: BaseException) -> TypeGuard[psycopg.OperationalError]:
    """Did a statement fail for want of a server (restarting, failing over, or the
    connection cut), rather than because of the statement? libpq's own failures (refused,
    closed unexpectedly) have no SQLSTATE."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _GOING_AWAY


def unavailable(exc: psycopg.Error) -> DatabaseUnavailableError:
    """What the caller gets for an ``unreachable`` error: ours, with the server's reason
    (libpq names the host and port, never the password)."""
    return DatabaseUnavailableError(f"PostgreSQL unavailable: {server_reason(exc)}")


async def on_thread(thread: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """``fn`` on a connection's own thread; a server out of reach is named as such."""
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(thread, functools.partial(fn, *args))
    except psycopg.OperationalError as exc:
        if unreachable(exc):
            raise unavailable(exc) from exc
        raise


def stale_plan(exc: BaseException) -> TypeGuard[psycopg.errors.FeatureNotSupported]:
    """Did the server refuse a statement prepared before the schema changed under it? A
    newer version's migration, run by another process during a rolling upgrade, added a
    column to a table that a ``SELECT *`` reads: "cached plan must not change result type"
    (SQLSTATE 0A000, for as long as the connection lives). Any 0A000 is taken for it: a
    statement that is really unsupported fails again once its plans are forgotten."""
    return isinstance(exc, psycopg.errors.FeatureNotSupported)


def forget_plans(conn: psycopg.Connection[Any], refused: psycopg.Error) -> None:
    """Drop the connection's prepared statements, on the server and in psycopg's cache
    (which clears itself on seeing ``DEALLOCATE ALL``): the next uses prepare them again."""
    log.info(
        "statement refused (%s): prepared statements dropped, run again", server_reason(refused)
    )
    conn.execute("DEALLOCATE ALL")


# Waiting for a key another process holds: tried again after these pauses (seconds).
KEY_WAIT_FIRST = 0.002
KEY_WAIT_MAX = 0.05


class Session:
    """One more connection on its own thread, connected when first used and again after
    the server closed it (a restarted PostgreSQL)."""

    def __init__(
        self,
        url: str,
        connect: Connect,
        setup: Callable[[psycopg.Connection[Any]], None],
        name: str,
    ) -> None:
        self.url = url
        self.connect = connect
        self.setup = setup
        self.conn: psycopg.Connection[Any] | None = None
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def get(self) -> psycopg.Connection[Any]:
        """The connection (on the session's thread), reconnected if the server dropped it."""
        if self.conn is None or self.conn.closed or self.conn.broken:
            if self.conn is not None:
                log.warning("database connection lost; reconnecting")
                self.conn.close()
            self.conn = self.connect(self.url)
            self.setup(self.conn)
        return self.conn

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await on_thread(self.thread, fn, *args)

    def retried(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """``work`` on the connection; once more on a new one if the server had closed it,
        or with its statements prepared again if the schema changed under them (only for
        statements that are safe to repeat: reads, lock calls)."""
        conn = self.get()
        try:
            return work(conn)
        except psycopg.OperationalError:
            if not (conn.closed or conn.broken):
                raise
        except psycopg.Error as exc:
            if not stale_plan(exc):
                raise
            forget_plans(conn, exc)
            return work(conn)
        return work(self.get())

    def close(self) -> None:
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
