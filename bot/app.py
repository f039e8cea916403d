"""The composition root: builds the database, knowledge base, engine, outbox, channels,
timers and digest from settings, and runs them in one event loop.

The only module of ``bot/`` that knows concrete transports and storage; it imports
them lazily so that commands which need no channel (check, kb, kpi) stay light.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.channels import ChannelPlan, describe_desk, plan_channels
from bot.clock import Clock, SystemClock
from bot.config import Secrets, Settings
from bot.conversation.busy import WAIT_OUT, patiently
from bot.conversation.engine import ConversationService
from bot.conversation.model import Customer, CustomerLeft, LeaveReason
from bot.conversation.outbox import Dispatcher
from bot.conversation.ports import AgentDesk, CustomerChannel, DigestPublisher
from bot.conversation.store import OutboxItem
from bot.knowledge import KnowledgeBase
from bot.replies import SavedReplies

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 7 * 86400  # platforms redeliver within minutes (Slack) or a day (Telegram)
PRUNE_EVERY_S = 3600
READY_TIMEOUT_S = 2.0  # a database that takes longer to say SELECT 1 is not ready
STOP_DRAIN_S = 5.0  # how long a stop waits for pending deliveries (the rest resume at start)


@dataclass
class Components:
    """What ``SupportApp.start`` built, for tests and the CLI."""

    engine: ConversationService
    dispatcher: Dispatcher
    customers: dict[str, CustomerChannel] = field(default_factory=dict)
    desk: AgentDesk | None = None
    publishers: dict[str, DigestPublisher] = field(default_factory=dict)


class SupportApp:
    """The running product: start, serve until stopped, stop cleanly."""

    def __init__(
        self,
        settings: Settings,
        secrets: Secrets,
        *,
        clock: Clock | None = None,
        transports: Sequence[Any] | None = None,
        transport_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.clock = clock or SystemClock()
        self._given_transports = transports
        self._options = {k: dict(v) for k, v in (transport_options or {}).items()}
        self.transports: list[Any] = []
        self.components: Components | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._db: Any = None
        self._inbound: Any = None  # storage.inbound_queue.InboundQueue once started
        self._replayers: dict[str, Any] = {}  # channel → transport that replays its rows
        self._digest: Any = None
        self.privacy: Any = None  # bot.privacy.PrivacyService once started
        self._stopped = asyncio.Event()
        self._running = False  # start() completed

    @property
    def digest(self) -> Any:
        """The scheduled digest service, when a digest is configured (else None)."""
        return self._digest

    @property
    def engine(self) -> ConversationService:
        assert self.components is not None, "start() first"
        return self.components.engine

    async def start(self) -> None:
        """Build and start everything; on any error, release what was started (ports, the
        database, background tasks) before raising, so that the process can exit."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        from storage.conversations import SqliteStore
        from storage.database import Database
        from storage.inbound_queue import InboundQueue

        settings = self.settings
        kb = KnowledgeBase.configured(settings)
        self._db = await Database.open(settings.storage.target(), settings.storage.busy_timeout)
        await self._db.hold_instance_lock()
        store = SqliteStore(self._db, clock=self.clock)
        plan: ChannelPlan | None = None
        if self._given_transports is None:
            plan = plan_channels(settings, self.secrets)
            desk_name = plan.desk
        else:
            desk_name = settings.desk
            if desk_name == "auto":
                given = self._given_transports
                desk_name = next((t.desk for t in given if hasattr(t, "desk")), "web")
        if desk_name is not None and desk_name != settings.desk:
            # Everything built from here on sees where agents actually work.
            self.settings = settings = settings.model_copy(update={"desk": desk_name})
        if plan is None:
            self.transports = list(self._given_transports or ())
        else:
            self.transports = self.build_transports(plan)
        alone = plan is not None and not (plan.telegram or plan.slack)
        customers = {t.channel: t for t in self.transports if hasattr(t, "channel")}
        # No transport is the "web" desk: console agents work from SQLite, without a thread.
        desk = next((t for t in self.transports if getattr(t, "desk", None) == desk_name), None)
        publishers = {t.platform: t for t in self.transports if hasattr(t, "platform")}
        boards = [t for t in self.transports if hasattr(t, "post_alert")]  # the web console
        dispatcher = Dispatcher(
            store,
            self.clock,
            customers=customers,
            desk=desk,
            boards=boards,
            on_gone=self._customer_gone,
        )
        engine = ConversationService(
            store,
            kb,
            settings,
            self.clock,
            dispatcher,
            desk=desk_name if desk is not None else None,
            authority=desk,
        )
        engine.use_replies(SavedReplies.configured(settings))  # a bad replies.yaml stops here
        self.components = Components(engine, dispatcher, customers, desk, publishers)
        # Webhook updates and Slack HTTP events are stored before they are acknowledged.
        self._inbound = InboundQueue(self._db, self.clock, claim_lock=self._db.claim_lock)
        for transport in self.transports:
            if hasattr(transport, "attach"):
                await transport.attach(self._db, engine)
            if hasattr(transport, "keep_inbound"):
                transport.keep_inbound(self._inbound)
                self._replayers[transport.channel] = transport
        await dispatcher.start(hold=True)
        for transport in self.transports:
            await transport.start()
        dispatcher.release()
        self._tasks.append(asyncio.create_task(self._sweeper(), name="sweeper"))
        self._tasks.append(asyncio.create_task(self._privacy_job(), name="privacy"))
        await self._start_digest(publishers)
        self._running = True
        log.info(
            "supportbot started: channels %s; desk: %s; %d knowledge-base entries",
            ", ".join(sorted(customers)) or "none",
            describe_desk(desk_name, settings, self._console_url(customers), alone=alone),
            len(kb.entries),
        )

    @staticmethod
    def _console_url(customers: Mapping[str, Any]) -> str | None:
        """The agent console's address, when the web channel listens."""
        web = customers.get("web")
        port = getattr(web, "port", None)
        if web is None or port is None:
            return None
        return f"http://{web.config.host}:{port}/agent"

    async def _start_digest(self, publishers: dict[str, DigestPublisher]) -> None:
        if not (self.settings.digest.enabled and self.settings.digest.targets):
            return
        from bot.insights.digest_service import DigestService

        self._digest = DigestService(self.settings, self._db, publishers, self.clock)
        await self._digest.start()

    def build_transports(self, plan: ChannelPlan | None = None) -> list[Any]:
        plan = plan or plan_channels(self.settings, self.secrets)
        for hint in plan.off:
            log.info("off: %s", hint)
        for problem in plan.problems:
            log.warning("%s", problem)
        built: list[Any] = []
        lang = self.settings.language
        if plan.web:
            from handlers.web import WebTransport

            built.append(
                WebTransport(
                    self.settings,
                    self.secrets,
                    self._on_event,
                    self.clock,
                    required=self.settings.web.enabled is True or not (plan.telegram or plan.slack),
                    readiness=self.readiness,
                    **self._options.get("web", {}),
                )
            )
        if plan.telegram:
            from handlers.telegram import RateLimits, TelegramTransport

            options = self._options.get("telegram", {})
            if not self.settings.telegram.pacing:
                options = {"limits": RateLimits.unlimited(), **options}
            built.append(
                TelegramTransport(
                    self.settings.telegram,
                    self.secrets.telegram_bot_token or "",
                    self._on_event,
                    language=lang,
                    webhook_secret=self.secrets.telegram_webhook_secret,
                    **options,
                )
            )
        if plan.slack:
            from handlers.slack import SlackTransport

            options = self._options.get("slack", {})
            if not self.settings.slack.pacing:
                options = {"pace": 0.0, **options}
            built.append(
                SlackTransport(
                    self.settings.slack,
                    bot_token=self.secrets.slack_bot_token or "",
                    signing_secret=self.secrets.slack_signing_secret,
                    app_token=self.secrets.slack_app_token,
                    on_event=self._on_event,
                    language=lang,
                    kpi_summary=self._kpi_summary,
                    **options,
                )
            )
        return built

    async def _on_event(self, event: Any) -> Any:
        """One inbound event, waiting out a locked database rather than dropping it."""
        return await patiently(lambda: self.engine.handle(event), type(event).__name__)

    async def readiness(self) -> dict[str, str]:
        """``GET /readyz``: "ok" or the reason, for the database and each started channel."""
        from bot.errors import StorageError

        checks: dict[str, str] = {}
        try:
            if self._db is None:
                raise StorageError("the database is not open")
            async with asyncio.timeout(READY_TIMEOUT_S):
                await self._db.ping()
            checks["database"] = "ok"
        except (StorageError, TimeoutError) as exc:
            checks["database"] = str(exc) or f"no answer within {READY_TIMEOUT_S:g}s"
        for transport in self.transports:
            name = str(getattr(transport, "channel", None) or type(transport).__name__)
            ready = bool(getattr(transport, "ready", True))
            checks[name] = "ok" if ready else "not connected"
        return checks

    async def _kpi_summary(self) -> str:
        from bot.insights.report import week_summary

        # The app's clock, not the machine's: the week is the one the bot lives in.
        result: str = await week_summary(self.settings, self._db, now=self.clock.now())
        return result

    async def _customer_gone(self, item: OutboxItem) -> None:
        """A send found the customer gone (blocked the bot): record that they left."""
        if item.conversation_id is None or self.components is None:
            return
        conv = await self.components.engine.store.load(item.conversation_id)
        if conv is None:
            return
        channel, _, user_id = conv.customer_key.partition(":")
        event = CustomerLeft(Customer(channel, user_id), LeaveReason.BLOCKED, f"gone:{item.id}")
        await self._on_event(event)

    async def _sweeper(self) -> None:
        """Fire due timers every few seconds; derived from stored state, so restart-safe.

        Each pass also resumes stored inbound requests nobody finished (a process killed
        between its 200 and its step). The first pass takes over every unfinished row at
        once: on SQLite this process is the only one (bot/instance.py), so any claim in
        the table is a dead process's; a shared database waits for leases to run out."""
        interval = self.settings.conversation.sweep_every.total_seconds()
        last_prune = 0.0
        take_over = not self._db.shared
        while True:
            try:
                await self.resume_inbound(take_over=take_over)
                take_over = False
                if self._db.shared and self.components is not None:
                    await self.components.dispatcher.resume()  # a dead process's items
                await self.engine.sweep()
                now = self.clock.now().timestamp()
                if now - last_prune > PRUNE_EVERY_S:
                    cutoff = int((now - DEDUP_WINDOW_S) * 1000)
                    pruned = await self.engine.store.prune_inbound(cutoff)
                    pruned += await self._inbound.prune(cutoff)
                    log.debug("pruned %d processed-update keys", pruned)
                    last_prune = now
            except WAIT_OUT as exc:
                log.warning("timer sweep postponed: %s", exc)
            except Exception:
                log.exception("timer sweep failed; retrying in %.0fs", interval)
            await asyncio.sleep(interval)

    async def resume_inbound(self, *, take_over: bool = False) -> int:
        """Claim the stored requests nobody finished (lease run out) and hand each back to
        its transport; how many. The engine's inbound keys make a repeat a no-op."""
        if self._inbound is None or not self._replayers:
            return 0
        claimed = await self._inbound.claim(tuple(self._replayers), take_over=take_over)
        for delivery in claimed:
            await self._replayers[delivery.channel].replay_inbound(delivery)
        if claimed:
            log.info("resumed %d stored request(s) nobody had finished", len(claimed))
        return len(claimed)

    async def _privacy_job(self) -> None:
        """Finish erasures (agents' headers, WAL) within a sweep; retention once a day."""
        from bot.privacy import PrivacyService

        assert self.components is not None
        engine = self.components.engine
        outbox = self.components.dispatcher
        self.privacy = PrivacyService(
            self._db, self.settings, self.clock, store=engine.store, outbox=outbox, desk=engine.desk
        )
        interval = self.settings.conversation.sweep_every.total_seconds()
        while True:
            try:
                await self.privacy.tick()
            except WAIT_OUT as exc:
                log.warning("privacy job postponed: %s", exc)
            except Exception:
                log.exception("privacy job failed; retrying in %.0fs", interval)
            await asyncio.sleep(interval)

    def request_stop(self) -> None:
        self._stopped.set()

    async def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM (or ``request_stop``), then stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()  # a start that fails still closes what it opened
            await self._stopped.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._digest is not None:
            await self._digest.stop()
        if self.components is not None and self._running:
            # Deliver what was already decided while the platforms are still connected
            # (not after a failed start: it must exit at once; the outbox resumes later).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_DRAIN_S):
                    await self.components.dispatcher.drain()
        for transport in reversed(self.transports):
            try:
                await transport.stop()
            except Exception:
                log.exception("error while stopping %s", type(transport).__name__)
        if self.components is not None:
            await self.components.dispatcher.stop()
        if self._db is not None:
            await self._db.close()
            self._db = None
        self._running = False
        log.info("supportbot stopped")
