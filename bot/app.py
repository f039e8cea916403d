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
from typing import Any, Protocol

from bot.clock import Clock, SystemClock
from bot.config import Secrets, Settings
from bot.conversation.busy import patiently
from bot.conversation.engine import ConversationService
from bot.conversation.model import Customer, CustomerLeft, LeaveReason
from bot.conversation.outbox import Dispatcher
from bot.conversation.ports import AgentDesk, CustomerChannel, DigestPublisher
from bot.conversation.store import OutboxItem
from bot.errors import ConfigError, DatabaseLockedError
from bot.knowledge import KnowledgeBase
from bot.replies import SavedReplies

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 7 * 86400  # platforms redeliver within minutes (Slack) or a day (Telegram)
PRUNE_EVERY_S = 3600
STOP_DRAIN_S = 5.0  # how long a stop waits for pending deliveries (the rest resume at start)


class Transport(Protocol):
    """A platform connection: a customer channel, possibly a desk and a digest target."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ChannelPlan:
    """Which platforms run, decided from settings and the environment."""

    telegram: bool
    slack: bool
    problems: tuple[str, ...] = ()
    web: bool = False

    @property
    def any(self) -> bool:
        return self.telegram or self.slack or self.web


def plan_channels(settings: Settings, secrets: Secrets) -> ChannelPlan:
    """Decide which channels start; explain exactly what is missing for the others."""
    problems: list[str] = []
    telegram = False
    tg = settings.telegram
    if tg.enabled is not False:
        if secrets.telegram_bot_token:
            telegram = True
            if tg.mode == "webhook" and not (secrets.telegram_webhook_secret and tg.webhook_url):
                raise ConfigError(
                    "telegram.mode",
                    "webhook mode needs telegram.webhook_url and the TELEGRAM_WEBHOOK_SECRET "
                    "environment variable",
                )
        elif tg.enabled is True:
            raise ConfigError(
                "telegram.enabled", "is true but TELEGRAM_BOT_TOKEN is not set in the environment"
            )
        else:
            problems.append("Telegram: set TELEGRAM_BOT_TOKEN (the token from @BotFather)")
    slack = False
    sl = settings.slack
    if sl.enabled is not False:
        needed = ["SLACK_BOT_TOKEN"] if not secrets.slack_bot_token else []
        if sl.mode == "socket" and not secrets.slack_app_token:
            needed.append("SLACK_APP_TOKEN")
        if sl.mode == "http" and not secrets.slack_signing_secret:
            needed.append("SLACK_SIGNING_SECRET")
        if not needed:
            slack = True
        elif sl.enabled is True:
            raise ConfigError(
                "slack.enabled",
                f"is true but {' and '.join(needed)} is not set in the environment",
            )
        else:
            problems.append(f"Slack ({sl.mode} mode): set {' and '.join(needed)}")
    web = settings.web.enabled is not False
    if not desk_configured(settings):
        where = "telegram.agents_chat_id" if settings.desk == "telegram" else "slack.agents_channel"
        reach = "only the web console" if web else "no agent"
        problems.append(f"desk is {settings.desk} but {where} is not set: handoffs reach {reach}")
    return ChannelPlan(telegram=telegram, slack=slack, problems=tuple(problems), web=web)


def desk_configured(settings: Settings) -> bool:
    """Whether the chosen desk names the group/channel where agents work."""
    if settings.desk == "web":
        return True  # the console needs no external group/channel
    if settings.desk == "telegram":
        return settings.telegram.agents_chat_id is not None
    return bool(settings.slack.agents_channel)


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
        self._digest: Any = None
        self.privacy: Any = None  # bot.privacy.PrivacyService once started
        self._stopped = asyncio.Event()

    @property
    def digest(self) -> Any:
        """The scheduled digest service, when a digest is configured (else None)."""
        return self._digest

    @property
    def engine(self) -> ConversationService:
        assert self.components is not None, "start() first"
        return self.components.engine

    async def start(self) -> None:
        from storage.conversations import SqliteStore
        from storage.database import Database

        settings = self.settings
        kb = KnowledgeBase.configured(settings)
        self._db = await Database.open(settings.storage.path, settings.storage.busy_timeout)
        store = SqliteStore(self._db)
        self.transports = list(self._given_transports or self.build_transports())
        customers = {t.channel: t for t in self.transports if hasattr(t, "channel")}
        # No transport is the "web" desk: console agents work from SQLite, without a thread.
        desk = next((t for t in self.transports if getattr(t, "desk", None) == settings.desk), None)
        if self._given_transports is None and not desk_configured(settings):
            desk = None  # no agents' group/channel: handoffs are queued without a thread
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
            desk=settings.desk if desk is not None else None,
            authority=desk,
        )
        engine.use_replies(SavedReplies.configured(settings))  # a bad replies.yaml stops here
        self.components = Components(engine, dispatcher, customers, desk, publishers)
        for transport in self.transports:
            if hasattr(transport, "attach"):
                await transport.attach(self._db, engine)
        await dispatcher.start(hold=True)
        for transport in self.transports:
            await transport.start()
        dispatcher.release()
        self._tasks.append(asyncio.create_task(self._sweeper(), name="sweeper"))
        self._tasks.append(asyncio.create_task(self._privacy_job(), name="privacy"))
        await self._start_digest(publishers)
        log.info(
            "supportbot started: channels %s, desk %s, %d knowledge-base entries",
            ", ".join(sorted(customers)) or "none",
            settings.desk if desk else "none",
            len(kb.entries),
        )

    async def _start_digest(self, publishers: dict[str, DigestPublisher]) -> None:
        if not (self.settings.digest.enabled and self.settings.digest.targets):
            return
        from bot.insights.digest_service import DigestService

        self._digest = DigestService(self.settings, self._db, publishers, self.clock)
        await self._digest.start()

    def build_transports(self) -> list[Any]:
        plan = plan_channels(self.settings, self.secrets)
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

    async def _kpi_summary(self) -> str:
        from bot.insights.report import week_summary

        result: str = await week_summary(self.settings, self._db)
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
        """Fire due timers every few seconds; derived from stored state, so restart-safe."""
        interval = self.settings.conversation.sweep_every.total_seconds()
        last_prune = 0.0
        while True:
            try:
                await self.engine.sweep()
                now = self.clock.now().timestamp()
                if now - last_prune > PRUNE_EVERY_S:
                    cutoff = int((now - DEDUP_WINDOW_S) * 1000)
                    pruned = await self.engine.store.prune_inbound(cutoff)
                    log.debug("pruned %d processed-update keys", pruned)
                    last_prune = now
            except DatabaseLockedError as exc:
                log.warning("timer sweep postponed: %s", exc)
            except Exception:
                log.exception("timer sweep failed; retrying in %.0fs", interval)
            await asyncio.sleep(interval)

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
            except DatabaseLockedError as exc:
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
        if self.components is not None:
            # Deliver what was already decided while the platforms are still connected.
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
        log.info("supportbot stopped")
