"""The web channel under attack: what a review of the running product found (issue 13).

Each test plays one attack against a real SupportApp on port 0, over real sockets:
stalled WebSockets against the shared outbox, too many sockets, key guessing through
``Authorization``, a reverse proxy in front, replayed session cookies, malformed frames
and bodies, slow headers, and the headers of error responses.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import yaml

from bot.app import SupportApp
from bot.config import Secrets
from bot.errors import ConfigError
from handlers.web import WebTransport
from handlers.web.auth import AgentKeys
from handlers.web.console import COOKIE
from handlers.web.limits import client_group
from handlers.web.sockets import Outlet
from tests.fakes.clock import FakeClock
from tests.rawws import StalledSocket
from tests.reliability.bot_process import BotProcess, write_config
from tests.test_app import settings_for
from tests.test_web_channel import ALICE_KEY, BOB_KEY, KEYS, Served
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
BIG = "😀" * 4000  # 16 KB of UTF-8; 48 KB of JSON when every emoji is escaped
BIG_QUESTION = "envoyez la grande affiche"
QUESTION = "Quel est le délai de livraison ?"
ANSWER = "Livraison en 3 jours ouvrés."


def big_answer_kb(folder: Path) -> Path:
    """A knowledge base whose first answer is a 4,000-emoji message."""
    entries = [
        {
            "id": "poster",
            "topic": "affiche",
            "questions": {"fr": [BIG_QUESTION], "en": ["send the big poster"]},
            "answer": {"fr": BIG, "en": BIG},
        },
        {
            "id": "delivery-time",
            "topic": "livraison",
            "questions": {"fr": [QUESTION], "en": ["How long does delivery take?"]},
            "answer": {"fr": ANSWER, "en": "Delivery takes 3 days."},
        },
    ]
    path = folder / "big.yaml"
    path.write_text(yaml.safe_dump({"entries": entries}, allow_unicode=True), encoding="utf-8")
    return path


async def until(check: Callable[[], Awaitable[bool]], *, within: float) -> None:
    """``eventually`` for a condition that needs the database."""
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - state owned by the app, bounded above
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, keys: str = KEYS, clock: FakeClock | None = None, **web: Any
) -> AsyncIterator[Served]:
    """A SupportApp with the web channel (and desk) on port 0, and a client session."""
    web = {"port": 0, **web}
    kb = web.pop("knowledge", None)
    extra: dict[str, Any] = {"knowledge": {"path": str(kb)}} if kb else {}
    settings = settings_for(tmp_path, web=web, desk="web", **extra)
    app = SupportApp(settings, Secrets(web_agent_keys=keys), clock=clock or FakeClock())
    try:
        await app.start()
        transport = next(t for t in app.transports if isinstance(t, WebTransport))
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield Served(app, transport, http)
    finally:
        await app.stop()


def small_send_buffers(web: WebTransport, size: int = 128 * 1024) -> None:
    """Accepted sockets inherit the listener's SO_SNDBUF: emulate a host whose TCP send
    buffers stay at 256 KiB (the kernel doubles the value) instead of growing to 4 MiB."""
    assert web._runner is not None
    for site in web._runner.sites:
        for listener in site._server.sockets:  # type: ignore[attr-defined]
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


async def flood(sock: StalledSocket) -> None:
    """Write until the server's side of the connection is gone (at most 6 MB)."""
    for _ in range(100):
        await asyncio.get_running_loop().sock_sendall(sock.sock, b"x" * 65536)


async def bot_lines(served: Served) -> dict[str, int]:
    rows = await served.app._db.fetchall(
        "SELECT visitor, COUNT(*) AS n FROM web_messages WHERE author = 'bot' GROUP BY visitor"
    )
    return {str(row["visitor"]): int(row["n"]) for row in rows}


def warnings_and_errors(caplog: pytest.LogCaptureFixture, since: int = 0) -> list[str]:
    return [
        f"{r.levelname} {r.name}: {r.getMessage()}"
        for r in caplog.records[since:]
        if r.levelno >= logging.WARNING and r.name.startswith(("handlers", "bot", "aiohttp"))
    ]


