"""config.yaml → typed, validated settings; secrets come only from the environment.

Every mistake is reported as ``ConfigError`` naming the key path ("survey.cooldown")
and what is wrong, before anything starts.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
)

from bot.calendar import WEEKDAYS, BusinessCalendar, Shift, parse_shifts
from bot.config_agents import FollowupSettings, RoutingSettings
from bot.config_complaints import ComplaintsSettings, TouchpointSettings
from bot.config_storage import DATABASE_URL_ENV, StorageSettings
from bot.config_types import Duration, Language, Section, parse_duration
from bot.errors import ConfigError


class BusinessHoursSettings(Section):
    mon: str = ""
    tue: str = ""
    wed: str = ""
    thu: str = ""
    fri: str = ""
    sat: str = ""
    sun: str = ""
    holidays: list[date] = Field(default_factory=list)

    @field_validator("mon", "tue", "wed", "thu", "fri", "sat", "sun", mode="before")
    @classmethod
    def _shifts(cls, value: object) -> str:
        text = "" if value is None or value is False else str(value)
        parse_shifts(text)  # raises ValueError with the reason
        return text

    def week(self) -> dict[str, tuple[Shift, ...]]:
        return {day: parse_shifts(getattr(self, day)) for day in WEEKDAYS}


class KnowledgeSettings(Section):
    path: Path = Path("knowledge.yaml")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    # "use-multilingual" (built in), "none" (words only), or a model2vec /
    # sentence-transformers folder (see bot/knowledge/encoder.py)
    encoder: str = "use-multilingual"


class ConversationSettings(Section):
    abandon_after: Duration = timedelta(minutes=15)
    remind_after: Duration = timedelta(minutes=5)
    close_idle_after: Duration = timedelta(hours=2)
    misses_before_handoff: int = Field(default=2, ge=1, le=10)
    sweep_every: Duration = timedelta(seconds=5)


class SurveySettings(Section):
    enabled: bool = True
    expires_after: Duration = timedelta(hours=24)
    cooldown: Duration = timedelta(days=7)


def _retention(value: object) -> timedelta | None:
    """ "off" / false / null → None (keep everything), else a duration such as "365d"."""
    if value is None or value is False or str(value).strip().lower() in ("off", "none", ""):
        return None
    duration = parse_duration(value)
    if duration < timedelta(days=1):
        raise ValueError("keep messages at least 1d (or write off)")
    return duration


class PrivacySettings(Section):
    """Personal data: how long message texts are kept, and the notice at first contact."""

    retain_messages: Annotated[timedelta | None, BeforeValidator(_retention)] = None
    notice: dict[Language, str] = Field(default_factory=dict)  # one sentence with a link


class TelegramSettings(Section):
    enabled: bool | Literal["auto"] = "auto"
    api_url: str = "https://api.telegram.org"
    agents_chat_id: int | None = None
    agent_ids: list[int] = Field(default_factory=list)
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = Field(default=8443, ge=0, le=65535)  # 0: any free port
    webhook_path: str = "/telegram"
    poll_timeout: int = Field(default=30, ge=0, le=50)
    pacing: bool = True  # Telegram's flood limits; off only against a local server (benchmarks)

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class SlackSettings(Section):
    enabled: bool | Literal["auto"] = "auto"
    api_url: str = "https://slack.com/api/"
    agents_channel: str | None = None
    agent_ids: list[str] = Field(default_factory=list)
    support_channels: list[str] = Field(default_factory=list)
    mode: Literal["socket", "http"] = "socket"
    http_listen: str = "127.0.0.1"
    http_port: int = Field(default=3000, ge=0, le=65535)  # 0: any free port
    http_path: str = "/slack/events"
    kpi_command: str = "/support-kpi"
    pacing: bool = True  # about one message a second per channel; off only for benchmarks

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value if value.endswith("/") else value + "/"


_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")


def parse_rate(value: object) -> tuple[int, float]:
    """ "20/10s" → (20 messages, per 10.0 seconds)."""
    if isinstance(value, tuple):
        return value
    match = _RATE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a rate like 20/10s (messages per duration)")
    count, period = int(match.group(1)), parse_duration(match.group(2)).total_seconds()
    if count < 1 or period <= 0:
        raise ValueError(f"{value!r}: the count and the duration must be positive")
    return count, period


class WebSettings(Section):
    enabled: bool | Literal["auto"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port
    allowed_origins: list[str] = Field(default_factory=list)
    rate_limit: Annotated[tuple[int, float], BeforeValidator(parse_rate)] = (20, 10.0)
    max_message_length: int = Field(default=4000, ge=1, le=100_000)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (none by default).
    trusted_proxies: list[str] = Field(default_factory=list)
    max_sockets_per_visitor: int = Field(default=5, ge=1, le=1000)
    max_sockets_per_ip: int = Field(default=50, ge=1, le=100_000)
    send_timeout: Duration = timedelta(
        seconds=10
    )  # a socket that takes no frame this long is dropped
    idle_timeout: Duration = timedelta(seconds=20)  # idle connections and slow headers are closed

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(f"{origin!r} must look like https://shop.example.com (no path)")
        return [origin.lower() for origin in value]

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{proxy!r} is not an address or network (e.g. 127.0.0.1 or 10.0.0.0/8)"
                ) from None
        return value

    @field_validator("send_timeout", "idle_timeout")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value.total_seconds() <= 0:
            raise ValueError("must be longer than zero")
        return value


_TARGET = re.compile(r"^(slack|telegram):\S+$")


class DigestSettings(Section):
    enabled: bool = True
    schedule: str = "0 9 * * mon"
    targets: list[str] = Field(default_factory=list)
    period: Duration = timedelta(days=7)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        """Checked with the parser the scheduler uses, so `check` refuses what `run` would."""
        from apscheduler.triggers.cron import CronTrigger

        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a 5-field cron expression like '0 9 * * mon'")
        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(
                f"{value!r} is not a valid cron expression ({exc}); "
                "fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * mon'"
            ) from None
        return value

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        for target in value:
            if not _TARGET.match(target):
                raise ValueError(f"{target!r} must look like slack:C0123ABC or telegram:-1001234")
        return value


class RepliesSettings(Section):
    """Agents' saved replies (replies.yaml); none when ``path`` is not set."""

    path: Path | None = None


