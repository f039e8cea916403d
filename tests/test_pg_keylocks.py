"""Conversation locks on PostgreSQL, tried and released in batches (storage/pg_keylocks.py).

Two ``Database`` objects on one real PostgreSQL stand for two processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

import storage.pg_keylocks as keylocks
from storage.database import Database, Follow
from storage.pg_sessions import key_lock_id
from tests.waiting import eventually


@pytest.fixture
async def two(pg_url: str) -> AsyncIterator[tuple[Any, Any]]:
    first, second = await Database.open(pg_url), await Database.open(pg_url)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each statement sent on a lock connection."""
    sizes: list[int] = []
    real = keylocks._run

    def run(conn: Any, batch: list[keylocks.Ask]) -> list[keylocks.Taken]:
        sizes.append(len(batch))
        return real(conn, batch)

    monkeypatch.setattr(keylocks, "_run", run)
    return sizes


async def free_in(db: Any, key: str) -> bool:
    """Whether ``db`` (another process) can take ``key`` now; given back at once."""
    got, _rows = await db._keys.try_lock(key_lock_id(key))
    if got:
        db._keys.release(key_lock_id(key))
        await db._keys.drain()
    return bool(got)


async def test_steps_asked_together_share_one_statement_and_hold_against_others(
    two: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two
    sizes = counting(monkeypatch)
    held = asyncio.Event()
    inside = 0

    async def step(n: int) -> None:
        nonlocal inside
        async with first.hold_key(f"web:{n}"):
            inside += 1
            await held.wait()

    steps = [asyncio.create_task(step(n)) for n in range(20)]
    await eventually(lambda: inside == 20)
    assert sum(sizes) == 20
    assert len(sizes) <= 2  # 20 tries: one or two statements
    for n in (0, 7, 19):
        assert not await free_in(second, f"web:{n}")  # held against the other process
    before = len(sizes)
    held.set()
    await asyncio.gather(*steps)
    await first._keys.drain()  # the releases were not waited for by the steps
    assert sizes[before:] == [20]  # 20 releases: one statement
    for n in (0, 7, 19):
        assert await free_in(second, f"web:{n}")


async def test_a_key_released_and_taken_again_in_one_batch_stays_held(
    two: tuple[Any, Any],
) -> None:
    """A conversation's next step often asks for its key while the last release is still
    queued: in one statement, release then try leaves it ours (locks stack either way)."""
    first, second = two
    for _ in range(3):
        async with first.hold_key("web:a"):
            assert not await free_in(second, "web:a")
    await first._keys.drain()
    assert await free_in(second, "web:a")


async def test_a_step_waits_for_a_key_held_elsewhere_then_gets_it(
    two: tuple[Any, Any],
) -> None:
    first, second = two
    async with second.hold_key("tg:5"):
        waiting = asyncio.create_task(_hold_once(first, "tg:5"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), 0.3)
    await asyncio.wait_for(waiting, 10)


async def _hold_once(db: Any, key: str) -> None:
    async with db.hold_key(key):
        pass


async def test_a_try_cancelled_in_flight_does_not_leave_the_key_taken(
    two: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = two
    sending = asyncio.Event()
    go = asyncio.Event()
    loop = asyncio.get_running_loop()
    real = keylocks._run

    def slow(conn: Any, batch: list[keylocks.Ask]) -> list[keylocks.Taken]:
        loop.call_soon_threadsafe(sending.set)
        asyncio.run_coroutine_threadsafe(go.wait(), loop).result(10)
        return real(conn, batch)

    monkeypatch.setattr(keylocks, "_run", slow)
    trying = asyncio.create_task(first._keys.try_lock(key_lock_id("web:z")))
    await asyncio.wait_for(sending.wait(), 10)
    trying.cancel()  # the caller gave up while the statement was on its way
    monkeypatch.setattr(keylocks, "_run", real)
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await trying
    await first._keys.drain()  # the lock it got nobody waits for: given back
    assert await free_in(second, "web:z")


# A read sent with the lock (``Follow``): customers stand for what a key protects.
NAMES = "SELECT key, name FROM customers WHERE key = ANY(?)"


async def _customer(db: Any, key: str, name: str) -> None:
    await db.write(
        lambda c: c.execute(
            "INSERT INTO customers (key, channel, user_id, name, language, first_seen_at)"
            " VALUES (?, 'web', ?, ?, 'fr', 0)",
            (key, key, name),
        )
    )


async def test_a_read_sent_with_the_lock_sees_what_the_last_holder_committed(
    two: tuple[Any, Any],
) -> None:
    """The read runs once the lock is ours, not with a try that failed: while the other
    process holds the key and changes the row, the waiting step gets the changed row."""
    first, second = two
    await _customer(first, "c1", "before")
    got: list[Any] = []

    async def step() -> None:
        async with first.hold_key("web:c1", Follow(NAMES, "key", "c1")) as rows:
            got.extend(rows)

    async with second.hold_key("web:c1"):
        waiting = asyncio.create_task(step())
        await eventually(lambda: first._keys._flusher is not None)  # tried, refused
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), 0.2)
        await second.write(lambda c: c.execute("UPDATE customers SET name = 'after'"))
    await asyncio.wait_for(waiting, 10)
    assert [(row["key"], row["name"]) for row in got] == [("c1", "after")]


