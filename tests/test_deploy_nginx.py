"""The README's deployment from outside (issue 19): Debian's nginx with deploy/nginx.conf
terminating TLS in front of ``supportbot run`` processes on one real PostgreSQL database.

Telegram updates are POSTed to nginx's https webhook route with the secret header (as
Telegram does; the bots' ``api_url`` is the local Bot API server), Slack events signed to
its Request URL, widget visitors talk over wss through nginx's WebSocket upgrade. Every
customer gets each answer exactly once, each handoff opens one forum topic, and
``supportbot kpi --format json`` counts exactly what was sent. Two deployments: one process
with the second upstream slot down (its ports refuse: nginx passes everything to the live
one), and two processes sharing the load, one of them killed with SIGKILL under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from tests.deployment import (
    Nginx,
    Process,
    Visitor,
    free_port,
    nginx_binary,
    process_config,
    self_signed,
    tls_client,
)
from tests.fakes.slack_server import BOT_TOKEN as SLACK_BOT_TOKEN
from tests.fakes.slack_server import SIGNING_SECRET, FakeSlack, Message
from tests.fakes.telegram_server import FakeChat, FakeUser, TelegramServer, running_server
from tests.reliability.bot_process import SUPPORTBOT, BotProcess
from tests.reliability.inprocess import DID_IT_HELP, QUESTION, answers
from tests.waiting import eventually

SECRET = "webhook-secret-for-the-deployment"
WEB_SECRET = "the-same-web-secret-on-every-process"
HANDOFF = "Je vous mets en relation avec un conseiller"
SLACK_ANSWER = "livrées en 2 à 4 jours ouvrés"  # a piece of knowledge.yaml's answer


@pytest.fixture
async def tg() -> AsyncIterator[TelegramServer]:
    async with running_server() as server:
        yield server


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    async with server:
        yield server


def env_of(tg: TelegramServer, database_url: str) -> dict[str, str]:
    """Each process's secrets: the same webhook and web secrets (a visitor's token and an
    agent's session are valid on either process), the database URL from the environment."""
    return {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_WEBHOOK_SECRET": SECRET,
        "WEB_SECRET": WEB_SECRET,
        "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SUPPORTBOT_DATABASE_URL": database_url,
    }


async def kpi(config: Path, env: dict[str, str]) -> dict[str, Any]:
    """``supportbot kpi --format json`` run like an operator would, on the same database."""
    proc = await asyncio.create_subprocess_exec(
        str(SUPPORTBOT), "kpi", "--format", "json", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **env},
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    report: dict[str, Any] = json.loads(out)
    return report


def topics_opened(tg: TelegramServer, desk: FakeChat) -> list[int]:
    return [
        int(c.result["message_thread_id"])
        for c in tg.calls_to("createForumTopic", ok=True)
        if c.params["chat_id"] == desk.id
    ]


async def delivered(database_url: str, within: float = 60) -> None:
    """Wait until the outbox has nothing left to deliver (every item sent or failed)."""
    pending = "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
    async with await psycopg.AsyncConnection.connect(database_url) as db:

        async def left() -> int:
            row = await (await db.execute(pending)).fetchone()
            return int(row[0]) if row else 1

        async with asyncio.timeout(within):
            while await left():  # noqa: ASYNC110 - the database's state, polled, bounded above
                await asyncio.sleep(0.05)


def told(tg: TelegramServer, user: FakeUser, text: str) -> int:
    """How many messages Telegram accepted for this customer containing ``text``."""
    return sum(
        1
        for c in tg.calls_to("sendMessage", ok=True)
        if c.params["chat_id"] == user.id and text in c.params["text"]
    )


