"""Group commit on PostgreSQL in pipeline mode (psycopg's ``Connection.pipeline``).

On PostgreSQL every statement is a round trip to the server, and on a busy 2-core
machine a round trip is also a wait for the GIL: the write thread gives it up while the
server answers and must get it back from an event loop that is matching a customer's
question. So a group of works is sent as one pipeline: BEGIN, the works' statements one
after the other, COMMIT; the thread waits only where a work reads a result
(``fetchone`` and the like) and at the COMMIT. A statement that reads nothing (an
UPDATE, an INSERT without RETURNING) costs no round trip of its own.

No savepoint per work (SQLite's way): they were a third of a customer message's
commands. If anything in the group fails, the transaction is rolled back and each work
runs again in its own, so only the failing one fails. Hence the rule of
``Database.write``: a work's only effects are on the connection it is given.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from typing import Any

import psycopg

from storage.group_commit import GroupCommitted, Outcome, Work
from storage.pg_sessions import forget_plans, stale_plan


class Piped:
    """A cursor of a pipelined statement. Fetching waits for the result by itself; its
    ``rowcount``, ``description`` and ``pgresult`` need the pipeline synced first."""

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

    @property
    def pgresult(self) -> Any:
        return self._ready().pgresult

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

    def _one_transaction(self, works: list[Work]) -> list[Outcome]:
        """The works one after the other in one pipelined transaction, no savepoints and
        no wait between them; if anything fails (a work, or the COMMIT), the transaction
        is rolled back and each work is run again alone, so that only the failing one
        fails. Savepoints cost two commands and a sync per work (a third of a customer
        message's commands): a failure is rare, a second run of a group is cheap."""
        if len(works) == 1:
            return self._lone(works[0])
        try:
            self._begin_group()
            conn = self.raw
            results = [work(conn) for work in works]
            self._commit_pipeline()
        except BaseException:
            self._rollback()
            return [outcome for work in works for outcome in self._lone(work)]
        return [(True, result) for result in results]

    def _lone(self, work: Work, *, again: bool = True) -> list[Outcome]:
        """One work in its own pipelined transaction: BEGIN, its statements, COMMIT; run
        once more if a statement prepared before the schema changed was refused (nothing
        of the first run is stored: it was rolled back)."""
        try:
            self._begin_group()
        except Exception as exc:
            self._rollback()
            return [(False, self._failure(exc))]
        try:
            result = work(self.raw)
            self._commit_pipeline()
        except BaseException as exc:
            self._rollback()
            if again and stale_plan(exc) and not (self.pg.closed or self.pg.broken):
                forget_plans(self.pg, exc)
                return self._lone(work, again=False)
            return [(False, self._failure(exc))]
        return [(True, result)]

    def _begin_group(self) -> None:
        self._ensure()
        self._piped = self.pg.pipeline()
        self._pipe = self._piped.__enter__()
        self._piping(self._pipe)
        self.pg.execute("BEGIN")

    def _commit_pipeline(self) -> None:
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
