"""Slack's limits, kept: per-channel pacing, bounded 429 retries, errors → our error tree."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.errors import (
    DeliveryError,
    PermanentDeliveryError,
    RecipientGoneError,
    TransientDeliveryError,
)

# the customer's DM or thread is gone for good (deactivated account, archived channel…)
CUSTOMER_GONE = frozenset(
    {"channel_not_found", "is_archived", "user_not_found", "user_disabled", "cannot_dm_bot"}
)
# Slack's own trouble: worth another try later
TRANSIENT = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


def retry_after_of(headers: object) -> float | None:
    """The ``Retry-After`` seconds of a response's headers (a dict of lists or a multidict)."""
    if not hasattr(headers, "items"):
        return None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            raw = value[0] if isinstance(value, list) and value else value
            try:
                return max(float(str(raw)), 0.0)
            except ValueError:
                return None
    return None


class BoundedRateLimitRetry(AsyncRetryHandler):
    """Wait out a 429's ``Retry-After`` once, inside the call, if it is short.

    A longer wait is not done here: the call fails with ``TransientDeliveryError(retry_after)``
    and the outbox reschedules it, so one rate-limited chat does not hold the others.
    """

    def __init__(self, max_wait: float = 5.0, max_retry_count: int = 1) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = retry_after_of(response.headers)
        return wait is not None and wait <= self.max_wait

    async def prepare_for_next_attempt_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        wait = retry_after_of(response.headers) if response is not None else None
        await asyncio.sleep(wait if wait is not None else 1.0)
        state.increment_current_attempt()


def retry_handlers(max_wait: float) -> list[AsyncRetryHandler]:
    return [AsyncConnectionErrorRetryHandler(max_retry_count=1), BoundedRateLimitRetry(max_wait)]


def slack_error(exc: SlackApiError) -> str:
    """Slack's error code (``channel_not_found``…), or "" when the body was not JSON."""
    data = getattr(exc.response, "data", None)
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def delivery_error(exc: BaseException, *, customer: bool, what: str) -> DeliveryError | None:
    """What a failed Slack call means for the outbox: retry later, or never (None: a bug)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = int(getattr(response, "status_code", 0) or 0)
        error = slack_error(exc)
        reason = f"slack {what}: {error or f'HTTP {status}'}"
        if status == 429 or error == "ratelimited":
            return TransientDeliveryError(reason, retry_after_of(response.headers))
        if status >= 500 or error in TRANSIENT:
            return TransientDeliveryError(reason)
        if customer and error in CUSTOMER_GONE:
            return RecipientGoneError(reason)
        return PermanentDeliveryError(reason)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return TransientDeliveryError(f"slack {what}: {type(exc).__name__}")
    return None


class Pacer:
    """About one message per second per channel, as Slack asks; callers queue per channel."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @asynccontextmanager
    async def slot(self, channel: str) -> AsyncIterator[None]:
        if self.interval <= 0:
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            wait = self._last.get(channel, -math.inf) + self.interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                yield
            finally:
                self._last[channel] = loop.time()
                self._prune(loop.time())

    def _prune(self, now: float) -> None:
        if len(self._last) < 1000:
            return
        for channel, at in list(self._last.items()):
            lock = self._locks.get(channel)
            if now - at > self.interval and (lock is None or not lock.locked()):
                self._last.pop(channel, None)
                self._locks.pop(channel, None)
