"""Several processes on one PostgreSQL database (issue 19).

Two engine stacks in this test process, each with its own ``Database`` (its own
connections), stand for two ``supportbot run``: one conversation per customer whichever
process gets the messages, every outbox item delivered once (a dead process's items by
the other once their lease ran out), every timer fired once, the digest posted once.
Leases run on the shared injected clock. The last test runs two real ``supportbot run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.config import settings_from_mapping
from bot.conversation.model import CustomerMessage, State
from bot.conversation.store import OutboxItem
from storage.conversations import CLAIM_LEASE, SqliteStore
from storage.database import Database
from tests.fakes.clock import FakeClock
from tests.fakes.telegram_server import running_server
from tests.harness import Harness, make_settings
from tests.reliability.bot_process import BotProcess, write_config
from tests.reliability.inprocess import QUESTION, answers
from tests.test_ack_after_store import SECRET, free_port, webhook_settings
from tests.test_digest import TARGETS, WEEK, paris, posted, publishers, seed_week, service
from tests.waiting import eventually

QUESTIONS = (
    "Quel est le délai de livraison ?",
    "Comment être remboursé ?",
    "Où trouver ma facture ?",
)


def _harness(pg_url: str, clock: FakeClock) -> Harness:
    return Harness(settings_from_mapping({"storage": {"url": pg_url}, "desk": "slack"}), clock)


@pytest.fixture
async def pair(pg_url: str, clock: FakeClock) -> AsyncIterator[tuple[Harness, Harness]]:
    """Two processes' engines on one database, sharing the (fake) clock."""
    first, second = _harness(pg_url, clock), _harness(pg_url, clock)
    await first.start()
    await second.start()
    yield first, second
    await first.stop()
    await second.stop()


async def _all_delivered(processes: tuple[Harness, ...], within: float = 10.0) -> None:
    """Wait until no outbox item is undelivered, each process resuming what nobody holds
    (as its sweeper does) — items let go to keep a lane's order are taken this way."""
    db = processes[0].db
    assert db is not None

    async def pending() -> int:
        row = await db.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
        )
        assert row is not None
        return int(row[0])

    async with asyncio.timeout(within):
        while await pending():
            for process in processes:
                assert process.dispatcher is not None
                await process.dispatcher.resume()
                await process.drain()


async def test_customers_spread_over_two_processes_get_one_conversation_each(
    pair: tuple[Harness, Harness],
) -> None:
    first, second = pair
    customers = [f"{n}" for n in range(100, 106)]
    said = []
    for round_ in range(3):
        for n, user in enumerate(customers):
            process = (first, second)[(n + round_) % 2]
            key = f"update:{user}:{round_}"
            said.append(process.say(QUESTIONS[round_], user=user, dedup_key=key))
    outcomes = await asyncio.gather(*said)
    assert not any(o.duplicate for o in outcomes)
    await _all_delivered(pair)

    assert first.db is not None
    per_address = await first.db.fetchall(
        "SELECT address_key, COUNT(*) AS n FROM conversations GROUP BY address_key"
    )
    assert sorted((r["address_key"], r["n"]) for r in per_address) == sorted(
        (first.address(user).key, 1) for user in customers
    )
    inbound = await first.db.fetchone("SELECT COUNT(*) FROM messages WHERE author = 'customer'")
    assert inbound is not None
    assert inbound[0] == 3 * len(customers)
    # Every customer-side item went out exactly once, by one process or the other.
    rows = await first.db.fetchall(
        "SELECT payload FROM outbox WHERE op = 'send' AND sent_at IS NOT NULL"
    )
    sent = first.channel.texts() + second.channel.texts()
    assert len(sent) == len(rows) >= 3 * len(customers)
    for user in customers:
        to = first.address(user)
        texts = first.channel.texts(to) + second.channel.texts(to)
        assert sum("Livraison en 2 à 4 jours" in t for t in texts) == 1
        assert sum("Remboursement sous 14 jours" in t for t in texts) == 1
        assert sum("facture est dans votre compte" in t for t in texts) == 1


