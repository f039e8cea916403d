"""Group commit in the SQLite write path: writes queued while one runs share one COMMIT,
each in its own savepoint (storage/sqlite.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from storage.database import Conn, Database
from storage.group_commit import GROUP_MAX, GroupCommitted
from storage.sqlite import SqliteDatabase
from tests.waiting import eventually


class Gate:
    """A first write that holds the database thread until the test lets it go, so that
    the writes started meanwhile queue up behind it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()

    def work(self, conn: Conn) -> str:
        conn.execute("INSERT INTO t (label) VALUES ('gate')")
        self.started.set()
        if not self.go.wait(10):
            raise TimeoutError("the test never opened the gate")
        return "gate"

    async def hold(self, db: Database) -> asyncio.Task[str]:
        task = asyncio.create_task(db.write(self.work))
        if not await asyncio.to_thread(self.started.wait, 10):
            raise TimeoutError("the gate work never ran")
        return task


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    opened = await Database.open(tmp_path / "g.db")
    assert isinstance(opened, SqliteDatabase)
    await opened.write(
        lambda conn: conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")
    )
    try:
        yield opened
    finally:
        await opened.close()


def count_begins(db: SqliteDatabase) -> list[int]:
    """Count the transactions the database opens (BEGIN IMMEDIATE)."""
    begins: list[int] = []
    plain = db._begin

    def counted() -> None:
        begins.append(1)
        plain()

    db._begin = counted  # type: ignore[method-assign]
    return begins


def insert(label: str, order: list[str] | None = None) -> Callable[[Conn], int]:
    def work(conn: Conn) -> int:
        if order is not None:
            order.append(label)
        cur = conn.execute("INSERT INTO t (label) VALUES (?) RETURNING id", (label,))
        return int(cur.fetchone()[0])

    return work


class Refused(Exception):
    pass


def refused(conn: Conn) -> int:
    """A work that fails in Python after a statement."""
    conn.execute("INSERT INTO t (label) VALUES ('refused')")
    raise Refused("no")


def bad_sql(conn: Conn) -> int:
    """A work whose second statement the database refuses (NOT NULL)."""
    conn.execute("INSERT INTO t (label) VALUES ('bad_sql')")
    conn.execute("INSERT INTO t (label) VALUES (NULL)")
    return 0


def parent_and_child(conn: Conn) -> None:
    """Tables whose foreign key is checked at COMMIT (deferred)."""
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL "
        "REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )


async def labels(db: Database) -> list[str]:
    return [str(row[0]) for row in await db.tuples("SELECT label FROM t ORDER BY id")]


async def queue_behind_gate(db: Database, works: list[Callable[[Conn], Any]]) -> list[Any]:
    """Start ``works`` while the gate holds the thread; open it; their outcomes in order."""
    gate = Gate()
    held = await gate.hold(db)
    tasks = [asyncio.create_task(db.write(work)) for work in works]
    await eventually(lambda: len(cast(GroupCommitted, db)._queued) == len(works))
    gate.go.set()
    assert await held == "gate"
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_concurrent_writers_share_one_commit_and_get_their_own_results(
    db: SqliteDatabase,
) -> None:
    begins = count_begins(db)
    order: list[str] = []
    works = [insert(f"w{i}", order) for i in range(20)]
    results = await queue_behind_gate(db, works)
    # The gate's own transaction, then ONE for the twenty queued behind it.
    assert len(begins) == 2
    assert order == [f"w{i}" for i in range(20)]  # FIFO
    assert await labels(db) == ["gate", *order]
    rows = dict(await db.tuples("SELECT label, id FROM t"))
    assert results == [rows[f"w{i}"] for i in range(20)]  # each caller its own id


async def test_a_group_is_bounded(db: SqliteDatabase) -> None:
    begins = count_begins(db)
    count = GROUP_MAX * 2 + 1
    await queue_behind_gate(db, [insert(f"w{i}") for i in range(count)])
    assert len(begins) == 1 + 3
    assert len(await labels(db)) == 1 + count


async def test_a_failing_work_rolls_back_alone_and_raises_to_its_caller(
    db: SqliteDatabase,
) -> None:
    begins = count_begins(db)
    results = await queue_behind_gate(db, [insert("a"), refused, insert("b"), bad_sql, insert("c")])
    assert len(begins) == 2
    assert isinstance(results[1], Refused)
    assert isinstance(results[3], sqlite3.IntegrityError)
    rows = dict(await db.tuples("SELECT label, id FROM t"))
    assert [results[0], results[2], results[4]] == [rows["a"], rows["b"], rows["c"]]
    assert await labels(db) == ["gate", "a", "b", "c"]


