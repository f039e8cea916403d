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
from collections.abc import AsyncIterator, Mapping, Sequence
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
    """Which platforms run and where agents work, decided from settings and the environment.

    ``off`` says how to turn on each channel that stays off (a hint, not a fault: the web
    channel alone is a working product); ``problems`` are settings that do not do what
    they say (warnings). ``desk`` is where agents actually work: "telegram", "slack",
    "web" (the console) or None (nobody: the web channel is off too).
    """

    telegram: bool
    slack: bool
    problems: tuple[str, ...] = ()
    web: bool = False
    off: tuple[str, ...] = ()
    desk: str | None = None

    @property
    def any(self) -> bool:
        return self.telegram or self.slack or self.web


def plan_channels(settings: Settings, secrets: Secrets) -> ChannelPlan:
    """Decide which channels start; explain exactly what is missing for the others."""
    off: list[str] = []
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
            off.append("Telegram: set TELEGRAM_BOT_TOKEN (the token from @BotFather)")
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
            off.append(f"Slack ({sl.mode} mode): set {' and '.join(needed)}")
    web = settings.web.enabled is not False
    running = {"telegram": telegram, "slack": slack, "web": web}
    desk, problems = _resolve_desk(settings, running)
    return ChannelPlan(telegram, slack, tuple(problems), web, tuple(off), desk)


_DESK_KEYS = {"telegram": "telegram.agents_chat_id", "slack": "slack.agents_channel"}


def _resolve_desk(settings: Settings, running: Mapping[str, bool]) -> tuple[str | None, list[str]]:
    """Where agents work: the configured desk when it can work, else the web console.

    ``desk: auto`` (the default) takes Telegram or Slack when that platform runs and names
    its agents' group/channel, else the console: a start with no token at all has the web
    console as its desk. A desk named explicitly that cannot work is a warning.
    """
    fallback = "web" if running["web"] else None
    if settings.desk == "auto":
        for name in ("telegram", "slack"):
            if running[name] and desk_configured(settings, name):
                return name, []
        return fallback, []
    if settings.desk == "web":
        return fallback, [] if running["web"] else [
            "desk is web but web.enabled is false: handoffs reach no agent"
        ]
    name = settings.desk
    if running[name] and desk_configured(settings, name):
        return name, []
    why = f"{_DESK_KEYS[name]} is not set" if running[name] else f"{name} is not connected"
    reach = "only the web console" if fallback else "no agent"
    return fallback, [f"desk is {name} but {why}: handoffs reach {reach}"]


def desk_configured(settings: Settings, desk: str | None = None) -> bool:
    """Whether ``desk`` (default: the configured one) names the group/channel where agents
    work; the console needs none."""
    desk = desk or settings.desk
    if desk == "telegram":
        return settings.telegram.agents_chat_id is not None
    if desk == "slack":
        return bool(settings.slack.agents_channel)
    return True


def describe_desk(
    desk: str | None, settings: Settings, console: str | None, *, alone: bool = False
) -> str:
    """Where agents work, in words: the console's address, the group or the channel.

    ``console`` is the console's URL when the web channel listens; ``alone`` says that no
    Telegram or Slack token is set (the zero-configuration start).
    """
    if desk == "web" and console is not None:
        why = " (no Telegram or Slack token set)" if alone else ""
        return f"the web console at {console}{why}"
    if desk == "telegram":
        return f"Telegram group {settings.telegram.agents_chat_id}"
    if desk == "slack":
        return f"Slack channel {settings.slack.agents_channel}"
    return "none (handoffs reach no agent)"


async def _no_events(event: Any) -> Any:
    """The event sink of a connection that only posts: it never listens, so never called."""
    raise RuntimeError(f"an outbound-only connection received {type(event).__name__}")


@contextlib.asynccontextmanager
async def digest_publishers(
    settings: Settings, secrets: Secrets
) -> AsyncIterator[dict[str, DigestPublisher]]:
    """Connections that only post, to the platforms the digest targets name.

    ``supportbot digest`` runs beside the bot: it must not poll Telegram (two pollers
    steal each other's updates), open a Socket Mode connection, or serve the web port.
    Telegram needs only TELEGRAM_BOT_TOKEN and Slack only SLACK_BOT_TOKEN here; a platform
    left out (disabled, or no token) makes its targets fail with the reason in the output.
    """
    wanted = {target.partition(":")[0] for target in settings.digest.targets}
    built: dict[str, Any] = {}
    if "telegram" in wanted and settings.telegram.enabled is not False:
        if secrets.telegram_bot_token:
            from handlers.telegram import TelegramTransport

            built["telegram"] = TelegramTransport(
                settings.telegram, secrets.telegram_bot_token, _no_events, settings.language
            )
        else:
            log.warning("digest: telegram targets need TELEGRAM_BOT_TOKEN in the environment")
    if "slack" in wanted and settings.slack.enabled is not False:
        if secrets.slack_bot_token:
            from handlers.slack import SlackTransport

            built["slack"] = SlackTransport(
                settings.slack,
                bot_token=secrets.slack_bot_token,
                on_event=_no_events,
                language=settings.language,
                listen=False,
            )
        else:
            log.warning("digest: slack targets need SLACK_BOT_TOKEN in the environment")
    connected: list[Any] = []
    try:
        for publisher in built.values():
            connected.append(publisher)
            await publisher.connect()
        yield dict(built)
    finally:
        for publisher in reversed(connected):
            try:
                await publisher.stop()
            except Exception:
                log.exception("error while disconnecting %s", type(publisher).__name__)


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

        settings = self.settings
        kb = KnowledgeBase.configured(settings)
        self._db = await Database.open(settings.storage.path, settings.storage.busy_timeout)
        store = SqliteStore(self._db)
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