async def test_a_conversation_held_by_one_process_waits_in_the_other(
    pair: tuple[Harness, Harness],
) -> None:
    """While one process works a customer's step (its key held), the other process's step
    for that customer waits (it would read the state before the first one's writes), and
    goes on the moment the key is let go; other customers are not held up."""
    first, second = pair
    await first.say(QUESTIONS[0], user="5", dedup_key="a:5")
    async with first.store.hold(first.address("5").key):
        blocked = asyncio.create_task(second.say(QUESTIONS[1], user="5", dedup_key="b:5"))
        await second.say(QUESTIONS[1], user="6", dedup_key="b:6")  # another customer: free
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(blocked), 0.5)
    outcome = await asyncio.wait_for(blocked, 10)
    assert not outcome.duplicate
    texts = second.channel.texts(second.address("5"))
    assert sum("Remboursement sous 14 jours" in t for t in texts) == 1


async def test_a_reply_goes_out_on_the_claim_made_with_it_unless_that_claim_got_old(
    pg_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item is enqueued claimed by its process: its first attempt needs no claim of its
    own (one round trip fewer), unless less than half the lease is left by then (here:
    the channels came up 40 s late), when it claims anew before sending."""
    claimed: list[str] = []
    real = SqliteStore.claim_outbox

    async def counted(self: SqliteStore, item: OutboxItem, now: int) -> str:
        claimed.append(item.op)
        return await real(self, item, now)

    monkeypatch.setattr(SqliteStore, "claim_outbox", counted)
    h = _harness(pg_url, clock)
    await h.start()
    try:
        await h.say(QUESTIONS[0], user="1", dedup_key="fresh:1")
        assert sum("Livraison en 2 à 4 jours" in t for t in h.channel.texts(h.address("1"))) == 1
        assert claimed == []
    finally:
        await h.stop()
    late = _harness(pg_url, clock)
    await late.start_held()
    try:
        assert late.engine is not None
        assert late.dispatcher is not None
        event = CustomerMessage(late.customer("2"), late.address("2"), QUESTIONS[1], "late:2")
        await late.engine.handle(event)  # queued behind the held channels
        clock.advance(timedelta(seconds=40))
        late.dispatcher.release()
        await late.drain()
        assert "send" in claimed
        assert sum("Remboursement" in t for t in late.channel.texts(late.address("2"))) == 1
    finally:
        await late.stop()


async def test_a_redelivered_update_is_handled_once_whichever_process_gets_it(
    pair: tuple[Harness, Harness],
) -> None:
    first, second = pair
    outcomes = await asyncio.gather(
        *(p.say(QUESTIONS[0], user="7", dedup_key="tg:update:77") for p in (first, second))
    )
    assert sorted(o.duplicate for o in outcomes) == [False, True]
    await _all_delivered(pair)
    to = first.address("7")
    texts = first.channel.texts(to) + second.channel.texts(to)
    assert sum("Livraison en 2 à 4 jours" in t for t in texts) == 1


async def test_a_killed_process_outbox_is_delivered_by_the_other_after_its_lease(
    pg_url: str, clock: FakeClock
) -> None:
    killed, survivor = _harness(pg_url, clock), _harness(pg_url, clock)
    await killed.start_held()  # its channels never come up: it dies before delivering
    await survivor.start()
    try:
        assert killed.engine is not None
        message = CustomerMessage(killed.customer("9"), killed.address("9"), QUESTIONS[1], "k:9")
        await killed.engine.handle(message)  # stored, queued, never sent
        assert survivor.db is not None
        row = await survivor.db.fetchone(
            "SELECT COUNT(*), MIN(claimed_by) FROM outbox WHERE sent_at IS NULL"
        )
        assert row is not None
        assert row[0] >= 1
        assert row[1] == killed.store.owner
        await killed.stop()  # "kill -9": its claims stay in the table

        assert survivor.dispatcher is not None
        assert await survivor.dispatcher.resume() == 0  # the lease still holds
        assert survivor.channel.texts() == []
        clock.advance(CLAIM_LEASE + timedelta(seconds=1))
        assert await survivor.dispatcher.resume() == row[0]
        await survivor.drain()
        assert await survivor.dispatcher.resume() == 0
        texts = survivor.channel.texts(survivor.address("9"))
        assert sum("Remboursement sous 14 jours" in t for t in texts) == 1
        assert killed.channel.texts() == []
        left = await survivor.db.fetchone(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
        )
        assert left is not None
        assert left[0] == 0
    finally:
        await survivor.stop()


async def test_timers_fire_once_across_processes(pair: tuple[Harness, Harness]) -> None:
    first, second = pair
    users = [f"{n}" for n in range(200, 206)]
    for n, user in enumerate(users):
        await (first, second)[n % 2].say(QUESTIONS[2], user=user, dedup_key=f"u:{user}")
    await _all_delivered(pair)
    assert first.db is not None
    timers = await first.db.fetchone("SELECT COUNT(*) FROM timers")
    assert timers is not None
    assert timers[0] >= len(users)
    first.clock.advance(timedelta(days=2))
    assert first.engine is not None
    assert second.engine is not None
    fired = await asyncio.gather(first.engine.sweep(), second.engine.sweep())
    assert sum(fired) == timers[0]
    await _all_delivered(pair)
    closed = await first.db.fetchall(
        "SELECT conversation_id, COUNT(*) AS n FROM events WHERE kind = 'state'"
        " AND json_extract(data, '$.target') = 'closed' GROUP BY conversation_id"
    )
    assert len(closed) == len(users)
    assert all(r["n"] == 1 for r in closed)
    for user in users:
        conv = await first.store.load_open(first.address(user).key)
        assert conv is None or conv.state is not State.BOT
    assert await first.engine.sweep() + await second.engine.sweep() == 0


async def test_a_timer_claimed_by_a_dead_process_fires_after_its_lease(
    pair: tuple[Harness, Harness],
) -> None:
    first, second = pair
    await first.say(QUESTIONS[2], user="300")
    await _all_delivered(pair)
    first.clock.advance(timedelta(days=2))
    now = int(first.clock.now().timestamp() * 1000)
    claimed = await first.store.due_timers(now, 10)  # claimed, then the process dies
    assert claimed
    assert second.engine is not None
    assert await second.engine.sweep() == 0
    first.clock.advance(CLAIM_LEASE + timedelta(seconds=1))
    assert await second.engine.sweep() == len(claimed)
    assert await second.engine.sweep() == 0


async def test_the_digest_is_posted_once_by_two_processes(pg_url: str, tmp_path: Path) -> None:
    """Both processes' schedules fire at the same slot: one posts, the other skips."""
    clock = FakeClock(paris(2026, 11, 23, 9, 0))
    first, second = await Database.open(pg_url), await Database.open(pg_url)
    try:
        await seed_week(first)
        settings = make_settings(tmp_path / "unused.db", language="fr", digest={"targets": TARGETS})
        pubs = [publishers(), publishers()]
        services = [
            service(settings, db, p, clock, owner=f"process-{n}")
            for n, (db, p) in enumerate(zip((first, second), pubs, strict=True))
        ]
        outcomes = await asyncio.gather(*(s.run_due(clock.now()) for s in services))
        assert sorted(o.status for o in outcomes if o is not None) == ["sent", "skipped"]
        assert sorted(posted(pubs[0]) + posted(pubs[1])) == [
            "slack:C0DIGEST",
            "telegram:-100123",
        ]
        runs = await first.fetchall("SELECT status, period_end FROM digest_runs")
        assert [r["status"] for r in runs] == ["done"]
        assert int(runs[0]["period_end"]) == int(WEEK.end.timestamp() * 1000)
    finally:
        await first.close()
        await second.close()


async def test_connections_closed_by_the_server_are_opened_again(pg_url: str) -> None:
    """A restarted PostgreSQL closed our connections: /readyz's ping, the next read and
    the next write reconnect instead of failing for good."""
    import psycopg

    db = await Database.open(pg_url)
    try:
        await db.fetchall("SELECT 1")
        await db.write(lambda c: c.execute("SELECT 1"))
        with psycopg.connect(pg_url, autocommit=True) as admin:
            gone = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        assert len(gone) >= 2  # the write and the read connections
        await db.ping()
        assert [tuple(r) for r in await db.fetchall("SELECT 41 + 1")] == [(42,)]
        await db.write(lambda c: c.execute("CREATE TABLE t_after (x INTEGER)"))
        assert await db.fetchall("SELECT x FROM t_after") == []
    finally:
        await db.close()


async def test_two_supportbot_runs_on_one_postgresql_answer_each_update_once(
    tmp_path: Path, pg_url: str
) -> None:
    """Two real ``supportbot run`` in webhook mode behind one (imaginary) load balancer:
    every customer's update is POSTed to both (a redelivery landing on the other
    process), then a second message to one of them. One conversation per customer, the
    question answered once, and every reply Telegram accepted is one outbox row sent."""
    async with running_server() as tg:
        ports = [free_port(), free_port()]
        bots = []
        for n, port in enumerate(ports):
            config = write_config(
                tmp_path, webhook_settings(tmp_path / "x.db", tg, port), f"c{n}.yaml"
            )
            data = yaml.safe_load(config.read_text(encoding="utf-8"))
            data["storage"] = {"url": pg_url, "busy_timeout": "5s"}
            config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
            env = {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_WEBHOOK_SECRET": SECRET}
            bots.append(BotProcess(config, env, tmp_path / f"bot{n}.log"))
        urls = [f"http://127.0.0.1:{port}/telegram" for port in ports]
        customers = [tg.add_user(f"Client{i}") for i in range(6)]
        try:
            for bot in bots:
                await bot.start()
            first = {c.id: tg.wrap("message", tg.build_text(c, QUESTION)) for c in customers}
            statuses = await asyncio.gather(
                *(
                    tg.post_to_webhook(first[c.id], url=url, secret=SECRET)
                    for c in customers
                    for url in urls
                )
            )
            assert set(statuses) == {200}
            await eventually(lambda: all(answers(tg, c.id) for c in customers), within=30)
            second = [tg.wrap("message", tg.build_text(c, "merci")) for c in customers]
            statuses = await asyncio.gather(
                *(
                    tg.post_to_webhook(update, url=urls[n % 2], secret=SECRET)
                    for n, update in enumerate(second)
                )
            )
            assert set(statuses) == {200}
            db = await Database.open(pg_url)
            try:

                async def settled() -> bool:
                    row = await db.fetchone(
                        "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
                    )
                    handled = await db.fetchone(
                        "SELECT COUNT(*) FROM inbound_queue WHERE handled_at IS NOT NULL"
                    )
                    assert row is not None
                    assert handled is not None
                    return int(row[0]) == 0 and int(handled[0]) == 2 * len(customers)

                async with asyncio.timeout(30):
                    while not await settled():  # noqa: ASYNC110 - rows other processes write
                        await asyncio.sleep(0.05)
                per_address = await db.fetchall(
                    "SELECT address_key, COUNT(*) AS n FROM conversations GROUP BY address_key"
                )
                sent_rows = await db.fetchone(
                    "SELECT COUNT(*) FROM outbox WHERE op = 'send' AND sent_at IS NOT NULL"
                )
            finally:
                await db.close()
            assert sorted(r["n"] for r in per_address) == [1] * len(customers)
            assert all(len(answers(tg, c.id)) == 1 for c in customers)
            accepted = tg.calls_to("sendMessage", ok=True)
            assert sent_rows is not None
            assert len(accepted) == int(sent_rows[0])
            assert [await bot.stop() for bot in bots] == [0, 0]
        finally:
            for bot in bots:
                await bot.close()
