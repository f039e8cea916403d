"""The Telegram Bot API side of the transport: the PTB application, its HTTP
connections, secrets kept out of the logs, and calls with PTB errors mapped onto ours.
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web
from telegram.error import TelegramError
from telegram.ext import Application, ExtBot

from bot.config import TelegramSettings
from bot.conversation.ports import EventSink
from bot.errors import PermanentDeliveryError
from bot.logs import RedactSecrets
from handlers.telegram.failures import delivery_error
from handlers.telegram.http import AiohttpRequest
from handlers.telegram.limits import ChatPacer, PerChatUpdates, RateLimits
from handlers.telegram.polling import ConfirmingPoller
from handlers.telegram.translate import Translator
from storage.leader import RETRY_S

if TYPE_CHECKING:
    import asyncio

    from storage.inbound_queue import InboundQueue
    from storage.leader import Lease

log = logging.getLogger(__name__)

T = TypeVar("T")

ALLOWED_UPDATES = ("message", "callback_query", "my_chat_member")
# Calls beyond these connections wait for one (up to HTTP_POOL_WAIT_S) instead of failing
# after PTB's 1 s; 16 keep a busy bot's sends flowing (bench/).
HTTP_CONNECTIONS = 16
HTTP_POOL_WAIT_S = 30.0
_NOISY_LOGGERS = ("httpx", "httpcore")
_REDACTED_PREFIXES = ("telegram", "httpx", "httpcore", "handlers.telegram", "aiohttp")


class TelegramClient(ABC):
    """State and Bot API calls shared by the inbound and outbound halves."""

    def __init__(
        self,
        settings: TelegramSettings,
        token: str,
        on_event: EventSink,
        language: str = "fr",
        *,
        webhook_secret: str | None = None,
        limits: RateLimits | None = None,
        member_cache_s: float = 60.0,
        lease_retry: float = RETRY_S,
    ) -> None:
        # Opt in to PTB's coming behaviour (durations as timedelta): otherwise every 429 warns
        # with a PTBDeprecationWarning from inside PTB. ``failures`` accepts both forms.
        os.environ.setdefault("PTB_TIMEDELTA", "true")
        self.settings = settings
        self.language = language  # the desk's language; labels are icons, values come localized
        self._on_event = on_event
        self._webhook_secret = webhook_secret
        self._redactor = RedactSecrets([token, webhook_secret or ""])
        self._filtered: list[logging.Logger] = []
        self._hide_secrets_in_logs()  # before PTB is built: it logs its URL (with the token)
        self.translator = Translator(settings.agents_chat_id)
        self._agent_ids = frozenset(str(i) for i in settings.agent_ids)
        self._member_cache_s = member_cache_s
        self._members: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._forum: bool | None = None
        self._topics: OrderedDict[int, str] = OrderedDict()  # conversation → topic it created
        self._runner: web.AppRunner | None = None
        self.webhook_port: int | None = None
        self._inbound: InboundQueue | None = None  # webhook updates stored before the 200
        self._stored: dict[int, int] = {}  # update_id → its inbound_queue row, while handled
        # Polling: who polls among the processes of the database (transport.py).
        self._lease_retry = lease_retry
        self._lease: Lease | None = None
        self._leading: asyncio.Task[None] | None = None
        api = settings.api_url.rstrip("/")
        # Kept: PTB does not close them when initialize() fails (getMe refused).
        self._requests = (AiohttpRequest(HTTP_CONNECTIONS, pool_timeout=HTTP_POOL_WAIT_S),
                          AiohttpRequest(1))  # fmt: skip
        builder = (
            Application.builder()
            .token(token)
            .base_url(f"{api}/bot")
            .base_file_url(f"{api}/file/bot")
            .rate_limiter(ChatPacer(limits))
            .concurrent_updates(PerChatUpdates())
            .request(self._requests[0])
            .get_updates_request(self._requests[1])
            .job_queue(None)
        )
        builder = builder.updater(None)  # polling is ConfirmingPoller's, webhook our route's
        self.application: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        self._poller = ConfirmingPoller(
            self.application,
            timeout=settings.poll_timeout,
            allowed_updates=ALLOWED_UPDATES,
            on_error=self._polling_failed,
        )
        self._listen()

    @property
    def bot(self) -> ExtBot[None]:
        bot: ExtBot[None] = self.application.bot
        return bot

    @abstractmethod
    def _listen(self) -> None:
        """Register PTB's update and error handlers (``TelegramInbound``)."""

    def _hide_secrets_in_logs(self) -> None:
        """httpx logs request URLs (which hold the token) at INFO: keep it at WARNING, and
        redact the token and webhook secret from any record of the loggers involved."""
        for name in _NOISY_LOGGERS:
            noisy = logging.getLogger(name)
            if noisy.level < logging.WARNING:
                noisy.setLevel(logging.WARNING)
        names = {*_REDACTED_PREFIXES, __name__}
        names.update(n for n in logging.root.manager.loggerDict if n.startswith(_REDACTED_PREFIXES))
        for name in sorted(names):
            logger = logging.getLogger(name)
            logger.addFilter(self._redactor)
            self._filtered.append(logger)

    def _show_logs_again(self) -> None:
        for logger in self._filtered:
            logger.removeFilter(self._redactor)
        self._filtered.clear()

    def _polling_failed(self, exc: TelegramError) -> None:
        log.warning("telegram: getUpdates failed (%s); retrying", exc.message)

    # ------------------------------------------------------------------ calls

    async def _call(self, call: Awaitable[T], *, customer: bool) -> T:
        try:
            return await call
        except TelegramError as exc:
            raise delivery_error(exc, customer=customer) from exc

    async def _desk_call(self, call: Awaitable[T]) -> T:
        return await self._call(call, customer=False)

    def _desk_chat(self) -> int:
        chat = self.settings.agents_chat_id
        if chat is None:
            raise PermanentDeliveryError("telegram.agents_chat_id is not set")
        return chat
