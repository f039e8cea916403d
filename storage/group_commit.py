"""Group commit, for both engines: writes queued while one runs share one transaction.

Each ``write(work)`` used to take the write lock and one hop to the database thread for
itself; under load the lock was held several times as long as the SQL ran (the hop there,
then the result's way back through a busy event loop: ``call_soon_threadsafe``, the
future's callback, the writer's task resuming, the lock handed to the next waiter's task,
each a pass of the loop), and a customer message needs two or three writes. On PostgreSQL
every COMMIT is also a round trip to the server (and a WAL flush).

Now ``write`` queues the work and one flusher task drains the queue: on the database
thread it takes up to ``GROUP_MAX`` queued works in one transaction (BEGIN; a SAVEPOINT
per work, released, or rolled back to on that work's exception, which goes to its caller
alone; one COMMIT), hands the outcomes back to the loop in one wake-up and, without
waiting for the loop, goes on with the works queued meanwhile (up to ``HOP_MAX`` per hop,
then the lock goes to ``read``/``transaction`` waiters). Each caller returns only after
the COMMIT that holds its work; a failed COMMIT fails the whole group. A lone work needs
no savepoint: its exception rolls the transaction back.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from storage.database import Conn, Database, settled

log = logging.getLogger(__name__)

T = TypeVar("T")

Work = Callable[[Conn], Any]
# (True, result) or (False, exception): what one work's caller gets.
Outcome = tuple[bool, Any]

GROUP_MAX = 64  # works in one transaction: a failed COMMIT fails at most this many
HOP_MAX = 256  # works in one hop to the thread before read()/transaction() get the lock
SAVEPOINT = "supportbot_work"


def _settle(futures: list[asyncio.Future[Any]], outcomes: list[Outcome]) -> None:
    """On the event loop: give each caller of a group its own result or exception."""
    for future, (ok, value) in zip(futures, outcomes, strict=True):
        if future.done():  # its caller was cancelled meanwhile
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _lost(outcomes: list[Outcome], exc: BaseException) -> list[Outcome]:
    """The outcomes of a transaction that was not stored: each success becomes ``exc``."""
    return [(False, exc) if ok else (ok, value) for ok, value in outcomes]


class GroupCommitted(Database):
    """A database whose ``write`` is group-committed, a savepoint per work. The engine
    provides ``_begin``, ``_commit``, ``_rollback``, ``raw`` and ``_in_transaction``, or
    runs a group its own way (``_one_transaction``, ``_lone``: storage/pg_pipeline.py)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        # Works waiting for the flusher; appended on the loop, taken on the database
        # thread (deque.append and popleft are atomic).
        self._queued: deque[tuple[Work, asyncio.Future[Any]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    # -- what the engine may refine

    def _in_transaction(self) -> bool:
        """Is the transaction still open (not undone whole by the engine)?"""
        raise NotImplementedError

    def _begin_group(self) -> None:
        """Open the transaction of a group of works."""
        self._begin()

    def _failure(self, exc: BaseException) -> BaseException:
        """The exception a work's caller gets for ``exc`` (an engine may name it better)."""
        return exc

    # -- the port

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
            self._flusher = loop.create_task(self._flush(), name="group-commit")
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
                outcomes = [(False, self._failure(exc))] * len(group)
            try:
                loop.call_soon_threadsafe(_settle, [future for _, future in group], outcomes)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _commit_group(self, works: list[Work]) -> list[Outcome]:
        """The outcome of each work, in order; a transaction the engine undid by itself
        (disk full, I/O error, connection lost) fails the works in it, and the rest go on
        in a new one."""
        outcomes: list[Outcome] = []
        while len(outcomes) < len(works):
            rest = works[len(outcomes) :]
            done = self._lone(rest[0]) if len(rest) == 1 else self._one_transaction(rest)
            outcomes.extend(done)
        return [settled(ok, value) for ok, value in outcomes]

    def _lone(self, work: Work) -> list[Outcome]:
        """One work alone: its own transaction, no savepoint."""
        try:
            self._begin()
        except Exception as exc:  # locked by another process past busy_timeout
            return [(False, self._failure(exc))]
        try:
            result = work(self.raw)
        except BaseException as exc:
            self._rollback()
            return [(False, self._failure(exc))]
        try:
            self._commit()
        except Exception as exc:
            return [(False, self._failure(exc))]
        return [(True, result)]

    def _one_transaction(self, works: list[Work]) -> list[Outcome]:
        """Run ``works`` in one transaction, each in its own savepoint; the outcomes of
        the works it got to (all of them unless the engine rolled the transaction back)."""
        try:
            self._begin_group()
        except Exception as exc:  # locked by another process past busy_timeout
            return [(False, self._failure(exc))] * len(works)
        conn = self.raw
        outcomes: list[Outcome] = []
        try:
            for work in works:
                conn.execute(f"SAVEPOINT {SAVEPOINT}")
                try:
                    result = work(conn)
                except BaseException as exc:
                    failed = self._failure(exc)
                    if not self._in_transaction():  # the engine undid the whole transaction
                        self._rollback()
                        return [*_lost(outcomes, failed), (False, failed)]
                    conn.execute(f"ROLLBACK TO {SAVEPOINT}")
                    conn.execute(f"RELEASE {SAVEPOINT}")
                    outcomes.append((False, failed))
                    continue
                conn.execute(f"RELEASE {SAVEPOINT}")
                outcomes.append((True, result))
        except Exception as exc:  # a savepoint statement failed: nothing is kept
            self._rollback()
            return [(False, self._failure(exc))] * len(works)
        try:
            self._commit()
        except Exception as exc:  # nothing of the group was stored
            return _lost(outcomes, self._failure(exc))
        return outcomes
