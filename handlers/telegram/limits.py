"""Pacing of what the bot sends, and ordering of what it receives.

Telegram's flood limits: about 30 messages a second per bot overall, about one a second
per private chat, 20 a minute per group. PTB's ``AIORateLimiter`` paces the overall rate
and groups but not private chats, so ``ChatPacer`` does all three: each chat gets a leaky
bucket (a short burst, then the steady rate) and everything shares one global bucket.
Retries after a 429 are left to our outbox, which stores the wait.

``PerChatUpdates`` processes updates concurrently, except that updates of the same chat
(or forum topic) run one after another, in the order Telegram sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiolimiter import AsyncLimiter
from telegram import Update
from telegram.ext import BaseRateLimiter, BaseUpdateProcessor

JSONDict = dict[str, Any]

# Methods that make a message appear in a chat: these count against the flood limits.
PACED_METHODS = frozenset(
    {
        "sendMessage",
        "sendPhoto",
        "sendDocument",
        "copyMessage",
        "editMessageText",
        "editMessageReplyMarkup",
        "createForumTopic",
        "closeForumTopic",
        "reopenForumTopic",
    }
)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Flood limits to respect; the defaults are Telegram's documented ones."""

    overall_per_second: float = 30.0
    private_per_second: float = 1.0
    private_burst: int = 3
    group_per_minute: float = 20.0
    max_idle_chats: int = 2048  # buckets kept for chats that went quiet

    @classmethod
    def unlimited(cls) -> RateLimits:
        """For tests and benchmarks against a local server."""
        return cls(overall_per_second=0, private_per_second=0, group_per_minute=0)


class ChatPacer(BaseRateLimiter[None]):
    """A PTB rate limiter with one bucket per chat plus one for the whole bot."""

    def __init__(self, limits: RateLimits | None = None) -> None:
        self.limits = limits or RateLimits()
        rate = self.limits.overall_per_second
        self._overall = AsyncLimiter(rate, 1) if rate > 0 else None
        self._chats: OrderedDict[int | str, AsyncLimiter] = OrderedDict()

    async def initialize(self) -> None:
        """Nothing to set up: buckets are created on first use."""

    async def shutdown(self) -> None:
        self._chats.clear()

    def _bucket(self, chat_id: object) -> AsyncLimiter | None:
        key: int | str
        try:
            key = int(chat_id)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            key = str(chat_id)  # "@channel": a group-like chat
        bucket = self._chats.get(key)
        if bucket is not None:
            self._chats.move_to_end(key)
            return bucket
        limits = self.limits
        if isinstance(key, int) and key > 0:  # private chats have positive ids
            if limits.private_per_second <= 0:
                return None
            burst = max(limits.private_burst, 1)
            bucket = AsyncLimiter(burst, burst / limits.private_per_second)
        else:
            if limits.group_per_minute <= 0:
                return None
            bucket = AsyncLimiter(limits.group_per_minute, 60)
        self._chats[key] = bucket
        self._forget_idle()
        return bucket

    def _forget_idle(self) -> None:
        """Drop the least recently used buckets that are empty again (O(1) amortized)."""
        while len(self._chats) > self.limits.max_idle_chats:
            key, oldest = next(iter(self._chats.items()))
            if not oldest.has_capacity(oldest.max_rate):
                break
            del self._chats[key]

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | JSONDict | list[JSONDict]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: None,
    ) -> bool | JSONDict | list[JSONDict]:
        if endpoint not in PACED_METHODS or "chat_id" not in data:
            return await callback(*args, **kwargs)
        chat = self._bucket(data["chat_id"])
        async with _or_nothing(chat), _or_nothing(self._overall):
            return await callback(*args, **kwargs)


def _or_nothing(limiter: AsyncLimiter | None) -> contextlib.AbstractAsyncContextManager[Any]:
    return limiter if limiter is not None else contextlib.nullcontext()


def update_lane(update: object) -> tuple[int, int | None] | None:
    """The chat (and forum topic) an update belongs to; None if it has no chat."""
    if not isinstance(update, Update) or update.effective_chat is None:
        return None
    message = update.effective_message
    thread = getattr(message, "message_thread_id", None) if message is not None else None
    return update.effective_chat.id, thread


class _Lane:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class PerChatUpdates(BaseUpdateProcessor):
    """Concurrent processing, in order within one chat or topic.

    PTB starts one task per update in arrival order; each reaches its lane's FIFO lock
    before yielding, so a chat's updates keep their order while chats run in parallel.
    """

    def __init__(self, max_concurrent_updates: int = 256) -> None:
        super().__init__(max_concurrent_updates)
        self._lanes: dict[tuple[int, int | None], _Lane] = {}

    async def initialize(self) -> None:
        """Nothing to set up."""

    async def shutdown(self) -> None:
        """Lanes vanish with their last update."""

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        key = update_lane(update)
        if key is None:
            await coroutine
            return
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        lane.users += 1
        try:
            async with lane.lock:
                await coroutine
        finally:
            lane.users -= 1
            if lane.users == 0:
                del self._lanes[key]
