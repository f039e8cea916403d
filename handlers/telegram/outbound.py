"""Actions out: ``CustomerChannel`` (private chats), ``AgentDesk`` (one forum topic per
conversation in the agents' group, or reply chains in a plain group) and
``DigestPublisher``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from telegram import Message, ReplyParameters
from telegram.constants import ChatMemberStatus, ParseMode
from telegram.error import BadRequest, TelegramError

from bot.conversation.model import Address, Choice, Media, Sent, ThreadHeader, ThreadRef
from bot.errors import PermanentDeliveryError
from handlers.telegram.client import TelegramClient
from handlers.telegram.failures import delivery_error, is_not_modified
from handlers.telegram.render import (
    MAX_CAPTION,
    MAX_TEXT,
    escape,
    keyboard,
    post_parts,
    render_header,
    split_text,
    topic_name,
    transcript_parts,
    truncate,
    utf16_len,
)
from handlers.telegram.translate import CHANNEL

log = logging.getLogger(__name__)

RELAYED_REACTION = "👍"
MEMBER_STATUSES = frozenset(
    {ChatMemberStatus.OWNER, ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.MEMBER}
)


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


class TelegramOutbound(TelegramClient):
    """The three ports the outbox delivers through."""

    async def _is_forum(self) -> bool:
        if self._forum is None:
            chat = await self._desk_call(self.bot.get_chat(self._desk_chat()))
            self._forum = bool(chat.is_forum)
        return self._forum

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

    async def post_choices(
        self, thread: str, text: str, choices: Sequence[Sequence[Choice]]
    ) -> Sent:
        """A menu in the topic (complaint cause and solution): text and inline buttons."""
        await self._is_forum()
        sent = await self._desk_send(truncate(text, MAX_TEXT), thread, html=False,
                                     markup=keyboard(choices))  # fmt: skip
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

    async def alert(
        self, text: str, thread: str | None = None, *, buttons: Sequence[Sequence[Choice]] = ()
    ) -> Sent:
        """To the General topic (or the whole group), or into one conversation's thread;
        the buttons go under the last part."""
        await self._is_forum()
        sent: Message | None = None
        parts = split_text(text)
        for n, part in enumerate(parts, 1):
            markup = keyboard(buttons) if n == len(parts) else None
            sent = await self._desk_send(part, thread, html=False, markup=markup)
        assert sent is not None
        return Sent(str(sent.message_id))

    async def mention(self, who: str, name: str, text: str, thread: str | None) -> Sent:
        """Routing's call: a user id becomes a link that notifies them, an @username stays
        as typed (Telegram notifies it); then the text."""
        await self._is_forum()
        if who.isdigit():
            call = f'<a href="tg://user?id={who}">{escape(name or who)}</a>'
        else:
            call = escape(who if who.startswith("@") else f"@{who}")
        sent = await self._desk_send(f"{call} {escape(text)}", thread, html=True)
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