async def test_a_failing_commit_fails_the_whole_group_and_stores_nothing(
    db: SqliteDatabase,
) -> None:
    """A deferred foreign key is checked at COMMIT: the group is refused as a whole."""

    await db.write(parent_and_child)
    orphan: Callable[[Conn], Any] = lambda conn: conn.execute(  # noqa: E731
        "INSERT INTO child (parent_id) VALUES (999)"
    )
    results = await queue_behind_gate(db, [insert("a"), orphan, insert("b")])
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert await labels(db) == ["gate"]
    assert await db.tuples("SELECT * FROM child") == []
    # No transaction was left open: the next writes go through.
    assert await db.write(insert("after")) > 0
    assert await labels(db) == ["gate", "after"]


async def test_a_lone_write_refused_at_commit_leaves_no_open_transaction(
    db: SqliteDatabase,
) -> None:
    """Before, a COMMIT refused with IntegrityError left the transaction open and every
    later write failed with 'cannot start a transaction within a transaction'."""

    await db.write(parent_and_child)
    with pytest.raises(sqlite3.IntegrityError):
        await db.write(lambda conn: conn.execute("INSERT INTO child (parent_id) VALUES (7)"))
    with pytest.raises(sqlite3.IntegrityError):
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO child (parent_id) VALUES (8)")
    assert await db.write(insert("after")) > 0
    assert await labels(db) == ["after"]


async def test_a_full_disk_fails_the_transaction_it_undid_and_the_rest_go_on(
    db: SqliteDatabase,
) -> None:
    """SQLite undoes the whole transaction on SQLITE_FULL: the works before the one that
    filled the disk are lost with it (their callers are told), those after it are stored
    in a new transaction."""
    pages = (await db.tuples("PRAGMA page_count"))[0][0]
    await db.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 1}"))
    huge: Callable[[Conn], Any] = lambda conn: conn.execute(  # noqa: E731
        "INSERT INTO t (label) VALUES (?)", ("x" * 200_000,)
    )
    begins = count_begins(db)
    results = await queue_behind_gate(db, [insert("a"), huge, insert("b")])
    assert isinstance(results[0], sqlite3.OperationalError)
    assert isinstance(results[1], sqlite3.OperationalError)
    assert "full" in str(results[1])
    assert isinstance(results[2], int)
    assert len(begins) == 3
    assert await labels(db) == ["gate", "b"]


async def test_a_caller_cancelled_before_its_turn_is_not_run(db: SqliteDatabase) -> None:
    gate = Gate()
    held = await gate.hold(db)
    first = asyncio.create_task(db.write(insert("a")))
    dropped = asyncio.create_task(db.write(insert("dropped")))
    last = asyncio.create_task(db.write(insert("c")))
    await eventually(lambda: len(db._queued) == 3)
    dropped.cancel()
    await eventually(dropped.done)
    gate.go.set()
    await held
    await first
    await last
    assert await labels(db) == ["gate", "a", "c"]


async def test_reads_and_transactions_never_run_inside_a_group(db: SqliteDatabase) -> None:
    gate = Gate()
    held = await gate.hold(db)
    queued = asyncio.create_task(db.write(insert("queued")))
    await eventually(lambda: len(db._queued) == 1)

    def outside(conn: Conn) -> list[str]:
        assert isinstance(conn, sqlite3.Connection)
        assert not conn.in_transaction
        return [str(row[0]) for row in conn.execute("SELECT label FROM t ORDER BY id")]

    read = asyncio.create_task(db.read(outside))
    gate.go.set()
    await held
    await queued
    assert await read == ["gate", "queued"]  # the queued write went in the same hop
    async with db.transaction() as conn:
        later = asyncio.create_task(db.write(insert("later")))
        await conn.execute("INSERT INTO t (label) VALUES ('in transaction')")
        await eventually(lambda: len(db._queued) == 1)
        assert not later.done()  # it waits for the block's COMMIT
    await later
    assert await labels(db) == ["gate", "queued", "in transaction", "later"]


async def test_a_write_after_close_fails_like_before(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "c.db")
    await db.close()
    with pytest.raises(ValueError, match="closed"):
        await db.write(lambda conn: conn.execute("SELECT 1"))
