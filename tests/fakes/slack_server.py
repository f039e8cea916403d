"""A local Slack that the real slack_sdk / slack-bolt talk real HTTP and WebSocket to.

One aiohttp server on 127.0.0.1 (ephemeral port) plays both sides of Slack:

* the **Web API** under ``/api/<method>`` (form, query or JSON bodies; ``Authorization:
  Bearer`` checked), with the state it implies: users, channels, DMs, threads, edits,
  ephemerals, reactions, file uploads (``/upload/<id>``) and ``response_url``s
  (``/response/<id>``). Block Kit payloads are checked against Slack's documented limits
  so that a rendering bug fails like it would on Slack (``invalid_blocks``);
* **Socket Mode**: ``apps.connections.open`` hands out ``ws://127.0.0.1:<port>/link/``;
  the server says ``hello``, sends envelopes, records acks and (when told to) redelivers
  an envelope that was not acked in time with ``retry_attempt`` + 1;
* **Slack toward the app**: signed Events API requests, interactivity payloads and slash
  commands, over HTTP (``events_url``) or through the Socket Mode connection.

Faults are injected per method: rate limits (HTTP 429 + ``Retry-After``), HTTP errors,
API errors and "down" windows. Every call is logged (method, params, time, result) and
tests wait on conditions (``wait_for`` / ``wait_until``), never on sleeps. Nothing here
depends on supportbot, so a benchmark can reuse it as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import ClientSession, ClientTimeout, WSMsgType, web

from bot.conversation.model import InboundEvent, Outcome

log = logging.getLogger(__name__)

BOT_TOKEN = "xoxb-fake-bot-0000-secret"
APP_TOKEN = "xapp-1-fake-app-0000-secret"
SIGNING_SECRET = "fake-signing-secret-8f3a"
TEAM_ID = "T0BIZ"
EXTERNAL_TEAM_ID = "T0EXT"
BOT_USER_ID = "U0BOT"
BOT_ID = "B0BOT"
APP_ID = "A0APP"

T = TypeVar("T")

_CONTROL = re.compile(r"<([!@#][^>]*)>")  # what Slack turns into a ping / link in mrkdwn


class SlackApiFailure(Exception):
    """Raised by a method implementation: answered as ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class Call:
    """One request the fake received (Web API method, upload, response_url)."""

    method: str
    params: dict[str, Any]
    at: float  # time.monotonic()
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None


@dataclass
class Message:
    """A message as Slack stores it (posted by the bot through the API, or by a person)."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    user: str | None = None
    bot_id: str | None = None
    subtype: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    reactions: dict[str, list[str]] = field(default_factory=dict)
    edits: list[dict[str, Any]] = field(default_factory=list)  # previous versions

    def as_event_message(self) -> dict[str, Any]:
        """The ``message`` object Slack puts in interactivity payloads and events."""
        out: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text}
        if self.blocks:
            out["blocks"] = self.blocks
        if self.user:
            out["user"] = self.user
        if self.bot_id:
            out["bot_id"] = self.bot_id
            out["app_id"] = APP_ID
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.subtype:
            out["subtype"] = self.subtype
        if self.files:
            out["files"] = self.files
        return out

    def plain_texts(self) -> list[str]:
        """Every plain_text string in the blocks (what Slack shows literally)."""
        return [t["text"] for t in _text_objects(self.blocks) if t.get("type") == "plain_text"]

    def mrkdwn_texts(self) -> list[str]:
        return [t["text"] for t in _text_objects(self.blocks) if t.get("type") == "mrkdwn"]

    def buttons(self) -> list[dict[str, Any]]:
        return [
            {**el, "block_id": b.get("block_id", "")}
            for b in self.blocks
            if b.get("type") == "actions"
            for el in b.get("elements", [])
            if el.get("type") == "button"
        ]


@dataclass
class Ephemeral:
    channel: str
    user: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None
    ts: str


@dataclass
class Envelope:
    """A Socket Mode envelope sent to the app, and what the app acked."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    retry_attempt: int
    retry_reason: str
    accepts_response_payload: bool
    sent_at: float
    acked: asyncio.Future[dict[str, Any]]
    redelivered_as: str | None = None

    @property
    def ack(self) -> dict[str, Any] | None:
        return self.acked.result() if self.acked.done() and not self.acked.cancelled() else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
            "retry_attempt": self.retry_attempt,
            "retry_reason": self.retry_reason,
        }


@dataclass
class Delivery:
    """What came back when Slack delivered something to the app."""

    via: str  # "http" | "socket"
    status: int  # HTTP status; for Socket Mode 200 once acked, 0 if never acked
    body: Any = None  # HTTP body (parsed JSON when possible) or the ack's payload
    envelope_id: str | None = None
    event_id: str | None = None


@dataclass
class _Rule:
    method: str  # a method name, or "*" for every method
    remaining: int
    status: int
    error: str
    retry_after: int | None = None


@dataclass
class _Socket:
    ws: web.WebSocketResponse
    ticket: str


@dataclass
class _ResponseUrl:
    channel: str
    user: str
    message_ts: str | None
    thread_ts: str | None


