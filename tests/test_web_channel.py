"""The web channel over real HTTP and WebSockets: a SupportApp on port 0, aiohttp clients.

Covers the visitor token (forged, other visitor), origin and rate checks, history replay,
duplicate client ids, buttons, the agents' key on every console route, and a console agent
working a conversation whose thread lives on the Slack desk.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import SupportApp
from bot.clock import to_ms
from bot.config import Secrets
from bot.conversation.model import InboundEvent, Outcome
from bot.errors import ConfigError, StorageError
from handlers.web import WebTransport
from handlers.web.auth import AgentKeys, Sessions, Signer, key_file_for
from handlers.web.limits import RateLimiter
from tests.fakes.clock import FakeClock
from tests.fakes.failing import fail_once
from tests.fakes.telegram_server import running_server
from tests.reliability.inprocess import QUESTION, answers, telegram_app
from tests.test_app import SlackDeskLike, settings_for
from tests.waiting import eventually

ALICE_KEY = "alice-key-0123456789abcdef"
BOB_KEY = "bob-key-0123456789abcdef"
KEYS = f"alice:{ALICE_KEY},bob:{BOB_KEY}"
_ids = itertools.count(1)


@dataclass
class Served:
    app: SupportApp
    web: WebTransport
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.web.port}"

    async def token(self) -> str:
        async with self.http.post(f"{self.base}/api/web/session") as resp:
            assert resp.status == 200
            return str((await resp.json())["token"])

    async def widget(self, token: str, since: int = 0, lang: str = "fr", **kw: Any) -> Visitor:
        url = f"{self.base}/ws/widget?token={token}&since={since}&lang={lang}"
        return Visitor(await self.http.ws_connect(url, **kw))

    def auth(self, key: str = ALICE_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def act(
        self, cid: int, action: str, key: str = ALICE_KEY, status: int = 200, **body: Any
    ) -> Any:
        url = f"{self.base}/api/agent/conversations/{cid}/{action}"
        body.setdefault("id", f"c{next(_ids)}")
        async with self.http.post(url, json=body, headers=self.auth(key)) as resp:
            assert resp.status == status, await resp.text()
            return await resp.json()

    async def conversations(self) -> list[dict[str, Any]]:
        url = f"{self.base}/api/agent/conversations"
        async with self.http.get(url, headers=self.auth()) as resp:
            assert resp.status == 200
            return list((await resp.json())["conversations"])


class Socket:
    """A client WebSocket that collects every frame the server pushes."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(json.loads(msg.data))

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


class Visitor(Socket):
    """A widget's socket: sends frames, collects what the server pushes."""

    async def say(self, text: str, client_id: str | None = None) -> str:
        client_id = client_id or f"m{next(_ids)}"
        await self.ws.send_json({"type": "message", "id": client_id, "text": text})
        return client_id

    def lines(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "line"]

    def texts(self) -> list[str]:
        return [f["text"] for f in self.lines()]

    def has(self, fragment: str) -> bool:
        return any(fragment in t for t in self.texts())

    def asked(self, buttons: int) -> bool:
        """Whether a question with this many buttons came (11: NPS, 5: smileys)."""
        return any(sum(map(len, line["choices"])) == buttons for line in self.lines())

    def errors(self) -> list[str]:
        return [f["code"] for f in self.frames if f["type"] == "error"]

    async def hello(self) -> None:
        await self.ws.send_json({"type": "hello", "id": f"h{next(_ids)}"})

    async def press(self, label: str) -> None:
        for line in reversed(self.lines()):
            for row in line["choices"]:
                for choice in row:
                    if choice["label"] == label:
                        frame = {"type": "choice", "id": f"b{next(_ids)}", "seq": line["seq"]}
                        await self.ws.send_json({**frame, "token": choice["token"]})
                        return
        raise AssertionError(f"no button {label!r} in {self.texts()}")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    web = {"port": 0, "rate_limit": "8/10s", "max_message_length": 3000}
    settings = settings_for(tmp_path, web=web, desk="web")
    app = SupportApp(settings, Secrets(web_agent_keys=KEYS), clock=FakeClock())
    await app.start()
    web = next(t for t in app.transports if isinstance(t, WebTransport))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        try:
            yield Served(app, web, http)
        finally:
            await app.stop()


