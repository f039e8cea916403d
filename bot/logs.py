"""Logging setup: one format, and no secret ever written to a log."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

HANDLER_NAME = "supportbot"


class RedactSecrets(logging.Filter):
    """Replaces every configured secret in a record's rendered message with «***»."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(secrets: Iterable[str], level: str | None = None) -> None:
    """Console logging at ``level`` (or $SUPPORTBOT_LOG_LEVEL, default INFO), secrets redacted."""
    name = (level or os.environ.get("SUPPORTBOT_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    # Replace only our own handler (a second setup, e.g. tests calling main twice).
    root.handlers[:] = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(getattr(logging, name, logging.INFO))
    # httpx logs every request URL at INFO, and Telegram URLs contain the bot token.
    for noisy in ("httpx", "httpcore", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