class FakeSlack:
    """The local Slack. ``async with FakeSlack() as slack:`` starts and stops it."""

    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        signing_secret: str = SIGNING_SECRET,
        team_id: str = TEAM_ID,
        bot_user_id: str = BOT_USER_ID,
        bot_id: str = BOT_ID,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.port = 0
        self.events_url: str | None = None  # where HTTP-mode deliveries go (the app's endpoint)

        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: list[Message] = []
        self._by_ts: dict[tuple[str, str], Message] = {}
        self.ephemerals: list[Ephemeral] = []
        self.responses: list[dict[str, Any]] = []  # bodies posted to response_urls
        self.files: dict[str, dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.envelopes: list[Envelope] = []
        self.dropped_acks: list[dict[str, Any]] = []
        self.socket_connections = 0

        self._rules: list[_Rule] = []
        self._down_until: float | None = None
        self._seq = itertools.count(1)
        self._ts_base = int(time.time())
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._sockets: list[_Socket] = []
        self._drop_acks = 0
        self._redeliver_after: float | None = None
        self._redeliver_max = 3
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

        self.add_user(bot_user_id, "supportbot", is_bot=True, bot_id=bot_id)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeSlack:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=20 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{rid}", self._response_url)
        app.router.add_get("/link/", self._websocket)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._session = ClientSession(timeout=ClientTimeout(total=30))
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in list(self._sockets):
            with contextlib.suppress(Exception):
                await sock.ws.close()
        for env in self.envelopes:
            if not env.acked.done():
                env.acked.cancel()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What to give ``AsyncWebClient(base_url=...)`` (with its trailing slash)."""
        return f"{self.base_url}/api/"

    # ------------------------------------------------------------------ directory

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        team: str | None = None,
        locale: str = "fr-FR",
        real_name: str | None = None,
        display_name: str | None = None,
        is_bot: bool = False,
        bot_id: str | None = None,
        deleted: bool = False,
    ) -> dict[str, Any]:
        user = {
            "id": user_id,
            "team_id": team or self.team_id,
            "name": name,
            "real_name": real_name if real_name is not None else name.title(),
            "deleted": deleted,
            "is_bot": is_bot,
            "is_app_user": is_bot,
            "tz": "Europe/Paris",
            "locale": locale,
            "profile": {
                "display_name": display_name if display_name is not None else name,
                "real_name": real_name if real_name is not None else name.title(),
                "team": team or self.team_id,
                **({"bot_id": bot_id} if bot_id else {}),
            },
        }
        self.users[user_id] = user
        return user

    def add_channel(
        self,
        channel_id: str,
        name: str,
        members: Iterable[str] = (),
        *,
        ext_shared: bool = False,
        private: bool = False,
        bot_member: bool = True,
        archived: bool = False,
    ) -> dict[str, Any]:
        member_list = list(dict.fromkeys(members))
        if bot_member and self.bot_user_id not in member_list:
            member_list.append(self.bot_user_id)
        channel = {
            "id": channel_id,
            "name": name,
            "is_channel": not private,
            "is_group": private,
            "is_im": False,
            "is_private": private,
            "is_archived": archived,
            "is_ext_shared": ext_shared,
            "is_shared": ext_shared,
            "members": member_list,
        }
        self.channels[channel_id] = channel
        return channel

    def dm_channel(self, user_id: str) -> str:
        """The DM channel between the bot and ``user_id`` (created on first use)."""
        for cid, ch in self.channels.items():
            if ch["is_im"] and ch["user"] == user_id:
                return cid
        cid = f"D{user_id.lstrip('U')}"
        self.channels[cid] = {
            "id": cid,
            "is_im": True,
            "is_channel": False,
            "is_group": False,
            "is_private": True,
            "is_archived": False,
            "is_ext_shared": False,
            "user": user_id,
            "members": [user_id, self.bot_user_id],
        }
        return cid

    def archive(self, channel_id: str) -> None:
        self.channels[channel_id]["is_archived"] = True

    def leave(self, channel_id: str, user_id: str) -> None:
        members = self.channels[channel_id]["members"]
        if user_id in members:
            members.remove(user_id)

    def join(self, channel_id: str, user_id: str) -> None:
        members = self.channels[channel_id]["members"]
        if user_id not in members:
            members.append(user_id)

    # ------------------------------------------------------------------ fault injection

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` calls of ``method`` get HTTP 429 with ``Retry-After``."""
        self._rules.append(_Rule(method, times, 429, "ratelimited", retry_after))

    def fail(self, method: str, times: int = 1, status: int = 500) -> None:
        """The next ``times`` calls of ``method`` get this HTTP status."""
        self._rules.append(_Rule(method, times, status, "internal_error"))

    def error(self, method: str, error: str, times: int = 1) -> None:
        """The next ``times`` calls of ``method`` answer ``{"ok": false, "error": error}``."""
        self._rules.append(_Rule(method, times, 200, error))

    def down(self, seconds: float | None = None) -> None:
        """Answer every API call with 503 for ``seconds`` (or until ``up()``)."""
        self._down_until = float("inf") if seconds is None else time.monotonic() + seconds

    def up(self) -> None:
        self._down_until = None

    def clear_faults(self) -> None:
        self._rules.clear()
        self._down_until = None

    # ------------------------------------------------------------------ waiting

    async def _notify(self) -> None:
        if self._changed is None:
            return
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
        what: str = "a condition",
    ) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every change) and return it."""
        assert self._changed is not None, "start() the fake first"
        try:
            async with asyncio.timeout(timeout), self._changed:
                while True:
                    result = predicate()
                    if result:
                        return result
                    await self._changed.wait()
        except TimeoutError:
            recent = ", ".join(f"{c.method}:{c.status}:{c.error}" for c in self.calls[-12:])
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last calls: [{recent}]"
            ) from None

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a test helper's deadline
        *,
        count: int = 1,
        since: int = 0,
        ok: bool | None = None,
    ) -> Call:
        """Wait for the ``count``-th call of ``method`` (from index ``since``) that matches."""

        def found() -> Call | None:
            hits = [
                c
                for c in self.calls[since:]
                if c.method == method
                and (ok is None or c.ok == ok)
                and (predicate is None or predicate(c))
            ]
            return hits[count - 1] if len(hits) >= count else None

        return await self.wait_until(found, timeout, what=f"{count} call(s) of {method}")

    def mark(self) -> int:
        """An index into ``calls``: pass it as ``since=`` to wait only for later calls."""
        return len(self.calls)

    def calls_to(self, method: str, *, ok: bool | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method and (ok is None or c.ok == ok)]

    async def wait_ack(
        self,
        envelope_id: str,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        env = self.envelope(envelope_id)
        return await asyncio.wait_for(asyncio.shield(env.acked), timeout)

    async def wait_socket(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until an app holds an open Socket Mode connection."""
        await self.wait_until(lambda: self._live_socket() is not None, timeout, "a socket")

    # ------------------------------------------------------------------ inspection

    def envelope(self, envelope_id: str) -> Envelope:
        return next(e for e in self.envelopes if e.envelope_id == envelope_id)

    def message(self, channel: str, ts: str) -> Message:
        msg = self._by_ts.get((channel, ts))
        if msg is None:
            raise KeyError(f"no message {ts} in {channel}")
        return msg

    def posted(
        self, channel: str | None = None, *, thread_ts: str | None = None, by_bot: bool = True
    ) -> list[Message]:
        """Messages in a channel (or thread), by default only the bot's."""
        return [
            m
            for m in self.messages
            if (channel is None or m.channel == channel)
            and (thread_ts is None or m.thread_ts == thread_ts)
            and (not by_bot or m.user == self.bot_user_id)
        ]

    @staticmethod
    def pings(message: Message) -> list[str]:
        """Control sequences Slack would turn into mentions/links: in text and in mrkdwn.

        ``plain_text`` objects are shown literally by Slack, so they never ping.
        """
        found: list[str] = []
        for text in [message.text, *message.mrkdwn_texts()]:
            found.extend(_CONTROL.findall(text or ""))
        return found

    # ------------------------------------------------------------------ Web API

    def _new_ts(self) -> str:
        return f"{self._ts_base}.{next(self._seq):06d}"

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        await self._notify()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await _read_params(request)
        token = _bearer(request) or params.pop("token", None)
        params.pop("token", None)
        now = time.monotonic()
        if self._down_until is not None and now < self._down_until:
            await self._record(Call(method, params, now, 503, "service_unavailable"))
            return web.Response(status=503, text="Service Unavailable", content_type="text/plain")
        rule = self._take_rule(method)
        if rule is not None:
            await self._record(Call(method, params, now, rule.status, rule.error))
            headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after else {}
            body = {"ok": False, "error": rule.error}
            return web.json_response(body, status=rule.status, headers=headers)
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token is None:
            return await self._fail(method, params, now, "not_authed")
        if token != expected:
            return await self._fail(method, params, now, "invalid_auth")
        impl = getattr(self, "_m_" + method.replace(".", "_"), None)
        if impl is None:
            return await self._fail(method, params, now, "unknown_method")
        try:
            result: dict[str, Any] = impl(params)
        except SlackApiFailure as exc:
            return await self._fail(method, params, now, exc.error, **exc.extra)
        await self._record(Call(method, params, now))
        return web.json_response({"ok": True, **result})

    async def _fail(
        self, method: str, params: dict[str, Any], now: float, error: str, **extra: Any
    ) -> web.Response:
        await self._record(Call(method, params, now, 200, error))
        return web.json_response({"ok": False, "error": error, **extra})

    def _take_rule(self, method: str) -> _Rule | None:
        for rule in self._rules:
            if rule.remaining > 0 and rule.method in (method, "*"):
                rule.remaining -= 1
                return rule
        return None

    # -- identity

    def _m_auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://fake-biz.slack.com/",
            "team": "Fake Biz",
            "user": "supportbot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _m_apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        ticket = f"t{next(self._seq)}"
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}"}

    def _m_users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(p.get("user", "")))
        if user is None:
            raise SlackApiFailure("user_not_found")
        shown = dict(user)
        if not _truthy(p.get("include_locale")):
            shown.pop("locale", None)
        return {"user": shown}

    # -- conversations

    def _channel(self, channel: Any, *, post: bool = False) -> dict[str, Any]:
        cid = str(channel or "")
        if cid.startswith(("U", "W")) and cid in self.users:
            cid = self.dm_channel(cid)
        ch = self.channels.get(cid)
        if ch is None:
            raise SlackApiFailure("channel_not_found")
        if post and ch["is_archived"]:
            raise SlackApiFailure("is_archived")
        if post and not ch["is_im"] and self.bot_user_id not in ch["members"]:
            raise SlackApiFailure("not_in_channel")
        return ch

    def _m_conversations_info(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channel(p.get("channel"))
        shown = {k: v for k, v in ch.items() if k != "members"}
        shown["is_member"] = self.bot_user_id in ch["members"]
        return {"channel": shown}

    def _m_conversations_members(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channel(p.get("channel"))
        limit = int(p.get("limit") or 100)
        if not 1 <= limit <= 1000:
            raise SlackApiFailure("invalid_limit")
        cursor = str(p.get("cursor") or "")
        start = 0
        if cursor:
            if not cursor.startswith("off:"):
                raise SlackApiFailure("invalid_cursor")
            start = int(cursor[4:])
        members = ch["members"]
        page = members[start : start + limit]
        after = start + limit
        nxt = f"off:{after}" if after < len(members) else ""
        return {"members": page, "response_metadata": {"next_cursor": nxt}}

    def _m_conversations_open(self, p: dict[str, Any]) -> dict[str, Any]:
        if p.get("channel"):
            return {"channel": {"id": self._channel(p["channel"])["id"]}}
        users = [u for u in str(p.get("users", "")).split(",") if u]
        if len(users) != 1:
            raise SlackApiFailure("not_implemented" if users else "users_list_not_supplied")
        if users[0] not in self.users:
            raise SlackApiFailure("user_not_found")
        return {"channel": {"id": self.dm_channel(users[0])}}

    # -- chat

    def _m_chat_postMessage(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channel(p.get("channel"), post=True)
        text, blocks = _text_and_blocks(p)
        thread_ts = p.get("thread_ts") or None
        if thread_ts is not None:
            parent = self._find(ch["id"], str(thread_ts))
            if parent is None:
                raise SlackApiFailure("thread_not_found")
            thread_ts = parent.thread_ts or parent.ts
        msg = Message(
            ch["id"], self._new_ts(), text, blocks, thread_ts, self.bot_user_id, self.bot_id
        )
        self._store(msg)
        return {"channel": ch["id"], "ts": msg.ts, "message": msg.as_event_message()}

    def _m_chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channel(p.get("channel"))
        msg = self._find(ch["id"], str(p.get("ts", "")))
        if msg is None:
            raise SlackApiFailure("message_not_found")
        if msg.user != self.bot_user_id:
            raise SlackApiFailure("cant_update_message")
        text, blocks = _text_and_blocks(p, require=False)
        msg.edits.append({"text": msg.text, "blocks": msg.blocks})
        if "text" in p:
            msg.text = text
        if "blocks" in p:
            msg.blocks = blocks
        return {
            "channel": ch["id"],
            "ts": msg.ts,
            "text": msg.text,
            "message": msg.as_event_message(),
        }

    def _m_chat_postEphemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channel(p.get("channel"), post=True)
        user = str(p.get("user", ""))
        if user not in self.users:
            raise SlackApiFailure("user_not_found")
        if user not in ch["members"]:
            raise SlackApiFailure("user_not_in_channel")
        text, blocks = _text_and_blocks(p)
        eph = Ephemeral(ch["id"], user, text, blocks, p.get("thread_ts") or None, self._new_ts())
        self.ephemerals.append(eph)
        return {"message_ts": eph.ts}

    def _m_reactions_add(self, p: dict[str, Any]) -> dict[str, Any]:
        ch = self._channel(p.get("channel"))
        msg = self._find(ch["id"], str(p.get("timestamp", "")))
        if msg is None:
            raise SlackApiFailure("message_not_found")
        name = str(p.get("name", "")).strip(":")
        if not name:
            raise SlackApiFailure("invalid_name")
        users = msg.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise SlackApiFailure("already_reacted")
        users.append(self.bot_user_id)
        return {}

    # -- files (upload v2: get URL, POST bytes, complete)

    def _m_files_getUploadURLExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        filename = str(p.get("filename") or "")
        length = int(p.get("length") or 0)
        if not filename:
            raise SlackApiFailure("invalid_arguments")
        if length <= 0:
            raise SlackApiFailure("invalid_length")
        file_id = f"F{next(self._seq):07d}"
        self.files[file_id] = {
            "id": file_id,
            "name": filename,
            "length": length,
            "content": None,
            "complete": False,
        }
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, p: dict[str, Any]) -> dict[str, Any]:
        items = p.get("files")
        if not isinstance(items, list) or not items:
            raise SlackApiFailure("invalid_arguments")
        channel_id = p.get("channel_id") or None
        ch = self._channel(channel_id, post=True) if channel_id else None
        done = []
        for item in items:
            f = self.files.get(str(item.get("id", "")))
            if f is None or f["content"] is None:
                raise SlackApiFailure("file_not_found")
            f.update(complete=True, title=item.get("title") or f["name"])
            info = {
                "id": f["id"],
                "name": f["name"],
                "title": f["title"],
                "size": len(f["content"]),
                "permalink": f"{self.base_url}/files/{f['id']}",
            }
            done.append(info)
        if ch is not None:
            msg = Message(
                ch["id"],
                self._new_ts(),
                str(p.get("initial_comment") or ""),
                thread_ts=p.get("thread_ts") or None,
                user=self.bot_user_id,
                bot_id=self.bot_id,
                subtype="file_share",
                files=done,
            )
            self._store(msg)
            for f in done:
                self.files[f["id"]]["shared_in"] = ch["id"]
        return {"files": done}

    async def _upload(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        data = await request.read()
        now = time.monotonic()
        f = self.files.get(file_id)
        if f is None:
            await self._record(Call("upload", {"file_id": file_id}, now, 404, "not_found"))
            return web.Response(status=404, text="not found", content_type="text/plain")
        f["content"] = data
        await self._record(Call("upload", {"file_id": file_id, "size": len(data)}, now))
        return web.Response(text=f"OK - {len(data)}", content_type="text/plain")

    async def _response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        target = self._response_urls.get(rid)
        body = await request.json()
        now = time.monotonic()
        if target is None:
            await self._record(Call("response_url", {"rid": rid, **body}, now, 404, "not_found"))
            return web.Response(status=404, text="no_response_url", content_type="text/plain")
        self.responses.append({"rid": rid, **body})
        if body.get("replace_original") and target.message_ts:
            msg = self._find(target.channel, target.message_ts)
            if msg is not None:
                msg.edits.append({"text": msg.text, "blocks": msg.blocks})
                msg.text = body.get("text", msg.text)
                msg.blocks = body.get("blocks", [])
        elif body.get("response_type", "ephemeral") == "ephemeral":
            self.ephemerals.append(
                Ephemeral(
                    target.channel,
                    target.user,
                    body.get("text", ""),
                    body.get("blocks", []),
                    target.thread_ts,
                    self._new_ts(),
                )
            )
        else:
            self._store(
                Message(
                    target.channel,
                    self._new_ts(),
                    body.get("text", ""),
                    body.get("blocks", []),
                    target.thread_ts,
                    self.bot_user_id,
                    self.bot_id,
                )
            )
        await self._record(Call("response_url", {"rid": rid, **body}, now))
        return web.json_response({"ok": True})

    def _find(self, channel: str, ts: str) -> Message | None:
        return self._by_ts.get((channel, ts))

    def _store(self, msg: Message) -> Message:
        self.messages.append(msg)
        self._by_ts[(msg.channel, msg.ts)] = msg
        return msg

    # ------------------------------------------------------------------ Socket Mode

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        sock = _Socket(ws, request.query.get("ticket", ""))
        self._sockets.append(sock)
        self.socket_connections += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                "connection_info": {"app_id": APP_ID},
            }
        )
        await self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_ack(json.loads(msg.data))
        finally:
            self._sockets.remove(sock)
            await self._notify()
        return ws

    async def _on_ack(self, data: dict[str, Any]) -> None:
        envelope_id = data.get("envelope_id")
        env = next((e for e in self.envelopes if e.envelope_id == envelope_id), None)
        if env is None:
            log.warning("fake slack: ack for unknown envelope %s", envelope_id)
            return
        if self._drop_acks > 0:
            self._drop_acks -= 1
            self.dropped_acks.append(data)
        elif not env.acked.done():
            env.acked.set_result(data.get("payload") or {})
        await self._notify()

    def _live_socket(self) -> _Socket | None:
        live = [s for s in self._sockets if not s.ws.closed]
        return live[-1] if live else None

    def drop_acks(self, n: int = 1) -> None:
        """Pretend the next ``n`` acks were lost on the way (the envelope stays unacked)."""
        self._drop_acks += n

    def redeliver_unacked(self, after: float | None, max_attempts: int = 3) -> None:
        """Resend an envelope not acked within ``after`` seconds (None: never), like Slack."""
        self._redeliver_after = after
        self._redeliver_max = max_attempts

    async def send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool = False,
    ) -> Envelope:
        sock = self._live_socket()
        if sock is None:
            raise AssertionError("no Socket Mode connection is open")
        env = Envelope(
            envelope_id=f"env-{next(self._seq)}",
            type=type_,
            payload=payload,
            retry_attempt=retry_attempt,
            retry_reason=retry_reason,
            accepts_response_payload=accepts_response_payload,
            sent_at=time.monotonic(),
            acked=asyncio.get_running_loop().create_future(),
        )
        self.envelopes.append(env)
        await sock.ws.send_json(env.as_dict())
        if self._redeliver_after is not None and retry_attempt < self._redeliver_max:
            self._spawn(self._redeliver(env, self._redeliver_after))
        await self._notify()
        return env

    async def _redeliver(self, env: Envelope, after: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(env.acked), after)
        except TimeoutError:
            retry = await self.send_envelope(
                env.type,
                env.payload,
                retry_attempt=env.retry_attempt + 1,
                retry_reason="timeout",
                accepts_response_payload=env.accepts_response_payload,
            )
            env.redelivered_as = retry.envelope_id

    async def disconnect_socket(self, reason: str = "refresh_requested") -> None:
        """Ask the app to reconnect, as Slack does every few hours."""
        sock = self._live_socket()
        if sock is None:
            raise AssertionError("no Socket Mode connection is open")
        await sock.ws.send_json(
            {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}}
        )

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ Slack → app

    def sign(
        self, body: str, *, timestamp: int | None = None, secret: str | None = None
    ) -> dict[str, str]:
        """The ``X-Slack-Signature`` v0 headers for ``body``."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        key = (self.signing_secret if secret is None else secret).encode()
        digest = hmac.new(key, f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}

    def event_callback(
        self, event: Mapping[str, Any], event_id: str | None = None
    ) -> dict[str, Any]:
        """The Events API envelope around ``event`` (same shape over HTTP and Socket Mode)."""
        channel = self.channels.get(str(event.get("channel", "")), {})
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "api_app_id": APP_ID,
            "event": dict(event),
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._seq):08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": bool(channel.get("is_ext_shared")),
            "event_context": f"4-fake-{next(self._seq)}",
        }

    async def post_signed(
        self,
        body: str,
        content_type: str,
        *,
        headers: Mapping[str, str] | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
        signed: bool = True,
    ) -> Delivery:
        """POST a body to ``events_url`` the way Slack does (signed unless told otherwise)."""
        assert self._session is not None, "start() the fake first"
        assert self.events_url, "set events_url to the app's URL"
        sent = {"Content-Type": content_type, **(headers or {})}
        if signed:
            sent.update(self.sign(body, timestamp=timestamp, secret=secret))
        async with self._session.post(self.events_url, data=body.encode(), headers=sent) as resp:
            raw = await resp.text()
            try:
                parsed: Any = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                parsed = raw
            return Delivery("http", resp.status, parsed)

    async def send_event(
        self,
        event: Mapping[str, Any],
        *,
        via: str = "http",
        event_id: str | None = None,
        retry: int = 0,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        secret: str | None = None,
        wait_ack: bool = True,
    ) -> Delivery:
        """Deliver an Events API event; ``retry`` > 0 marks a redelivery of ``event_id``."""
        body = self.event_callback(event, event_id)
        if via == "socket":
            env = await self.send_envelope(
                "events_api", body, retry_attempt=retry, retry_reason=retry_reason if retry else ""
            )
            return await self._socket_delivery(env, body["event_id"], wait_ack)
        headers = {}
        if retry:
            headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": retry_reason}
        text = json.dumps(body)
        d = await self.post_signed(
            text, "application/json", headers=headers, timestamp=timestamp, secret=secret
        )
        d.event_id = body["event_id"]
        return d

    async def send_interaction(
        self,
        payload: Mapping[str, Any],
        *,
        via: str = "http",
        timestamp: int | None = None,
        secret: str | None = None,
        wait_ack: bool = True,
    ) -> Delivery:
        """Deliver an interactivity payload (form-encoded ``payload=`` over HTTP)."""
        if via == "socket":
            env = await self.send_envelope("interactive", dict(payload))
            return await self._socket_delivery(env, None, wait_ack)
        body = urllib.parse.urlencode({"payload": json.dumps(payload)})
        return await self.post_signed(
            body, "application/x-www-form-urlencoded", timestamp=timestamp, secret=secret
        )

    async def send_command(
        self,
        command: str,
        *,
        user: str,
        channel: str,
        text: str = "",
        via: str = "http",
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> Delivery:
        """Run a slash command as ``user`` in ``channel``; the app's answer is in ``body``."""
        fields = self.slash_command(command, user=user, channel=channel, text=text)
        if via == "socket":
            env = await self.send_envelope("slash_commands", fields, accepts_response_payload=True)
            return await self._socket_delivery(env, None, True)
        body = urllib.parse.urlencode(fields)
        return await self.post_signed(
            body, "application/x-www-form-urlencoded", timestamp=timestamp, secret=secret
        )

    async def _socket_delivery(self, env: Envelope, event_id: str | None, wait: bool) -> Delivery:
        if not wait:
            return Delivery("socket", 0, None, env.envelope_id, event_id)
        try:
            ack = await self.wait_ack(env.envelope_id)
        except TimeoutError:
            return Delivery("socket", 0, None, env.envelope_id, event_id)
        return Delivery("socket", 200, ack, env.envelope_id, event_id)

    # ------------------------------------------------------------------ payload builders

    def _person_message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        subtype: str | None = None,
        files: list[dict[str, Any]] | None = None,
        raw: bool = False,
    ) -> dict[str, Any]:
        """Store a person's message and return its ``message`` event.

        ``text`` is what the person typed: Slack escapes ``& < >`` on the wire. With
        ``raw`` it is already wire format (``<@U123>`` from the mention picker, links…).
        """
        ch = self.channels[channel]
        text = text if raw else escape(text)
        msg = Message(
            channel,
            self._new_ts(),
            text,
            thread_ts=thread_ts,
            user=user,
            subtype=subtype,
            files=files or [],
        )
        self._store(msg)
        team = self.users.get(user, {}).get("team_id", self.team_id)
        event: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "user": user,
            "text": text,
            "ts": msg.ts,
            "event_ts": msg.ts,
            "team": team,
            "user_team": team,
            "source_team": team,
            "client_msg_id": f"cm-{next(self._seq)}",
            "channel_type": "im" if ch["is_im"] else ("group" if ch["is_private"] else "channel"),
            "blocks": [
                {
                    "type": "rich_text",
                    "block_id": "rt",
                    "elements": [
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                    ],
                }
            ],
        }
        if subtype:
            event["subtype"] = subtype
        if files:
            event["files"] = files
            event["upload"] = False
        if thread_ts:
            event["thread_ts"] = thread_ts
            parent = self._find(channel, thread_ts)
            if parent is not None and parent.user:
                event["parent_user_id"] = parent.user
        return event

    def dm_message(self, user: str, text: str, *, raw: bool = False) -> dict[str, Any]:
        """A person writes to the app in a DM (``channel_type: "im"``)."""
        return self._person_message(self.dm_channel(user), user, text, raw=raw)

    def channel_message(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        raw: bool = False,
    ) -> dict[str, Any]:
        """A person writes in a channel, top-level or in the thread of ``thread_ts``."""
        return self._person_message(channel, user, text, thread_ts=thread_ts, raw=raw)

    def file_share(
        self,
        channel: str,
        user: str,
        *,
        name: str = "photo.png",
        mimetype: str = "image/png",
        text: str = "",
        thread_ts: str | None = None,
    ) -> dict[str, Any]:
        """A person shares a file (``subtype: "file_share"``)."""
        file_id = f"F{next(self._seq):07d}"
        info = {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "size": 1234,
            "url_private": f"{self.base_url}/files-pri/{file_id}/{name}",
            "permalink": f"{self.base_url}/files/{user}/{file_id}/{name}",
        }
        return self._person_message(
            channel, user, text, thread_ts=thread_ts, subtype="file_share", files=[info]
        )

    def bot_message(
        self, channel: str, text: str, *, bot_id: str = "B0OTHER", thread_ts: str | None = None
    ) -> dict[str, Any]:
        """Another integration (or this app) posts: ``subtype: "bot_message"`` with ``bot_id``."""
        msg = Message(
            channel, self._new_ts(), text, thread_ts=thread_ts, bot_id=bot_id, subtype="bot_message"
        )
        self._store(msg)
        event = {
            "type": "message",
            "subtype": "bot_message",
            "channel": channel,
            "text": text,
            "bot_id": bot_id,
            "ts": msg.ts,
            "event_ts": msg.ts,
            "channel_type": "im" if self.channels[channel]["is_im"] else "channel",
        }
        if thread_ts:
            event["thread_ts"] = thread_ts
        return event

    def own_message_event(self, message: Message) -> dict[str, Any]:
        """The ``message`` event Slack sends back for a message the app itself posted."""
        event = message.as_event_message()
        event.update(
            channel=message.channel,
            event_ts=message.ts,
            team=self.team_id,
            channel_type="im" if self.channels[message.channel]["is_im"] else "channel",
        )
        return event

    def message_changed(self, channel: str, ts: str, new_text: str) -> dict[str, Any]:
        """A person edits a message (``subtype: "message_changed"``)."""
        msg = self.message(channel, ts)
        previous = msg.as_event_message()
        msg.edits.append({"text": msg.text, "blocks": msg.blocks})
        msg.text = new_text
        event_ts = self._new_ts()
        return {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "channel": channel,
            "ts": event_ts,
            "event_ts": event_ts,
            "message": {**msg.as_event_message(), "edited": {"user": msg.user, "ts": event_ts}},
            "previous_message": previous,
            "channel_type": "im" if self.channels[channel]["is_im"] else "channel",
        }

    def message_deleted(self, channel: str, ts: str) -> dict[str, Any]:
        msg = self.message(channel, ts)
        event_ts = self._new_ts()
        return {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "channel": channel,
            "ts": event_ts,
            "deleted_ts": ts,
            "event_ts": event_ts,
            "previous_message": msg.as_event_message(),
            "channel_type": "im" if self.channels[channel]["is_im"] else "channel",
        }

    def member_left_channel(self, channel: str, user: str) -> dict[str, Any]:
        self.leave(channel, user)
        return {
            "type": "member_left_channel",
            "user": user,
            "channel": channel,
            "channel_type": "G" if self.channels[channel]["is_private"] else "C",
            "team": self.users.get(user, {}).get("team_id", self.team_id),
            "event_ts": self._new_ts(),
        }

    def member_joined_channel(self, channel: str, user: str) -> dict[str, Any]:
        self.join(channel, user)
        return {
            "type": "member_joined_channel",
            "user": user,
            "channel": channel,
            "channel_type": "G" if self.channels[channel]["is_private"] else "C",
            "team": self.users.get(user, {}).get("team_id", self.team_id),
            "event_ts": self._new_ts(),
        }

    def app_home_opened(self, user: str) -> dict[str, Any]:
        return {
            "type": "app_home_opened",
            "user": user,
            "channel": self.dm_channel(user),
            "tab": "home",
            "event_ts": self._new_ts(),
        }

    def block_action(
        self,
        user: str,
        message: Message,
        *,
        value: str | None = None,
        action_id: str | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """A ``block_actions`` payload: ``user`` presses a button that ``message`` really has."""
        buttons = message.buttons()
        chosen = next(
            (
                b
                for b in buttons
                if (value is None or b.get("value") == value)
                and (action_id is None or b.get("action_id") == action_id)
                and (label is None or b["text"]["text"] == label)
            ),
            None,
        )
        if chosen is None:
            raise AssertionError(
                f"no such button in message {message.ts}: "
                f"{[(b.get('action_id'), b.get('value')) for b in buttons]}"
            )
        rid = f"r{next(self._seq)}"
        self._response_urls[rid] = _ResponseUrl(
            message.channel, user, message.ts, message.thread_ts
        )
        ch = self.channels[message.channel]
        team = self.users.get(user, {}).get("team_id", self.team_id)
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        if message.thread_ts:
            container["thread_ts"] = message.thread_ts
        n = next(self._seq)
        return {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": self.users.get(user, {}).get("name", user),
                "name": self.users.get(user, {}).get("name", user),
                "team_id": team,
            },
            "api_app_id": APP_ID,
            "token": "fake-verification-token",
            "container": container,
            "trigger_id": f"{n}.{n}.fake{n:06x}",
            "team": {"id": self.team_id, "domain": "fake-biz"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {
                "id": message.channel,
                "name": "directmessage" if ch["is_im"] else ch.get("name", ""),
            },
            "message": message.as_event_message(),
            "state": {"values": {}},
            "response_url": f"{self.base_url}/response/{rid}",
            "actions": [
                {
                    "type": "button",
                    "action_id": chosen.get("action_id"),
                    "block_id": chosen.get("block_id", ""),
                    "text": chosen["text"],
                    "value": chosen.get("value"),
                    "action_ts": f"{time.time():.0f}.{n:06d}",
                }
            ],
        }

    def slash_command(
        self, command: str, *, user: str, channel: str, text: str = ""
    ) -> dict[str, str]:
        rid = f"r{next(self._seq)}"
        self._response_urls[rid] = _ResponseUrl(channel, user, None, None)
        n = next(self._seq)
        ch = self.channels.get(channel, {})
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake-biz",
            "channel_id": channel,
            "channel_name": "directmessage" if ch.get("is_im") else ch.get("name", ""),
            "user_id": user,
            "user_name": self.users.get(user, {}).get("name", user),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": f"{self.base_url}/response/{rid}",
            "trigger_id": f"{n}.{n}.fake{n:06x}",
        }


