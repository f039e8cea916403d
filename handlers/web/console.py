"""The agent console's HTTP API and live socket, and the login that guards them.

Every agent page and API (the dashboard included) goes through ``guard``: a signed
session cookie set at login, or ``Authorization: Bearer <key>`` for scripts. The
console works from SQLite, whatever the desk, so console agents and Slack/Telegram
agents see the same conversations; actions become ``AgentMessage``/``AgentAction``
events with ``Agent(desk="web")``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from bot.clock import to_ms
from bot.model import (
    Agent,
    AgentAction,
    AgentActionKind,
    AgentMessage,
    InboundEvent,
    TranscriptLine,
)
from handlers.web.auth import SESSION_TTL_S, AgentKeys, Signer
from storage.web_store import WebStore

if TYPE_CHECKING:
    from bot.engine import ConversationService
    from handlers.web.transport import WebTransport

log = logging.getLogger(__name__)

COOKIE = "supportbot_agent"
AGENT = web.RequestKey("agent", str)  # set on the request by guard: the logged-in agent
PROTECTED = ("/api/agent", "/ws/agent", "/dashboard", "/api/kpi")
RECENT_RESOLVED_MS = 24 * 3600 * 1000
TRANSCRIPT_LIMIT = 200
ACTIONS = {
    "take": AgentActionKind.TAKE,
    "resolve": AgentActionKind.RESOLVE,
    "transfer": AgentActionKind.TRANSFER,
    "note": AgentActionKind.NOTE,
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _shown(line: TranscriptLine) -> str:
    """Agents appear by name: "web:Paul" → "Paul" (the desk prefix says nothing to agents)."""
    if line.author in ("agent", "note"):
        return line.name.partition(":")[2] or line.name
    return line.name


class Console:
    """Login, conversation lists, transcript and actions for agents in a browser."""

    def __init__(
        self,
        transport: WebTransport,
        engine: ConversationService,
        store: WebStore,
        signer: Signer,
        keys: AgentKeys,
    ) -> None:
        self.transport = transport
        self.engine = engine
        self.store = store
        self.signer = signer
        self.keys = keys
        self.sockets: set[web.WebSocketResponse] = set()

    def add_routes(self, app: web.Application, files: Path) -> None:
        file = self.transport.file_handler
        app.router.add_get("/agent", file(files / "agent.html"))
        app.router.add_get("/agent/agent.js", file(files / "agent.js"))
        app.router.add_get("/agent/agent.css", file(files / "agent.css"))
        app.router.add_post("/agent/login", self._login)
        app.router.add_post("/agent/logout", self._logout)
        app.router.add_get("/api/agent/me", self._me)
        app.router.add_get("/api/agent/conversations", self._list)
        app.router.add_get("/api/agent/conversations/{id:\\d+}", self._detail)
        app.router.add_post("/api/agent/conversations/{id:\\d+}/{action}", self._act)
        app.router.add_get("/ws/agent", self._socket)

    # ------------------------------------------------------------------ authentication

    def agent_of(self, request: web.Request) -> str | None:
        """The logged-in agent's name (bearer key or session cookie), else None."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.keys.agent_for(header.removeprefix("Bearer ").strip())
        cookie = request.cookies.get(COOKIE)
        if cookie:
            name = self.signer.session_agent(cookie, self._epoch_s())
            if name in self.keys:
                return name
        return None

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(PROTECTED):
            return await handler(request)
        origin = request.headers.get("Origin")
        own = f"{request.scheme}://{request.host}".lower()
        if origin is not None and origin.lower() != own:
            log.warning("console request refused: origin %r", origin)
            raise web.HTTPForbidden(text="origin not allowed")
        name = self.agent_of(request)
        if name is None:
            if request.path.startswith("/dashboard") and request.method == "GET":
                raise web.HTTPFound("/agent?next=/dashboard")
            raise web.HTTPUnauthorized(
                text='{"error": "agent key required"}', content_type="application/json"
            )
        request[AGENT] = name
        return await handler(request)

    def _epoch_s(self) -> float:
        """Now, by the app's clock: session cookies expire on it, not on the wall clock."""
        return self.transport.clock.now().timestamp()

    def _me_of(self, request: web.Request) -> str:
        """The agent of a request that passed ``guard`` (checked there, once)."""
        return request[AGENT]

    async def _login(self, request: web.Request) -> web.StreamResponse:
        ip = self.transport.client_ip(request)
        if not self.transport.limiter.allow(f"login:{ip}"):
            raise web.HTTPTooManyRequests(text="slow down")
        if request.content_type == "application/json":
            key = str((await request.json()).get("key", ""))
        else:
            key = str((await request.post()).get("key", ""))
        name = self.keys.agent_for(key.strip())
        if name is None:
            log.warning("agent login refused from %s (wrong key)", ip)
            return web.json_response({"error": "wrong_key"}, status=401)
        response = web.json_response({"agent": name})
        response.set_cookie(
            COOKIE,
            self.signer.session(name, self._epoch_s()),
            max_age=SESSION_TTL_S,
            httponly=True,
            samesite="Strict",
            path="/",
            secure=request.secure,
        )
        log.info("agent %s logged into the console", name)
        return response

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        response = web.json_response({"ok": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def _me(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"agent": self._me_of(request), "agents": self.keys.names})

    # ------------------------------------------------------------------ reading

    def _summary(self, row: dict[str, Any], me: str, now: int) -> dict[str, Any]:
        waiting = (now - row["handed_off_at"]) // 1000 if row["state"] == "queued" else None
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
        now = to_ms(self.transport.clock.now())
        rows = await self.store.console_conversations(now - RECENT_RESOLVED_MS)
        return [self._summary(row, me, now) for row in rows]

    async def _list(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"conversations": await self.summaries(self._me_of(request))})

    async def _detail(self, request: web.Request) -> web.StreamResponse:
        cid = int(request.match_info["id"])
        me = self._me_of(request)
        summary = next((s for s in await self.summaries(me) if s["id"] == cid), None)
        if summary is None:
            raise web.HTTPNotFound(text='{"error": "unknown"}', content_type="application/json")
        lines = await self.engine.store.transcript(cid, TRANSCRIPT_LIMIT)
        transcript = [{"author": ln.author, "name": _shown(ln), "text": ln.text} for ln in lines]
        return web.json_response({"conversation": summary, "transcript": transcript})

    # ------------------------------------------------------------------ acting

    async def _act(self, request: web.Request) -> web.StreamResponse:
        me: str = self._me_of(request)
        cid = int(request.match_info["id"])
        action = request.match_info["action"]
        try:
            body = await request.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        client_id = str(body.get("id", ""))[:64]
        if not client_id:
            raise web.HTTPBadRequest(
                text='{"error": "id required"}', content_type="application/json"
            )
        event = self._event(Agent("web", me, me), cid, action, body, f"console:{me}:{client_id}")
        outcome = await self.transport.on_event(event)
        return web.json_response(
            {"ok": outcome.ok, "notice": outcome.notice, "chosen": outcome.chosen}
        )

    def _event(
        self, agent: Agent, cid: int, action: str, body: dict[str, Any], dedup: str
    ) -> InboundEvent:
        text = str(body.get("text", "")).strip()
        if action in ("reply", "note"):
            if not text:
                raise web.HTTPBadRequest(text='{"error": "empty"}', content_type="application/json")
            if len(text) > self.transport.config.max_message_length:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=self.transport.config.max_message_length, actual_size=len(text)
                )
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
        return AgentAction(
            agent, dedup, kind, conversation_id=cid, tag=tag, text=text or None, target=target
        )

    # ------------------------------------------------------------------ live updates

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=4096, heartbeat=30)
        await ws.prepare(request)
        self.sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.discard(ws)
        return ws

    def changed(self, conversation_id: int) -> None:
        """Engine observer: tell open consoles to refresh this conversation."""
        for ws in list(self.sockets):
            self.transport.spawn(self._notify(ws, conversation_id))

    async def _notify(self, ws: web.WebSocketResponse, conversation_id: int) -> None:
        try:
            await ws.send_json({"type": "changed", "id": conversation_id})
        except (ConnectionError, RuntimeError):
            self.sockets.discard(ws)

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
