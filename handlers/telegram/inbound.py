"""Updates in: polled or webhook updates → one event each for ``on_event`` → the
``Outcome`` shown back (callback answers, notices).

A webhook update is acknowledged only once stored: the route writes it to the inbound
queue (``storage.inbound_queue``), answers 200, and the handler marks the row handled
when the engine step is done. A row left unfinished by a killed process is replayed
(``replay_inbound``) by the app's sweep.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from telegram import Message, ReplyParameters, Update
from telegram.error import TelegramError
from telegram.ext import CallbackContext, TypeHandler

from bot.conversation.model import CustomerChoice, InboundEvent, Outcome
from bot.errors import StorageError
from handlers.telegram.client import ALLOWED_UPDATES, TelegramClient
from handlers.telegram.failures import delivery_error, is_not_modified
from handlers.telegram.render import MAX_CALLBACK_ANSWER, split_text, truncate, with_choice

if TYPE_CHECKING:
    from storage.inbound_queue import InboundQueue, StoredDelivery

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


class TelegramInbound(TelegramClient):
    """The webhook route and the one PTB handler every update goes through."""

    def _listen(self) -> None:
        self.application.add_handler(TypeHandler(Update, self._handle))
        self.application.add_error_handler(self._on_error)

    # ------------------------------------------------------------------ webhook

    async def _start_webhook(self) -> None:
        settings = self.settings
        app = web.Application()
        app.router.add_post(settings.webhook_path, self._webhook)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, settings.webhook_listen, settings.webhook_port)
        await site.start()
        self.webhook_port = int(self._runner.addresses[0][1])
        try:
            await self.bot.set_webhook(
                url=settings.webhook_url or "",
                secret_token=self._webhook_secret,
                allowed_updates=list(ALLOWED_UPDATES),
            )
        except TelegramError as exc:
            raise delivery_error(exc, customer=False) from None

    async def _webhook(self, request: web.Request) -> web.Response:
        """Telegram's POST: refused (403) unless it carries our secret; else stored, and
        only then acknowledged (a 503 when the database refuses: Telegram sends it again)."""
        given = request.headers.get(SECRET_HEADER, "")
        expected = self._webhook_secret or ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("telegram: webhook call from %s without the right secret", request.remote)
            return web.Response(status=403)
        raw = await request.text()
        try:
            data = json.loads(raw)
        except ValueError:
            log.warning("telegram: webhook body is not JSON")
            return web.Response(status=400)
        update = self.parse_update(data)
        if update is None:
            return web.Response(status=400)
        if self._inbound is None:  # a transport run without the app (tests): memory only
            await self.application.update_queue.put(update)
            return web.Response(status=200)
        key = f"telegram:{self.translator.bot_id}:{update.update_id}"
        try:
            stored = await self._inbound.store("telegram", key, raw)
        except StorageError as exc:
            log.warning("telegram: update %s not stored (%s); 503", update.update_id, exc)
            return web.Response(status=503)
        if stored is not None:  # else a redelivery: the first copy is handled (or will be)
            self._stored[update.update_id] = stored.id
            await self.application.update_queue.put(update)
        return web.Response(status=200)

    def keep_inbound(self, queue: InboundQueue) -> None:
        """Store webhook updates in ``queue`` before acknowledging them (SupportApp)."""
        self._inbound = queue

    async def replay_inbound(self, delivery: StoredDelivery) -> None:
        """Handle a stored update that nobody finished (claimed by the app's sweep)."""
        assert self._inbound is not None, "keep_inbound() first"
        try:
            update = self.parse_update(json.loads(delivery.body))
        except ValueError:
            update = None
        if update is None:
            await self._inbound.handled(delivery.id)  # logged by parse_update: nothing to do
            return
        if update.update_id in self._stored:
            return  # being handled here right now
        log.info("telegram: update %s resumed from the inbound queue", update.update_id)
        self._stored[update.update_id] = delivery.id
        await self.application.update_queue.put(update)

    def parse_update(self, data: object) -> Update | None:
        """A webhook body as an update, or None (with a warning naming it) when it is not
        one Telegram could send: PTB would otherwise choke on it outside our handler."""
        try:
            update = Update.de_json(data, self.bot)  # type: ignore[arg-type]
            user, chat = update.effective_user, update.effective_chat
            ids_ok = all(isinstance(x.id, int) for x in (user, chat) if x is not None)
        except Exception as exc:  # any shape PTB cannot read
            log.warning("telegram: webhook body rejected: not an update (%s)", exc)
            return None
        if not ids_ok:
            log.warning("telegram: update %s rejected: malformed ids", update.update_id)
            return None
        return update

    # ------------------------------------------------------------------ inbound

    async def _handle(self, update: Update, context: Any) -> None:
        """Every update: translate, hand to the engine, show the outcome; then let the
        poller confirm it to Telegram, or mark its stored row handled."""
        done = False
        try:
            await self._handle_update(update)
            done = True
        finally:
            self._poller.handled(update)
            await self._settle(update, done)

    async def _settle(self, update: Update, done: bool) -> None:
        """Mark a stored update handled; a failed one keeps its row, tried again by a sweep
        once its lease runs out (the engine's inbound key keeps that from doubling)."""
        row = self._stored.pop(update.update_id, None)
        if row is None or self._inbound is None:
            return
        try:
            if done:
                await self._inbound.handled(row)
            else:
                await self._inbound.failed(row, "handling failed (see the log)")
        except StorageError as exc:  # the row stays unfinished: replayed later, harmlessly
            log.warning("telegram: update %s not marked handled (%s)", update.update_id, exc)

    async def _handle_update(self, update: Update) -> None:
        message = update.effective_message
        query = update.callback_query
        try:
            if isinstance(message, Message) and message.chat.id == self.settings.agents_chat_id:
                self._forum = bool(message.chat.is_forum)
            event = self.translator.event(update)
        except (AttributeError, TypeError, ValueError) as exc:
            # Telegram never sends these (a field it always fills is missing or mistyped):
            # a forged or broken body. Refused with a line naming it, not a crash.
            log.warning("telegram: update %s rejected: malformed (%s)", update.update_id, exc)
            event = None
        if event is None:
            if query is not None:
                await self._answer(query.id, None, alert=False)  # stop the spinner
            return
        try:
            outcome = await self._on_event(event)
        except Exception:
            if query is not None:
                await self._answer(query.id, None, alert=False)
            raise  # to the central error handler
        if query is not None:
            await self._show_choice(query.id, query.message, event, outcome)
        elif outcome.notice and not outcome.duplicate and isinstance(message, Message):
            await self._reply(message, outcome.notice)

    async def _show_choice(
        self, query_id: str, message: object, event: InboundEvent, outcome: Outcome
    ) -> None:
        """Answer a button press; a customer's accepted choice is written under the question
        (the desk header is redrawn by ``update_header`` instead)."""
        if outcome.duplicate:
            await self._answer(query_id, None, alert=False)
            return
        customer = isinstance(event, CustomerChoice)
        text = outcome.notice or (None if customer else outcome.chosen)
        await self._answer(query_id, text, alert=not outcome.ok and bool(outcome.notice))
        if customer and outcome.ok and outcome.chosen and isinstance(message, Message):
            await self._mark_chosen(message, outcome.chosen)

    async def _answer(self, query_id: str, text: str | None, *, alert: bool) -> None:
        try:
            await self.bot.answer_callback_query(
                query_id,
                text=truncate(text, MAX_CALLBACK_ANSWER) if text else None,
                show_alert=alert,
            )
        except TelegramError as exc:  # too old (over ~15 s): nothing else to do
            log.warning("telegram: could not answer a button press: %s", exc.message)

    async def _mark_chosen(self, message: Message, chosen: str) -> None:
        original = message.text
        if not original:  # a caption question: nothing to write under
            return
        text = with_choice(original, chosen)
        keeps_entities = text.startswith(original)
        try:
            await self.bot.edit_message_text(
                text,
                chat_id=message.chat.id,
                message_id=message.message_id,
                entities=message.entities if keeps_entities else None,
                reply_markup=None,
            )
        except TelegramError as exc:
            if not is_not_modified(exc):
                log.warning("telegram: could not show the choice: %s", exc.message)

    async def _reply(self, message: Message, text: str) -> None:
        """A notice for whoever typed a command, under their message."""
        try:
            for part in split_text(text):
                await self.bot.send_message(
                    message.chat.id,
                    part,
                    message_thread_id=message.message_thread_id
                    if message.is_topic_message
                    else None,
                    reply_parameters=ReplyParameters(
                        message.message_id, allow_sending_without_reply=True
                    ),
                )
        except TelegramError as exc:
            log.warning("telegram: could not reply with a notice: %s", exc.message)

    async def _on_error(self, update: object, context: CallbackContext[Any, Any, Any, Any]) -> None:
        """The one place where a failed update is reported, with its traceback."""
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("telegram: update %s failed", update_id, exc_info=context.error)
