"""Telegram errors → our delivery errors, so that the outbox knows whether to retry.

- RetryAfter (429) → ``TransientDeliveryError(retry_after=N)``
- TimedOut, NetworkError (HTTP 5xx), Conflict → ``TransientDeliveryError``
- Forbidden on a customer's chat (blocked the bot, deactivated) → ``RecipientGoneError``
- Forbidden on the desk, BadRequest, InvalidToken, ChatMigrated, 404 →
  ``PermanentDeliveryError``
"""

from __future__ import annotations

import warnings
from datetime import timedelta

from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.warnings import PTBDeprecationWarning

from bot.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RecipientGoneError,
    TransientDeliveryError,
)


def retry_after_seconds(exc: RetryAfter) -> float:
    """Seconds to wait, whether PTB gives an int (deprecated) or a timedelta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def delivery_error(exc: TelegramError, *, customer: bool) -> DeliveryError:
    """Our error for a failed call; ``customer`` says the call targeted a customer's chat."""
    reason = f"telegram: {exc.message}"
    if isinstance(exc, RetryAfter):
        return TransientDeliveryError(reason, retry_after=retry_after_seconds(exc))
    if isinstance(exc, Forbidden):
        return RecipientGoneError(reason) if customer else PermanentDeliveryError(reason)
    if isinstance(exc, BadRequest | InvalidToken | EndPointNotFound):
        return PermanentDeliveryError(reason)
    if isinstance(exc, ChatMigrated):
        return PermanentDeliveryError(f"{reason} (new chat id {exc.new_chat_id})")
    if isinstance(exc, NetworkError | Conflict):  # includes TimedOut and HTTP 5xx
        return TransientDeliveryError(reason)
    return TransientDeliveryError(reason)


def is_not_modified(exc: TelegramError) -> bool:
    """An edit or topic change that was already in place: nothing to do."""
    text = exc.message.lower()
    return isinstance(exc, BadRequest) and ("not modified" in text or "not_modified" in text)
