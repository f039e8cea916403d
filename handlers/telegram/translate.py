"""Telegram updates → our normalized events: one function per update kind, no decisions.

Private chats are customers; the agents' group is the desk. In a forum group each
conversation is a topic (``message_thread_id``); in a plain group a conversation is the
chain of replies under its header message, which ``ReplyChains`` remembers.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from telegram import CallbackQuery, ChatMember, ChatMemberUpdated, Message, MessageEntity, Update
from telegram import User as TgUser
from telegram.constants import ChatType

from bot.conversation.followup_types import parse_followup_args
from bot.conversation.model import (
    Address,
    Agent,
    AgentAction,
    AgentActionKind,
    AgentMessage,
    AgentPresence,
    Customer,
    CustomerChoice,
    CustomerLeft,
    CustomerMessage,
    CustomerReturned,
    FollowupAction,
    InboundEvent,
    LeaveReason,
    Media,
)

CHANNEL = "telegram"
AGENT_COMMANDS = {
    "take": AgentActionKind.TAKE,
    "resolve": AgentActionKind.RESOLVE,
    "transfer": AgentActionKind.TRANSFER,
    "note": AgentActionKind.NOTE,
    "complaint": AgentActionKind.COMPLAINT,
    "r": AgentActionKind.SAVED_REPLY,  # /r SHORTCUT sends a saved reply; /r alone lists them
}
PRESENCE_COMMANDS = {"available": True, "away": False}  # anywhere in the agents' group
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]+))?(?=\s|$)\s*(.*)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # lower case, without the slash
    rest: str  # what follows the command
    for_us: bool  # False when addressed to another bot ("/start@otherbot")


def parse_command(text: str, bot_username: str | None) -> Command | None:
    """ "/resolve@our_bot livraison" → Command("resolve", "livraison", True)."""
    match = _COMMAND.match(text)
    if match is None:
        return None
    name, addressee, rest = match.groups()
    for_us = addressee is None or bot_username is None or addressee.lower() == bot_username.lower()
    return Command(name.lower(), rest.strip(), for_us)


def dedup_key(update: Update) -> str:
    return f"telegram:update:{update.update_id}"


def customer_of(user: TgUser) -> Customer:
    return Customer(CHANNEL, str(user.id), user.full_name, user.language_code)


def agent_of(user: TgUser) -> Agent:
    """An agent, shown to customers by first name ("Paul a rejoint la conversation")."""
    return Agent(CHANNEL, str(user.id), user.full_name, shown=user.first_name)


def media_of(message: Message) -> Media | None:
    """The message's file, if it has one, as a reference the same platform can copy."""
    chat, ref = str(message.chat.id), str(message.message_id)
    if message.photo:
        return Media("photo", CHANNEL, chat, ref, message.photo[-1].file_id)
    if message.animation:  # before document: Telegram sends animations as both
        a = message.animation
        return Media("animation", CHANNEL, chat, ref, a.file_id, a.file_name)
    if message.document:
        d = message.document
        return Media("document", CHANNEL, chat, ref, d.file_id, d.file_name)
    if message.video:
        return Media("video", CHANNEL, chat, ref, message.video.file_id, message.video.file_name)
    if message.video_note:
        return Media("video", CHANNEL, chat, ref, message.video_note.file_id)
    if message.voice:
        return Media("voice", CHANNEL, chat, ref, message.voice.file_id)
    if message.audio:
        a2 = message.audio
        return Media("audio", CHANNEL, chat, ref, a2.file_id, a2.file_name or a2.title)
    if message.sticker:
        return Media("sticker", CHANNEL, chat, ref, message.sticker.file_id, message.sticker.emoji)
    return None


def has_content(message: Message) -> bool:
    """Whether a person wrote or sent something (not a service message such as
    "topic created" or "pinned")."""
    return bool(message.text or message.caption or message.effective_attachment)


