"""The two small interfaces a transport implements so the engine can act through it.

A customer channel (Telegram private chats, Slack DMs and shared channels, the web
widget) implements ``CustomerChannel``; the agents' desk (one Slack channel, one
Telegram forum group) implements ``AgentDesk``; the web console, which has no threads,
implements ``AlertBoard`` so that alerts reach it too. Adapters raise the ``DeliveryError``
family from ``bot.errors`` so that the outbox knows whether to retry.
Texts arrive plain: each adapter escapes them for its own markup.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from bot.conversation.model import (
    Address,
    Choice,
    InboundEvent,
    Media,
    Outcome,
    Sent,
    ThreadHeader,
    ThreadRef,
)

EventSink = Callable[[InboundEvent], Awaitable[Outcome]]
"""What a handler calls with each normalized event (``ConversationService.handle``)."""

DeliveryRecord = Callable[[Any], Any]
"""A delivery's record as a storage write (``Store.sent_record``), opaque to the engine."""


class CustomerChannel(Protocol):
    """Sends to customers on one platform."""

    @property
    def channel(self) -> str:
        """The platform name used in ``Address.channel`` ("telegram", "slack", "web")."""
        ...

    async def send(self, to: Address, text: str, choices: Sequence[Sequence[Choice]] = ()) -> Sent:
        """Send a text, with rows of buttons when ``choices`` is given."""
        ...

    async def send_media(self, to: Address, media: Media, caption: str) -> Sent:
        """Relay an agent's attachment (copy on the same platform, else a link/placeholder)."""
        ...


@runtime_checkable
class AuthorAwareChannel(Protocol):
    """A channel that shows who speaks (the web widget): the bot or an agent."""

    async def send_as(
        self,
        to: Address,
        text: str,
        choices: Sequence[Sequence[Choice]],
        author: str,
        name: str = "",
    ) -> Sent:
        """``send`` with the author of the text: "bot" or "agent", and an agent's display
        name ("" when unknown: the channel shows a generic label)."""
        ...


@runtime_checkable
class RecordingChannel(Protocol):
    """A channel whose delivery is itself a write to the bot's database (the web widget's
    transcript): the delivery's record joins that write, so a reply is stored and
    recorded as sent in one transaction (one write where there were two, and a crash
    between them can no longer send it twice)."""

    async def send_recorded(
        self,
        to: Address,
        text: str,
        choices: Sequence[Sequence[Choice]],
        author: str,
        name: str,
        record: DeliveryRecord,
    ) -> Any:
        """``send_as``, with ``record`` run in the same transaction; what it returned."""
        ...


class AgentDesk(Protocol):
    """Where agents work: one thread (Slack) or forum topic (Telegram) per conversation."""

    @property
    def desk(self) -> str:
        """The platform name used in ``Agent.desk``."""
        ...

    async def open_thread(self, header: ThreadHeader, previous: str | None) -> ThreadRef:
        """Create the conversation's thread with its header and buttons.

        ``previous`` is this customer's last thread on this desk, which a desk that keeps
        one topic per customer may reopen instead of creating a new one.
        """
        ...

    async def update_header(self, ref: ThreadRef, header: ThreadHeader) -> None:
        """Show the new state (taken by…, resolved) in the header message."""
        ...

    async def post(self, thread: str, text: str, author: str, name: str) -> Sent:
        """Post into the thread. ``author`` is "customer", "bot" or "system"."""
        ...

    async def post_media(self, thread: str, media: Media, caption: str) -> Sent:
        """Relay a customer's attachment into the thread."""
        ...

    async def mark_relayed(self, thread: str, message_ref: str) -> None:
        """Mark an agent's message as delivered to the customer (reaction / tick)."""
        ...

    async def close_thread(self, thread: str) -> None: ...

    async def reopen_thread(self, thread: str) -> None: ...

    async def alert(
        self, text: str, thread: str | None = None, *, buttons: Sequence[Sequence[Choice]] = ()
    ) -> Sent:
        """Post an alert to the whole desk (detractor follow-up, waiting reminders), with
        rows of agent buttons under it when given (a follow-up's Take / Contacted / …)."""
        ...

    async def is_agent(self, user_id: str) -> bool:
        """Whether this desk user may act on conversations."""
        ...


@runtime_checkable
class ChoiceDesk(Protocol):
    """A desk that can post rows of agent buttons into a thread (complaint menus)."""

    async def post_choices(
        self, thread: str, text: str, choices: Sequence[Sequence[Choice]]
    ) -> Sent:
        """Post ``text`` with the buttons; a press comes back as an ``AgentAction`` token."""


@runtime_checkable
class MentioningDesk(Protocol):
    """A desk that can call someone by name so that they are notified (routing)."""

    async def mention(self, who: str, name: str, text: str, thread: str | None) -> Sent:
        """Post ``text`` after a mention of ``who`` (a user or group id, or an @username;
        ``name`` is what to show): in the conversation's thread, or to the whole desk."""
        ...


class AlertBoard(Protocol):
    """Keeps agents' alerts where no desk thread shows them: the web console.

    The dispatcher hands it every alert besides the desk's copy; a redelivery of the same
    alert (``alert_id``: its outbox item) must change nothing.
    """

    async def post_alert(self, alert_id: int, conversation_id: int | None, text: str) -> None:
        """Store the alert once and show it to the agents watching."""
        ...


class DigestPublisher(Protocol):
    """Posts the KPI digest (text plus a chart image) to a chat of one platform."""

    @property
    def platform(self) -> str:
        """ "slack" or "telegram": the prefix of digest targets it serves."""
        ...

    async def publish(self, chat: str, text: str, image: bytes | None, filename: str) -> Sent:
        """Post ``text`` (plain, the adapter escapes it) and the PNG ``image`` to ``chat``."""
        ...
