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

import asyncio
import contextlib
import logging

from telegram.error import InvalidToken, TelegramError

from bot.errors import ConfigError, TransientDeliveryError
from handlers.telegram.inbound import TelegramInbound
from handlers.telegram.outbound import TelegramOutbound
from handlers.telegram.translate import CHANNEL
from storage.leader import Lease, SoleLease, lease_for

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
        """Receiving updates (the poller runs, or the webhook route is served), or able to
        send while another process holds the polling: connected either way."""
        if not self.application.running:
            return False
        if self._runner is not None or self._poller.running:
            return True
        following = self._leading is not None and not self._leading.done()
        return following and self._lease is not None and not self._lease.is_leader

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
            await self._follow_lease(me.id)
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

    async def _follow_lease(self, bot_id: int) -> None:
        """Polling: only the leader of ``telegram-poller:<bot id>`` among the processes of
        the database asks Telegram for updates (a second poller gets 409); the others send,
        and poll as soon as they win the lease. The new leader resumes from the offset
        Telegram keeps: unconfirmed updates come again, and the inbound keys make a
        repeat a no-op."""
        role = f"telegram-poller:{bot_id}"
        db = self._inbound.db if self._inbound is not None else None
        lease = SoleLease(role) if db is None else lease_for(db, role, retry=self._lease_retry)
        self._lease = lease
        await lease.start()
        if lease.is_leader:  # as before: polling when start returns (a lone process)
            await self._poller.start()
        self._leading = asyncio.create_task(self._lead(lease), name="telegram-leadership")

    async def _lead(self, lease: Lease) -> None:
        """Poll while leading; stop at once when the lease is lost, then compete again."""
        while True:
            await lease.leading.wait()
            if not self._poller.running:
                try:
                    await self._poller.start()
                except TelegramError as exc:  # deleteWebhook refused: try again shortly
                    log.warning("telegram: cannot start polling: %s; retrying", exc.message)
                    await asyncio.sleep(self._lease_retry)
                    continue
            await lease.lost.wait()
            await self._poller.stop()

    async def stop(self) -> None:
        app = self.application
        try:
            if self._leading is not None:
                self._leading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._leading
                self._leading = None
            await self._poller.stop()
            if self._lease is not None:
                await self._lease.stop()
                self._lease = None
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
