"""The conversation locks of storage/postgres.py, tried and released in batches.

Each engine step holds a session advisory lock on its conversation so that no other
process steps it meanwhile. One statement and one thread hop per try and per release
made the lock connection a tenth of a busy process's database work; here every try and
release asked while the lock thread was busy goes in its next statement, and a release
is not waited for (the step is done; only another process may need the key, and it
retries). A key released and tried again in one batch is still ours either way: a
session's advisory locks stack.

A try may bring a read (``Follow``: the conversation the step starts by loading), sent in
the same pipeline as the batch's statement: one hop and one round trip for the lock and
the step's first read, where the read on its own connection and thread cost a process on
PostgreSQL more CPU a message than the read itself (README, "Storage rows").
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Any, NamedTuple

import psycopg

from storage.database import Follow
from storage.pg_dialect import pg_sql
from storage.pg_sessions import Session, forget_plans, server_reason, stale_plan

log = logging.getLogger(__name__)

# One statement for a batch: each row a try (true: the lock is ours now) or a release
# (true: it was ours), in the order asked.
_BATCH = (
    "SELECT CASE WHEN t.try = 1 THEN pg_try_advisory_lock(t.id) ELSE pg_advisory_unlock(t.id)"
    " END FROM unnest(%s::bigint[], %s::int[]) WITH ORDINALITY AS t(id, try, n) ORDER BY t.n"
)

Taken = tuple[bool, "list[Any] | None"]  # the lock is ours now; the rows its follow read


class Ask(NamedTuple):
    """A try or a release asked of the lock connection."""

    lock_id: int
    taking: bool  # a try, else a release
    waiter: asyncio.Future[Taken] | None  # None: a release, not waited for
    follow: Follow | None = None


class BatchedKeyLocks:
    """Tries and releases of advisory locks on one connection, batched."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._asked: list[Ask] = []
        self._flusher: asyncio.Task[None] | None = None

    async def try_lock(self, lock_id: int, follow: Follow | None = None) -> Taken:
        """Whether the lock is ours now, and if so the rows ``follow`` read. A caller
        cancelled meanwhile does not leave it taken: a success nobody waits for any more
        is released."""
        waiter: asyncio.Future[Taken] = asyncio.get_running_loop().create_future()
        self._ask(Ask(lock_id, True, waiter, follow))
        return await waiter

    def release(self, lock_id: int) -> None:
        """Release at the next batch (not waited for)."""
        self._ask(Ask(lock_id, False, None))

    def _ask(self, ask: Ask) -> None:
        self._asked.append(ask)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def drain(self) -> None:
        """Until every try and release asked so far has been sent (before closing)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._asked:
            batch, self._asked = self._asked, []
            try:
                answers = await asyncio.shield(self._session.run(self._send, batch))
            except Exception as exc:  # the connection failed twice: the tries fail
                for ask in batch:
                    if ask.waiter is not None and not ask.waiter.done():
                        ask.waiter.set_exception(exc)
                continue
            for ask, taken in zip(batch, answers, strict=True):
                if ask.waiter is None:
                    continue
                if ask.waiter.done():  # cancelled: nobody will release what it got
                    if taken[0]:
                        self._asked.append(Ask(ask.lock_id, False, None))
                else:
                    ask.waiter.set_result(taken)

    def _send(self, batch: list[Ask]) -> list[Taken]:
        """One round trip on the lock connection (its thread)."""
        if all(ask.taking for ask in batch):  # safe to send again
            return self._session.retried(lambda conn: _run(conn, batch))
        try:
            return _run(self._session.get(), batch)
        except psycopg.OperationalError as exc:
            conn = self._session.conn
            if conn is not None and not (conn.closed or conn.broken):
                raise
            # The session is gone, and its locks with it: the releases are done; the
            # tries are asked again on a new connection.
            log.warning("advisory locks: connection lost (%s); trying again", exc)
            tries = [ask for ask in batch if ask.taking]
            again = iter(_run(self._session.get(), tries) if tries else [])
            return [next(again) if ask.taking else (False, None) for ask in batch]


def _run(conn: psycopg.Connection[Any], batch: list[Ask]) -> list[Taken]:
    """The batch's statement, then its follows (one statement each per ``Follow.sql``),
    in one pipeline."""
    ids = [ask.lock_id for ask in batch]
    tries = [int(ask.taking) for ask in batch]  # this adapter dumps bools as ints
    values: dict[tuple[str, str], set[Any]] = defaultdict(set)
    for ask in batch:
        if ask.follow is not None:
            values[ask.follow.sql, ask.follow.column].add(ask.follow.value)
    if not values:
        return [(bool(row[0]), None) for row in conn.execute(_BATCH, [ids, tries]).fetchall()]
    taken: psycopg.Cursor[Any] | None = None
    try:
        with conn.pipeline():
            taken = conn.execute(_BATCH, [ids, tries])
            reads = [(key, conn.execute(pg_sql(key[0]), [list(v)])) for key, v in values.items()]
        found: dict[tuple[str, str, Any], list[Any]] = defaultdict(list)
        for (sql, column), cursor in reads:
            for row in cursor.fetchall():
                found[sql, column, row[column]].append(row)
    except psycopg.Error as exc:
        if taken is None or conn.broken or conn.closed:
            raise  # the session's locks went with the connection: the callers see to it
        return _without_reads(conn, taken, exc)
    return [
        (bool(row[0]), None if f is None else found.get((f.sql, f.column, f.value), []))
        for row, f in zip(taken.fetchall(), (ask.follow for ask in batch), strict=True)
    ]


def _without_reads(
    conn: psycopg.Connection[Any], taken: psycopg.Cursor[Any], failure: psycopg.Error
) -> list[Taken]:
    """A read that failed after the batch's statement ran: the locks it took and gave
    back stand (advisory locks ignore the failed transaction), so its answers are kept
    and the steps read for themselves. Sending the batch again would take each lock twice
    and leave it held after the step. A statement prepared before another process changed
    the schema (a rolling upgrade) is prepared again next time."""
    try:
        rows = taken.fetchall()
    except psycopg.Error:
        raise failure from None  # the batch's statement failed itself: nothing was taken
    log.warning("reads sent with the conversation locks failed (%s)", server_reason(failure))
    if stale_plan(failure):
        forget_plans(conn, failure)
    return [(bool(row[0]), None) for row in rows]