# ---------------------------------------------------------------------- a recording sink


class RecordingSink:
    """A recording ``on_event`` (``bot.conversation.ports.EventSink``) that answers
    scripted Outcomes.

    ``script`` maps an event to its Outcome (default: ``Outcome()``); every event is kept
    in ``events`` and ``wait`` waits for one without sleeping.
    """

    def __init__(self, script: Callable[[InboundEvent], Outcome] | None = None) -> None:
        self.events: list[InboundEvent] = []
        self.script = script or (lambda _ev: Outcome())
        self._changed = asyncio.Condition()
        self.fail_with: Exception | None = None

    async def __call__(self, event: InboundEvent) -> Outcome:
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()
        if self.fail_with is not None:
            raise self.fail_with
        return self.script(event)

    def of(self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(
        self,
        kind: type[T],
        count: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> T:
        """The ``count``-th event of this type, once it has arrived."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while len(self.of(kind)) < count:
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"no {count}x {kind.__name__} within {timeout}s; got {self.events!r}"
            ) from None
        return self.of(kind)[count - 1]


# ---------------------------------------------------------------------- helpers

_LIMITS = {
    "blocks": 50,
    "section_text": 3000,
    "field": 2000,
    "fields": 10,
    "header": 150,
    "elements": 25,
    "button_text": 75,
    "value": 2000,
    "action_id": 255,
    "context": 10,
    "text": 40000,
}


def escape(text: str) -> str:
    """What Slack does to ``& < >`` typed by a person (and what apps must do)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _text_objects(blocks: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for b in blocks:
        if isinstance(b.get("text"), Mapping):
            out.append(b["text"])
        out.extend(f for f in b.get("fields", []) if isinstance(f, Mapping))
        for el in b.get("elements", []):
            if isinstance(el, Mapping) and el.get("type") in ("plain_text", "mrkdwn"):
                out.append(el)
            elif isinstance(el, Mapping) and isinstance(el.get("text"), Mapping):
                out.append(el["text"])
    return out


def _check_text(obj: Any, where: str, limit: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, Mapping) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"{where}: must be a text object"]
    if plain_only and obj["type"] != "plain_text":
        return [f"{where}: must be plain_text"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}: text must be a non-empty string"]
    if len(text) > limit:
        return [f"{where}: must be at most {limit} characters"]
    return []


def validate_blocks(blocks: Any) -> list[str]:
    """Slack's documented Block Kit limits, for the block types an app posts."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errors: list[str] = []
    if len(blocks) > _LIMITS["blocks"]:
        errors.append(f"no more than {_LIMITS['blocks']} blocks")
    action_ids: set[str] = set()
    block_ids: set[str] = set()
    for i, b in enumerate(blocks):
        where = f"[{i}]"
        if not isinstance(b, Mapping):
            errors.append(f"{where}: must be an object")
            continue
        bid = b.get("block_id")
        if bid is not None:
            if bid in block_ids:
                errors.append(f"{where}: duplicate block_id {bid}")
            block_ids.add(bid)
        kind = b.get("type")
        if kind == "section":
            if "text" not in b and "fields" not in b:
                errors.append(f"{where}: section needs text or fields")
            if "text" in b:
                errors += _check_text(b["text"], f"{where}.text", _LIMITS["section_text"])
            fields = b.get("fields", [])
            if len(fields) > _LIMITS["fields"]:
                errors.append(f"{where}: at most {_LIMITS['fields']} fields")
            for j, f in enumerate(fields):
                errors += _check_text(f, f"{where}.fields[{j}]", _LIMITS["field"])
        elif kind == "header":
            errors += _check_text(b.get("text"), f"{where}.text", _LIMITS["header"], True)
        elif kind == "context":
            els = b.get("elements", [])
            if not 1 <= len(els) <= _LIMITS["context"]:
                errors.append(f"{where}: context needs 1 to {_LIMITS['context']} elements")
            for j, el in enumerate(els):
                if isinstance(el, Mapping) and el.get("type") == "image":
                    continue
                errors += _check_text(el, f"{where}.elements[{j}]", _LIMITS["section_text"])
        elif kind == "actions":
            els = b.get("elements", [])
            if not 1 <= len(els) <= _LIMITS["elements"]:
                errors.append(f"{where}: actions needs 1 to {_LIMITS['elements']} elements")
            for j, el in enumerate(els):
                w = f"{where}.elements[{j}]"
                if not isinstance(el, Mapping) or el.get("type") != "button":
                    continue
                errors += _check_text(el.get("text"), f"{w}.text", _LIMITS["button_text"], True)
                aid = el.get("action_id")
                if not isinstance(aid, str) or not 1 <= len(aid) <= _LIMITS["action_id"]:
                    errors.append(f"{w}: action_id must be 1..{_LIMITS['action_id']} chars")
                elif aid in action_ids:
                    errors.append(f"{w}: duplicate action_id {aid}")
                else:
                    action_ids.add(aid)
                if len(str(el.get("value", ""))) > _LIMITS["value"]:
                    errors.append(f"{w}: value must be at most {_LIMITS['value']} characters")
        elif kind not in ("divider", "image", "rich_text", "file", "input", "markdown"):
            errors.append(f"{where}: unknown block type {kind!r}")
    return errors


def _text_and_blocks(p: Mapping[str, Any], *, require: bool = True) -> tuple[str, list[Any]]:
    text = p.get("text")
    text = "" if text is None else str(text)
    blocks = p.get("blocks") or []
    errors = validate_blocks(blocks)
    if errors:
        raise SlackApiFailure("invalid_blocks", errors=errors)
    if require and not text and not blocks:
        raise SlackApiFailure("no_text")
    if len(text) > _LIMITS["text"]:
        raise SlackApiFailure("msg_too_long")
    return text, blocks


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            params.update(await request.json())
        elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
    for key in ("blocks", "attachments", "files"):
        if isinstance(params.get(key), str):
            with contextlib.suppress(json.JSONDecodeError):
                params[key] = json.loads(params[key])
    return params


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.startswith("Bearer ") else None


def _truthy(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")