@dataclass
class Deployed:
    """nginx in front of the processes, and an HTTPS client that trusts its certificate."""

    tg: TelegramServer
    slack: FakeSlack
    nginx: Nginx
    processes: list[Process]
    http: aiohttp.ClientSession
    public: str
    desk: FakeChat
    config: Path
    env: dict[str, str]

    async def post(self, user: FakeUser, text: str) -> int:
        """What Telegram does: the update POSTed to the webhook URL with the secret."""
        update = self.tg.wrap("message", self.tg.build_text(user, text))
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        async with self.http.post(f"{self.public}/telegram", json=update, headers=headers) as r:
            await r.read()
            return r.status

    async def slack_dm(self, user: str, text: str) -> int:
        """What Slack does: a signed Events API delivery to the Request URL."""
        body = json.dumps(self.slack.event_callback(self.slack.dm_message(user, text)))
        headers = {"Content-Type": "application/json", **self.slack.sign(body)}
        url = f"{self.public}/slack/events"
        async with self.http.post(url, data=body.encode(), headers=headers) as r:
            await r.read()
            return r.status

    def slack_answers(self, user: str) -> list[Message]:
        return [
            m
            for m in self.slack.posted(self.slack.dm_channel(user))
            if SLACK_ANSWER in m.text + json.dumps(m.blocks, ensure_ascii=False)
        ]

    def topics(self) -> list[int]:
        return topics_opened(self.tg, self.desk)


@contextlib.asynccontextmanager
async def deployed(
    tmp_path: Path, tg: TelegramServer, slack: FakeSlack, database_url: str, *, running: int
) -> AsyncIterator[Deployed]:
    """Two upstream slots in nginx; the first ``running`` processes started, the others'
    ports refuse connections (a process that is down)."""
    assert nginx_binary() is not None, "nginx is not installed (make unit installs it)"
    agent = tg.add_user("Agent")
    desk = tg.add_group("Support", forum=True, admins=[agent])
    cert, key = self_signed(tmp_path)
    port = free_port()
    public = f"https://127.0.0.1:{port}"
    processes = [Process("p1"), Process("p2")]
    env = env_of(tg, database_url)
    values = {"LISTEN_PORT": str(port), "TLS_CERT": str(cert), "TLS_KEY": str(key)}
    configs = []
    for slot, proc in zip(("1", "2"), processes, strict=True):
        values |= {f"{kind.upper()}_{slot}": proc.address(kind)
                   for kind in ("web", "telegram", "slack")}  # fmt: skip
        configs.append(process_config(
            tmp_path, proc, api_url=tg.api_url, slack_api_url=slack.api_url, desk=desk.id,
            agent=agent.id, public=public,
        ))  # fmt: skip
        proc.bot = BotProcess(configs[-1], env, tmp_path / f"{proc.name}.log")
    nginx = Nginx(tmp_path / "nginx", port, values)
    connector = aiohttp.TCPConnector(ssl=tls_client(cert), limit=0)
    try:
        for proc in processes[:running]:
            assert proc.bot is not None
            await proc.bot.start()
        await nginx.start()
        async with aiohttp.ClientSession(connector=connector) as http:
            yield Deployed(tg, slack, nginx, processes, http, public, desk, configs[0], env)
    finally:
        await nginx.stop()
        for proc in processes:
            if proc.bot is not None:
                await proc.bot.close()