class ReplyChains:
    """Plain (non-forum) groups: which conversation thread each message belongs to.

    A thread is its header message id; the bot's posts reply to the header and agents
    reply to any message of the chain. Bounded, least recently used dropped first; after
    a restart a reply to the header itself still maps (the header id is the thread).
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._threads: OrderedDict[int, str] = OrderedDict()
        self._limit = limit

    def add(self, message_id: int, thread: str) -> None:
        self._threads[message_id] = thread
        self._threads.move_to_end(message_id)
        while len(self._threads) > self._limit:
            self._threads.popitem(last=False)

    def get(self, message_id: int) -> str | None:
        return self._threads.get(message_id)


class Translator:
    """Turns updates into events; knows the bot, the agents' group and reply chains."""

    def __init__(self, agents_chat_id: int | None) -> None:
        self.agents_chat_id = agents_chat_id
        self.bot_id: int | None = None
        self.bot_username: str | None = None
        self.chains = ReplyChains()
        self._usernames: OrderedDict[str, Agent] = OrderedDict()  # seen on the desk

    def event(self, update: Update) -> InboundEvent | None:
        """The one event this update means, or None if it means nothing to us."""
        if update.callback_query is not None:
            return self.callback(update, update.callback_query)
        if update.message is not None:
            return self.message(update, update.message)
        if update.my_chat_member is not None:
            return self.membership(update, update.my_chat_member)
        return None

    # ------------------------------------------------------------------ messages

    def message(self, update: Update, message: Message) -> InboundEvent | None:
        user = message.from_user
        if user is None or user.is_bot or not has_content(message):
            return None
        if message.chat.type == ChatType.PRIVATE:
            return self.customer_message(update, message, user)
        if message.chat.id == self.agents_chat_id:
            return self.desk_message(update, message, user)
        return None

    def customer_message(self, update: Update, message: Message, user: TgUser) -> CustomerMessage:
        text = message.text or message.caption or ""
        command = parse_command(text, self.bot_username) if message.text else None
        return CustomerMessage(
            customer=customer_of(user),
            address=Address(CHANNEL, str(message.chat.id)),
            text=command.rest if command else text,
            dedup_key=dedup_key(update),
            command=command.name if command else None,
            media=media_of(message),
            message_ref=str(message.message_id),
        )

    def desk_message(
        self, update: Update, message: Message, user: TgUser
    ) -> AgentMessage | AgentAction | AgentPresence | FollowupAction | None:
        if user.username:
            self._remember(user)
        presence = self.presence(update, message, user)
        if presence is not None:
            return presence
        followup = parse_command(message.text, self.bot_username) if message.text else None
        if followup is not None and followup.for_us and followup.name == "followup":
            fid, step, note = parse_followup_args(followup.rest)  # anywhere on the desk
            return FollowupAction(agent_of(user), fid, step, dedup_key(update), note)
        thread = self.thread_of(message)
        if thread is None:
            return None
        text = message.text or message.caption or ""
        command = parse_command(text, self.bot_username) if message.text else None
        if command is not None and not command.for_us:
            return None
        agent = agent_of(user)
        kind = AGENT_COMMANDS.get(command.name) if command else None
        if command is None or kind is None:
            return AgentMessage(
                agent=agent,
                thread=thread,
                text=text,
                dedup_key=dedup_key(update),
                message_ref=str(message.message_id),
                media=media_of(message),
            )
        return AgentAction(
            agent=agent,
            dedup_key=dedup_key(update),
            kind=kind,
            thread=thread,
            tag=(command.rest or None) if kind == AgentActionKind.RESOLVE else None,
            text=command.rest
            if kind in (AgentActionKind.NOTE, AgentActionKind.SAVED_REPLY)
            else None,
            target=self.transfer_target(message, command.rest)
            if kind == AgentActionKind.TRANSFER
            else None,
        )

    def presence(self, update: Update, message: Message, user: TgUser) -> AgentPresence | None:
        """``/available`` or ``/away``, typed anywhere in the agents' group."""
        command = parse_command(message.text or "", self.bot_username) if message.text else None
        if command is None or not command.for_us or command.name not in PRESENCE_COMMANDS:
            return None
        return AgentPresence(agent_of(user), PRESENCE_COMMANDS[command.name], dedup_key(update))

    def thread_of(self, message: Message) -> str | None:
        """The conversation a desk message belongs to, or None (General topic, chatter)."""
        if message.chat.is_forum:
            if message.is_topic_message and message.message_thread_id:
                return str(message.message_thread_id)
            return None
        known = self.chains.get(message.message_id)
        if known is not None:
            return known
        reply = message.reply_to_message
        if reply is None:
            return None
        thread = self.chains.get(reply.message_id)
        if thread is None and reply.from_user is not None and reply.from_user.id == self.bot_id:
            thread = str(reply.message_id)  # a header (or a post from before a restart)
        if thread is not None:
            self.chains.add(message.message_id, thread)
        return thread

    def transfer_target(self, message: Message, rest: str) -> Agent | None:
        """Who ``/transfer`` names: a mention, a user id, or the author of the message it
        replies to. An @username never seen on the desk cannot be resolved by the Bot API:
        it becomes an agent with no id, which the engine refuses as not an agent."""
        entities = message.parse_entities([MessageEntity.TEXT_MENTION, MessageEntity.MENTION])
        for entity, text in entities.items():
            if entity.type == MessageEntity.TEXT_MENTION and entity.user is not None:
                return agent_of(entity.user)
            if entity.type == MessageEntity.MENTION:
                return self._usernames.get(text[1:].lower()) or Agent(CHANNEL, "", text)
        if rest.isdigit():
            return Agent(CHANNEL, rest)
        reply = message.reply_to_message
        author = reply.from_user if reply is not None else None
        if (
            reply is not None
            and author is not None
            and not author.is_bot
            and reply.forum_topic_created is None  # topic messages "reply" to its creation
            and (message.from_user is None or author.id != message.from_user.id)
        ):
            return agent_of(author)
        return None

    def _remember(self, user: TgUser) -> None:
        assert user.username is not None
        key = user.username.lower()
        self._usernames[key] = agent_of(user)
        self._usernames.move_to_end(key)
        if len(self._usernames) > 10_000:
            self._usernames.popitem(last=False)

    # ------------------------------------------------------------------ buttons

    def callback(self, update: Update, query: CallbackQuery) -> InboundEvent | None:
        message = query.message
        if query.data is None or message is None or not isinstance(message, Message):
            return None
        if message.chat.type == ChatType.PRIVATE:
            return CustomerChoice(
                customer=customer_of(query.from_user),
                address=Address(CHANNEL, str(message.chat.id)),
                token=query.data,
                dedup_key=dedup_key(update),
            )
        if message.chat.id == self.agents_chat_id:
            thread = self.thread_of(message)
            if thread is None and not message.chat.is_forum:
                thread = str(message.message_id)  # the header itself
            return AgentAction(
                agent=agent_of(query.from_user),
                dedup_key=dedup_key(update),
                token=query.data,
                thread=thread,
            )
        return None

    # ------------------------------------------------------------------ membership

    def membership(self, update: Update, change: ChatMemberUpdated) -> InboundEvent | None:
        """A customer blocking (kicked) or unblocking (member again) the bot."""
        if change.chat.type != ChatType.PRIVATE:
            return None
        customer = customer_of(change.from_user)
        old, new = change.old_chat_member.status, change.new_chat_member.status
        if new == ChatMember.BANNED:
            return CustomerLeft(customer, LeaveReason.BLOCKED, dedup_key(update))
        if new == ChatMember.MEMBER and old in (ChatMember.BANNED, ChatMember.LEFT):
            return CustomerReturned(customer, dedup_key(update))
        return None