async def queued_conversation(served: Served) -> tuple[Visitor, int]:
    visitor = await served.widget(await served.token())
    await visitor.say("je veux parler à un conseiller")
    await eventually(lambda: visitor.has("conseiller") and len(visitor.lines()) >= 2)
    conversations = await served.conversations()
    assert [c["state"] for c in conversations] == ["queued"]
    return visitor, int(conversations[0]["id"])


# ---------------------------------------------------------------- visitors


async def test_knowledge_answer_and_buttons_marked_answered(served: Served) -> None:
    token = await served.token()
    visitor = await served.widget(token)
    await visitor.say("Quel est le délai de livraison ?")
    await eventually(lambda: any(line["choices"] for line in visitor.lines()))
    answer = visitor.lines()[-1]
    assert answer["author"] == "bot"
    assert "livr" in answer["text"].lower()
    await visitor.press("Oui, merci")
    await eventually(lambda: any(f["type"] == "chosen" for f in visitor.frames))
    await eventually(lambda: visitor.asked(11))
    await visitor.close()
    replay = await served.widget(token)  # a reload
    await eventually(lambda: len(replay.lines()) == len(visitor.lines()))
    assert [f["chosen"] for f in replay.lines() if f["seq"] == answer["seq"]] == ["Oui, merci"]
    await replay.close()


async def test_reconnect_replays_only_missed_lines(served: Served) -> None:
    token = await served.token()
    visitor = await served.widget(token)
    await visitor.say("bonjour")
    await eventually(lambda: len(visitor.lines()) == 2)
    await visitor.close()
    again = await served.widget(token, since=1)
    await eventually(lambda: len(again.lines()) == 1)
    assert again.lines()[0]["seq"] == 2
    await again.close()


async def test_duplicate_client_message_id_is_processed_once(served: Served) -> None:
    token = await served.token()
    visitor = await served.widget(token)
    await visitor.say("bonjour", client_id="same")
    await eventually(lambda: len(visitor.lines()) == 2)
    await visitor.close()
    again = await served.widget(token)
    await again.say("bonjour", client_id="same")  # resent after a reconnect
    await again.say("merci")
    await eventually(lambda: again.has("merci") and len(again.lines()) == 4)
    assert [line["author"] for line in again.lines()].count("customer") == 2


async def test_a_frame_the_database_refuses_gets_unavailable_and_the_socket_stays(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database driver's own error (a disk or connection failure, a line refused for
    its number during a rolling upgrade) is answered like any storage failure: the
    visitor is told to try again, and the same socket goes on."""
    fail_once(monkeypatch, served.web.store, "append", sqlite3.OperationalError("disk I/O error"))
    visitor = await served.widget(await served.token())
    sent = await visitor.say("bonjour")
    await eventually(lambda: "unavailable" in visitor.errors())
    refused = next(f for f in visitor.frames if f["type"] == "error")
    assert (refused["id"], refused["stored"]) == (sent, False)  # the widget gives it back
    assert visitor.lines() == []
    await visitor.say("bonjour")
    await eventually(lambda: len(visitor.lines()) == 2)
    await visitor.close()


async def test_a_message_stored_before_a_failure_is_not_given_back(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the visitor's line is written, a failure after it (the engine's step) leaves
    the line shown: the error does not say "not stored", so the widget keeps the box
    empty (the text given back and sent again would show twice)."""
    fail_once(monkeypatch, served.web, "on_event", StorageError("database is locked"))
    visitor = await served.widget(await served.token())
    sent = await visitor.say("bonjour")
    await eventually(lambda: "unavailable" in visitor.errors())
    refused = next(f for f in visitor.frames if f["type"] == "error")
    assert refused["id"] == sent
    assert "stored" not in refused
    assert [line["text"] for line in visitor.lines()] == ["bonjour"]
    await visitor.say("merci")
    await eventually(lambda: len(visitor.lines()) == 3)
    await visitor.close()


