"""Which channels run and where agents work, decided from settings and secrets alone.

Kept apart from the composition root (``bot.app``) so that ``supportbot check`` and
``supportbot digest`` can answer without building the engine: the digest connects to its
target platforms only to post (``digest_publishers``), and imports transports lazily.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bot.config import Secrets, Settings
from bot.conversation.ports import DigestPublisher
from bot.errors import ConfigError

log = logging.getLogger(__name__)


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