async def test_reads_sent_with_tries_share_one_statement_and_go_to_their_own_key(
    two: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _second = two
    for n in range(12):
        await _customer(first, f"c{n}", f"name {n}")
    sizes = counting(monkeypatch)
    sent: list[str] = []
    execute = psycopg.Connection.execute

    def spy(conn: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(conn, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", spy)
    held = asyncio.Event()
    got: dict[int, list[tuple[str, str]]] = {}

    async def step(n: int) -> None:
        # the 13th key has no row: it gets an empty list, not another key's rows
        async with first.hold_key(f"web:{n}", Follow(NAMES, "key", f"c{n}")) as rows:
            got[n] = [(row["key"], row["name"]) for row in rows]
            await held.wait()

    steps = [asyncio.create_task(step(n)) for n in range(13)]
    await eventually(lambda: len(got) == 13)
    batches = len(sizes)

    def reads() -> int:
        return sum("FROM customers" in query for query in sent)

    assert batches <= 2  # 13 tries in one or two batches, with a read each
    assert reads() == batches
    held.set()
    await asyncio.gather(*steps)
    assert got == {n: [(f"c{n}", f"name {n}")] if n < 12 else [] for n in range(13)}
    async with first.hold_key("web:0") as rows:  # no follow: no read
        assert rows is None
    assert reads() == batches


async def test_a_read_sent_with_the_lock_survives_a_lock_connection_closed_by_the_server(
    two: tuple[Any, Any], pg_url: str
) -> None:
    """A restarted PostgreSQL closed the lock connection (its locks went with it): the
    next try, with its read, is sent again on a new connection."""
    first, _second = two
    await _customer(first, "c1", "Ana")
    async with first.hold_key("web:c1", Follow(NAMES, "key", "c1")) as rows:
        assert [row["name"] for row in rows] == ["Ana"]
    await first._keys.drain()
    lock_pid = first._locker.conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", [lock_pid])  # waits for it
    async with first.hold_key("web:c1", Follow(NAMES, "key", "c1")) as rows:
        assert [row["name"] for row in rows] == ["Ana"]
        assert first._locker.conn.info.backend_pid != lock_pid


async def test_a_read_that_fails_after_the_tries_leaves_no_lock_taken_twice(
    two: tuple[Any, Any], pg_url: str
) -> None:
    """During a rolling upgrade another process adds a column: the read prepared before
    it is refused ("cached plan must not change result type") after the batch's tries
    took their locks. The locks stand and the step reads for itself (no rows given); the
    batch is not sent again (each lock taken twice would stay held after the step), and
    the next read is prepared again."""
    first, second = two
    await _customer(first, "c1", "Ana")
    everything = Follow("SELECT * FROM customers WHERE key = ANY(?)", "key", "c1")
    async with first.hold_key("web:c1", everything) as rows:
        assert [row["name"] for row in rows] == ["Ana"]
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("ALTER TABLE customers ADD COLUMN added_by_a_newer_version TEXT")
    async with first.hold_key("web:c1", everything) as rows:
        assert rows is None  # refused: the step reads for itself
        assert not await free_in(second, "web:c1")
    await first._keys.drain()
    assert await free_in(second, "web:c1")  # released once, and free: it was taken once
    async with first.hold_key("web:c1", everything) as rows:
        assert [row["added_by_a_newer_version"] for row in rows] == [None]