# ---------------------------------------------------------------- 1. stalled sockets


async def test_stalled_widget_sockets_never_delay_another_visitor(tmp_path: Path) -> None:
    """70 sockets that stopped reading, each from its own address (as a botnet would),
    ask for a huge answer again and again; a fresh visitor still gets theirs at once."""
    async with serving(tmp_path, knowledge=big_answer_kb(tmp_path)) as served:
        web = served.web
        assert web.port is not None
        small_send_buffers(web)
        stalled: list[StalledSocket] = []
        try:
            for n in range(70):
                _visitor, token = web.signer.new_visitor()
                path = f"/ws/widget?token={token}"
                stalled.append(await StalledSocket.open(web.port, path, source=f"127.0.1.{n + 1}"))
            for sock in stalled:
                for i in range(20):
                    await sock.send_json({"type": "message", "id": f"q{i}", "text": BIG_QUESTION})

            async def being_pushed() -> bool:
                """Every stalled visitor's answers are under way (the 5th fills 256 KiB)."""
                counts = await bot_lines(served)
                return len(counts) == len(stalled) and min(counts.values()) >= 4

            await until(being_pushed, within=60)
            fresh = await served.widget(await served.token())
            started = time.monotonic()
            await fresh.say(QUESTION)
            await eventually(lambda: fresh.has(ANSWER), within=5)
            took = time.monotonic() - started
            await fresh.close()
        finally:
            for sock in stalled:
                sock.close()
    print(f"fresh visitor answered in {took * 1000:.0f} ms beside 70 stalled sockets")
    assert took < 2.0


async def test_a_stalled_socket_is_dropped_and_its_lines_replay_on_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kb, asks = big_answer_kb(tmp_path), 40  # 640 KB of answers: more than the buffers hold
    async with serving(
        tmp_path, knowledge=kb, send_timeout="300ms", rate_limit="100/10s"
    ) as served:
        web = served.web
        assert web.port is not None
        small_send_buffers(web)
        visitor, token = web.signer.new_visitor()
        sock = await StalledSocket.open(web.port, f"/ws/widget?token={token}")
        try:
            await eventually(lambda: visitor in web.visitors, within=10)  # counted in first
            for i in range(asks):
                await sock.send_json({"type": "message", "id": f"q{i}", "text": BIG_QUESTION})
            await eventually(lambda: visitor not in web.visitors, within=10)  # dropped
            assert any("dropped: took no data" in r.getMessage() for r in caplog.records)
            with pytest.raises(ConnectionError):  # aborted: reset, not a polite close
                await flood(sock)
        finally:
            sock.close()

        async def all_answered() -> bool:
            return (await bot_lines(served)).get(visitor) == asks

        await until(all_answered, within=10)
        again = await served.widget(token)  # the tab comes back: everything is there
        await eventually(lambda: len(again.lines()) == 2 * asks, within=10)
        assert sum(text.startswith(BIG) for text in again.texts()) == asks
        await again.close()


