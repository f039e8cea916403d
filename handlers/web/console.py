"""The agent console's HTTP API and live socket, and the login that guards them.

Every agent page and API (the dashboard included) goes through ``guard``: a signed
session cookie set at login, or ``Authorization: Bearer <key>`` for scripts. Wrong keys
count against the same per-address limit whichever way they come, and are logged
(never the key). The console works from SQLite, whatever the desk, so console agents
and Slack/Telegram agents see the same conversations; actions become
``AgentMessage``/``AgentAction`` events with ``Agent(desk="web")``. The console also
keeps the desk's alerts (see ``post_alert``), so that agents who work only here hear of
detractors and waiting customers.

With several processes on one PostgreSQL database, what the engine of one process changes
is told to the consoles of every process (``publish`` sends a note, ``heard`` gets them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from bot.clock import to_ms
from bot.conversation.model import (
    Agent,
    AgentAction,
    AgentActionKind,
    AgentMessage,
    AgentPresence,
    InboundEvent,
    Outcome,
)
from handlers.web.auth import SESSION_TTL_S, AgentKeys, Sessions
from handlers.web.site import Site, bad_request, file_handler
from handlers.web.sockets import Outlet
from storage.web_store import WebAlert, WebStore

log = logging.getLogger(__name__)

COOKIE = "supportbot_agent"
AGENT = web.RequestKey("agent", str)  # set on the request by guard: the logged-in agent
PROTECTED = ("/api/agent", "/ws/agent", "/dashboard", "/api/kpi")
SAME_ORIGIN_ONLY = ("/agent/login", "/agent/logout")  # no login CSRF, no forced logout
MAX_CONVERSATION_ID = 2**53  # beyond any real id; SQLite's integers end at 2**63
RECENT_RESOLVED_MS = 24 * 3600 * 1000
TRANSCRIPT_LIMIT = 200
ALERTS_SHOWN = 100
ACTIONS = {
    "take": AgentActionKind.TAKE,
    "resolve": AgentActionKind.RESOLVE,
    "transfer": AgentActionKind.TRANSFER,
    "note": AgentActionKind.NOTE,
    "complaint": AgentActionKind.COMPLAINT,
    "saved": AgentActionKind.SAVED_REPLY,  # {"text": SHORTCUT}: a saved reply
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
EventHandler = Callable[[InboundEvent], Awaitable[Outcome]]
Roster = Callable[[], Awaitable[dict[str, Any]]]
Publish = Callable[[dict[str, Any]], None]


def _shown(author: str, name: str) -> str:
    """Agents appear by name: "web:Paul" → "Paul" (the desk prefix says nothing to agents)."""
    if author in ("agent", "note"):
        return name.partition(":")[2] or name
    return name


class Console:
    """Login, conversation lists, transcript and actions for agents in a browser."""

    def __init__(
        self,
        site: Site,
        on_event: EventHandler,
        store: WebStore,
        sessions: Sessions,
        keys: AgentKeys,
    ) -> None:
        self.site = site
        self.on_event = on_event
        self.store = store
        self.sessions = sessions
        self.keys = keys
        self.sockets: set[Outlet] = set()
        self._agent_of: dict[Outlet, str] = {}  # each open socket's agent, as "web:<name>"
        self.roster: Roster | None = None  # the engine's presences and loads (routing)
        self.publish: Publish | None = None  # tells other processes' consoles (transport)
        self._alert_seen = 0
        self._tasks: set[asyncio.Task[None]] = (
            set()
        )  # the newest alert id pushed (or kept) by this process

    def add_routes(self, app: web.Application, files: Path) -> None:
        app.router.add_get("/agent", file_handler(files / "agent.html"))
        app.router.add_get("/agent/agent.js", file_handler(files / "agent.js"))
        app.router.add_get("/agent/agent.css", file_handler(files / "agent.css"))
        app.router.add_post("/agent/login", self._login)
        app.router.add_post("/agent/logout", self._logout)
        app.router.add_get("/api/agent/me", self._me)
        app.router.add_get("/api/agent/conversations", self._list)
        app.router.add_get("/api/agent/conversations/{id:\\d+}", self._detail)
        app.router.add_post("/api/agent/conversations/{id:\\d+}/{action}", self._act)
        app.router.add_get("/api/agent/alerts", self._alerts)
        app.router.add_post("/api/agent/alerts/read", self._alerts_read)
        app.router.add_get("/ws/agent", self._socket)
        app.router.add_get("/api/agent/presence", self._presence)
        app.router.add_post("/api/agent/presence", self._set_presence)

    # ------------------------------------------------------------------ authentication

    def _now(self) -> float:
        return self.site.clock.now().timestamp()

    def _session_agent(self, request: web.Request) -> str | None:
        cookie = request.cookies.get(COOKIE)
        return self.sessions.agent_of(cookie, self._now()) if cookie else None

    def _bearer_agent(self, request: web.Request, key: str) -> str | None:
        """The agent of a bearer key; a wrong key counts as a failed login (429 when spent)."""
        ip = self.site.client_ip(request)
        if self.site.limiter.exhausted(f"login:{ip}"):
            raise web.HTTPTooManyRequests(text="slow down")  # not even checked: no guessing
        name = self.keys.agent_for(key)
        if name is None:
            self.site.limiter.allow(f"login:{ip}")
            log.warning(
                "agent key refused from %s (Authorization header, %s %s)",
                request.remote,
                request.method,
                request.path,
            )
        return name

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        protected = request.path.startswith(PROTECTED)
        if not protected and request.path not in SAME_ORIGIN_ONLY:
            return await handler(request)
        if not self.site.same_origin(request):
            log.warning("console request refused: origin %r", request.headers.get("Origin"))
            raise web.HTTPForbidden(text="origin not allowed")
        if not protected:
            return await handler(request)
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            name = self._bearer_agent(request, header.removeprefix("Bearer ").strip())
        else:
            name = self._session_agent(request)
        if name is None:
            if request.path.startswith("/dashboard") and request.method == "GET":
                raise web.HTTPFound("/agent?next=/dashboard")
            raise web.HTTPUnauthorized(
                text='{"error": "agent key required"}', content_type="application/json"
            )
        request[AGENT] = name
        return await handler(request)

    def _me_of(self, request: web.Request) -> str:
        """The agent of a request that passed ``guard`` (checked there, once)."""
        return request[AGENT]

    async def _login(self, request: web.Request) -> web.StreamResponse:
        ip = self.site.client_ip(request)
        if not self.site.limiter.allow(f"login:{ip}"):
            raise web.HTTPTooManyRequests(text="slow down")
        body = await self.site.json_body(request, "agent login")
        name = self.keys.agent_for(str(body.get("key", "")).strip())
        if name is None:
            log.warning("agent login refused from %s (wrong key)", request.remote)
            return web.json_response({"error": "wrong_key"}, status=401)
        response = web.json_response({"agent": name})
        response.set_cookie(
            COOKIE,
            self.sessions.issue(name, self._now()),
            max_age=SESSION_TTL_S,
            httponly=True,
            samesite="Strict",
            path="/",
            secure=request.secure,  # https, or a trusted proxy saying so
        )
        log.info("agent %s logged into the console", name)
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        """End the agent's sessions on the server too: a copied cookie stops working."""
        name = self._session_agent(request)
        if name is not None:
            await self.store.set_session_generation(name, self.sessions.end(name))
            log.info("agent %s logged out (every session of theirs ended)", name)
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def _me(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"agent": self._me_of(request), "agents": self.keys.names})

    # ------------------------------------------------------------------ reading

    def _summary(self, row: dict[str, Any], me: str, now: int) -> dict[str, Any]:
        queued = row["state"] == "queued" and row["handed_off_at"] is not None
        waiting = (now - row["handed_off_at"]) // 1000 if queued else None
        return {
            "id": row["id"],
            "customer": row["customer"] or "?",
            "channel": row["channel"],
            "state": row["state"],
            "topic": row["tag"] or row["topic"],
            "reason": row["handoff_reason"],
            "agent": row["agent_name"],
            "mine": row["agent_key"] == f"web:{me}",
            "waiting_s": waiting,
            "pending_s": (now - row["pending_since"]) // 1000 if row["pending_since"] else None,
            "desk": row["desk"],
        }

    async def summaries(self, me: str) -> list[dict[str, Any]]:
        now = to_ms(self.site.clock.now())
        rows = await self.store.console_conversations(now - RECENT_RESOLVED_MS)
        return [self._summary(row, me, now) for row in rows]

    async def _list(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"conversations": await self.summaries(self._me_of(request))})

    @staticmethod
    def _conversation_id(request: web.Request) -> int:
        """The URL's conversation id; an absurd one is a 400, not a database error."""
        digits = request.match_info["id"]
        if len(digits) > 16 or int(digits) > MAX_CONVERSATION_ID:
            log.warning("console: conversation id of %d digits refused", len(digits))
            raise bad_request("bad_id")
        return int(digits)

    async def _detail(self, request: web.Request) -> web.StreamResponse:
        cid = self._conversation_id(request)
        me = self._me_of(request)
        row = await self.store.console_conversation(cid)
        if row is None:
            raise web.HTTPNotFound(text='{"error": "unknown"}', content_type="application/json")
        summary = self._summary(row, me, to_ms(self.site.clock.now()))
        lines = await self.store.console_transcript(cid, TRANSCRIPT_LIMIT)
        transcript = [{**line, "name": _shown(line["author"], line["name"])} for line in lines]
        return web.json_response({"conversation": summary, "transcript": transcript})

    async def _alerts(self, request: web.Request) -> web.StreamResponse:
        """The latest alerts, newest first, and how many this agent has not read."""
        me = self._me_of(request)
        alerts = await self.store.alerts(ALERTS_SHOWN)
        unread = await self.store.unread_alerts(me)
        return web.json_response({"alerts": [a.json() for a in alerts], "unread": unread})

    async def _alerts_read(self, request: web.Request) -> web.StreamResponse:
        """The agent saw the alerts up to ``{"up_to": id}`` (the newest one shown)."""
        me = self._me_of(request)
        try:
            body = await request.json()
            up_to = int(body["up_to"])
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(
                text='{"error": "up_to required"}', content_type="application/json"
            ) from None
        await self.store.mark_alerts_read(me, up_to)
        return web.json_response({"unread": await self.store.unread_alerts(me)})

    # ------------------------------------------------------------------ acting

    async def _act(self, request: web.Request) -> web.StreamResponse:
        me: str = self._me_of(request)
        cid = self._conversation_id(request)
        action = request.match_info["action"]
        body = await self.site.json_body(request, "console action")
        client_id = str(body.get("id", ""))[:64]
        if not client_id:
            raise web.HTTPBadRequest(
                text='{"error": "id required"}', content_type="application/json"
            )
        event = self._event(Agent("web", me, me), cid, action, body, f"console:{me}:{client_id}")
        outcome = await self.on_event(event)
        # Refused (taken by someone else, already in the queue, closed…): 409 and the reason.
        return web.json_response(
            {"ok": outcome.ok, "notice": outcome.notice, "chosen": outcome.chosen},
            status=200 if outcome.ok else 409,
        )

    def _event(
        self, agent: Agent, cid: int, action: str, body: dict[str, Any], dedup: str
    ) -> InboundEvent:
        text = str(body.get("text", "")).strip()
        if action in ("reply", "note"):
            if not text:
                raise web.HTTPBadRequest(text='{"error": "empty"}', content_type="application/json")
            limit = self.site.config.max_message_length
            if len(text) > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(text))
        if action == "reply":
            return AgentMessage(agent, None, text, dedup, conversation_id=cid)
        kind = ACTIONS.get(action)
        if kind is None:
            raise web.HTTPNotFound(text='{"error": "unknown action"}')
        target = None
        if kind == AgentActionKind.TRANSFER and body.get("to"):
            name = str(body["to"])
            if name not in self.keys.names:
                raise web.HTTPBadRequest(
                    text='{"error": "unknown agent"}', content_type="application/json"
                )
            target = Agent("web", name, name)
        tag = str(body.get("tag", "")).strip()[:60] or None
        details = tuple(
            (name, str(body[name])[:1000])
            for name in ("category", "cause", "solution", "note")
            if kind == AgentActionKind.RESOLVE and body.get(name)
        )
        return AgentAction(
            agent, dedup, kind, conversation_id=cid, tag=tag, text=text or None, target=target,
            details=details,
        )  # fmt: skip

    # ------------------------------------------------------------------ presence (routing)

    async def _presence(self, request: web.Request) -> web.StreamResponse:
        """Every agent's presence and open conversations, and this agent's own."""
        me = self._me_of(request)
        roster = await self.roster() if self.roster is not None else {"agents": []}
        mine = next((a for a in roster["agents"] if a["key"] == f"web:{me}"), None)
        return web.json_response({**roster, "me": mine})

    async def _set_presence(self, request: web.Request) -> web.StreamResponse:
        """``{"available": true|false, "id": …}``: the console's presence toggle."""
        me = self._me_of(request)
        body = await self.site.json_body(request, "presence")
        available, client_id = body.get("available"), str(body.get("id", ""))[:64]
        if not isinstance(available, bool) or not client_id:
            raise web.HTTPBadRequest(
                text='{"error": "available and id required"}', content_type="application/json"
            )
        event = AgentPresence(Agent("web", me, me), available, f"console:{me}:{client_id}")
        outcome = await self.on_event(event)
        return web.json_response({"ok": outcome.ok, "notice": outcome.notice})

    # ------------------------------------------------------------------ live updates

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4096, heartbeat=30)
        await ws.prepare(request)
        outlet = Outlet(
            ws,
            request,
            send_timeout=self.site.config.send_timeout.total_seconds(),
            who=f"agent {self._me_of(request)}",
        )
        outlet.start()
        self.sockets.add(outlet)
        self._agent_of[outlet] = f"web:{self._me_of(request)}"
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.discard(outlet)
            self._agent_of.pop(outlet, None)
            await outlet.stop()
        return ws

    def changed(self, conversation_id: int) -> None:
        """Engine observer: tell open consoles to refresh this conversation (never waits)."""
        self._push_changed(conversation_id)
        self._tell({"t": "changed", "c": conversation_id})

    def _push_changed(self, conversation_id: int | None) -> None:
        for outlet in list(self.sockets):
            outlet.push({"type": "changed", "id": conversation_id})

    def assigned(self, conversation_id: int, agent_key: str) -> None:
        """Routing observer: the agent it gave a conversation to sees it in their open
        consoles (a badge on "Mes conversations" and a notice); never waits."""
        self._push_assigned(conversation_id, agent_key)
        self._tell({"t": "assigned", "c": conversation_id, "a": agent_key})

    def _push_assigned(self, conversation_id: int, agent_key: str) -> None:
        frame = {"type": "assigned", "id": conversation_id}
        for outlet, agent in list(self._agent_of.items()):
            if agent == agent_key:
                outlet.push(frame)

    async def post_alert(self, alert_id: int, conversation_id: int | None, text: str) -> None:
        """Keep an alert (once per id) and push it to the open consoles."""
        at = to_ms(self.site.clock.now())
        alert = await self.store.add_alert(alert_id, conversation_id, text, at)
        if alert is None:
            return  # a redelivery: already kept and shown
        self._push_alert(alert)
        self._tell({"t": "alert", "id": alert_id})  # the id only: the text stays stored

    def _push_alert(self, alert: WebAlert) -> None:
        self._alert_seen = max(self._alert_seen, alert.id)
        frame = {"type": "alert", "alert": alert.json()}
        for outlet in list(self.sockets):
            outlet.push(frame)

    def _tell(self, note: dict[str, Any]) -> None:
        if self.publish is not None:
            self.publish(note)

    def heard(self, note: dict[str, Any]) -> None:
        """What another process's engine or outbox did (storage/notify.py)."""
        kind, cid = note["t"], note.get("c")
        if kind == "changed" and isinstance(cid, int):
            self._push_changed(cid)
        elif kind == "assigned" and isinstance(cid, int) and isinstance(note.get("a"), str):
            self._push_assigned(cid, note["a"])
        elif kind == "alert" and isinstance(note.get("id"), int):
            self._spawn(self._show_alert(int(note["id"])))

    async def _show_alert(self, alert_id: int) -> None:
        alert = await self.store.alert(alert_id)
        if alert is not None and alert.id > self._alert_seen:
            self._push_alert(alert)

    async def resync(self) -> None:
        """Notes were lost (the LISTEN connection dropped): every list is refreshed
        (``all``: the open conversation too) and the alerts kept meanwhile are shown."""
        if not self.sockets:
            return
        for outlet in list(self.sockets):
            outlet.push({"type": "changed", "id": None, "all": True})
        missed = [a for a in await self.store.alerts(ALERTS_SHOWN) if a.id > self._alert_seen]
        for alert in reversed(missed):  # oldest first, as they came
            self._push_alert(alert)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name="console-note")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for outlet in list(self.sockets):
            await outlet.close()
