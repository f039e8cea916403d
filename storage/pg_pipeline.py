"""Group commit on PostgreSQL in pipeline mode (psycopg's ``Connection.pipeline``).

On PostgreSQL every statement is a round trip to the server, and on a busy 2-core
machine a round trip is also a wait for the GIL: the write thread gives it up while the
server answers and must get it back from an event loop that is matching a customer's
question. So a group of works is sent as one pipeline: BEGIN, each work's SAVEPOINT,
its statements and its RELEASE, then COMMIT go out without waiting, and the thread waits
only where a work reads a result (``fetchone`` and the like) and once at the end of each
work (a sync: an error must be that work's, so that only it is rolled back to its
savepoint). A statement that reads nothing (an UPDATE, an INSERT without RETURNING)
costs no round trip of its own.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg import pq

from storage.database import Conn
from storage.group_commit import SAVEPOINT, GroupCommitted, Outcome, Work

_OPEN = (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)


class Piped:
    """A cursor of a pipelined statement. Fetching waits for the result by itself; its
    ``rowcount`` and ``description`` need the pipeline synced first."""

    __slots__ = ("_cur", "_pipe")

    def __init__(self, cur: psycopg.Cursor[Any], pipe: psycopg.Pipeline) -> None:
        self._cur = cur
        self._pipe = pipe

    def _ready(self) -> psycopg.Cursor[Any]:
        if self._cur.pgresult is None:
            self._pipe.sync()
        return self._cur

    @property
    def rowcount(self) -> int:
        return self._ready().rowcount

    @property
    def description(self) -> Any:
        return self._ready().description

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    def __iter__(self) -> Any:
        return iter(self._cur)


class PipelinedGroups(GroupCommitted):
    """The group-commit hooks of ``PgDatabase`` (which provides the connection)."""

    pg: psycopg.Connection[Any]
    _pipe: psycopg.Pipeline | None = None
    _piped: AbstractContextManager[psycopg.Pipeline] | None = None  # to leave it

    def _ensure(self) -> None:
        raise NotImplementedError

    def _piping(self, pipe: psycopg.Pipeline | None) -> None:
        """Tell the storage-facing connection whether statements are pipelined."""
        raise NotImplementedError

    def _lone(self, work: Work) -> list[Outcome]:
        """In a pipeline a savepoint costs no round trip: a lone work goes the same way."""
        return self._one_transaction([work])

    def _begin_group(self) -> None:
        self._ensure()
        self._piped = self.pg.pipeline()
        self._pipe = self._piped.__enter__()
        self._piping(self._pipe)
        self.pg.execute("BEGIN")

    def _open_work(self, conn: Conn) -> None:
        self.pg.execute(f"SAVEPOINT {SAVEPOINT}")

    def _finish_work(self, conn: Conn) -> None:
        if self._pipe is not None:
            self._pipe.sync()

    def _close_work(self, conn: Conn) -> None:
        self.pg.execute(f"RELEASE {SAVEPOINT}")

    def _in_transaction(self) -> bool:
        """After a work's error. In pipeline mode libpq reports the transaction ACTIVE,
        not failed: once synced, an explicit transaction ends only with its connection
        (an error leaves it open, to be rolled back to the savepoint)."""
        if self._pipe is None:
            return self.pg.info.transaction_status in _OPEN
        with contextlib.suppress(psycopg.Error):
            self._pipe.sync()
        return not (self.pg.closed or self.pg.broken)

    def _undo_work(self, conn: Conn) -> None:
        self.pg.execute(f"ROLLBACK TO {SAVEPOINT}")
        self.pg.execute(f"RELEASE {SAVEPOINT}")

    def _commit_group_tx(self) -> None:
        try:
            self.pg.execute("COMMIT")
            self._leave_pipeline(quiet=False)
        except psycopg.Error:
            self._rollback()
            raise

    def _leave_pipeline(self, *, quiet: bool) -> None:
        """Out of pipeline mode (its last results read); errors raised unless ``quiet``
        (rolling back after one already)."""
        piped, self._piped, self._pipe = self._piped, None, None
        if piped is None:
            return
        self._piping(None)
        if not quiet:
            piped.__exit__(None, None, None)
            return
        with contextlib.suppress(psycopg.Error):
            piped.__exit__(None, None, None)