class Settings(Section):
    """The whole of config.yaml, validated."""

    language: Language = "fr"
    timezone: str = "Europe/Paris"
    business_hours: BusinessHoursSettings | None = None
    storage: StorageSettings = StorageSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    conversation: ConversationSettings = ConversationSettings()
    survey: SurveySettings = SurveySettings()
    telegram: TelegramSettings = TelegramSettings()
    slack: SlackSettings = SlackSettings()
    web: WebSettings = WebSettings()
    # auto: Telegram or Slack when it runs with its agents' group/channel, else the web console
    desk: Literal["auto", "telegram", "slack", "web"] = "auto"
    digest: DigestSettings = DigestSettings()
    privacy: PrivacySettings = PrivacySettings()
    messages: dict[Language, dict[str, str]] = Field(default_factory=dict)
    followup: FollowupSettings = FollowupSettings()
    complaints: ComplaintsSettings = ComplaintsSettings()
    touchpoints: dict[str, TouchpointSettings] = Field(default_factory=dict)  # tag → journey
    routing: RoutingSettings = RoutingSettings()
    replies: RepliesSettings = RepliesSettings()

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone (e.g. Europe/Paris)") from None
        return value

    @field_validator("messages")
    @classmethod
    def _messages_known(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        from bot.texts import CATALOG

        for lang, overrides in value.items():
            unknown = sorted(set(overrides) - set(CATALOG["fr"]))
            if unknown:
                raise ValueError(f"{lang}: unknown message key(s) {', '.join(unknown)}")
        return value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def calendar(self) -> BusinessCalendar:
        if self.business_hours is None:
            return BusinessCalendar(self.tz)
        return BusinessCalendar(self.tz, self.business_hours.week(), self.business_hours.holidays)

    def resolve(self, base: Path) -> Settings:
        """Make relative file paths relative to the config file's folder."""
        storage = self.storage.model_copy(update={"path": _under(base, self.storage.path)})
        knowledge = self.knowledge.model_copy(update={"path": _under(base, self.knowledge.path)})
        if knowledge.encoder not in ("use-multilingual", "none"):  # a model folder
            folder = str(_under(base, Path(knowledge.encoder)))
            knowledge = knowledge.model_copy(update={"encoder": folder})
        update: dict[str, Any] = {"storage": storage, "knowledge": knowledge}
        if self.replies.path is not None:
            update["replies"] = RepliesSettings(path=_under(base, self.replies.path))
        return self.model_copy(update=update)


def _under(base: Path, path: Path) -> Path:
    return path if path.is_absolute() or str(path) == ":memory:" else base / path


@dataclass(frozen=True, slots=True)
class Secrets:
    """Tokens, read from the environment only. ``repr`` never shows them."""

    telegram_bot_token: str | None = None
    telegram_webhook_secret: str | None = None
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    web_agent_keys: str | None = None  # "name:key,name2:key2"
    web_secret: str | None = None
    database_url: str | None = None  # a PostgreSQL URL, or only its password

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Secrets:
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            telegram_bot_token=get("TELEGRAM_BOT_TOKEN"),
            telegram_webhook_secret=get("TELEGRAM_WEBHOOK_SECRET"),
            slack_bot_token=get("SLACK_BOT_TOKEN"),
            slack_signing_secret=get("SLACK_SIGNING_SECRET"),
            slack_app_token=get("SLACK_APP_TOKEN"),
            web_agent_keys=get("WEB_AGENT_KEYS"),
            web_secret=get("WEB_SECRET"),
            database_url=get(DATABASE_URL_ENV),
        )

    def __repr__(self) -> str:
        present = [name for name in self.__slots__ if getattr(self, name)]
        return f"Secrets(set={present})"

    def values(self) -> list[str]:
        """Every secret that is set, for log redaction: each agent key on its own too."""
        found = [v for v in (getattr(self, n) for n in self.__slots__) if v]
        for pair in (self.web_agent_keys or "").split(","):
            key = pair.partition(":")[2].strip()
            if key:
                found.append(key)
        if self.database_url:
            found += StorageSettings().secret_values({DATABASE_URL_ENV: self.database_url})
        return found


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]" if parts else f"[{item}]"]
        elif item not in ("function-after", "function-before") and not item.startswith(
            ("literal[", "function-")
        ):
            parts.append(item)
    return ".".join(parts)


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    try:
        return Settings.model_validate(dict(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        key = _key_path(tuple(first["loc"]))
        msg = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config.yaml for the known keys)"
        extra = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise ConfigError(key or "(top level)", msg + extra) from None


def load_settings(path: Path) -> Settings:
    """Read and validate config.yaml; relative paths are taken from its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found (pass --config PATH)") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(where, f"invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "must be a mapping of keys (language:, timezone:, …)")
    return settings_from_mapping(data).resolve(path.resolve().parent)
