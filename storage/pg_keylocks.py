"""The conversation locks of storage/postgres.py, tried and released in batches.

Each engine step holds a session advisory lock on its conversation so that no other
process steps it meanwhile. One statement and one thread hop per try and per release
made the lock connection a tenth of a busy process's database work; here every try and
release asked while the lock thread was busy goes in its next statement, and a release
is not waited for (the step is done; only another process may need the key, and it
retries). A key released and tried again in one batch is still ours either way: a
session's advisory locks stack.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from storage.pg_sessions import Session

log = logging.getLogger(__name__)

# One statement for a batch: each row a try (true: the lock is ours now) or a release
# (true: it was ours), in the order asked.
_BATCH = (
    "SELECT CASE WHEN t.try = 1 THEN pg_try_advisory_lock(t.id) ELSE pg_advisory_unlock(t.id)"
    " END FROM unnest(%s::bigint[], %s::int[]) WITH ORDINALITY AS t(id, try, n) ORDER BY t.n"
)

Ask = tuple[int, bool, "asyncio.Future[bool] | None"]  # lock id, try (else release), waiter


class BatchedKeyLocks:
    """Tries and releases of advisory locks on one connection, batched."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._asked: list[Ask] = []
        self._flusher: asyncio.Task[None] | None = None

    async def try_lock(self, lock_id: int) -> bool:
        """Whether the lock is ours now. A caller cancelled meanwhile does not leave it
        taken: a success nobody waits for any more is released."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._ask((lock_id, True, waiter))
        return await waiter

    def release(self, lock_id: int) -> None:
        """Release at the next batch (not waited for)."""
        self._ask((lock_id, False, None))

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
                for _id, _try, waiter in batch:
                    if waiter is not None and not waiter.done():
                        waiter.set_exception(exc)
                continue
            for (lock_id, _try, waiter), got in zip(batch, answers, strict=True):
                if waiter is None:
                    continue
                if waiter.done():  # cancelled: nobody will release what it got
                    if got:
                        self._asked.append((lock_id, False, None))
                else:
                    waiter.set_result(got)

    def _send(self, batch: list[Ask]) -> list[bool]:
        """One statement on the lock connection (its thread)."""
        if all(is_try for _id, is_try, _waiter in batch):  # safe to send again
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
            tries = [ask for ask in batch if ask[1]]
            again = iter(_run(self._session.get(), tries) if tries else [])
            return [next(again) if is_try else False for _id, is_try, _waiter in batch]


def _run(conn: psycopg.Connection[Any], batch: list[Ask]) -> list[bool]:
    ids = [lock_id for lock_id, _try, _waiter in batch]
    tries = [int(is_try) for _id, is_try, _waiter in batch]  # this adapter dumps bools as ints
    rows = conn.execute(_BATCH, [ids, tries]).fetchall()
    return [bool(row[0]) for row in rows]
