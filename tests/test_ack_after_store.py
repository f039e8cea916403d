"""Acknowledge only what is stored (issue 19): a webhook update or a Slack HTTP event is
written to the inbound queue before the 200, and a stored request nobody finished is
taken up again.

Three layers: the queue itself under an injected clock (leases, claims, redeliveries,
handled rows); the product in this event loop (the row exists when the 200 arrives; a
left-over row is handled once; a row handled twice is answered once); and from outside,
a real ``supportbot run`` killed with SIGKILL while updates are POSTed to its webhook:
every update that got a 200 is answered exactly once after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import SupportApp
from bot.config import Secrets, settings_from_mapping
from handlers.telegram import RateLimits
from storage.database import Database
from storage.inbound_queue import InboundQueue
from tests.fakes.clock import FakeClock
from tests.fakes.slack_server import BOT_TOKEN as SLACK_BOT_TOKEN
from tests.fakes.slack_server import SIGNING_SECRET, FakeSlack
from tests.fakes.telegram_server import FakeUser, TelegramServer, running_server
from tests.reliability.bot_process import KNOWLEDGE, BotProcess, database_rows, write_config
from tests.reliability.inprocess import QUESTION, answers
from tests.test_e2e_slack import AGENTS, make_settings, running
from tests.test_e2e_slack import CUSTOMER as E2E_CUSTOMER
from tests.test_e2e_slack import slack as slack  # noqa: F401 - the fixture, reused
from tests.waiting import eventually

SECRET = "webhook-secret-for-tests"
SLACK_ANSWER = "livrées en 2 à 4 jours ouvrés"  # a piece of knowledge.yaml's answer to QUESTION
LEASE = timedelta(seconds=30)


# ---------------------------------------------------------------------- the queue


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "queue.db")
    try:
        yield database
    finally:
        await database.close()


def queues(db: Database, clock: FakeClock) -> tuple[InboundQueue, InboundQueue]:
    """Two processes on one database (A and B), on the same clock."""
    return (
        InboundQueue(db, clock, owner="A", lease=LEASE),
        InboundQueue(db, clock, owner="B", lease=LEASE),
    )


async def rows(db: Database) -> list[dict[str, Any]]:
    return [dict(r) for r in await db.fetchall("SELECT * FROM inbound_queue ORDER BY id")]


async def test_a_redelivery_is_stored_once(db: Database) -> None:
    a, b = queues(db, FakeClock())
    first = await a.store("telegram", "telegram:1:10", '{"update_id": 10}')
    assert first is not None
    assert first.attempts == 1
    assert await a.store("telegram", "telegram:1:10", '{"update_id": 10}') is None
    assert await b.store("telegram", "telegram:1:10", '{"update_id": 10}') is None
    [row] = await rows(db)
    assert (row["claimed_by"], row["attempts"], row["handled_at"]) == ("A", 1, None)
    assert row["body"] == '{"update_id": 10}'


async def test_a_row_is_claimed_only_once_its_lease_ran_out(db: Database) -> None:
    clock = FakeClock()
    a, b = queues(db, clock)
    stored = await a.store("slack", "slack:event:Ev1", "{}", {"content-type": "application/json"})
    assert stored is not None
    assert await b.claim(["slack"]) == []  # A is still working on it
    clock.advance(LEASE - timedelta(milliseconds=1))
    assert await b.claim(["slack"]) == []
    clock.advance(timedelta(milliseconds=1))
    [taken] = await b.claim(["slack"])
    assert (taken.id, taken.key, taken.attempts) == (stored.id, "slack:event:Ev1", 2)
    assert taken.headers == {"content-type": "application/json"}
    assert await a.claim(["slack"]) == []  # B's lease now
    [row] = await rows(db)
    assert row["claimed_by"] == "B"
    assert row["claimed_until"] == row["received_at"] + 2 * int(LEASE.total_seconds() * 1000)


async def test_claims_are_by_channel_and_oldest_first(db: Database) -> None:
    clock = FakeClock()
    a, b = queues(db, clock)
    for key, channel in (("k1", "slack"), ("k2", "telegram"), ("k3", "slack")):
        await a.store(channel, key, "{}")
    clock.advance(LEASE)
    assert [d.key for d in await b.claim(["slack"])] == ["k1", "k3"]
    assert [d.key for d in await b.claim(["slack", "telegram"])] == ["k2"]
    assert await b.claim([]) == []


async def test_handled_rows_are_not_processed_again_and_keep_no_body(db: Database) -> None:
    clock = FakeClock()
    a, b = queues(db, clock)
    stored = await a.store("telegram", "telegram:1:11", '{"update_id": 11, "text": "secret"}')
    assert stored is not None
    await a.handled(stored.id)
    assert await a.store("telegram", "telegram:1:11", "{}") is None  # still acknowledged once
    clock.advance(LEASE * 10)
    assert await b.claim(["telegram"]) == []
    assert await b.claim(["telegram"], take_over=True) == []
    [row] = await rows(db)
    assert row["handled_at"] == int(clock.now().timestamp() * 1000) - 10 * 30_000
    assert (row["body"], row["headers"], row["claimed_by"]) == ("", None, None)
    assert await a.unfinished() == 0


async def test_a_process_alone_takes_over_a_dead_ones_rows_at_once(db: Database) -> None:
    clock = FakeClock()
    a, b = queues(db, clock)
    await a.store("telegram", "telegram:1:12", "{}")
    assert await b.claim(["telegram"]) == []
    [taken] = await b.claim(["telegram"], take_over=True)
    assert taken.key == "telegram:1:12"


async def test_a_failed_row_is_retried_after_its_lease_then_given_up(db: Database) -> None:
    clock = FakeClock()
    q = InboundQueue(db, clock, owner="A", lease=LEASE, max_attempts=3)
    stored = await q.store("telegram", "telegram:1:13", "{}")
    assert stored is not None
    await q.failed(stored.id, "boom")
    assert await q.claim(["telegram"]) == []  # the lease still runs
    for attempt in (2, 3):
        clock.advance(LEASE)
        [again] = await q.claim(["telegram"])
        assert again.attempts == attempt
        await q.failed(again.id, "boom")
    clock.advance(LEASE)
    assert await q.claim(["telegram"]) == []  # third failure: given up, not claimed
    [row] = await rows(db)
    assert row["handled_at"] is not None
    assert row["error"] == "given up after 3 attempts"
    assert row["body"] == ""


async def test_prune_deletes_old_handled_rows_only(db: Database) -> None:
    clock = FakeClock()
    q = InboundQueue(db, clock, owner="A", lease=LEASE)
    old = await q.store("telegram", "old", "{}")
    assert old is not None
    await q.handled(old.id)
    await q.store("telegram", "unfinished", "{}")
    clock.advance(timedelta(days=8))
    recent = await q.store("telegram", "recent", "{}")
    assert recent is not None
    await q.handled(recent.id)
    cutoff = int((clock.now() - timedelta(days=7)).timestamp() * 1000)
    assert await q.prune(cutoff) == 1
    assert [r["delivery_key"] for r in await rows(db)] == ["unfinished", "recent"]


# ---------------------------------------------------------------------- the product, in process


@pytest.fixture
async def tg() -> AsyncIterator[TelegramServer]:
    async with running_server() as server:
        yield server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def webhook_settings(db: Path, tg: TelegramServer, port: int) -> dict[str, Any]:
    return {
        "storage": {"path": str(db)},
        "knowledge": {"path": str(KNOWLEDGE)},
        "telegram": {
            "api_url": tg.url,
            "mode": "webhook",
            "webhook_url": f"http://127.0.0.1:{port}/telegram",
            "webhook_listen": "127.0.0.1",
            "webhook_port": port,
            "webhook_path": "/telegram",
        },
        "slack": {"enabled": False},
        "digest": {"enabled": False},
        "web": {"enabled": False},
    }


async def webhook_app(db: Path, tg: TelegramServer, port: int) -> SupportApp:
    app = SupportApp(
        settings_from_mapping(webhook_settings(db, tg, port)),
        Secrets(telegram_bot_token=tg.token, telegram_webhook_secret=SECRET),
        transport_options={"telegram": {"limits": RateLimits.unlimited()}},
    )
    await app.start()
    return app


def queue_rows(db: Path) -> list[sqlite3.Row]:
    return database_rows(db, "SELECT * FROM inbound_queue ORDER BY id")


async def test_the_update_is_stored_when_the_200_arrives(
    tmp_path: Path, tg: TelegramServer
) -> None:
    db, port = tmp_path / "bot.db", free_port()
    app = await webhook_app(db, tg, port)
    try:
        ana = tg.add_user("Ana")
        update = tg.wrap("message", tg.build_text(ana, QUESTION))
        url = f"http://127.0.0.1:{port}/telegram"
        assert await tg.post_to_webhook(update, url=url, secret=SECRET) == 200
        # Read at once, by another connection: the row was committed before the answer.
        [row] = queue_rows(db)
        assert row["delivery_key"] == f"telegram:{tg.bot.id}:{update['update_id']}"
        await tg.wait_until(lambda: answers(tg, ana.id), timeout=10, what="the answer")
        await eventually(lambda: queue_rows(db)[0]["handled_at"] is not None, within=10)
        assert queue_rows(db)[0]["body"] == ""
        # Telegram sends it again (a lost 200): acknowledged, not stored or answered twice.
        assert await tg.post_to_webhook(update, url=url, secret=SECRET) == 200
        assert len(queue_rows(db)) == 1
        assert await tg.post_to_webhook(update, url=url, secret="guess") == 403
    finally:
        await app.stop()
    assert len(answers(tg, ana.id)) == 1


async def test_an_update_the_database_refuses_is_not_acknowledged(
    tmp_path: Path, tg: TelegramServer
) -> None:
    """Another process holds the database's write lock longer than busy_timeout: the
    webhook answers 503 (Telegram sends the update again), not a 200 for nothing stored."""
    db, port = tmp_path / "bot.db", free_port()
    settings = webhook_settings(db, tg, port)
    settings["storage"]["busy_timeout"] = "200ms"
    app = SupportApp(
        settings_from_mapping(settings),
        Secrets(telegram_bot_token=tg.token, telegram_webhook_secret=SECRET),
        transport_options={"telegram": {"limits": RateLimits.unlimited()}},
    )
    await app.start()
    try:
        ana = tg.add_user("Ana")
        update = tg.wrap("message", tg.build_text(ana, QUESTION))
        url = f"http://127.0.0.1:{port}/telegram"
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as holder:
            holder.execute("BEGIN IMMEDIATE")
            assert await tg.post_to_webhook(update, url=url, secret=SECRET) == 503
            holder.execute("ROLLBACK")
        assert queue_rows(db) == []
        assert await tg.post_to_webhook(update, url=url, secret=SECRET) == 200
        await tg.wait_until(lambda: answers(tg, ana.id), timeout=10, what="the answer")
    finally:
        await app.stop()
    assert len(answers(tg, ana.id)) == 1


async def test_a_row_left_by_a_dead_process_is_answered_once_at_start(
    tmp_path: Path, tg: TelegramServer
) -> None:
    """What a process killed between its 200 and its step leaves: a claimed, unfinished
    row. The next start takes it over and answers it; a row whose step was done but not
    marked (killed just before) is replayed without a second answer."""
    db, port = tmp_path / "bot.db", free_port()
    ana, bob = tg.add_user("Ana"), tg.add_user("Bob")
    app = await webhook_app(db, tg, port)
    try:  # Bob's update is handled fully: his row is then made unfinished again
        update = tg.wrap("message", tg.build_text(bob, QUESTION))
        url = f"http://127.0.0.1:{port}/telegram"
        assert await tg.post_to_webhook(update, url=url, secret=SECRET) == 200
        await tg.wait_until(lambda: answers(tg, bob.id), timeout=10, what="Bob's answer")
        await eventually(lambda: queue_rows(db)[0]["handled_at"] is not None, within=10)
    finally:
        await app.stop()
    body = json.dumps(tg.wrap("message", tg.build_text(ana, QUESTION)))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(
            "UPDATE inbound_queue SET handled_at = NULL, body = ?, claimed_by = 'dead:1:x',"
            " claimed_until = 9999999999999",
            (json.dumps(update),),
        )
        conn.execute(
            "INSERT INTO inbound_queue (channel, delivery_key, body, received_at, attempts,"
            " claimed_by, claimed_until) VALUES ('telegram', 'telegram:dead:1', ?, 0, 1,"
            " 'dead:1:x', 9999999999999)",
            (body,),
        )
    conn.close()
    app = await webhook_app(db, tg, port)
    try:
        await tg.wait_until(lambda: answers(tg, ana.id), timeout=10, what="Ana's answer")
        await eventually(lambda: all(r["handled_at"] for r in queue_rows(db)), within=10)
        assert app.components is not None
        async with asyncio.timeout(10):
            await app.components.dispatcher.drain()
    finally:
        await app.stop()
    assert (len(answers(tg, ana.id)), len(answers(tg, bob.id))) == (1, 1)


async def test_slack_http_stores_events_and_presses_before_the_200(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """Over HTTP an event and a button press are committed before their (empty) 200 and
    marked handled after their listener; what answers in the request (url_verification,
    slash commands) is not stored; a forged request is refused before anything."""
    async with running(make_settings(tmp_path, slack), slack) as p:
        challenge = json.dumps({"token": "x", "challenge": "c-42", "type": "url_verification"})
        answer = await slack.post_signed(challenge, "application/json")
        assert (answer.status, answer.body) == (200, {"challenge": "c-42"})
        event = slack.dm_message(E2E_CUSTOMER, QUESTION)
        assert (await slack.send_event(event, secret="guess")).status == 401
        assert p.rows("SELECT * FROM inbound_queue") == []

        delivery = await slack.send_event(event)
        assert (delivery.status, delivery.body) == (200, None)
        [row] = p.rows("SELECT * FROM inbound_queue")  # committed before the 200
        assert row["delivery_key"] == f"slack:event:{delivery.event_id}"
        await p.transport.wait_handled(1, within=10)
        await p.settle()

        def all_handled() -> bool:
            return all(r["handled_at"] for r in p.rows("SELECT * FROM inbound_queue"))

        await eventually(all_handled, within=10)
        [reply] = p.dm(E2E_CUSTOMER)
        assert SLACK_ANSWER in json.dumps(reply.blocks, ensure_ascii=False) + reply.text

        await p.press(E2E_CUSTOMER, reply, label="Non")
        keys = [r["delivery_key"] for r in p.rows("SELECT * FROM inbound_queue ORDER BY id")]
        assert keys[1].startswith("slack:interaction:")
        await eventually(all_handled, within=10)

        kpi = await slack.send_command("/support-kpi", user=E2E_CUSTOMER, channel=AGENTS)
        assert kpi.status == 200  # answered in the request (a refusal here), not stored
        assert len(p.rows("SELECT * FROM inbound_queue")) == 2
        assert p.transport.errors == []


async def test_the_sweep_takes_a_dead_processs_row_at_start_and_a_lapsed_lease_later(
    tmp_path: Path, slack: FakeSlack
) -> None:
    """Rows another process claimed: at start (alone on SQLite) taken over at once; while
    running, taken only once the lease has run out on the app's clock. Each answered once."""
    clock = FakeClock()
    settings = make_settings(tmp_path, slack)
    first, second = "U0FIRST", "U0SECOND"
    for user in (first, second):
        slack.add_user(user, user.lower(), locale="fr-FR")

    def leave_row(user: str, until: int) -> None:
        body = json.dumps(slack.event_callback(slack.dm_message(user, QUESTION)))
        with contextlib.closing(sqlite3.connect(settings.storage.path)) as conn, conn:
            conn.execute(
                "INSERT INTO inbound_queue (channel, delivery_key, body, headers, received_at,"
                " attempts, claimed_by, claimed_until) VALUES ('slack', ?, ?, ?, 0, 1,"
                " 'other:1:x', ?)",
                (f"slack:event:{user}", body, '{"content-type": "application/json"}', until),
            )

    await (await Database.open(settings.storage.path)).close()  # the schema, nothing else
    now = int(clock.now().timestamp() * 1000)
    leave_row(first, now + 30_000)
    async with running(settings, slack, clock=clock) as p:
        await eventually(lambda: bool(p.dm(first)), within=10)  # the first sweep took it
        leave_row(second, now + 30_000)
        assert await p.app.resume_inbound() == 0  # the other process's lease still runs
        assert p.dm(second) == []
        clock.advance(LEASE)
        await p.app.resume_inbound()  # (or the periodic sweep, whichever comes first)
        await eventually(lambda: bool(p.dm(second)), within=10)
        await p.transport.wait_idle(within=10)
        await p.settle()
        handled = p.rows("SELECT handled_at FROM inbound_queue WHERE handled_at IS NOT NULL")
        assert len(handled) == 2
        assert (len(p.dm(first)), len(p.dm(second))) == (1, 1)