@pytest.mark.slow
async def test_one_process_behind_nginx_with_the_other_down(
    tmp_path: Path, tg: TelegramServer, slack: FakeSlack, pg_url: str
) -> None:
    customers = [tg.add_user(f"Client{i}") for i in range(16)]
    callers = [tg.add_user(f"Appelant{i}") for i in range(4)]  # ask for a person
    slackers = [f"U0SLACK{i:02d}" for i in range(6)]
    for user in slackers:
        slack.add_user(user, user.lower(), locale="fr-FR")
    async with deployed(tmp_path, tg, slack, pg_url, running=1) as d:
        alive = d.processes[0]
        assert alive.bot is not None
        # The probes, through nginx: any live process answers; /metrics stays inside.
        for path, status in (("/healthz", 200), ("/readyz", 200), ("/metrics", 404)):
            async with d.http.get(f"{d.public}{path}") as resp:
                assert resp.status == status, (path, await resp.text())
        forged = tg.wrap("message", tg.build_text(customers[0], QUESTION))
        async with d.http.post(f"{d.public}/telegram", json=forged) as resp:
            assert resp.status == 403  # no secret header: refused, through nginx too

        # The widget over wss: same origin as nginx's https (X-Forwarded-Proto believed).
        visitors = [Visitor(d.http, d.public) for _ in range(10)]
        await asyncio.gather(*(v.open() for v in visitors))
        askers, web_callers = visitors[:8], visitors[8:]
        statuses = await asyncio.gather(
            *(d.post(c, QUESTION) for c in customers),
            *(d.post(c, "/agent") for c in callers),
        )
        assert statuses == [200] * 20
        assert await asyncio.gather(*(d.slack_dm(u, QUESTION) for u in slackers)) == [200] * 6
        await asyncio.gather(
            *(v.say(QUESTION, "q1") for v in askers),
            *(v.say("/agent", "a1") for v in web_callers),
        )

        def all_answered() -> bool:
            return (
                all(answers(tg, c.id) for c in customers)
                and all(told(tg, c, HANDOFF) for c in callers)
                and all(d.slack_answers(u) for u in slackers)
                and all(v.bot_lines(DID_IT_HELP) for v in askers)
                and all(v.bot_lines(HANDOFF) for v in web_callers)
                and len(d.topics()) >= len(callers) + len(web_callers)
            )

        await eventually(all_answered, within=60)

        # A page served from elsewhere cannot open the socket (the origin check still
        # works behind the proxy: Host and scheme are the client's).
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await d.http.ws_connect(
                f"{d.public.replace('https', 'wss')}/ws/widget",
                params={"token": visitors[0].token},
                headers={"Origin": "https://elsewhere.example"},
            )
        assert refused.value.status == 403
        await asyncio.gather(*(v.close() for v in visitors))
        report = await kpi(d.config, d.env)
        assert await alive.bot.stop() == 0
        alive.bot = None

    # Exactly once: each answer, each handoff notice, one topic per handed-off conversation.
    assert Counter(len(answers(tg, c.id)) for c in customers) == Counter({1: 16})
    assert [told(tg, c, HANDOFF) for c in callers] == [1] * 4
    assert [len(d.slack_answers(u)) for u in slackers] == [1] * 6
    assert [len(v.bot_lines(DID_IT_HELP)) for v in askers] == [1] * 8
    assert [len(v.bot_lines(HANDOFF)) for v in web_callers] == [1] * 2
    topics = d.topics()
    assert len(topics) == len(set(topics)) == 6
    # Everything reached the live process; the dead slot was tried and skipped.
    served = Counter(d.nginx.upstreams("/telegram"))
    assert served == Counter({alive.address("telegram"): 20 + 1}), served
    assert Counter(d.nginx.upstreams("/ws/widget")) == Counter({alive.address("web"): 10 + 1})
    assert Counter(d.nginx.upstreams("/slack/events")) == Counter({alive.address("slack"): 6})
    assert report["conversations"]["started"] == 16 + 4 + 6 + 10
    assert report["conversations"]["handed_off"] == 6