async def test_frames_are_compact_utf8_json(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        url = f"{served.base}/ws/widget?token={await served.token()}"
        async with served.http.ws_connect(url) as ws:
            await ws.send_json({"type": "message", "id": "m1", "text": "😀 bonjour"})
            raw = (await ws.receive(timeout=5)).data
    assert "😀 bonjour" in raw  # 4 bytes, not a 12-byte escape
    assert raw.startswith('{"type":"line","seq":1,')  # no spaces after separators
    assert json.loads(raw)["text"] == "😀 bonjour"


async def test_sockets_are_capped_per_visitor_and_per_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caps = {"max_sockets_per_visitor": 2, "max_sockets_per_ip": 3}
    async with serving(tmp_path, **caps) as served:
        token = await served.token()
        first, second = await served.widget(token), await served.widget(token)
        third = await served.widget(token)  # one tab too many
        await eventually(lambda: third.ws.closed)
        assert third.ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        other = await served.widget(await served.token())  # the address's third
        await other.say("bonjour")
        await eventually(lambda: len(other.lines()) == 2)
        fourth = await served.widget(await served.token())  # the address's fourth
        await eventually(lambda: fourth.ws.closed)
        assert fourth.ws.close_code == aiohttp.WSCloseCode.TRY_AGAIN_LATER
        await first.close()  # a freed place can be taken again
        again = await served.widget(token)
        await again.say("me revoilà")
        await eventually(lambda: again.has("me revoilà"))
        for visitor in (second, other, again):
            await visitor.close()
    refused = [r for r in caplog.records if "too many open" in r.getMessage()]
    assert len(refused) == 2


# ---------------------------------------------------------------- 4. key guessing


async def test_bearer_key_guesses_are_limited_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path, rate_limit="3/60s") as served:
        url = f"{served.base}/api/agent/conversations"
        for n in range(3):
            guess = f"guess-{n}-0123456789abcdef"
            async with served.http.get(url, headers=served.auth(guess)) as resp:
                assert resp.status == 401
        async with served.http.get(url, headers=served.auth()) as resp:
            assert resp.status == 429  # the right key, too late: not even checked
        async with served.http.post(f"{served.base}/agent/login", json={"key": ALICE_KEY}) as r:
            assert r.status == 429  # one budget for both ways in
    refusals = [r.getMessage() for r in caplog.records if "agent key refused" in r.getMessage()]
    assert len(refusals) == 3
    assert "127.0.0.1" in refusals[0]
    assert not any("guess-" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "spec",
    ["alice:short-key-1234567", "alice:0123456789abcdefghij,bob:tiny"],
)
def test_short_agent_keys_are_refused_naming_the_agent_not_the_key(spec: str) -> None:
    with pytest.raises(ConfigError) as refused:
        AgentKeys.parse(spec)
    message = str(refused.value)
    assert message.startswith("WEB_AGENT_KEYS:")
    assert "20 characters" in message
    name, key = spec.split(",")[-1].split(":")
    assert repr(name) in message
    assert key not in message


async def test_a_short_key_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WEB_AGENT_KEYS: the key of agent 'paul'"):
        async with serving(tmp_path, keys="paul:paul-key-2468"):
            pass


