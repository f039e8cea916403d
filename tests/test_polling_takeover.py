"""Telegram polling with several processes on one PostgreSQL database: exactly one polls
(Telegram answers 409 to a second poller), and another takes over within seconds when
it dies, kill -9 included, answering every customer message once.

The lease itself (storage/leader.py) is tested first on two connections of a real
PostgreSQL; then two real ``supportbot run`` processes share a database and the fake
Bot API server.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path

import aiohttp
import psycopg
import pytest

from bot.app import SupportApp
from bot.config import Secrets, settings_from_mapping
from handlers.telegram import RateLimits
from storage.database import Database
from storage.leader import PgLease, SoleLease, lease_for
from tests.fakes.telegram_server import TelegramServer, running_server
from tests.reliability.bot_process import KNOWLEDGE, BotProcess, write_config
from tests.reliability.inprocess import QUESTION, answers
from tests.waiting import eventually

ROLE = "telegram-poller:42"


async def test_one_lease_wins_and_the_other_wins_once_it_is_given_up(pg_url: str) -> None:
    first = PgLease(pg_url, ROLE, retry=0.05)
    second = PgLease(pg_url, ROLE, retry=0.05)
    other_role = PgLease(pg_url, "telegram-poller:43", retry=0.05)
    try:
        await first.start()
        assert first.is_leader
        await second.start()
        await other_role.start()
        assert not second.is_leader  # tried at start, and again every 50 ms: still held
        assert other_role.is_leader  # roles are independent
        await asyncio.wait_for(second.lost.wait(), 1)
        await first.stop()  # its session ends: the server releases the lock
        await asyncio.wait_for(second.leading.wait(), 5)
        assert not first.is_leader
    finally:
        for lease in (first, second, other_role):
            await lease.stop()


async def test_a_leader_whose_connection_breaks_steps_down_at_once(pg_url: str) -> None:
    """The server ends the leader's session (as when its process is gone, or a network
    cut): the leader must not wait for its next check (an hour here) to stop leading."""
    first = PgLease(pg_url, ROLE, retry=3600)
    second = PgLease(pg_url, ROLE, retry=0.05)
    try:
        await first.start()
        await second.start()
        assert first.is_leader
        assert not second.is_leader
        with psycopg.connect(pg_url, autocommit=True) as admin:
            ended = admin.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
                " JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted"
                " AND a.application_name = 'supportbot-lease'"
            ).fetchall()
        assert ended == [(True,)]
        await asyncio.wait_for(first.lost.wait(), 5)
        assert not first.is_leader
        await asyncio.wait_for(second.leading.wait(), 5)
    finally:
        await first.stop()
        await second.stop()


async def test_on_sqlite_the_one_process_always_leads(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "t.db")
    try:
        lease = lease_for(db, ROLE)
        assert isinstance(lease, SoleLease)
        await lease.start()
        assert lease.is_leader
        await lease.stop()
        assert not lease.is_leader
    finally:
        await db.close()


async def test_on_postgresql_the_lease_is_an_advisory_lock(pg_url: str) -> None:
    db = await Database.open(pg_url)
    try:
        assert isinstance(lease_for(db, ROLE), PgLease)
    finally:
        await db.close()


async def test_the_poller_follows_the_lease_lost_with_its_connection_then_won_again(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """In a running app: the lease connection is cut and someone else takes the lock
    before this process can: it stops polling (yet /readyz counts Telegram connected),
    then polls again, from where Telegram kept the updates, once the lock is free."""
    caplog.set_level(logging.INFO, logger="storage.leader")
    async with running_server() as tg:
        config = {
            "storage": {"url": pg_url},
            "knowledge": {"path": str(KNOWLEDGE)},
            "telegram": {"api_url": tg.url, "poll_timeout": 1},
            "slack": {"enabled": False},
            "digest": {"enabled": False},
            "web": {"enabled": False},
        }
        app = SupportApp(
            settings_from_mapping(config),
            Secrets(telegram_bot_token=tg.token),
            transport_options={"telegram": {"limits": RateLimits.unlimited(), "lease_retry": 0.2}},
        )
        await app.start()
        try:
            (transport,) = app.transports
            assert transport.ready
            ana, bea = tg.add_user("Ana"), tg.add_user("Bea")
            await tg.customer_sends(ana, QUESTION)
            await tg.wait_until(lambda: answers(tg, ana.id), timeout=15, what="Ana's answer")
            lease = transport._lease
            assert isinstance(lease, PgLease)
            with psycopg.connect(pg_url, autocommit=True) as rival:
                rival.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'supportbot-lease'"
                )
                # queued first: granted as soon as the dead session lets go of the lock
                rival.execute("SELECT pg_advisory_lock(%s)", [lease.key])
                await eventually(lambda: not transport._poller.running, within=5)
                assert not lease.is_leader
                assert (await app.readiness())["telegram"] == "ok"  # it can still send
                mark = tg.mark()
                update = await tg.customer_sends(bea, QUESTION)
            # the rival's session ended: the lock is free, this process takes it again
            await tg.wait_for("getUpdates", since=mark, timeout=10, ok=None)
            await tg.wait_delivered(update, timeout=15)
            await tg.wait_until(lambda: answers(tg, bea.id), timeout=15, what="Bea's answer")
            assert transport._poller.running
            assert len(answers(tg, ana.id)) == 1
            lines = [r.getMessage() for r in caplog.records if r.name == "storage.leader"]
            role = f"telegram-poller:{tg.bot.id}"
            assert lines[0] == f"leadership of {role} taken (this process does it now)"
            assert lines[1].startswith(f"leadership of {role} lost: its database connection")
            assert lines[2] == lines[0]
        finally:
            await app.stop()


# ------------------------------------------------------------------ two real processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pending_outbox(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(
            "SELECT id, lane, op, attempts, next_attempt_at, error FROM outbox"
            " WHERE sent_at IS NULL AND failed_at IS NULL"
        ).fetchall()


async def _outbox_done(url: str, within: float) -> None:
    """Until every decided send is recorded as sent (re-checked, with a deadline)."""
    async with asyncio.timeout(within):
        while await asyncio.to_thread(_pending_outbox, url):  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.05)


async def _readyz(port: int) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/readyz") as response,
    ):
        return response.status, await response.json()


async def test_one_process_polls_and_another_takes_over_after_kill_9(
    tmp_path: Path, pg_url: str
) -> None:
    async with running_server() as tg:
        await _two_processes(tmp_path, pg_url, tg)


async def _two_processes(tmp_path: Path, pg_url: str, tg: TelegramServer) -> None:
    port = tg.url.rsplit(":", 1)[1]
    # Each process names the server differently: the Host header tells whose call it is.
    hosts = {"a": f"127.0.0.1:{port}", "b": f"localhost:{port}"}
    web_ports = {name: _free_port() for name in hosts}
    role = f"telegram-poller:{tg.bot.id}"
    taken = f"leadership of {role} taken"
    nodes = {
        name: BotProcess(
            write_config(
                tmp_path,
                {
                    "storage": {"url": pg_url},
                    "telegram": {"api_url": f"http://{host}", "poll_timeout": 5},
                    "web": {"enabled": True, "port": web_ports[name]},
                },
                name=f"config-{name}.yaml",
            ),
            {"TELEGRAM_BOT_TOKEN": tg.token},
            tmp_path / f"{name}.log",
        )
        for name, host in hosts.items()
    }
    a, b = nodes["a"], nodes["b"]
    customers = [tg.add_user(f"Client{i}") for i in range(9)]
    try:
        await a.start(within=60)
        await eventually(lambda: taken in a.output(), within=10)
        await b.start(within=60)
        # b serves (its web channel answers /readyz) without polling: Telegram "connected".
        status, body = await _readyz(web_ports["b"])
        assert status == 200, body
        assert body["checks"] == {"database": "ok", "web": "ok", "telegram": "ok"}

        for who in customers[:3]:  # before the kill: a polls and answers
            await tg.customer_sends(who, QUESTION)
        await eventually(lambda: len(answers(tg)) == 3, within=30)
        before = tg.calls_to("getUpdates")
        assert before, "nobody polled"
        assert {c.host for c in before} == {hosts["a"]}, "b polled while a led"
        assert [c for c in before if c.status == 409] == []
        assert taken not in b.output()
        # a has recorded its sends: a kill between a send and its record would send that
        # reply again (once), which is the outbox's business, not the poller's.
        await _outbox_done(pg_url, within=30)

        await a.kill()  # kill -9: no cleanup; the server ends its session (the lock)
        killed_at = time.monotonic()
        killed_mark = tg.mark()
        for who in customers[3:6]:  # while nobody polls
            await tg.customer_sends(who, QUESTION)
        first_b_poll = await tg.wait_until(
            lambda: next((c for c in tg.calls_to("getUpdates") if c.host == hosts["b"]), None),
            timeout=20,
            what="b polling",
        )
        take_over_s = first_b_poll.at - killed_at
        print(f"take-over after kill -9: {take_over_s:.2f}s")
        assert take_over_s < 15  # b tries every 2 s; the lock is free once a's socket closes
        assert taken in b.output()
        for who in customers[6:]:  # after the take-over
            await tg.customer_sends(who, QUESTION)

        await tg.wait_until(
            lambda: len(answers(tg)) >= 9 and tg.pending_updates() == 0,
            timeout=60,
            what=f"9 answers, all updates confirmed\n{b.output()[-3000:]}",
        )
        await _outbox_done(pg_url, within=30)  # nothing decided and left unsent
        for who in customers:
            assert len(answers(tg, who.id)) == 1, f"{who.first_name}: {answers(tg, who.id)}"
        after = tg.calls_to("getUpdates", since=killed_mark)
        assert {c.host for c in after} == {hosts["b"]}
        # At most one 409: the poll a left waiting when it died, ended by b's first poll.
        conflicts = [c for c in tg.calls_to("getUpdates") if c.status == 409]
        assert all(c.host == hosts["a"] for c in conflicts)
        assert len(conflicts) <= 1
        status, body = await _readyz(web_ports["b"])
        assert status == 200, body
    finally:
        for node in nodes.values():
            await node.close()
