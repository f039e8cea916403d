"""Platform outages: Telegram answers 500 and 429 for a while, then recovers. Every reply
arrives exactly once, and no retry comes before the Retry-After the platform asked for."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.fakes.telegram_server import Call, running_server
from tests.reliability.bot_process import database_rows
from tests.reliability.inprocess import QUESTION, answers, telegram_app
from tests.waiting import eventually

pytestmark = pytest.mark.slow

RETRY_AFTER = 2


def attempts_by_reply(calls: list[Call]) -> dict[tuple[int, str], list[Call]]:
    """sendMessage calls grouped by what they tried to deliver (chat, text)."""
    grouped: dict[tuple[int, str], list[Call]] = defaultdict(list)
    for call in calls:
        grouped[(call.params["chat_id"], call.params["text"])].append(call)
    return grouped


async def test_telegram_down_then_flooded_then_back_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "supportbot.db"
    async with running_server() as tg:
        customers = [tg.add_user(f"Client{i}") for i in range(6)]
        async with telegram_app(tg, db):
            # Down for a while: even getUpdates fails; customers keep writing meanwhile.
            mark = tg.mark()
            tg.set_down(500)
            for i, customer in enumerate(customers[:3]):
                await tg.customer_sends(customer, f"{QUESTION} {i}")
            await eventually(lambda: len(tg.calls_to("getUpdates", since=mark, ok=False)) >= 2)
            tg.set_down(None)
            # Then the sends fail: 500 three times, then flood control four times.
            tg.fail("sendMessage", 500, times=3)
            tg.fail("sendMessage", 429, times=4, retry_after=RETRY_AFTER)
            for i, customer in enumerate(customers[3:], start=3):
                await tg.customer_sends(customer, f"{QUESTION} {i}")
            await eventually(lambda: len(answers(tg)) == len(customers), within=30)
            await eventually(lambda: tg.pending_updates() == 0)

    for customer in customers:
        assert len(answers(tg, customer.id)) == 1  # exactly once each
    sends = tg.calls_to("sendMessage")
    statuses = [c.status for c in sends]
    assert statuses.count(500) == 3
    assert statuses.count(429) == 4
    for tries in attempts_by_reply(sends).values():
        assert tries[-1].status == 200
        assert [c.status for c in tries[:-1]] == [c.status for c in tries if c.status != 200]
        for refused, retry in zip(tries, tries[1:], strict=False):
            if refused.status == 429:  # Retry-After honoured (timestamps from the server)
                assert retry.at - refused.at >= RETRY_AFTER - 0.05
    rows = database_rows(db, "SELECT sent_at, failed_at FROM outbox WHERE op = 'send'")
    assert len(rows) == len(customers)
    assert all(r["sent_at"] is not None and r["failed_at"] is None for r in rows)
    stored = database_rows(db, "SELECT COUNT(*) AS n FROM messages WHERE direction = 'in'")
    assert stored[0]["n"] == len(customers)
