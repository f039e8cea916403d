"""Conversation locks on PostgreSQL, tried and released in batches (storage/pg_keylocks.py).

Two ``Database`` objects on one real PostgreSQL stand for two processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import storage.pg_keylocks as keylocks
from storage.database import Database
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

    def run(conn: Any, batch: list[keylocks.Ask]) -> list[bool]:
        sizes.append(len(batch))
        return real(conn, batch)

    monkeypatch.setattr(keylocks, "_run", run)
    return sizes


async def free_in(db: Any, key: str) -> bool:
    """Whether ``db`` (another process) can take ``key`` now; given back at once."""
    got = await db._keys.try_lock(key_lock_id(key))
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

    def slow(conn: Any, batch: list[keylocks.Ask]) -> list[bool]:
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
