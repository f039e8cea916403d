"""Logging setup: readable text or one JSON object a line, and no secret ever logged.

``conversation_id`` is a context variable: the engine sets it for the step it runs and
the outbox for the item it delivers, so every line logged meanwhile names the
conversation (log collectors can then follow one conversation across components).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import UTC, datetime

HANDLER_NAME = "supportbot"
FORMATS = ("text", "json")

conversation_id: ContextVar[int | None] = ContextVar("conversation_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, conversation_id if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        conv = getattr(record, "conversation_id", None)
        if conv is None:
            conv = conversation_id.get()
        if conv is not None:
            line["conversation_id"] = conv
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


MIN_SECRET = 6  # shorter values would redact ordinary words
_GENERATED: set[str] = set()  # secrets made at run time (signing secret, agent key file)
# Third-party loggers whose DEBUG lines carry SQL parameters or message bodies: customer
# text and secrets. They stay at WARNING (SQL) or INFO (platform clients) even at DEBUG.
QUIET_LOGGERS = {
    "aiosqlite": logging.WARNING,
    "psycopg": logging.WARNING,
    "httpx": logging.WARNING,  # every request URL at INFO, and Telegram URLs hold the token
    "httpcore": logging.WARNING,
    "apscheduler.executors.default": logging.WARNING,
    "telegram": logging.INFO,
    "slack_sdk": logging.INFO,
    "slack_bolt": logging.INFO,
}


def redact(secret: str) -> None:
    """Never log ``secret`` from now on (for secrets the bot generates or reads from files)."""
    if len(secret) >= MIN_SECRET:
        _GENERATED.add(secret)


class RedactSecrets(logging.Filter):
    """Replaces every configured or generated secret in a record with «***».

    The rendered message and the traceback text are both checked: an exception's
    message may quote a value it was given.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = {s for s in secrets if len(s) >= MIN_SECRET}

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = sorted(self._secrets | _GENERATED, key=len, reverse=True)
        if not secrets:
            return True
        message = record.getMessage()
        redacted = _scrub(message, secrets)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _scrub(record.exc_text, secrets)
        return True


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def setup_logging(
    secrets: Iterable[str], level: str | None = None, log_format: str | None = None
) -> None:
    """Console logging at ``level`` (or $SUPPORTBOT_LOG_LEVEL, default INFO), secrets redacted,
    as ``log_format`` (or $SUPPORTBOT_LOG_FORMAT): "text" (default) or "json"."""
    name = (level or os.environ.get("SUPPORTBOT_LOG_LEVEL") or "INFO").upper()
    fmt = (log_format or os.environ.get("SUPPORTBOT_LOG_FORMAT") or "text").lower()
    handler = logging.StreamHandler()
    handler.set_name(HANDLER_NAME)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    # Replace only our own handler (a second setup, e.g. tests calling main twice).
    root.handlers[:] = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(getattr(logging, name, logging.INFO))
    for noisy, floor in QUIET_LOGGERS.items():
        logging.getLogger(noisy).setLevel(floor if root.level < floor else logging.NOTSET)
