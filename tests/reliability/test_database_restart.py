"""PostgreSQL restarted under a running bot (an operator's restart, a failover): the
messages that arrive while it is down are answered once it is back, each once.

Polling: the poller's leadership goes with the server, so nothing is taken from Telegram
until it is back. Webhook: an update that cannot be stored gets a 503 (Telegram sends it
again), where the driver's own error used to escape as a 500 with a traceback. The steps
and deliveries that meet the closed server wait for it (bot/conversation/busy.py); the
delivery case is tests/test_database_outage.py."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from bot.app import SupportApp
from bot.conversation.model import Address, Customer, CustomerMessage
from tests.fakes.telegram_server import TelegramServer, running_server
from tests.pg_cluster import PgCluster
from tests.reliability.inprocess import QUESTION, answers, telegram_app
from tests.test_ack_after_store import SECRET, free_port
from tests.waiting import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    """A cluster of this test's own: it is stopped and started again."""
    started = PgCluster.start()
    try:
        yield started
    finally:
        started.stop()


def bot_on(
    cluster: PgCluster, tg: TelegramServer, beside: Path, mode: str
) -> AbstractAsyncContextManager[SupportApp]:
    """The app on ``cluster``, Telegram polled or pushing to its webhook; ``beside``: the
    files kept beside the database."""
    port = free_port()
    telegram: dict[str, Any] = {}
    if mode == "webhook":
        telegram = {
            "mode": "webhook",
            "webhook_url": f"http://127.0.0.1:{port}/telegram",
            "webhook_listen": "127.0.0.1",
            "webhook_port": port,
            "webhook_path": "/telegram",
        }
    return telegram_app(
        tg,
        beside,
        webhook_secret=SECRET,
        storage={"url": cluster.url()},
        telegram=telegram,
        conversation={"sweep_every": "100ms"},
    )


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_bot_waits_out_a_postgresql_restart_and_answers_each_message_once(
    cluster: PgCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.INFO)
    async with running_server() as tg:
        customers = [tg.add_user(f"Client{i}") for i in range(4)]
        async with bot_on(cluster, tg, tmp_path / "beside.db", mode) as app:
            for customer in customers:
                await tg.customer_sends(customer, f"{QUESTION} 1")
            await eventually(lambda: len(answers(tg)) == len(customers), within=20)

            await asyncio.to_thread(cluster.halt)
            for customer in customers:
                await tg.customer_sends(customer, f"{QUESTION} 2")
            await eventually(lambda: "timer sweep postponed" in caplog.text, within=20)
            if mode == "webhook":  # refused, not acknowledged: Telegram keeps it
                await eventually(lambda: any(s == 503 for _, s in tg.webhook_deliveries))
            assert len(answers(tg)) == len(customers)  # nothing answered while it is down
            await asyncio.to_thread(cluster.resume)

            await eventually(lambda: len(answers(tg)) == 2 * len(customers), within=30)
            await eventually(lambda: tg.pending_updates() == 0)
            assert app.components is not None
            async with asyncio.timeout(10):
                await app.components.dispatcher.drain()
            assert await app.components.dispatcher.resume() == 0  # nothing left unrecorded
        statuses = {status for _, status in tg.webhook_deliveries}
        assert statuses == (set() if mode == "polling" else {200, 503})  # never a 500
        given = answers(tg)
        per_chat = Counter(
            c.params["chat_id"] for c in tg.calls_to("sendMessage", ok=True)
            if c.params["text"] in given
        )  # fmt: skip
        assert sorted(per_chat.values()) == [2] * len(customers)


async def test_a_step_that_meets_the_stopped_server_waits_for_it(
    cluster: PgCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A message taken in just before the server stops (a polled batch, a stored webhook
    update) is answered once it is back, not dropped with the driver's error."""
    caplog.set_level(logging.INFO)
    async with running_server() as tg:
        ana = tg.add_user("Ana")
        async with bot_on(cluster, tg, tmp_path / "beside.db", "polling") as app:
            chat = str(ana.id)  # a private chat's id is the user's
            event = CustomerMessage(
                Customer("telegram", chat, "Ana", "fr"), Address("telegram", chat), QUESTION, "t:1"
            )
            await asyncio.to_thread(cluster.halt)
            step = asyncio.create_task(app._on_event(event))
            await eventually(lambda: "waiting until it is back" in caplog.text, within=20)
            assert not step.done()
            await asyncio.to_thread(cluster.resume)
            async with asyncio.timeout(30):
                await step
            await eventually(lambda: len(answers(tg, ana.id)) == 1, within=20)
            assert app.components is not None
            async with asyncio.timeout(10):
                await app.components.dispatcher.drain()
        assert len(answers(tg, ana.id)) == 1