@pytest.mark.slow
async def test_two_processes_behind_nginx_share_the_load_and_survive_a_kill_9(
    tmp_path: Path, tg: TelegramServer, slack: FakeSlack, pg_url: str
) -> None:
    """Both processes serve webhook updates and widget sockets; one is killed with SIGKILL
    while updates are POSTed. Replies to Telegram fail from the start of that phase until
    the kill (so no reply is in flight at the kill: a send cut between the platform and
    its record may legitimately repeat, the outbox's business and not this test's); then
    the live process delivers everything, the dead one's claims once their lease ran out.
    Every customer gets each answer exactly once, one topic per handed-off conversation,
    and the KPIs count exactly what was sent."""
    first = [tg.add_user(f"Client{i}") for i in range(20)]
    callers = [tg.add_user(f"Appelant{i}") for i in range(4)]
    second = [tg.add_user(f"Suivant{i}") for i in range(40)]
    async with deployed(tmp_path, tg, slack, pg_url, running=2) as d:
        p1, p2 = d.processes
        assert p1.bot is not None
        assert p2.bot is not None
        visitors = [Visitor(d.http, d.public) for _ in range(14)]
        for visitor in visitors:  # one after the other: least_conn alternates
            await visitor.open()
        askers, web_callers = visitors[:12], visitors[12:]

        # Phase 1: both processes take their share.
        statuses = await asyncio.gather(
            *(d.post(c, QUESTION) for c in first), *(d.post(c, "/agent") for c in callers)
        )
        assert statuses == [200] * 24
        await asyncio.gather(
            *(v.say(QUESTION, "q1") for v in askers),
            *(v.say("/agent", "a1") for v in web_callers),
        )

        def phase_1_done() -> bool:
            return (
                all(answers(tg, c.id) for c in first)
                and all(told(tg, c, HANDOFF) for c in callers)
                and all(v.bot_lines(DID_IT_HELP) for v in askers)
                and all(v.bot_lines(HANDOFF) for v in web_callers)
                and len(d.topics()) >= 6
            )

        await eventually(phase_1_done, within=60)
        # ... and recorded: a topic the server made but its process had not yet written
        # down would be made again by the other process after the kill.
        await delivered(pg_url)
        telegram = Counter(d.nginx.upstreams("/telegram"))
        assert telegram[p1.address("telegram")] > 0
        assert telegram[p2.address("telegram")] > 0

        # Phase 2: kill -9 of p2 while updates are POSTed through nginx.
        tg.fail("sendMessage", 502, times=10**6)
        acked: set[int] = set()
        killed = asyncio.Event()

        async def post(user: FakeUser) -> None:
            for _ in range(5):  # Telegram retries what got no 200
                if await d.post(user, QUESTION) == 200:
                    acked.add(user.id)
                    if len(acked) == 15 and not killed.is_set():
                        assert p2.bot is not None
                        assert p2.bot.proc is not None
                        p2.bot.proc.send_signal(signal.SIGKILL)  # at once, under load
                        killed.set()
                    return

        await asyncio.gather(*(post(c) for c in second))
        assert killed.is_set()
        assert p2.bot.proc is not None
        assert await p2.bot.proc.wait() == -signal.SIGKILL
        p2.bot.proc = None
        tg.clear_faults()
        assert acked == {c.id for c in second}  # nginx passed the dead one's share on

        # The dead process's widgets reconnect through nginx (to the live one), replay
        # what they missed, and every visitor asks again.
        await eventually(lambda: sum(v.closed.is_set() for v in visitors) > 0, within=30)
        for visitor in visitors:
            if visitor.closed.is_set():
                await visitor.open()
        await asyncio.gather(*(v.say(QUESTION, "q2") for v in askers))

        def phase_2_done() -> bool:
            return all(answers(tg, c.id) for c in second) and all(
                len(v.bot_lines(DID_IT_HELP)) >= 2 for v in askers
            )

        await eventually(phase_2_done, within=120)
        async with d.http.get(f"{d.public}/readyz") as resp:
            assert resp.status == 200  # the live process answers for the deployment
        await asyncio.gather(*(v.close() for v in visitors))
        report = await kpi(d.config, d.env)
        assert await p1.bot.stop() == 0
        p1.bot = None

    everyone = first + second
    per_chat = Counter(len(answers(tg, c.id)) for c in everyone)
    assert per_chat == Counter({1: len(everyone)}), per_chat
    assert [told(tg, c, HANDOFF) for c in callers] == [1] * 4
    assert [len(v.bot_lines(DID_IT_HELP)) for v in askers] == [2] * 12
    assert [len(v.bot_lines(HANDOFF)) for v in web_callers] == [1] * 2
    topics = d.topics()
    assert len(topics) == len(set(topics)) == 6
    # A socket is logged when it closes: the first 14 were spread over both processes.
    sockets = Counter(d.nginx.upstreams("/ws/widget"))
    assert sockets[p1.address("web")] > 0
    assert sockets[p2.address("web")] > 0
    served = Counter(d.nginx.upstreams("/telegram"))
    print(f"\nnginx /telegram by upstream: {dict(served)}; /ws/widget: {dict(sockets)}")
    assert report["conversations"]["started"] == 20 + 4 + 40 + 14
    assert report["conversations"]["handed_off"] == 6
