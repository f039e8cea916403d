"""The web channel: an aiohttp server in the bot's event loop.

It serves the demo page and the embeddable widget (visitors talk over a WebSocket),
the agent console (see ``handlers.web.console``) and, when present, the KPI dashboard
behind the agents' login. Like the other handlers it only translates: widget frames
become ``CustomerMessage``/``CustomerChoice`` events, and ``send`` writes what the
engine says into the visitor's transcript before pushing it to their open sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from bot.clock import Clock, to_ms
from bot.config import Secrets, Settings
from bot.conversation.model import (
    Address,
    Choice,
    Customer,
    CustomerChoice,
    CustomerMessage,
    InboundEvent,
    Media,
    Outcome,
    Sent,
)
from bot.errors import ConfigError, StorageError
from handlers.web.auth import AgentKeys, Signer, key_file_for
from handlers.web.limits import RateLimiter
from storage.web_store import WebStore

if TYPE_CHECKING:
    from bot.conversation.engine import ConversationService
    from handlers.web.console import Console
    from storage.database import Database

log = logging.getLogger(__name__)

EventHandler = Callable[[InboundEvent], Awaitable[Outcome]]
MAX_FRAME = 64 * 1024
MAX_CLIENT_ID = 64
DEMO_ORIGIN = "http://127.0.0.1:8080"  # in index.html's snippet, replaced by the real one
WIDGET_LIMIT = "var MAX_LENGTH = 4000;"  # in widget.js, replaced by web.max_message_length
_COMMAND = re.compile(r"^/([a-z]+)\b\s*(.*)$", re.DOTALL)
STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'"
)


def static_dir() -> Path:
    return Path(str(resources.files("handlers.web") / "static"))


class WebTransport:
    """Customer channel ``web`` plus the HTTP server that hosts widget, console, dashboard."""

    channel = "web"

    def __init__(
        self,
        settings: Settings,
        secrets: Secrets,
        on_event: EventHandler,
        clock: Clock,
        *,
        required: bool = True,
    ) -> None:
        self.settings = settings
        # Not required (web.enabled: auto beside Telegram or Slack): a busy port must not
        # take the other channels down with it.
        self.required = required
        self.config = settings.web
        self.secrets = secrets
        self.on_event = on_event
        self.clock = clock
        capacity, period = self.config.rate_limit
        self.limiter = RateLimiter(capacity, period)
        self.visitors: dict[str, set[web.WebSocketResponse]] = defaultdict(set)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._store: WebStore | None = None
        self._signer: Signer | None = None
        self._keys: AgentKeys | None = None
        self._db: Database | None = None
        self.console: Console | None = None

    # ------------------------------------------------------------------ lifecycle

    async def attach(self, db: Database, engine: ConversationService) -> None:
        """Receive the database and the engine (called by SupportApp before ``start``)."""
        from handlers.web.console import Console

        self._db = db
        self._store = WebStore(db)
        secret = self.secrets.web_secret or await self._store.secret()
        self._signer = Signer(secret)
        self._keys = AgentKeys.load(
            self.secrets.web_agent_keys, key_file_for(self.settings.storage.path)
        )
        self.console = Console(self, engine, self._store, self._signer, self._keys)
        engine.add_observer(self.console.changed)

    @property
    def store(self) -> WebStore:
        assert self._store is not None, "attach() first"
        return self._store

    @property
    def signer(self) -> Signer:
        assert self._signer is not None, "attach() first"
        return self._signer

    def build_app(self) -> web.Application:
        assert self.console is not None, "attach() first"
        app = web.Application(
            middlewares=[self._headers, self.console.guard], client_max_size=MAX_FRAME
        )
        files = static_dir()
        app.router.add_get("/", self._demo_page(files / "index.html"))
        app.router.add_get("/widget.js", self._widget_script(files / "widget.js"))
        app.router.add_post("/api/web/session", self._session)
        app.router.add_get("/ws/widget", self._widget_socket)
        self.console.add_routes(app, files)
        app.router.add_routes(self._dashboard_routes())
        return app

    def _dashboard_routes(self) -> list[web.RouteDef]:
        """The KPI dashboard (no auth of its own: ``Console.guard`` covers its paths)."""
        from handlers.web.dashboard import dashboard_routes

        assert self._db is not None, "attach() first"
        return dashboard_routes(self._db, self.settings, self.clock)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            where = f"{self.config.host}:{self.config.port}"
            if self.required:
                raise ConfigError("web.port", f"cannot listen on {where}: {exc.strerror}") from None
            log.warning(
                "web channel off: cannot listen on %s (%s); set web.port to a free port, "
                "or web.enabled: false",
                where,
                exc.strerror,
            )
            return
        self.port = int(self._runner.addresses[0][1])
        log.info(
            "web channel on http://%s:%s (agent console at /agent)", self.config.host, self.port
        )

    async def stop(self) -> None:
        for sockets in list(self.visitors.values()):
            for ws in list(sockets):
                await ws.close()
        if self.console is not None:
            await self.console.close_all()
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ CustomerChannel

    async def send(self, to: Address, text: str, choices: Sequence[Sequence[Choice]] = ()) -> Sent:
        return await self.send_as(to, text, choices, "bot")

    async def send_as(
        self, to: Address, text: str, choices: Sequence[Sequence[Choice]], author: str
    ) -> Sent:
        """Store the line (the source of truth), then push it to the visitor's open sockets."""
        rows = [[{"label": c.label, "token": c.token} for c in row] for row in choices]
        if await self.store.erased(to.chat_id):  # e.g. the goodbye after /forget: not stored
            await self._push(to.chat_id, {"type": "notice", "text": text})
            for ws in list(self.visitors.get(to.chat_id, ())):
                await ws.close()
            return Sent()
        line = await self.store.append(to.chat_id, self._now(), author, text, rows)
        assert line is not None
        await self._push(to.chat_id, line.json())
        return Sent(message_id=str(line.seq))

    async def send_media(self, to: Address, media: Media, caption: str) -> Sent:
        shown = f"[{media.kind}{': ' + media.name if media.name else ''}] {caption}".strip()
        if media.url:
            shown = f"{shown}\n{media.url}"
        return await self.send_as(to, shown, (), "agent")  # only agents send attachments

    # ------------------------------------------------------------------ AlertBoard

    async def post_alert(self, alert_id: int, conversation_id: int | None, text: str) -> None:
        """Agents' alerts go to the console (kept in SQLite, pushed to open consoles)."""
        assert self.console is not None, "attach() first"
        await self.console.post_alert(alert_id, conversation_id, text)

    # ------------------------------------------------------------------ HTTP helpers

    def _now(self) -> int:
        return to_ms(self.clock.now())

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.path == "/":
            response.headers.setdefault("Content-Security-Policy", PAGE_CSP)
        elif not request.path.startswith("/widget.js"):
            response.headers.setdefault("Content-Security-Policy", STRICT_CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    def file_handler(self, path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.FileResponse(path)
            response.headers["Cache-Control"] = "no-cache"
            if path.suffix == ".js":
                # The widget is embedded by other sites: they may load the script itself.
                response.headers["Access-Control-Allow-Origin"] = "*"
            return response

        return handler

    def _demo_page(self, path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The demo page, its embed snippet showing the address the visitor used."""
        page = path.read_text(encoding="utf-8")

        async def handler(request: web.Request) -> web.StreamResponse:
            here = html.escape(f"{request.scheme}://{request.host}", quote=True)
            body = page.replace(DEMO_ORIGIN, here)
            return web.Response(
                text=body, content_type="text/html", headers={"Cache-Control": "no-cache"}
            )

        return handler

    def _widget_script(self, path: Path) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """widget.js, told the longest message the server accepts (its box stops there)."""
        script = path.read_text(encoding="utf-8")
        assert WIDGET_LIMIT in script, f"{path.name} lost its line {WIDGET_LIMIT!r}"
        body = script.replace(
            WIDGET_LIMIT, f"var MAX_LENGTH = {int(self.config.max_message_length)};"
        )

        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(
                text=body,
                content_type="text/javascript",
                headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"},
            )

        return handler

    def origin_allowed(self, request: web.Request) -> bool:
        """Same origin always; other sites only when listed in ``web.allowed_origins``."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: nothing can be forged on a visitor's behalf
        origin = origin.lower()
        own = f"{request.scheme}://{request.host}".lower()
        return origin == own or origin in self.config.allowed_origins

    def client_ip(self, request: web.Request) -> str:
        return request.remote or "?"

    def _cors(self, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and origin.lower() in self.config.allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    # ------------------------------------------------------------------ widget

    async def _session(self, request: web.Request) -> web.StreamResponse:
        """A new visitor token (the widget asks when the browser has none)."""
        if not self.origin_allowed(request):
            raise web.HTTPForbidden(text="origin not allowed")
        if not self.limiter.allow(f"session:{self.client_ip(request)}"):
            raise web.HTTPTooManyRequests(text="slow down")
        _visitor, token = self.signer.new_visitor()
        return self._cors(request, web.json_response({"token": token}))

    async def _widget_socket(self, request: web.Request) -> web.StreamResponse:
        if not self.origin_allowed(request):
            log.warning("widget socket refused: origin %r", request.headers.get("Origin"))
            raise web.HTTPForbidden(text="origin not allowed")
        visitor = self.signer.visitor_of(request.query.get("token", ""))
        if visitor is None or await self.store.erased(visitor):
            log.warning("widget socket refused: bad visitor token from %s", self.client_ip(request))
            raise web.HTTPUnauthorized(text="invalid token")
        since = request.query.get("since", "0")
        lang = request.query.get("lang", "")[:8] or None
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=30)
        await ws.prepare(request)
        self.visitors[visitor].add(ws)
        try:
            lines = await self.store.since(visitor, int(since) if since.isdigit() else 0)
            for line in lines:
                await ws.send_json(line.json())
            customer = Customer("web", visitor, f"Web {visitor[:6]}", lang)
            ip = self.client_ip(request)
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await self._widget_frame(ws, customer, ip, msg.data)
        finally:
            self.visitors[visitor].discard(ws)
            if not self.visitors[visitor]:
                del self.visitors[visitor]
        return ws

    async def _widget_frame(
        self, ws: web.WebSocketResponse, customer: Customer, ip: str, data: str
    ) -> None:
        try:
            frame = json.loads(data)
            kind, client_id = str(frame["type"]), str(frame["id"])[:MAX_CLIENT_ID]
        except (ValueError, KeyError, TypeError):
            await ws.send_json({"type": "error", "code": "bad_frame"})
            return
        if await self.store.erased(customer.user_id):  # erased meanwhile (CLI or /forget)
            await ws.close()
            return
        if not self.limiter.allow(f"visitor:{customer.user_id}", f"ip:{ip}"):
            await ws.send_json({"type": "error", "code": "rate_limited", "id": client_id})
            return
        try:
            if kind == "message":
                await self._visitor_message(ws, customer, client_id, str(frame.get("text", "")))
            elif kind == "hello":
                await self._visitor_hello(customer)
            elif kind == "choice":
                seq, token = frame.get("seq"), str(frame.get("token", ""))
                if isinstance(seq, int):
                    await self._visitor_choice(ws, customer, client_id, seq, token)
        except StorageError:
            log.exception("web channel: could not store a visitor frame")
            await ws.send_json({"type": "error", "code": "unavailable", "id": client_id})

    async def _visitor_message(
        self, ws: web.WebSocketResponse, customer: Customer, client_id: str, text: str
    ) -> None:
        if len(text) > self.config.max_message_length:
            limit = self.config.max_message_length
            await ws.send_json({"type": "error", "code": "too_long", "limit": limit,
                                "id": client_id})  # fmt: skip
            return
        if not text.strip():
            return
        visitor = customer.user_id
        line = await self.store.append(visitor, self._now(), "customer", text, client_id=client_id)
        if line is not None:
            await self._push(visitor, line.json())
        match = _COMMAND.match(text.strip())
        command, body = (match.group(1), match.group(2)) if match else (None, text)
        event = CustomerMessage(
            customer, Address("web", visitor), body, f"web:{visitor}:{client_id}", command=command
        )
        outcome = await self.on_event(event)
        if outcome.notice:
            await ws.send_json({"type": "notice", "text": outcome.notice})

    async def _visitor_hello(self, customer: Customer) -> None:
        """The widget opened on an empty transcript: the bot greets, as ``/start`` does on
        Telegram (once per visitor; the texts and their overrides are the engine's)."""
        visitor = customer.user_id
        if await self.store.since(visitor, 0, limit=1):
            return
        event = CustomerMessage(
            customer, Address("web", visitor), "", f"web:{visitor}:hello", command="start"
        )
        await self.on_event(event)

    async def _visitor_choice(
        self, ws: web.WebSocketResponse, customer: Customer, client_id: str, seq: int, token: str
    ) -> None:
        visitor = customer.user_id
        if not await self.store.offered(visitor, seq, token):
            await ws.send_json({"type": "error", "code": "question_closed", "seq": seq})
            return
        event = CustomerChoice(
            customer, Address("web", visitor), token, f"web:{visitor}:{client_id}"
        )
        outcome = await self.on_event(event)
        if outcome.chosen:
            await self.store.mark_chosen(visitor, seq, outcome.chosen)
            await self._push(visitor, {"type": "chosen", "seq": seq, "label": outcome.chosen})
        elif outcome.notice:
            await ws.send_json({"type": "notice", "text": outcome.notice})

    async def _push(self, visitor: str, frame: dict[str, Any]) -> None:
        """Send to every open socket of the visitor; an offline visitor replays on reconnect."""
        for ws in list(self.visitors.get(visitor, ())):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json(frame)