# ---------------------------------------------------------------------- from outside: kill -9

CUSTOMERS = 60
KILL_AFTER = 20  # acknowledged updates before the SIGKILL


def resumed(bot: BotProcess) -> int:
    """How many stored requests the restarted process found unfinished (its log)."""
    return sum(int(n) for n in re.findall(r"resumed (\d+) stored", bot.all_output()))


@pytest.mark.slow
async def test_kill_9_loses_no_acknowledged_webhook_update(
    tmp_path: Path, tg: TelegramServer
) -> None:
    """A real ``supportbot run`` in webhook mode; CUSTOMERS updates POSTed at once; SIGKILL
    once KILL_AFTER of them got their 200; restart on the same database. Sends fail while
    the first process lives, so no reply is in flight at the kill (a send cut between the
    platform and its record may legitimately repeat: that is the outbox's business, not
    this test's). Afterwards every acknowledged update is answered exactly once; the
    others are POSTed again (Telegram retries what got no 200) and answered once too."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    config = write_config(tmp_path, webhook_settings(tmp_path / "supportbot.db", tg, port))
    env = {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_WEBHOOK_SECRET": SECRET}
    bot = BotProcess(config, env, tmp_path / "bot.log")
    customers = [tg.add_user(f"Client{i}") for i in range(CUSTOMERS)]
    updates = {c.id: tg.wrap("message", tg.build_text(c, QUESTION)) for c in customers}
    acked: set[int] = set()
    tg.fail("sendMessage", 502, times=10**6)  # no reply leaves while the first process lives
    try:
        await bot.start()
        proc = bot.proc
        assert proc is not None

        async def post(customer: FakeUser) -> None:
            try:
                status = await tg.post_to_webhook(updates[customer.id], url=url, secret=SECRET)
            except aiohttp.ClientError:
                return  # the process died under this request: no 200, Telegram retries
            if status == 200 and proc.returncode is None:
                acked.add(customer.id)
                if len(acked) == KILL_AFTER:
                    proc.send_signal(signal.SIGKILL)  # at once, before any other await

        async with asyncio.timeout(30):
            await asyncio.gather(*(post(c) for c in customers))
            await proc.wait()
        bot.proc = None
        assert len(acked) >= KILL_AFTER
        tg.clear_faults()
        await bot.start()

        def all_acked_answered() -> bool:
            return all(answers(tg, c.id) for c in customers if c.id in acked)

        with contextlib.suppress(TimeoutError):  # what is still unanswered is counted below
            await eventually(all_acked_answered, within=30)
        lost = [c.full_name for c in customers if c.id in acked and not answers(tg, c.id)]
        assert lost == [], f"{len(lost)} acknowledged updates lost: {lost}"
        # Telegram sends again what got no 200; a redelivery of a stored one is a no-op.
        for c in customers:
            if c.id not in acked:
                assert await tg.post_to_webhook(updates[c.id], url=url, secret=SECRET) == 200
        await eventually(lambda: all(answers(tg, c.id) for c in customers), within=60)
        assert await bot.stop() == 0
    finally:
        await bot.close()
    per_chat = Counter(len(answers(tg, c.id)) for c in customers)
    twice = [c.full_name for c in customers if len(answers(tg, c.id)) > 1]
    print(
        f"\nwebhook kill -9: {len(acked)} of {CUSTOMERS} acknowledged before the kill; "
        f"answers per chat {dict(per_chat)}; 0 acknowledged updates lost; "
        f"{resumed(bot)} resumed from the queue at restart"
    )
    assert twice == []
    assert per_chat == Counter({1: CUSTOMERS})


@pytest.mark.slow
async def test_kill_9_loses_no_acknowledged_slack_http_event(tmp_path: Path) -> None:
    """The same from outside for Slack's Events API over HTTP: DMs from CUSTOMERS people
    POSTed (signed) at once, SIGKILL once KILL_AFTER got their 200, restart; Slack's
    retries (same event_id) for those that got none. Every event answered exactly once."""
    port = free_port()
    slack = FakeSlack()
    people = [f"U0C{i:04d}" for i in range(CUSTOMERS)]
    for user in people:
        slack.add_user(user, user.lower(), locale="fr-FR")
    slack.add_channel("C0AGENTS", "support-agents", [])
    async with slack:
        slack.events_url = f"http://127.0.0.1:{port}/slack/events"
        overrides = {
            "slack": {
                "enabled": True,
                "api_url": slack.api_url,
                "mode": "http",
                "http_listen": "127.0.0.1",
                "http_port": port,
                "agents_channel": "C0AGENTS",
            },
            "telegram": {"enabled": False},
            "desk": "slack",
        }
        env = {"SLACK_BOT_TOKEN": SLACK_BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET}
        bot = BotProcess(write_config(tmp_path, overrides), env, tmp_path / "bot.log")
        events = {u: slack.dm_message(u, QUESTION) for u in people}
        ids = {u: f"EvKILL{i:04d}" for i, u in enumerate(people)}
        acked: set[str] = set()
        ack_s: list[float] = []  # how long each acknowledged POST took

        def answered(user: str) -> int:
            dm = slack.dm_channel(user)
            return sum(
                1
                for c in slack.calls_to("chat.postMessage", ok=True)
                if c.params.get("channel") == dm
                and SLACK_ANSWER in json.dumps(c.params, ensure_ascii=False)
            )

        slack.fail("chat.postMessage", times=10**6)  # no reply leaves before the kill
        try:
            await bot.start()
            proc = bot.proc
            assert proc is not None

            async def post(user: str) -> None:
                started = time.monotonic()
                try:
                    delivery = await slack.send_event(events[user], event_id=ids[user])
                except aiohttp.ClientError:
                    return
                if delivery.status == 200 and proc.returncode is None:
                    ack_s.append(time.monotonic() - started)
                    acked.add(user)
                    if len(acked) == KILL_AFTER:
                        proc.send_signal(signal.SIGKILL)

            async with asyncio.timeout(30):
                await asyncio.gather(*(post(u) for u in people))
                await proc.wait()
            bot.proc = None
            assert len(acked) >= KILL_AFTER
            slack.clear_faults()
            await bot.start()
            with contextlib.suppress(TimeoutError):
                await eventually(lambda: all(answered(u) for u in acked), within=30)
            lost = [u for u in acked if not answered(u)]
            assert lost == [], f"{len(lost)} acknowledged events lost: {lost}"
            for user in people:  # Slack retries what got no 200
                if user not in acked:
                    retry = await slack.send_event(events[user], event_id=ids[user], retry=1)
                    assert retry.status == 200
            await eventually(lambda: all(answered(u) for u in people), within=60)
            assert await bot.stop() == 0
        finally:
            await bot.close()
        per_chat = Counter(answered(u) for u in people)
    print(
        f"\nslack http kill -9: {len(acked)} of {CUSTOMERS} acknowledged before the kill; "
        f"answers per DM {dict(per_chat)}; 0 acknowledged events lost; "
        f"{resumed(bot)} resumed from the queue at restart; slowest ack "
        f"{max(ack_s) * 1000:.0f} ms with {CUSTOMERS} at once"
    )
    assert per_chat == Counter({1: CUSTOMERS})
    assert max(ack_s) < 3.0  # Slack's limit, with 60 events arriving at once
