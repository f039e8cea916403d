"""Transport-neutral types: who talks, the events channels feed in, what comes back.

Handlers translate a platform update into exactly one of the inbound events below
and pass it to ``ConversationService.handle``. Nothing here knows Telegram or Slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    """The conversation lifecycle of SPEC.md; transitions live in ``bot.conversation.lifecycle``."""

    BOT = "bot"
    QUEUED = "queued"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"
    SURVEYING = "surveying"
    ABANDONED = "abandoned"
    CLOSED = "closed"


class LeaveReason(StrEnum):
    """Why a customer stopped being reachable."""

    BLOCKED = "blocked"  # blocked the bot (Telegram) / uninstalled the app
    LEFT_CHANNEL = "left_channel"  # left the shared support channel (Slack)
    FORGET = "forget"  # asked to be forgotten


class AgentActionKind(StrEnum):
    TAKE = "take"
    RESOLVE = "resolve"
    TRANSFER = "transfer"
    NOTE = "note"
    # Follow-up buttons on a detractor alert (the token names the follow-up's conversation)
    FOLLOWUP_TAKE = "fu_take"
    FOLLOWUP_CONTACTED = "fu_contacted"
    FOLLOWUP_RESOLVED = "fu_resolved"
    FOLLOWUP_UNREACHABLE = "fu_unreachable"
    COMPLAINT = "complaint"  # mark the conversation as a complaint
    SAVED_REPLY = "saved_reply"  # text: the shortcut; empty lists the saved replies


@dataclass(frozen=True, slots=True)
class Address:
    """Where a customer is reached: a chat, and for shared channels the thread in it."""

    channel: str  # "telegram" | "slack" | "web"
    chat_id: str
    thread_id: str | None = None

    @property
    def key(self) -> str:
        base = f"{self.channel}:{self.chat_id}"
        return f"{base}:{self.thread_id}" if self.thread_id else base


@dataclass(frozen=True, slots=True)
class Customer:
    """A customer as the platform identifies them."""

    channel: str
    user_id: str
    name: str = ""
    language: str | None = None  # raw platform code ("fr", "en-GB", "fr_FR"); None if unknown

    @property
    def key(self) -> str:
        return f"{self.channel}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Agent:
    """A person of the business working from the agents' desk."""

    desk: str  # "telegram" | "slack" | "web"
    user_id: str
    name: str = ""  # as agents and reports know them ("Paul Martin")
    # What customers see ("Paul"); empty: ``name``. Not part of the agent's identity.
    shown: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return f"{self.desk}:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Media:
    """A non-text attachment, kept as a platform reference (never downloaded by the engine).

    ``channel``/``chat_id``/``message_id`` locate the original message so that the same
    platform can copy it; another platform gets a text placeholder (and ``url`` if any).
    """

    kind: str  # photo | document | voice | audio | video | sticker | animation | file
    channel: str
    chat_id: str
    message_id: str
    file_id: str | None = None
    name: str | None = None
    url: str | None = None


# ---------------------------------------------------------------- inbound events


@dataclass(frozen=True, slots=True)
class CustomerMessage:
    """A customer wrote something (text, command, or media)."""

    customer: Customer
    address: Address
    text: str
    dedup_key: str  # unique per platform delivery, e.g. "telegram:update:42", "slack:Ev123"
    command: str | None = None  # lower-case without slash: "start", "agent", "cancel", ...
    media: Media | None = None
    message_ref: str | None = None  # platform message id, for threading replies


@dataclass(frozen=True, slots=True)
class CustomerChoice:
    """A customer pressed a button the engine offered (``Choice.token`` comes back)."""

    customer: Customer
    address: Address
    token: str
    dedup_key: str


@dataclass(frozen=True, slots=True)
class CustomerLeft:
    """The customer can no longer be reached (blocked the bot, left, asked to be forgotten)."""

    customer: Customer
    reason: LeaveReason
    dedup_key: str


@dataclass(frozen=True, slots=True)
class CustomerReturned:
    """The customer unblocked the bot or rejoined the support channel."""

    customer: Customer
    dedup_key: str


@dataclass(frozen=True, slots=True)
class AgentMessage:
    """An agent wrote in a conversation's thread/topic on the desk."""

    agent: Agent
    thread: str | None  # desk thread reference (Slack thread ts, Telegram topic id)
    text: str
    dedup_key: str
    message_ref: str | None = None  # desk message id, marked once relayed
    media: Media | None = None
    conversation_id: int | None = None  # the web console names the conversation, not a thread


@dataclass(frozen=True, slots=True)
class AgentAction:
    """An agent pressed a desk button or typed a desk command.

    The conversation is named either by ``conversation_id`` (buttons) or ``thread``
    (commands typed in the thread). ``token`` is an agent button's data, decoded by
    the engine when ``kind`` is None.
    """

    agent: Agent
    dedup_key: str
    kind: AgentActionKind | None = None
    conversation_id: int | None = None
    thread: str | None = None
    token: str | None = None
    tag: str | None = None  # topic tag at resolution
    text: str | None = None  # note text
    target: Agent | None = None  # transfer target; None puts the conversation back in the queue
    # Complaint fields chosen in the console at resolution: ("cause", "retard de livraison"),
    # ("solution", "refund"), ("category", …), ("note", …). Desk commands type them instead.
    details: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FollowupAction:
    """An agent acted on a follow-up: a button on its alert, ``/followup ID STEP [note]``
    typed on the desk, or the console. ``followup_id`` is the surveyed conversation's id
    (one follow-up per survey); ``step``: take | contacted | resolved | unreachable | note."""

    agent: Agent
    followup_id: int
    step: str
    dedup_key: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class AgentPresence:
    """An agent says they are available for new conversations, or away (routing)."""

    agent: Agent
    available: bool
    dedup_key: str


InboundEvent = (
    CustomerMessage
    | CustomerChoice
    | CustomerLeft
    | CustomerReturned
    | AgentMessage
    | AgentAction
    | FollowupAction
    | AgentPresence
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the handler shows the person who acted (button presses, commands).

    ``notice`` is a short localized text for a callback answer / ephemeral message;
    ``chosen`` is the label of the accepted choice, to edit the question with it.
    """

    ok: bool = True
    notice: str | None = None
    chosen: str | None = None
    duplicate: bool = False


# ---------------------------------------------------------------- outgoing shapes


@dataclass(frozen=True, slots=True)
class Choice:
    """A button: the label shown and the opaque token that comes back when pressed."""

    label: str
    token: str


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    author: str  # "customer" | "bot" | "agent" | "note" | "system"
    name: str
    text: str


@dataclass(frozen=True, slots=True)
class ThreadHeader:
    """The head message of a conversation's thread on the agents' desk.

    All texts are plain (the desk adapter escapes them) and already localized.
    """

    conversation_id: int
    title: str  # "#42 · Marie Dupont · livraison" (forum topic name / header title)
    customer_name: str
    channel: str
    language: str
    topic: str | None
    status: str  # "En attente" / "Pris par Paul" / "Résolu"
    reason: str  # why it was handed off, localized
    transcript: tuple[TranscriptLine, ...] = ()
    buttons: tuple[Choice, ...] = ()
    context: str = ""  # the customer's earlier conversations, one line ("" if unknown)


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """What the desk created for a conversation: the thread and its header message."""

    thread: str
    header_message: str


@dataclass(slots=True)
class Sent:
    """What a channel returns after delivering: the platform id of the message, if any."""

    message_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
