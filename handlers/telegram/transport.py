"""The Telegram transport: a PTB ``Application`` run inside our event loop.

It receives updates (long polling, or a webhook route that checks Telegram's secret
header), translates each into one event for ``on_event`` and shows the returned
``Outcome`` (callback answers, notices). It also implements the three ports the engine
acts through: ``CustomerChannel`` (private chats), ``AgentDesk`` (one forum topic per
conversation in the agents' group, or reply chains in a plain group) and
``DigestPublisher``. PTB errors become our ``DeliveryError`` family (``failures.py``).

This class owns the lifecycle; the halves are ``inbound`` (updates in) and ``outbound``
(actions out), over the shared application and calls of ``client``.
"""

from __future__ import annotations

import logging

from telegram.error import InvalidToken, TelegramError

from bot.errors import ConfigError, TransientDeliveryError
from handlers.telegram.inbound import TelegramInbound
from handlers.telegram.outbound import TelegramOutbound
from handlers.telegram.translate import CHANNEL

log = logging.getLogger(__name__)


class TelegramTransport(TelegramInbound, TelegramOutbound):
    """Telegram as a customer channel, an agents' desk and a digest target."""

    @property
    def channel(self) -> str:
        return CHANNEL

    @property
    def desk(self) -> str:
        return CHANNEL

    @property
    def platform(self) -> str:
        return CHANNEL

    @property
    def ready(self) -> bool:
        """Receiving updates: the poller runs, or the webhook route is served."""
        return self.application.running and (self._poller.running or self._runner is not None)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect (getMe), inspect the agents' group, then poll or serve the webhook."""
        settings = self.settings
        webhook = settings.mode == "webhook"
        if webhook and not (self._webhook_secret and settings.webhook_url):
            raise ConfigError(
                "telegram.mode",
                "webhook mode needs telegram.webhook_url and TELEGRAM_WEBHOOK_SECRET",
            )
        await self.connect()
        me = self.bot.bot
        await self._inspect_desk()
        await self.application.start()
        if webhook:
            await self._start_webhook()
        else:
            await self._poller.start()
        log.info("telegram: connected as @%s (%s)", me.username, settings.mode)

    async def connect(self) -> None:
        """getMe and the HTTP clients: enough to send (``supportbot digest`` needs no more),
        while nothing is received until ``start`` polls or serves the webhook."""
        try:
            await self.application.initialize()
        except BaseException as exc:
            # PTB leaves its HTTP sessions open when initialize() fails: close them here.
            for request in self._requests:
                await request.shutdown()
            if isinstance(exc, InvalidToken):
                raise ConfigError("TELEGRAM_BOT_TOKEN", "Telegram refused this bot token") from None
            if isinstance(exc, TelegramError):
                raise TransientDeliveryError(
                    f"cannot reach Telegram at {self.settings.api_url}: {exc.message}"
                ) from None
            raise
        me = self.bot.bot
        self.translator.bot_id, self.translator.bot_username = me.id, me.username

    async def stop(self) -> None:
        app = self.application
        try:
            await self._poller.stop()
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            if app.running:
                await app.stop()
            await app.shutdown()
        finally:
            self._show_logs_again()

    async def _inspect_desk(self) -> None:
        """Is the agents' group a forum, and may the bot manage its topics? Only warns:
        the group is looked at again when a thread is first opened."""
        chat_id = self.settings.agents_chat_id
        if chat_id is None:
            return
        try:
            chat = await self.bot.get_chat(chat_id)
            self._forum = bool(chat.is_forum)
            me = await self.bot.get_chat_member(chat_id, self.bot.id)
        except TelegramError as exc:
            log.warning("telegram: cannot read the agents' group %s: %s", chat_id, exc.message)
            return
        if not self._forum:
            log.warning(
                "telegram: the agents' group %s is not a forum; each conversation will be a "
                "chain of replies under its header (enable Topics for one topic each)",
                chat_id,
            )
        elif not getattr(me, "can_manage_topics", False):
            log.warning(
                "telegram: the bot is not an administrator allowed to manage topics in %s",
                chat_id,
            )