async def test_supportbot_run_exits_2_on_a_short_key_and_never_shows_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"web": {"enabled": True, "port": 0}, "desk": "web"})
    env = {name: "" for name in ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")}
    env["WEB_AGENT_KEYS"] = "marie:marie-key-0123456789,paul:paul-key-2468"
    bot = BotProcess(config, env, tmp_path / "bot.log")
    proc = await bot.spawn("run")
    try:
        async with asyncio.timeout(30):  # and the process ends: nothing is left open
            assert await proc.wait() == 2
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    output = bot.output()
    assert "configuration error: WEB_AGENT_KEYS: the key of agent 'paul' is shorter" in output
    assert "paul-key-2468" not in output


# ---------------------------------------------------------------- 5. reverse proxy


async def test_trusted_proxy_gives_each_visitor_their_own_bucket(tmp_path: Path) -> None:
    async with serving(tmp_path, rate_limit="2/60s", trusted_proxies=["127.0.0.0/8"]) as served:

        async def session(forwarded_for: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            async with served.http.post(f"{served.base}/api/web/session", headers=headers) as r:
                return r.status

        # The client wrote the left part; our proxy (trusted) appended the real address.
        assert [await session(f"6.6.6.{n}, 203.0.113.7") for n in range(3)] == [200, 200, 429]
        assert await session("203.0.113.8") == 200
        # IPv6 neighbours of one /64 share a bucket; the next /64 does not.
        assert [await session(f"2001:db8:1:2::{n}") for n in range(1, 4)] == [200, 200, 429]
        assert await session("2001:db8:1:3::1") == 200
        # A widget socket through the proxy counts under the visitor's own address.
        token = served.web.signer.new_visitor()[1]
        visitor = await served.widget(token, headers={"X-Forwarded-For": "198.51.100.4"})
        await visitor.say("bonjour")
        await eventually(lambda: len(visitor.lines()) == 2)
        assert served.web.site.sockets.count("ip:198.51.100.4") == 1
        await visitor.close()


async def test_untrusted_peers_cannot_choose_their_address(tmp_path: Path) -> None:
    async with serving(tmp_path, rate_limit="2/60s", trusted_proxies=["10.0.0.0/8"]) as served:
        statuses = []
        for n in range(3):
            headers = {"X-Forwarded-For": f"203.0.113.{n}"}
            async with served.http.post(f"{served.base}/api/web/session", headers=headers) as r:
                statuses.append(r.status)
        assert statuses == [200, 200, 429]


async def test_session_cookie_is_secure_when_the_proxy_says_https(tmp_path: Path) -> None:
    async with serving(tmp_path, trusted_proxies=["127.0.0.1"]) as served:
        host = f"127.0.0.1:{served.web.port}"
        behind_tls = {"X-Forwarded-Proto": "https", "Origin": f"https://{host}"}
        async with served.http.post(
            f"{served.base}/agent/login", json={"key": ALICE_KEY}, headers=behind_tls
        ) as resp:
            assert resp.status == 200  # the page's https origin is our own
            assert "secure" in resp.headers["Set-Cookie"].lower().split("; ")
        async with served.http.post(f"{served.base}/agent/login", json={"key": ALICE_KEY}) as r:
            assert "secure" not in r.headers["Set-Cookie"].lower().split("; ")
    async with serving(tmp_path, trusted_proxies=["10.0.0.0/8"]) as served:
        spoofed = {"X-Forwarded-Proto": "https"}
        async with served.http.post(
            f"{served.base}/agent/login", json={"key": ALICE_KEY}, headers=spoofed
        ) as resp:
            assert "secure" not in resp.headers["Set-Cookie"].lower().split("; ")


def test_ipv6_clients_are_grouped_by_their_64() -> None:
    assert client_group("2001:db8:1:2:aaaa::1") == client_group("2001:db8:1:2:bbbb::2")
    assert client_group("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_group("2001:db8:1:3::1") != client_group("2001:db8:1:2::1")
    assert client_group("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_group("192.0.2.1") == "192.0.2.1"


# ---------------------------------------------------------------- 6. sessions


async def login(served: Served, key: str) -> str:
    async with served.http.post(f"{served.base}/agent/login", json={"key": key}) as resp:
        assert resp.status == 200
        return resp.cookies[COOKIE].value


async def me(served: Served, cookie: str) -> int:
    async with aiohttp.ClientSession() as bare:  # only the cookie we give
        headers = {"Cookie": f"{COOKIE}={cookie}"}
        async with bare.get(f"{served.base}/api/agent/me", headers=headers) as resp:
            return resp.status


async def test_logout_ends_the_session_on_the_server_across_restarts(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        cookie = await login(served, ALICE_KEY)
        bob = await login(served, BOB_KEY)
        assert await me(served, cookie) == 200
        async with aiohttp.ClientSession() as bare:  # only alice's cookie
            headers = {"Cookie": f"{COOKIE}={cookie}"}
            async with bare.post(f"{served.base}/agent/logout", headers=headers) as resp:
                assert resp.status == 200
                assert resp.cookies[COOKIE].value == ""  # the browser forgets it, too
        assert await me(served, cookie) == 401  # a copy of the cookie is worth nothing now
        assert await me(served, bob) == 200  # other agents stay logged in
        fresh = await login(served, ALICE_KEY)
        assert await me(served, fresh) == 200
    async with serving(tmp_path) as served:  # a restart revives nothing
        assert await me(served, cookie) == 401
        assert await me(served, fresh) == 200


async def test_a_new_key_ends_the_agents_sessions(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        alice, bob = await login(served, ALICE_KEY), await login(served, BOB_KEY)
    rotated = f"alice:alice-new-key-0123456789,bob:{BOB_KEY}"
    async with serving(tmp_path, keys=rotated) as served:
        assert await me(served, alice) == 401
        assert await me(served, bob) == 200


@pytest.mark.parametrize("path", ["/agent/login", "/agent/logout"])
async def test_login_and_logout_refuse_other_origins(tmp_path: Path, path: str) -> None:
    async with serving(tmp_path) as served:
        headers = {"Origin": "https://evil.example"}
        url = served.base + path
        async with served.http.post(url, json={"key": ALICE_KEY}, headers=headers) as resp:
            assert resp.status == 403
            assert "Set-Cookie" not in resp.headers
        async with served.http.post(url, json={"key": ALICE_KEY}) as resp:
            assert resp.status == 200  # no Origin: not a browser; same origin: fine too


# ---------------------------------------------------------------- 7. robustness


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 30_000 + "]" * 30_000,  # within the 64 KiB frame limit
        json.dumps({"type": "choice", "id": "c1", "seq": 10**23, "token": "x"}),
        json.dumps({"type": "message", "id": "m1", "text": {"a": [1]}}),
        "not json at all",
    ],
    ids=["nested", "huge-seq", "text-not-string", "not-json"],
)
async def test_a_bad_widget_frame_closes_with_1003_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    async with serving(tmp_path) as served:
        visitor = await served.widget(await served.token())
        since = len(caplog.records)
        await visitor.ws.send_str(frame)
        await eventually(lambda: visitor.ws.closed)
        assert visitor.ws.close_code == aiohttp.WSCloseCode.UNSUPPORTED_DATA
        logged = warnings_and_errors(caplog, since)
        assert len(logged) == 1
        assert logged[0].startswith("WARNING handlers.web.transport: widget frame refused")
        assert all(r.exc_info is None for r in caplog.records[since:])
        again = await served.widget(await served.token())  # the server is fine
        await again.say(QUESTION)
        await eventually(lambda: len(again.lines()) >= 2)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/agent/login", b"{"),
        ("/agent/login", b"[1, 2]"),
        ("/agent/login", b"[" * 50_000),  # within the 64 KiB body limit
        ("/agent/login", b"\xff\xfe"),
        ("/api/agent/conversations/1/take", b"{"),
        ("/api/agent/conversations/" + "9" * 30 + "/take", b'{"id": "x"}'),
        ("/api/agent/conversations/" + "9" * 5000 + "/take", b'{"id": "x"}'),
    ],
    ids=["truncated", "array", "nested", "not-utf8", "act-truncated", "id-30", "id-5000"],
)
async def test_malformed_requests_get_400_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    async with serving(tmp_path) as served:
        since = len(caplog.records)
        headers = {"Content-Type": "application/json", **served.auth()}
        async with served.http.post(served.base + path, data=body, headers=headers) as resp:
            assert resp.status == 400
        logged = warnings_and_errors(caplog, since)
        assert len(logged) == 1, logged
        assert logged[0].startswith("WARNING handlers.web")
    big = "9" * 30
    async with (
        serving(tmp_path) as served,
        served.http.get(
            f"{served.base}/api/agent/conversations/{big}", headers=served.auth()
        ) as resp,
    ):
        assert resp.status == 400


async def test_slow_headers_and_idle_connections_are_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, idle_timeout="400ms") as served:
        assert served.web.port is not None
        loop = asyncio.get_running_loop()

        async def closed_after(sock: socket.socket) -> float:
            started = time.monotonic()
            async with asyncio.timeout(5):
                while await loop.sock_recv(sock, 65536):
                    pass  # a response, then the end
            return time.monotonic() - started

        slow = socket.create_connection(("127.0.0.1", served.web.port))
        slow.setblocking(False)
        await loop.sock_sendall(slow, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends
        idle = socket.create_connection(("127.0.0.1", served.web.port))
        idle.setblocking(False)
        await loop.sock_sendall(idle, b"GET /widget.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            assert await closed_after(slow) < 2.0
            assert await closed_after(idle) < 2.0  # kept alive after its answer, then closed
        finally:
            slow.close()
            idle.close()


# ---------------------------------------------------------------- 8. headers


async def test_every_response_carries_the_security_headers(tmp_path: Path) -> None:
    async with serving(tmp_path) as served:
        base = served.base
        cases = [
            ("GET", "/api/agent/me", 401),
            ("GET", "/dashboard", 302),
            ("GET", "/no/such/page", 404),
            ("POST", "/agent/login", 403),
            ("GET", "/agent", 200),
        ]
        for method, path, status in cases:
            headers = {"Origin": "https://evil.example"} if status == 403 else {}
            async with served.http.request(
                method, base + path, headers=headers, allow_redirects=False
            ) as resp:
                assert resp.status == status, path
                assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
                assert resp.headers.get("X-Frame-Options") == "DENY", path
                policy = resp.headers.get("Content-Security-Policy", "")
                assert "frame-ancestors 'none'" in policy, path
                connect = next(d for d in policy.split("; ") if d.startswith("connect-src"))
                assert connect == f"connect-src 'self' ws://127.0.0.1:{served.web.port}", path


async def test_the_demo_page_is_framed_only_by_allowed_sites(tmp_path: Path) -> None:
    async with serving(tmp_path) as served, served.http.get(served.base + "/") as resp:
        policy = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self';" in policy
        assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert " ws: " not in policy
        assert "wss:" not in policy
    shop = ["https://shop.example"]
    async with (
        serving(tmp_path, allowed_origins=shop) as served,
        served.http.get(served.base + "/") as resp,
    ):
        policy = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'self' https://shop.example;" in policy


# ---------------------------------------------------------------- the web package's shape


def test_web_modules_import_each_other_without_a_cycle() -> None:
    """The transport composes console and dashboard; they import nothing back."""
    package = ROOT / "handlers" / "web"
    names = {f"handlers.web.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    names.add("handlers.web")
    graph: dict[str, set[str]] = {}
    for name in names:
        file = package / (
            "__init__.py" if name == "handlers.web" else f"{name.rsplit('.', 1)[1]}.py"
        )
        found: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):  # TYPE_CHECKING too
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in names and t != name}
        graph[name] = found

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
            for nxt in graph[start]
        )

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert cycles == []
    assert "handlers.web.transport" not in graph["handlers.web.console"]
    assert "handlers.web.transport" not in graph["handlers.web.dashboard"]


# ---------------------------------------------------------------- the outlet, with fakes


class FakeTransport:
    """The bytes a peer left unread, as asyncio's transport reports them."""

    def __init__(self) -> None:
        self.unread = 0
        self.checks = 0
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        self.checks += 1
        return self.unread

    def abort(self) -> None:
        self.aborted = True


class FakeSocket:
    """A WebSocketResponse whose sends complete only once ``flowing`` is set."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.flowing = asyncio.Event()
        self.flowing.set()

    async def send_str(self, data: str) -> None:
        await self.flowing.wait()
        self.sent.append(data)


def fake_outlet(send_timeout: float = 0.05) -> tuple[Outlet, FakeSocket, FakeTransport]:
    ws, transport = FakeSocket(), FakeTransport()
    request = SimpleNamespace(transport=transport)
    outlet = Outlet(ws, request, send_timeout=send_timeout, who="198.51.100.1")  # type: ignore[arg-type]
    outlet.start()
    return outlet, ws, transport


async def test_a_push_returns_at_once_and_a_blocked_send_is_aborted() -> None:
    outlet, ws, transport = fake_outlet()
    ws.flowing.clear()  # the peer's buffers are full
    started = time.monotonic()
    for n in range(1000):
        outlet.push({"type": "line", "seq": n, "text": BIG})
    assert time.monotonic() - started < 1.0  # queued, never awaited
    await eventually(lambda: transport.aborted, within=2)
    assert outlet.dropped
    assert ws.sent == []
    await outlet.stop()


async def test_bytes_left_unread_between_sends_get_the_socket_aborted() -> None:
    outlet, ws, transport = fake_outlet()
    outlet.push({"type": "line", "seq": 1, "text": "bonjour"})
    await eventually(lambda: len(ws.sent) == 1)
    await eventually(lambda: transport.checks >= 4)  # idle and fully read: kept
    assert not transport.aborted
    transport.unread = 30_000  # accepted by the buffers, never read
    await eventually(lambda: transport.aborted, within=2)
    await outlet.stop()
