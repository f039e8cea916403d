"""The web channel: an aiohttp server in the bot's event loop.

It serves the demo page and the embeddable widget (visitors talk over a WebSocket),
the agent console (``handlers.web.console``) and the KPI dashboard
(``handlers.web.dashboard``) behind the agents' login; this module composes them, and
they import nothing back. Like the other handlers it only translates: widget frames
become ``CustomerMessage``/``CustomerChoice`` events, and ``send`` writes what the
engine says into the visitor's transcript before queueing it for the visitor's open
sockets (``handlers.web.sockets``: a push never waits for a browser).
Several processes may share one PostgreSQL database, each serving its own sockets
(``handlers.web.relay``: each line once and in order, whichever process wrote it).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from bot.clock import Clock, to_ms
from bot.config import Secrets, Settings, WebSettings
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
from bot.conversation.ports import DeliveryRecord
from bot.errors import ConfigError, StorageError
from bot.metrics import EngineMetrics
from handlers.web.agent_tools import AgentTools
from handlers.web.auth import (
    AgentKeys,
    Sessions,
    Signer,
    key_file_for,
    secret_file,
    secret_file_for,
)
from handlers.web.console import Console
from handlers.web.dashboard import dashboard_routes
from handlers.web.followups import FollowupRoutes
from handlers.web.frames import COMMAND, MAX_FRAME, MAX_SEQ, BadFrame, LineNotStored, parse_frame
from handlers.web.ops import Readiness, ops_routes
from handlers.web.relay import Relay
from handlers.web.site import Site, demo_page, static_dir, widget_script
from handlers.web.sockets import Outlet
from storage.database import DB_ERRORS
from storage.followups import SqliteFollowups
from storage.notify import Changes, changes_for
from storage.web_store import WebLine, WebStore

if TYPE_CHECKING:
    from bot.conversation.engine import ConversationService
    from storage.database import Database

__all__ = ["WebTransport", "static_dir"]

log = logging.getLogger(__name__)

EventHandler = Callable[[InboundEvent], Awaitable[Outcome]]


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
        readiness: Readiness | None = None,
    ) -> None:
        self.settings = settings
        # Not required (web.enabled: auto beside Telegram or Slack): a busy port must not
        # take the other channels down with it.
        self.required = required
        self.readiness = readiness  # the app's checks for /readyz (else the database alone)
        self.secrets = secrets
        self.on_event = on_event
        self.clock = clock
        self.site = Site(settings.web, clock)
        self.relay = Relay()  # the visitors' open sockets, and notes between processes
        self.visitors = self.relay.visitors
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._store: WebStore | None = None
        self._signer: Signer | None = None
        self._keys: AgentKeys | None = None
        self._db: Database | None = None
        self.console: Console | None = None
        self._engine_metrics: EngineMetrics | None = None
        self.changes: Changes | None = None  # notes from and to other processes

    # ------------------------------------------------------------------ lifecycle

    async def attach(self, db: Database, engine: ConversationService) -> None:
        """Receive the database and the engine (called by SupportApp before ``start``)."""
        self._db = db
        self.changes = changes_for(db)
        self._store = WebStore(db, self.changes)
        self._signer = Signer(await self._secret())
        self._keys = AgentKeys.load(
            self.secrets.web_agent_keys, key_file_for(self.settings.storage.path)
        )
        sessions = Sessions(self._signer, self._keys, await self._store.session_generations())
        self.console = Console(self.site, self.on_event, self._store, sessions, self._keys)
        self.relay.attach(self._store, self.changes, self.console)
        engine.add_observer(self.console.changed)
        engine.add_assignment_observer(self.console.assigned)
        self.console.roster = engine.roster
        self._replies = engine.replies  # the console's picker lists them
        self._engine_metrics = engine.metrics  # GET /metrics exports them

    async def _secret(self) -> str:
        """WEB_SECRET, else the generated one in its own 0600 file, never in the database.

        Older versions kept the generated secret in ``web_settings``: it moves to the
        file (so visitors' tokens and sessions stay valid) and the row is erased.
        """
        legacy = await self.store.legacy_secret()
        if self.secrets.web_secret:
            secret = self.secrets.web_secret
        else:
            path = secret_file_for(self.settings.storage.path)
            secret = secret_file(path, lambda: legacy or secrets.token_hex(32))
        if legacy is not None:
            await self.store.forget_legacy_secret()
            log.info("web channel: the signing secret is no longer kept in the database")
        return secret

    @property
    def config(self) -> WebSettings:
        return self.site.config

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
        assert self._db is not None, "attach() first"
        app = web.Application(
            middlewares=[*self.site.middlewares, self.console.guard], client_max_size=MAX_FRAME
        )
        files = static_dir()
        app.router.add_get("/", demo_page(files / "index.html"))
        limit = int(self.config.max_message_length)
        app.router.add_get("/widget.js", widget_script(files / "widget.js", limit))
        app.router.add_post("/api/web/session", self._session)
        app.router.add_get("/ws/widget", self._widget_socket)
        self.console.add_routes(app, files)
        followups = FollowupRoutes(self.console, SqliteFollowups(self._db), self.settings.tz)
        followups.add_routes(app, files)
        AgentTools(self._db, self.settings, self._replies).add_routes(app)
        # The KPI dashboard has no auth of its own: ``Console.guard`` covers its paths.
        app.router.add_routes(dashboard_routes(self._db, self.settings, self.clock))
        # no login
        app.router.add_routes(
            ops_routes(self._db, self.clock, self.readiness, self._engine_metrics)
        )
        return app

    async def start(self) -> None:
        if self.changes is not None:
            await self.changes.start()  # hear other processes before serving sockets
        # Idle keep-alive connections, and requests whose headers never finish, are
        # closed after idle_timeout (aiohttp starts this timer as a connection opens).
        idle = self.config.idle_timeout.total_seconds()
        self._runner = web.AppRunner(self.build_app(), access_log=None, keepalive_timeout=idle)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            if self.changes is not None:
                await self.changes.stop()
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

    @property
    def ready(self) -> bool:
        """Listening (``/readyz`` asks every transport)."""
        return self._runner is not None and self.port is not None

    async def stop(self) -> None:
        for outlets in list(self.visitors.values()):
            for outlet in list(outlets):
                await outlet.close(WSCloseCode.GOING_AWAY)
        if self.console is not None:
            await self.console.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.changes is not None:
            await self.changes.stop()
        await self.relay.stop()

    # ------------------------------------------------------------------ CustomerChannel

    async def send(self, to: Address, text: str, choices: Sequence[Sequence[Choice]] = ()) -> Sent:
        return await self.send_as(to, text, choices, "bot")

    async def send_as(
        self,
        to: Address,
        text: str,
        choices: Sequence[Sequence[Choice]],
        author: str,
        name: str = "",
    ) -> Sent:
        line, _ = await self._line(to, text, choices, author, name, None)
        return Sent() if line is None else Sent(message_id=str(line.seq))

    async def send_recorded(
        self, to: Address, text: str, choices: Sequence[Sequence[Choice]], author: str,
        name: str, record: DeliveryRecord,
    ) -> Any:  # fmt: skip
        """``send_as`` with the outbox's record of it in the same write
        (``RecordingChannel``): a reply is stored and recorded as sent together."""
        return (await self._line(to, text, choices, author, name, record))[1]

    async def _line(
        self, to: Address, text: str, choices: Sequence[Sequence[Choice]], author: str,
        name: str, record: DeliveryRecord | None,
    ) -> tuple[WebLine | None, Any]:  # fmt: skip
        """Store the line (the source of truth), then push it to the visitor's open sockets."""
        rows = [[{"label": c.label, "token": c.token} for c in row] for row in choices]
        line, recorded = await self.store.append_with(
            to.chat_id, self._now(), author, text, rows, name=name or None, also=record
        )
        if line is None:  # erased (e.g. the goodbye after /forget): not stored
            self._push(to.chat_id, {"type": "notice", "text": text})
            for outlet in list(self.visitors.get(to.chat_id, ())):
                await outlet.close(flush=True)
            self.relay.publish({"t": "gone", "v": to.chat_id})  # its sockets elsewhere close too
            return None, recorded
        self.relay.push_line(to.chat_id, line)
        return line, recorded

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

    # ------------------------------------------------------------------ widget

    async def _session(self, request: web.Request) -> web.StreamResponse:
        """A new visitor token (the widget asks when the browser has none)."""
        if not self.site.origin_allowed(request):
            raise web.HTTPForbidden(text="origin not allowed")
        if not self.site.limiter.allow(f"session:{self.site.client_ip(request)}"):
            raise web.HTTPTooManyRequests(text="slow down")
        _visitor, token = self.signer.new_visitor()
        return self.site.cors(request, web.json_response({"token": token}))

    async def _widget_socket(self, request: web.Request) -> web.StreamResponse:
        if not self.site.origin_allowed(request):
            log.warning("widget socket refused: origin %r", request.headers.get("Origin"))
            raise web.HTTPForbidden(text="origin not allowed")
        visitor = self.signer.visitor_of(request.query.get("token", ""))
        ip = self.site.client_ip(request)
        if visitor is None or await self.store.erased(visitor):
            log.warning("widget socket refused: bad visitor token from %s", ip)
            raise web.HTTPUnauthorized(text="invalid token")
        caps = {
            f"visitor:{visitor}": self.config.max_sockets_per_visitor,
            f"ip:{ip}": self.config.max_sockets_per_ip,
        }
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, heartbeat=30)
        if not self.site.sockets.reserve(caps):
            # Opened then closed "try again later": the widget keeps its token and retries;
            # a refused handshake would make it start over as a new visitor.
            log.warning("widget socket refused: too many open from %s", request.remote)
            await ws.prepare(request)
            refused = Outlet(ws, request, send_timeout=0, who=ip)
            await refused.close(WSCloseCode.TRY_AGAIN_LATER, "too many connections")
            return ws
        try:
            await ws.prepare(request)
            await self._serve_visitor(request, ws, visitor, ip)
        finally:
            self.site.sockets.release(caps)
        return ws

    async def _serve_visitor(
        self, request: web.Request, ws: web.WebSocketResponse, visitor: str, ip: str
    ) -> None:
        """Replay what the visitor has not seen, then turn their frames into events."""
        send_timeout = self.config.send_timeout.total_seconds()
        outlet = Outlet(ws, request, send_timeout=send_timeout, who=ip)
        outlet.start()
        since = request.query.get("since", "0")
        first = int(since) if since.isdigit() and len(since) < 16 else 0
        try:
            await self.relay.open(outlet, visitor, first)  # replays what it missed
            lang = request.query.get("lang", "")[:8] or None
            customer = Customer("web", visitor, f"Web {visitor[:6]}", lang)
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    await self._widget_frame(outlet, customer, ip, msg.data)
                except BadFrame as exc:
                    log.warning("widget frame refused from %s: %s", request.remote, exc)
                    await outlet.close(WSCloseCode.UNSUPPORTED_DATA)
                    break
        finally:
            self.relay.close(outlet, visitor)
            await outlet.stop()

    async def _widget_frame(self, outlet: Outlet, customer: Customer, ip: str, data: str) -> None:
        frame, kind, client_id = parse_frame(data)
        # Erased meanwhile (CLI or /forget)? A message's own write checks it (and stores
        # nothing then): one read fewer on the busiest path.
        if kind != "message" and await self.store.erased(customer.user_id):
            await outlet.close()
            return
        if not self.site.limiter.allow(f"visitor:{customer.user_id}", f"ip:{ip}"):
            outlet.push({"type": "error", "code": "rate_limited", "id": client_id})
            return
        try:
            if kind == "message":
                text = frame.get("text", "")
                if not isinstance(text, str):
                    raise BadFrame("message text is not a string")
                await self._visitor_message(outlet, customer, client_id, text)
            elif kind == "hello":
                await self._visitor_hello(customer)
            elif kind == "choice":
                seq, token = frame.get("seq"), frame.get("token", "")
                if isinstance(seq, bool) or not isinstance(seq, int) or not 0 < seq < MAX_SEQ:
                    raise BadFrame("choice without a line number we gave")
                if not isinstance(token, str):
                    raise BadFrame("choice token is not a string")
                await self._visitor_choice(outlet, customer, client_id, seq, token)
        except LineNotStored:  # the widget gives the text back, to send again
            log.exception("web channel: could not store a visitor's message")
            outlet.push({"type": "error", "code": "unavailable", "id": client_id, "stored": False})
        except (StorageError, *DB_ERRORS):  # the driver's own errors too
            log.exception("web channel: could not handle a visitor frame")
            outlet.push({"type": "error", "code": "unavailable", "id": client_id})

    async def _visitor_message(
        self, outlet: Outlet, customer: Customer, client_id: str, text: str
    ) -> None:
        if len(text) > self.config.max_message_length:
            limit = self.config.max_message_length
            outlet.push({"type": "error", "code": "too_long", "limit": limit, "id": client_id})
            return
        if not text.strip():
            return
        visitor = customer.user_id
        try:
            line = await self.store.append(
                visitor, self._now(), "customer", text, client_id=client_id
            )
        except (StorageError, *DB_ERRORS) as exc:
            raise LineNotStored from exc
        if line is not None:
            self.relay.push_line(visitor, line)
        elif await self.store.erased(visitor):  # not stored: erased, not a resent frame
            await outlet.close()
            return
        match = COMMAND.match(text.strip())
        command, body = (match.group(1), match.group(2)) if match else (None, text)
        event = CustomerMessage(
            customer, Address("web", visitor), body, f"web:{visitor}:{client_id}", command=command
        )
        outcome = await self.on_event(event)
        if outcome.notice:
            outlet.push({"type": "notice", "text": outcome.notice})

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
        self, outlet: Outlet, customer: Customer, client_id: str, seq: int, token: str
    ) -> None:
        visitor = customer.user_id
        if not await self.store.offered(visitor, seq, token):
            outlet.push({"type": "error", "code": "question_closed", "seq": seq})
            return
        event = CustomerChoice(
            customer, Address("web", visitor), token, f"web:{visitor}:{client_id}"
        )
        outcome = await self.on_event(event)
        if outcome.chosen:
            await self.store.mark_chosen(visitor, seq, outcome.chosen)
            self._push(visitor, {"type": "chosen", "seq": seq, "label": outcome.chosen})
        elif outcome.notice:
            outlet.push({"type": "notice", "text": outcome.notice})

    def _push(self, visitor: str, frame: dict[str, Any]) -> None:
        self.relay.push(visitor, frame)
