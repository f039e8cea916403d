"""The Telegram transport: a PTB ``Application`` run inside our event loop.

It receives updates (long polling, or a webhook route that checks Telegram's secret
header), translates each into one event for ``on_event`` and shows the returned
``Outcome`` (callback answers, notices). It also implements the three ports the engine
acts through: ``CustomerChannel`` (private chats), ``AgentDesk`` (one forum topic per
conversation in the agents' group, or reply chains in a plain group) and
``DigestPublisher``. PTB errors become our ``DeliveryError`` family (``failures.py``).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from aiohttp import web
from telegram import Message, ReplyParameters, Update
from telegram.constants import ChatMemberStatus, ParseMode
from telegram.error import BadRequest, InvalidToken, TelegramError
from telegram.ext import Application, CallbackContext, ExtBot, TypeHandler

from bot.config import TelegramSettings
from bot.errors import ConfigError, PermanentDeliveryError, TransientDeliveryError
from bot.logs import RedactSecrets
from bot.model import (
    Address,
    Choice,
    CustomerChoice,
    InboundEvent,
    Media,
    Outcome,
    Sent,
    ThreadHeader,
    ThreadRef,
)
from bot.ports import EventSink
from handlers.telegram.failures import delivery_error, is_not_modified
from handlers.telegram.http import AiohttpRequest
from handlers.telegram.limits import ChatPacer, PerChatUpdates, RateLimits
from handlers.telegram.polling import ConfirmingPoller
from handlers.telegram.render import (
    MAX_CALLBACK_ANSWER,
    MAX_CAPTION,
    keyboard,
    post_parts,
    render_header,
    split_text,
    topic_name,
    transcript_parts,
    truncate,
    utf16_len,
    with_choice,
)
from handlers.telegram.translate import CHANNEL, Translator

log = logging.getLogger(__name__)
T = TypeVar("T")

ALLOWED_UPDATES = ("message", "callback_query", "my_chat_member")
RELAYED_REACTION = "👍"
# Calls beyond these connections wait for one (up to HTTP_POOL_WAIT_S) instead of failing
# after PTB's 1 s; 16 keep a busy bot's sends flowing (bench/).
HTTP_CONNECTIONS = 16
HTTP_POOL_WAIT_S = 30.0
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MEMBER_STATUSES = frozenset(
    {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}
)
_NOISY_LOGGERS = ("httpx", "httpcore")
_REDACTED_PREFIXES = ("telegram", "httpx", "httpcore", "handlers.telegram", "aiohttp")


def _chat_id(value: str | int) -> int | str:
    """Telegram chat ids are integers; "@channel" names stay strings."""
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def placeholder(media: Media, caption: str) -> str:
    """What stands for an attachment that cannot be copied (another platform's file)."""
    lines = [f"📎 {media.name or media.kind}"]
    if media.url:
        lines.append(media.url)
    if caption.strip():
        lines.extend(["", caption])
    return "\n".join(lines)


class TelegramTransport:
    """Telegram as a customer channel, an agents' desk and a digest target."""

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
        self.application.add_handler(TypeHandler(Update, self._handle))
        self._poller = ConfirmingPoller(
            self.application,
            timeout=settings.poll_timeout,
            allowed_updates=ALLOWED_UPDATES,
            on_error=self._polling_failed,
        )
        self.application.add_error_handler(self._on_error)

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
    def bot(self) -> ExtBot[None]:
        bot: ExtBot[None] = self.application.bot
        return bot

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

    async def _is_forum(self) -> bool:
        if self._forum is None:
            chat = await self._desk_call(self.bot.get_chat(self._desk_chat()))
            self._forum = bool(chat.is_forum)
        return self._forum

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
        """Telegram's POST: refused (403) unless it carries our secret; else queued."""
        given = request.headers.get(SECRET_HEADER, "")
        expected = self._webhook_secret or ""
        if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("telegram: webhook call from %s without the right secret", request.remote)
            return web.Response(status=403)
        try:
            data = await request.json()
        except ValueError:
            log.warning("telegram: webhook body is not JSON")
            return web.Response(status=400)
        update = self.parse_update(data)
        if update is None:
            return web.Response(status=400)
        await self.application.update_queue.put(update)
        return web.Response(status=200)

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
        poller confirm it to Telegram."""
        try:
            await self._handle_update(update)
        finally:
            self._poller.handled(update)

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

    # ------------------------------------------------------------------ CustomerChannel

    async def send(self, to: Address, text: str, choices: Sequence[Sequence[Choice]] = ()) -> Sent:
        """Plain text (no parse mode: nothing the customer or KB wrote can format), split at
        4096 characters; the buttons go under the last part."""
        chat = _chat_id(to.chat_id)
        parts = split_text(text if text.strip() else "…")
        markup = keyboard(choices)
        sent: Message | None = None
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            sent = await self._call(
                self.bot.send_message(chat, part, reply_markup=markup if last else None),
                customer=True,
            )
        assert sent is not None
        return Sent(str(sent.message_id))

    async def send_media(self, to: Address, media: Media, caption: str) -> Sent:
        chat = _chat_id(to.chat_id)
        copied = await self._copy(chat, media, caption, {}, customer=True)
        if copied is not None:
            return copied
        return await self.send(to, placeholder(media, caption))

    async def _copy(
        self, chat: int | str, media: Media, caption: str, where: dict[str, Any], *, customer: bool
    ) -> Sent | None:
        """Copy a Telegram attachment; None when it cannot be (other platform, source gone)."""
        if media.channel != CHANNEL or not media.message_id.isdigit():
            return None
        fits = 0 < utf16_len(caption) <= MAX_CAPTION
        try:
            copied = await self.bot.copy_message(
                chat,
                from_chat_id=_chat_id(media.chat_id),
                message_id=int(media.message_id),
                caption=caption if fits else None,
                **where,
            )
        except BadRequest as exc:
            log.info("telegram: cannot copy %s (%s); sending a placeholder", media.kind, exc)
            return None
        except TelegramError as exc:
            raise delivery_error(exc, customer=customer) from exc
        last = str(copied.message_id)
        if caption.strip() and not fits:  # too long for a caption: follows as text
            for part in split_text(caption):
                sent = await self._call(
                    self.bot.send_message(chat, part, **where), customer=customer
                )
                last = str(sent.message_id)
        return Sent(last)

    # ------------------------------------------------------------------ AgentDesk

    def _in_thread(self, thread: str) -> dict[str, Any]:
        """Where a desk message goes: into the topic, or as a reply in the chain."""
        if self._forum:
            return {"message_thread_id": int(thread)}
        return {"reply_parameters": ReplyParameters(int(thread), allow_sending_without_reply=True)}

    async def _desk_send(
        self, text: str, thread: str | None, *, html: bool, markup: Any = None
    ) -> Message:
        where = self._in_thread(thread) if thread is not None else {}
        sent: Message = await self._desk_call(
            self.bot.send_message(
                self._desk_chat(),
                text,
                parse_mode=ParseMode.HTML if html else None,
                reply_markup=markup,
                **where,
            )
        )
        if thread is not None and not self._forum:
            self.translator.chains.add(sent.message_id, thread)
        return sent

    async def open_thread(self, header: ThreadHeader, previous: str | None) -> ThreadRef:
        """A forum topic named after the conversation with the header (and its buttons) in
        it; the customer's previous topic is reopened and reused when it still exists."""
        chat = self._desk_chat()
        if not await self._is_forum():
            return await self._open_chain(header)
        thread = self._topics.get(header.conversation_id)  # a retry after a partial failure
        if thread is None and previous and await self._reopened(chat, previous):
            thread = previous
            try:
                return await self._post_header(header, thread)
            except PermanentDeliveryError as exc:  # the old topic was deleted meanwhile
                log.info("telegram: topic %s unusable (%s); opening a new one", previous, exc)
                thread = None
        if thread is None:
            topic = await self._desk_call(self.bot.create_forum_topic(chat, topic_name(header)))
            thread = str(topic.message_thread_id)
            self._topics[header.conversation_id] = thread
            while len(self._topics) > 1000:
                self._topics.popitem(last=False)
        ref = await self._post_header(header, thread)
        self._topics.pop(header.conversation_id, None)
        return ref

    async def _open_chain(self, header: ThreadHeader) -> ThreadRef:
        """Plain group: the header message is the thread; everything else replies to it."""
        text, markup = self._header(header)
        head = await self._desk_send(text, None, html=True, markup=markup)
        thread = str(head.message_id)
        self.translator.chains.add(head.message_id, thread)
        await self._post_transcript(header, thread)
        return ThreadRef(thread, thread)

    def _header(self, header: ThreadHeader) -> tuple[str, Any]:
        text, _ = render_header(header)
        return text, keyboard([header.buttons])

    async def _post_header(self, header: ThreadHeader, thread: str) -> ThreadRef:
        text, markup = self._header(header)
        head = await self._desk_send(text, thread, html=True, markup=markup)
        await self._post_transcript(header, thread)
        return ThreadRef(thread, str(head.message_id))

    async def _post_transcript(self, header: ThreadHeader, thread: str) -> None:
        """The transcript follows the header when it did not fit in it."""
        if render_header(header)[1]:
            return
        for part in transcript_parts(header):
            await self._desk_send(part, thread, html=True)

    async def _reopened(self, chat: int, thread: str) -> bool:
        """Reopen a customer's earlier topic; False if it no longer exists."""
        if not thread.isdigit():
            return False
        try:
            await self.bot.reopen_forum_topic(chat, int(thread))
        except TelegramError as exc:
            if is_not_modified(exc):  # it was open already
                return True
            if isinstance(exc, BadRequest):
                log.info("telegram: cannot reopen topic %s (%s)", thread, exc.message)
                return False
            raise delivery_error(exc, customer=False) from exc
        return True

    async def update_header(self, ref: ThreadRef, header: ThreadHeader) -> None:
        text, markup = self._header(header)
        try:
            await self.bot.edit_message_text(
                text,
                chat_id=self._desk_chat(),
                message_id=int(ref.header_message),
                parse_mode=ParseMode.HTML,
                reply_markup=markup,
            )
        except TelegramError as exc:
            if not is_not_modified(exc):
                raise delivery_error(exc, customer=False) from exc

    async def post(self, thread: str, text: str, author: str, name: str) -> Sent:
        await self._is_forum()
        sent: Message | None = None
        for part in post_parts(text, author, name):
            sent = await self._desk_send(part, thread, html=True)
        assert sent is not None
        return Sent(str(sent.message_id))

    async def post_media(self, thread: str, media: Media, caption: str) -> Sent:
        await self._is_forum()
        copied = await self._copy(
            self._desk_chat(), media, caption, self._in_thread(thread), customer=False
        )
        if copied is not None:
            return copied
        sent = await self._desk_send(placeholder(media, caption), thread, html=False)
        return Sent(str(sent.message_id))

    async def mark_relayed(self, thread: str, message_ref: str) -> None:
        if not message_ref.isdigit():
            return
        await self._desk_call(
            self.bot.set_message_reaction(self._desk_chat(), int(message_ref), RELAYED_REACTION)
        )

    async def close_thread(self, thread: str) -> None:
        await self._topic_state(thread, closed=True)

    async def reopen_thread(self, thread: str) -> None:
        await self._topic_state(thread, closed=False)

    async def _topic_state(self, thread: str, *, closed: bool) -> None:
        if not await self._is_forum():  # a reply chain has nothing to close
            return
        change = self.bot.close_forum_topic if closed else self.bot.reopen_forum_topic
        try:
            await change(self._desk_chat(), int(thread))
        except TelegramError as exc:
            if not is_not_modified(exc):
                raise delivery_error(exc, customer=False) from exc

    async def alert(self, text: str, thread: str | None = None) -> Sent:
        """To the General topic (or the whole group), or into one conversation's thread."""
        await self._is_forum()
        sent: Message | None = None
        for part in split_text(text):
            sent = await self._desk_send(part, thread, html=False)
        assert sent is not None
        return Sent(str(sent.message_id))

    async def is_agent(self, user_id: str) -> bool:
        """In ``agent_ids`` when that list is set, else a member of the agents' group
        (asked with getChatMember, remembered for ``member_cache_s``)."""
        if self._agent_ids:
            return user_id in self._agent_ids
        chat = self.settings.agents_chat_id
        if chat is None or not user_id.isdigit():
            return False
        now = time.monotonic()
        cached = self._members.get(user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            member = await self.bot.get_chat_member(chat, int(user_id))
        except BadRequest:
            allowed = False
        except TelegramError as exc:
            log.warning("telegram: cannot check member %s: %s", user_id, exc.message)
            return cached[0] if cached is not None else False
        else:
            allowed = member.status in MEMBER_STATUSES or bool(
                member.status == ChatMemberStatus.RESTRICTED and getattr(member, "is_member", False)
            )
        self._members[user_id] = (allowed, now + self._member_cache_s)
        self._members.move_to_end(user_id)
        while len(self._members) > 10_000:
            self._members.popitem(last=False)
        return allowed

    # ------------------------------------------------------------------ DigestPublisher

    async def publish(self, chat: str, text: str, image: bytes | None, filename: str) -> Sent:
        """The digest text (split when long), then the chart as a photo upload."""
        target = _chat_id(chat)
        sent: Message | None = None
        if text.strip():
            for part in split_text(text):
                sent = await self._desk_call(self.bot.send_message(target, part))
        if image:
            sent = await self._desk_call(
                self.bot.send_photo(target, photo=image, filename=filename)
            )
        return Sent(str(sent.message_id) if sent is not None else None)