async def test_forged_or_foreign_tokens_are_refused(served: Served) -> None:
    token = await served.token()
    visitor_id = served.web.signer.visitor_of(token)
    assert visitor_id is not None
    for bad in (f"v1:{visitor_id}.{'0' * 64}", "v1:other." + token.rsplit(".", 1)[1], "", "x"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await served.widget(bad)
        assert refused.value.status == 401
    mallory = Signer("another-secret").sign(f"v1:{visitor_id}")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await served.widget(mallory)


async def test_visitor_sees_only_their_own_conversation(served: Served) -> None:
    alice = await served.widget(await served.token())
    await alice.say("Quel est le délai de livraison ?")
    await eventually(lambda: len(alice.lines()) == 2)
    bob = await served.widget(await served.token())
    await bob.say("bonjour")
    await eventually(lambda: len(bob.lines()) == 2)
    assert not any("livraison" in t for t in bob.texts())
    token = alice.lines()[-1]["choices"][0][0]["token"]
    await bob.ws.send_json({"type": "choice", "id": "x1", "seq": 2, "token": token})
    await eventually(lambda: "question_closed" in bob.errors())
    assert not any(f["type"] == "chosen" for f in alice.frames + bob.frames)


async def test_foreign_origin_refused_listed_origin_accepted(
    served: Served, tmp_path: Path
) -> None:
    token = await served.token()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await served.widget(token, origin="https://evil.example")
    assert refused.value.status == 403
    own = await served.widget(token, origin=served.base)
    await own.close()
    served.web.site.config = served.web.config.model_copy(
        update={"allowed_origins": ["https://shop.example"]}
    )
    listed = await served.widget(token, origin="https://shop.example")
    await listed.close()


async def test_rate_limit_says_slow_down_and_keeps_accepted(served: Served) -> None:
    visitor = await served.widget(await served.token())
    for n in range(10):
        await visitor.say(f"message {n}")
    await eventually(lambda: visitor.errors().count("rate_limited") >= 2)
    await eventually(lambda: len([ln for ln in visitor.lines() if ln["author"] == "customer"]) == 8)


async def test_too_long_message_refused_and_huge_frame_closes(served: Served) -> None:
    visitor = await served.widget(await served.token())
    sent = await visitor.say("x" * 3001)
    await eventually(lambda: "too_long" in visitor.errors())
    refused = next(f for f in visitor.frames if f["type"] == "error")
    assert (refused["limit"], refused["id"]) == (3000, sent)  # the widget gives the text back
    assert visitor.lines() == []
    await visitor.say("x" * 70_000)  # beyond the frame limit: the server closes the socket
    await eventually(lambda: visitor.ws.closed)
    assert visitor.ws.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_opened_widget_is_greeted_once_in_its_language(served: Served) -> None:
    visitor = await served.widget(await served.token(), lang="en")
    await visitor.hello()
    await eventually(lambda: len(visitor.lines()) == 1)
    greeting = visitor.lines()[0]
    assert greeting["author"] == "bot"
    assert greeting["text"].startswith("Hello! I'm the customer service assistant.")
    await visitor.hello()  # a second tab, a reload: no second greeting
    await visitor.say("Where is my invoice?")
    await eventually(lambda: len(visitor.lines()) == 3)
    assert [line["author"] for line in visitor.lines()] == ["bot", "customer", "bot"]
    french = await served.widget(await served.token())
    await french.hello()
    await eventually(lambda: len(french.lines()) == 1)
    assert french.lines()[0]["text"].startswith("Bonjour ! Je suis l'assistant")


async def test_widget_script_is_told_the_message_limit(served: Served) -> None:
    async with served.http.get(served.base + "/widget.js") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/javascript"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        script = await resp.text()
    assert "var MAX_LENGTH = 3000;" in script  # web.max_message_length of this server
    assert "var MAX_LENGTH = 4000;" not in script


# ---------------------------------------------------------------- agents


async def test_demo_page_embed_snippet_names_this_server(served: Served) -> None:
    async with served.http.get(served.base + "/") as resp:
        assert resp.status == 200
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        page = await resp.text()
    assert f'&lt;script src="{served.base}/widget.js"' in page
    assert '<script src="/widget.js"' in page  # the page's own widget
    async with served.http.get(served.base + "/", headers={"Host": '"><b>x'}) as resp:
        assert "<b>x" not in await resp.text()  # a forged Host header stays text


async def test_agent_routes_need_the_key(served: Served) -> None:
    base = served.base
    for path in ("/api/agent/conversations", "/api/agent/me", "/dashboard", "/api/kpi"):
        refused = 302 if path == "/dashboard" else 401  # the page sends to the login
        async with served.http.get(base + path, allow_redirects=False) as resp:
            assert resp.status == refused, path
        wrong = served.auth("wrong-key-000")
        async with served.http.get(base + path, headers=wrong, allow_redirects=False) as resp:
            assert resp.status == refused, path
    async with served.http.post(base + "/api/agent/conversations/1/take", json={"id": "1"}) as r:
        assert r.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await served.http.ws_connect(base + "/ws/agent")
    assert refused.value.status == 401
    async with served.http.post(base + "/agent/login", json={"key": "nope-nope"}) as resp:
        assert resp.status == 401
    async with served.http.post(base + "/agent/login", json={"key": BOB_KEY}) as resp:
        assert resp.status == 200
        assert "httponly" in resp.headers["Set-Cookie"].lower()
        assert "samesite=strict" in resp.headers["Set-Cookie"].lower()
    async with served.http.get(base + "/api/agent/me") as resp:  # the session cookie
        assert (await resp.json())["agent"] == "bob"
    async with served.http.get(base + "/api/kpi", headers=served.auth()) as resp:
        assert resp.status == 200  # the dashboard's API, mounted behind the key
        assert "nps" in json.dumps(await resp.json())
    async with served.http.get(base + "/agent") as resp:
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_console_take_reply_resolve_then_survey(served: Served) -> None:
    visitor, cid = await queued_conversation(served)
    async with served.http.ws_connect(f"{served.base}/ws/agent", headers=served.auth()) as console:
        assert (await served.act(cid, "take"))["ok"]
        pushed = await asyncio.wait_for(console.receive_json(), 5)
        assert pushed == {"type": "changed", "id": cid}
    refused = await served.act(cid, "take", key=BOB_KEY, status=409)
    assert (refused["ok"], refused["notice"]) == (False, "Déjà pris en charge par alice.")
    await served.act(cid, "reply", text="Bonjour, je regarde votre commande.")
    await eventually(lambda: visitor.has("je regarde votre commande"))
    assert visitor.lines()[-1]["author"] == "agent"
    await served.act(cid, "note", text="client fidèle")
    await served.act(cid, "resolve", tag="livraison")
    await eventually(lambda: visitor.asked(11))
    await visitor.press("9")
    await eventually(lambda: visitor.asked(5))
    url = f"{served.base}/api/agent/conversations/{cid}"
    async with served.http.get(url, headers=served.auth()) as resp:
        body = await resp.json()
    authors = [line["author"] for line in body["transcript"]]
    assert "note" in authors
    assert "agent" in authors
    assert body["conversation"]["topic"] == "livraison"


async def test_a_reply_is_stored_and_recorded_as_sent_in_one_write(served: Served) -> None:
    """The web channel is a ``RecordingChannel``: a reply's line and the outbox's record
    of it (sent, the message delivered, the first agent response) are one write, not a
    line and then ``outbox_sent``."""
    visitor, cid = await queued_conversation(served)
    store = served.app.engine.store
    assert (await served.act(cid, "take"))["ok"]
    await served.app.engine.outbox.drain()
    separate: list[Any] = []
    joined: list[Any] = []
    append_with = served.web.store.append_with

    async def outbox_sent(*args: Any) -> Any:
        separate.append(args)
        raise AssertionError("recorded apart from its line")

    async def counted(*args: Any, **kwargs: Any) -> Any:
        joined.append(kwargs["also"])
        return await append_with(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "outbox_sent", outbox_sent)
        patch.setattr(served.web.store, "append_with", counted)
        await served.act(cid, "reply", text="Je regarde votre commande.")
        await eventually(lambda: visitor.has("Je regarde votre commande"))
        await served.app.engine.outbox.drain()
    assert separate == []
    assert len(joined) == 1
    assert joined[0] is not None
    row = await store.db.fetchone(
        "SELECT o.sent_at, m.delivered_at, c.first_agent_response_at FROM outbox o"
        " JOIN messages m ON m.id = o.message_id JOIN conversations c ON c.id = o.conversation_id"
        " WHERE m.text = ?",
        ("Je regarde votre commande.",),
    )
    assert row is not None
    assert row["sent_at"] is not None
    assert row["delivered_at"] == row["sent_at"] == row["first_agent_response_at"]


async def test_transfer_to_another_agent_and_back_to_queue(served: Served) -> None:
    _visitor, cid = await queued_conversation(served)
    await served.act(cid, "take")
    url = f"{served.base}/api/agent/conversations/{cid}/transfer"
    body = {"id": "t1", "to": "mallory"}
    async with served.http.post(url, json=body, headers=served.auth()) as resp:
        assert resp.status == 400
    await served.act(cid, "transfer", to="bob")
    [conv] = await served.conversations()
    assert conv["agent"] == "bob"
    assert not conv["mine"]
    await served.act(cid, "transfer", key=BOB_KEY)
    [conv] = await served.conversations()
    assert conv["state"] == "queued"
    assert conv["waiting_s"] is not None


async def test_console_sees_and_serves_a_slack_desk_conversation(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, web={"port": 0}, slack={"agents_channel": "C1"})
    desk = SlackDeskLike("slack")
    secrets, clock = Secrets(web_agent_keys=KEYS), FakeClock()

    async def on_event(event: InboundEvent) -> Outcome:
        return await app.engine.handle(event)

    web = WebTransport(settings, secrets, on_event, clock)
    app = SupportApp(settings, secrets, clock=clock, transports=[web, desk])
    await app.start()
    try:
        async with aiohttp.ClientSession() as http:
            served = Served(app, web, http)
            visitor, cid = await queued_conversation(served)
            await eventually(lambda: len(desk.threads) == 1)
            await served.act(cid, "take")
            await served.act(cid, "reply", text="C'est noté !")
            await eventually(lambda: visitor.has("C'est noté"))
            _thread, posted = desk.only_thread()
            # Slack agents see the console's reply in the thread, as the agent's.
            await eventually(lambda: ("agent", "C'est noté !") in posted.posts)
    finally:
        await app.stop()


async def test_busy_port_is_a_clear_config_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        settings = settings_for(tmp_path, web={"port": busy.getsockname()[1]}, desk="web")
        app = SupportApp(settings, Secrets(web_agent_keys=KEYS), clock=FakeClock())
        try:
            with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1:"):
                await app.start()
        finally:
            await app.stop()


async def test_busy_port_beside_telegram_leaves_telegram_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """web.enabled: auto is a bonus next to Telegram: a busy port is a warning, not an exit."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        async with running_server() as tg:
            ana = tg.add_user("Ana", language_code="fr")
            web_auto = {"enabled": "auto", "port": port}
            async with telegram_app(tg, tmp_path / "bot.db", web=web_auto) as app:
                web = next(t for t in app.transports if isinstance(t, WebTransport))
                assert web.port is None
                await tg.customer_sends(ana, QUESTION)
                await eventually(lambda: answers(tg, ana.id), within=10)
    warning = f"web channel off: cannot listen on 127.0.0.1:{port}"
    assert any(warning in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- units


def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 10.0, now=lambda: now[0])
    assert limiter.allow("a")
    assert limiter.allow("a")
    assert not limiter.allow("a")
    assert limiter.allow("b")
    now[0] = 5.0
    assert limiter.allow("a")
    assert not limiter.allow("a")


def test_agent_keys_from_env_or_generated_file(tmp_path: Path) -> None:
    keys = AgentKeys.load("ann:0123456789abcdefghij", tmp_path / "x.agent-key")
    assert keys.agent_for("0123456789abcdefghij") == "ann"
    assert keys.agent_for("wrong") is None
    path = key_file_for(tmp_path / "support.db")
    assert path.name == "support.agent-key"
    generated = AgentKeys.load(None, path)
    key = path.read_text().strip()
    assert generated.agent_for(key) == "agent"
    assert path.stat().st_mode & 0o777 == 0o600
    assert AgentKeys.load(None, path).agent_for(key) == "agent"  # kept across restarts
    path.write_text("short-key\n")
    with pytest.raises(ConfigError, match="shorter than 20 characters; delete the file"):
        AgentKeys.load(None, path)


async def test_console_session_expires_by_the_app_clock(served: Served) -> None:
    """The cookie's 12 hours are counted on the app's clock, not the wall clock."""
    async with served.http.post(served.base + "/agent/login", json={"key": BOB_KEY}) as r:
        assert r.status == 200
    async with served.http.get(served.base + "/api/agent/me") as resp:
        assert resp.status == 200
    clock = served.app.clock
    assert isinstance(clock, FakeClock)
    clock.advance(timedelta(hours=11, minutes=59))
    async with served.http.get(served.base + "/api/agent/me") as resp:
        assert resp.status == 200
    clock.advance(timedelta(minutes=2))
    async with served.http.get(served.base + "/api/agent/me") as resp:
        assert resp.status == 401


def test_session_cookie_expires_and_resists_forgery() -> None:
    keys = AgentKeys.parse(KEYS)
    sessions = Sessions(Signer("s3cret"), keys, {})
    cookie = sessions.issue("alice", now=1000.0)
    assert sessions.agent_of(cookie, now=2000.0) == "alice"
    assert sessions.agent_of(cookie, now=1000.0 + 13 * 3600) is None
    assert sessions.agent_of(cookie.replace("alice", "bob"), now=2000.0) is None
    assert Sessions(Signer("other"), keys, {}).agent_of(cookie, now=2000.0) is None


async def test_an_english_question_in_the_french_widget_gets_an_english_answer(
    served: Served,
) -> None:
    assert served.app.settings.language == "fr"
    visitor = await served.widget(await served.token())
    await visitor.say("How long does delivery take?")
    await eventually(lambda: any(line["choices"] for line in visitor.lines()))
    answer = visitor.lines()[-1]
    assert answer["text"].endswith("\n\nDid this answer solve your problem?")
    assert [c["label"] for row in answer["choices"] for c in row] == [
        "Yes, thanks",
        "No",
        "Talk to a person",
    ]
    await visitor.close()


# ---------------------------------------------------------------- console: alerts, transcript


async def frame_of(console: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next frame of this type (consoles also hear "changed")."""
    async with asyncio.timeout(5):
        while True:
            frame = await console.receive_json()
            if frame["type"] == kind:
                return dict(frame)


async def alerts_of(served: Served, key: str) -> dict[str, Any]:
    async with served.http.get(f"{served.base}/api/agent/alerts", headers=served.auth(key)) as r:
        assert r.status == 200
        return dict(await r.json())


async def test_web_desk_alerts_are_kept_pushed_and_read_per_agent(served: Served) -> None:
    clock = served.app.clock
    assert isinstance(clock, FakeClock)
    _visitor, cid = await queued_conversation(served)
    async with served.http.ws_connect(f"{served.base}/ws/agent", headers=served.auth()) as console:
        remind_at = clock.advance(timedelta(minutes=5))  # the sweeper fires the reminder
        pushed = await frame_of(console, "alert")
    text = f"Conversation #{cid} en attente depuis 5 min."
    alert = {"id": pushed["alert"]["id"], "conversation": cid, "at": to_ms(remind_at),
             "text": text}  # fmt: skip
    assert pushed == {"type": "alert", "alert": alert}
    alice, bob = ALICE_KEY, BOB_KEY
    assert await alerts_of(served, alice) == {"alerts": [alert], "unread": 1}
    url = f"{served.base}/api/agent/alerts/read"
    async with served.http.post(url, json={"up_to": alert["id"]}, headers=served.auth()) as r:
        assert (r.status, await r.json()) == (200, {"unread": 0})
    assert (await alerts_of(served, alice))["unread"] == 0
    assert await alerts_of(served, bob) == {"alerts": [alert], "unread": 1}  # not read yet
    async with served.http.post(url, json={}, headers=served.auth()) as r:
        assert r.status == 400
    # A redelivered alert (the desk failed after the console kept it) is kept once.
    await served.web.post_alert(alert["id"], cid, text)
    assert (await alerts_of(served, bob))["alerts"] == [alert]


async def test_transfer_of_a_queued_conversation_is_a_409_with_the_reason(served: Served) -> None:
    _visitor, cid = await queued_conversation(served)
    refused = await served.act(cid, "transfer", status=409)
    assert refused["ok"] is False
    assert refused["notice"].startswith("Cette conversation est déjà dans la file d'attente")
    [conv] = await served.conversations()
    assert conv["state"] == "queued"


async def test_console_transcript_lines_carry_their_time(served: Served) -> None:
    clock = served.app.clock
    assert isinstance(clock, FakeClock)
    _visitor, cid = await queued_conversation(served)
    asked = to_ms(clock.now())
    clock.advance(timedelta(minutes=3))
    await served.act(cid, "take")
    await served.act(cid, "reply", text="Je regarde.")
    url = f"{served.base}/api/agent/conversations/{cid}"
    async with served.http.get(url, headers=served.auth()) as resp:
        lines = (await resp.json())["transcript"]
    assert [(ln["author"], ln["at"]) for ln in lines] == [
        ("customer", asked),
        ("bot", asked),
        ("bot", asked + 3 * 60_000),  # "alice a rejoint la conversation."
        ("agent", asked + 3 * 60_000),
    ]


async def test_console_marks_a_complaint_and_resolves_with_its_selects(served: Served) -> None:
    _visitor, cid = await queued_conversation(served)
    marked = await served.act(cid, "complaint")
    assert marked["ok"]
    assert "marquée comme réclamation" in marked["notice"]
    refused = await served.act(cid, "resolve", cause="la pluie", status=409)
    assert refused["notice"].startswith("Cause inconnue « la pluie »")
    done = await served.act(
        cid, "resolve", tag="livraison", cause="Retard de livraison", solution="voucher",
        note="bon de 10 €",
    )  # fmt: skip
    assert done["ok"]
    assert served.app.components is not None
    record = await served.app.components.engine.store.complaint(cid)
    assert record is not None
    assert (record.opened_by, record.cause, record.solution, record.note) == (
        "web:alice",
        "retard de livraison",
        "voucher",
        "bon de 10 €",
    )
