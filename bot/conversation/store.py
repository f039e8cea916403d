"""What the engine needs from storage, and the unit of work it hands over per step.

The engine reads a ``ConversationRecord``, decides, and returns everything that step
changes as one ``Unit``; storage applies a unit in a single transaction, together
with the redelivery check, so a step is either wholly recorded or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from bot.conversation.followup_types import FollowupChange, FollowupOpen, FollowupStore
from bot.conversation.model import Address, Customer, State, TranscriptLine
from bot.conversation.routing_types import PresenceRecord, QueueEntry, ResponseSample

# Columns of `conversations` the engine may change (ConversationRecord attributes).
CONVERSATION_FIELDS = (
    "state",
    "awaiting",
    "misses",
    "topic",
    "kb_entry",
    "language",
    "first_response_at",
    "handed_off_at",
    "handoff_reason",
    "agent_key",
    "agent_name",
    "first_agent_response_at",
    "last_customer_at",
    "pending_since",
    "resolved_at",
    "resolved_by",
    "tag",
    "abandoned_at",
    "abandon_reason",
    "closed_at",
    "close_reason",
    "desk",
    "desk_thread",
    "desk_header",
    "touchpoint",
    "stage",
    "customer_context",
)


@dataclass(slots=True)
class ConversationRecord:
    """A conversation row joined with its customer; ``update`` tracks what changed."""

    id: int
    customer_id: int
    customer_key: str
    customer_name: str
    customer_reachable: bool
    last_surveyed_at: int | None
    channel: str
    address: Address
    language: str
    state: State
    started_at: int
    awaiting: str | None = None
    misses: int = 0
    topic: str | None = None
    kb_entry: str | None = None
    first_response_at: int | None = None
    handed_off_at: int | None = None
    handoff_reason: str | None = None
    agent_key: str | None = None
    agent_name: str | None = None
    first_agent_response_at: int | None = None
    last_customer_at: int | None = None
    pending_since: int | None = None
    resolved_at: int | None = None
    resolved_by: str | None = None
    tag: str | None = None
    abandoned_at: int | None = None
    abandon_reason: str | None = None
    closed_at: int | None = None
    close_reason: str | None = None
    desk: str | None = None
    desk_thread: str | None = None
    desk_header: str | None = None
    touchpoint: str | None = None  # journey: the answered entry's, or the resolution tag's
    stage: str | None = None  # before | during | after the purchase
    customer_context: str | None = None  # JSON of the earlier conversations, set at handoff
    changes: dict[str, Any] = field(default_factory=dict)

    def update(self, **values: Any) -> None:
        """Set fields; only those whose value differs are written with the step (an
        unchanged ``topic`` in the UPDATE would still fire the KPI cohort trigger)."""
        for name, value in values.items():
            if name not in CONVERSATION_FIELDS:
                raise AttributeError(f"{name} is not a conversation field")
            if name not in self.changes and getattr(self, name) == value:
                continue
            setattr(self, name, value)
            self.changes[name] = value


@dataclass(frozen=True, slots=True)
class NewMessage:
    direction: str  # in | out
    author: str  # customer | bot | agent | note | system
    text: str
    agent_key: str | None = None
    media: str | None = None  # JSON


@dataclass(frozen=True, slots=True)
class NewEvent:
    kind: str
    actor: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class NewOutbox:
    """An action to deliver. ``message`` indexes ``Unit.messages`` when it delivers one."""

    lane: str
    op: str
    payload: dict[str, Any]
    message: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    conversation_id: int | None
    lane: str
    op: str
    payload: dict[str, Any]
    message_id: int | None
    attempts: int = 0
    next_attempt_at: int | None = None
    # On a shared database: enqueued claimed by this process until then (ms), with no
    # earlier item of its lane held elsewhere, so its first attempt needs no new claim.
    claimed_until: int | None = None


@dataclass(slots=True)
class SurveyRecord:
    id: int
    conversation_id: int
    sent_at: int
    nps: int | None
    csat: int | None
    comment: str | None
    completed_at: int | None
    expired_at: int | None


@dataclass(frozen=True, slots=True)
class ComplaintRecord:
    """A conversation's complaint record, as stored (see migration 0007)."""

    conversation_id: int
    opened_at: int
    opened_by: str
    category: str | None = None
    cause: str | None = None
    solution: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class KbQuestion:
    """A customer message the knowledge base handled: a reference, never a copy of the text.

    ``message`` indexes ``Unit.messages``; outcome: answered | ambiguous | missed."""

    message: int
    language: str
    outcome: str
    entry: str | None = None
    candidates: tuple[str, ...] = ()
    score: float | None = None  # the match's confidence (for /metrics; not stored)


@dataclass(frozen=True, slots=True)
class KbVerdict:
    """What the customer made of a handled question later: picked a candidate, chose
    "something else" (outcome), or said the answer did not help (``helped=False``)."""

    question: int  # KbQuestionRecord.id
    outcome: str | None = None  # picked | other
    entry: str | None = None
    helped: bool | None = None


@dataclass(frozen=True, slots=True)
class KbQuestionRecord:
    """The latest handled question of a conversation, as stored."""

    id: int
    message_id: int
    outcome: str
    entry: str | None
    candidates: tuple[str, ...]
    at: int


@dataclass(slots=True)
class Unit:
    """Everything one engine step changes, applied atomically by ``Store.apply``."""

    now: int
    dedup_key: str | None = None
    conversation: ConversationRecord | None = None
    customer_id: int | None = None
    messages: list[NewMessage] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)
    outbox: list[NewOutbox] = field(default_factory=list)
    timers_set: dict[str, int] = field(default_factory=dict)
    timers_clear: set[str] = field(default_factory=set)
    clear_all_timers: bool = False
    survey_new: dict[str, Any] | None = None  # columns of a new surveys row
    survey_update: dict[str, Any] = field(default_factory=dict)
    customer_reachable: tuple[bool, str] | None = None  # (reachable, reason)
    customer_surveyed: bool = False
    customer_forget: bool = False
    kb_question: KbQuestion | None = None
    kb_verdict: KbVerdict | None = None
    followups: list[FollowupOpen | FollowupChange] = field(default_factory=list)
    complaint: dict[str, Any] | None = None  # columns of the complaint record to write

    def complain(self, **values: Any) -> None:
        """Create or change the conversation's complaint record (merged per step)."""
        self.complaint = {**(self.complaint or {}), **values}

    def set_timer(self, kind: str, due: int) -> None:
        self.timers_set[kind] = due
        self.timers_clear.discard(kind)

    def clear_timer(self, kind: str) -> None:
        self.timers_set.pop(kind, None)
        self.timers_clear.add(kind)

    def clear_timers(self) -> None:
        """Drop every timer of the conversation, including ones set earlier in this step."""
        self.timers_set.clear()
        self.timers_clear.clear()
        self.clear_all_timers = True

    def event(self, kind: str, actor: str | None = None, **data: Any) -> None:
        self.events.append(NewEvent(kind, actor, data or None))

    def message(self, message: NewMessage) -> int:
        self.messages.append(message)
        return len(self.messages) - 1


@dataclass(frozen=True, slots=True)
class Applied:
    """Result of ``Store.apply``: False when the dedup key was already seen."""

    applied: bool
    outbox: tuple[OutboxItem, ...] = ()


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a successful delivery changes besides the outbox row."""

    customer_response: bool = False  # the customer received a message: first response time
    agent_response: bool = False  # ... and it was an agent's: agent first response time
    thread: str | None = None  # open_thread created this thread ...
    header_message: str | None = None  # ... headed by this message
    follow_up: tuple[NewOutbox, ...] = ()


@dataclass(frozen=True, slots=True)
class DueTimer:
    conversation_id: int
    kind: str
    due_at: int


class Store(Protocol):
    @property
    def followups(self) -> FollowupStore: ...

    @property
    def shared(self) -> bool:
        """Do other processes work on this database (PostgreSQL)?"""
        ...

    async def load_open(self, address_key: str) -> ConversationRecord | None: ...

    async def load(self, conversation_id: int) -> ConversationRecord | None: ...

    async def load_by_thread(self, desk: str, thread: str) -> ConversationRecord | None: ...

    async def open_for_customer(self, customer_key: str) -> list[ConversationRecord]: ...

    async def open_conversation(
        self, customer: Customer, address: Address, language: str, now: int
    ) -> ConversationRecord:
        """Create the customer if new, and an open conversation in state ``bot``."""
        ...

    async def customer_record(self, key: str) -> tuple[int, bool] | None:
        """(customer id, reachable) for a customer key, None if never seen."""
        ...

    async def seen(self, dedup_key: str) -> bool: ...

    async def apply(self, unit: Unit) -> Applied: ...

    async def transcript(self, conversation_id: int, limit: int) -> list[TranscriptLine]: ...

    async def media_messages(self, conversation_id: int) -> list[str]:
        """JSON media of the customer's stored attachments, oldest first."""
        ...

    async def previous_thread(self, customer_id: int, desk: str) -> str | None: ...

    async def customer_context(self, customer_id: int, before: int) -> dict[str, Any] | None:
        """What the customer's conversations before ``before`` were (None: the first)."""
        ...

    async def survey(self, conversation_id: int) -> SurveyRecord | None: ...

    async def kb_question(self, conversation_id: int) -> KbQuestionRecord | None:
        """The conversation's latest question the knowledge base handled."""
        ...

    async def due_timers(self, now: int, limit: int) -> list[DueTimer]: ...

    async def complaint(self, conversation_id: int) -> ComplaintRecord | None:
        """The conversation's complaint record, None when it is not a complaint."""
        ...

    async def pending_outbox(self, *, take_over: bool | None = None) -> list[OutboxItem]:
        """Undelivered items, claimed by this process (those nobody else holds)."""
        ...

    async def claim_outbox(self, item: OutboxItem, now: int) -> str:
        """Before a delivery attempt on a shared database: "mine", "done" or "wait"."""
        ...

    async def outbox_sent(
        self, item: OutboxItem, now: int, effects: Delivery
    ) -> tuple[OutboxItem, ...]:
        """Record a delivery and its effects; returns the follow-up items it queued."""
        ...

    def sent_record(self, item: OutboxItem, now: int, effects: Delivery) -> Any:
        """``outbox_sent`` as a write for a ``RecordingChannel`` to run inside its own
        (its result: the follow-up items)."""
        ...

    async def outbox_retry(self, item: OutboxItem, next_attempt_at: int, error: str) -> None: ...

    async def outbox_failed(self, item: OutboxItem, now: int, error: str) -> None: ...

    async def prune_inbound(self, before: int) -> int: ...

    # routing (storage/routing.py)

    async def presences(self) -> list[PresenceRecord]: ...

    async def set_presence(
        self, agent_key: str, name: str, available: bool, at: int, dedup_key: str
    ) -> bool: ...

    async def note_assigned(self, agent_key: str, name: str, at: int) -> None: ...

    async def routing_holders(self) -> tuple[list[tuple[int, str]], list[int]]: ...

    async def anything_queued(self) -> bool: ...

    async def routing_queue(self) -> list[QueueEntry]: ...

    async def last_nps(self, customer_id: int, besides: int) -> int | None: ...

    async def response_samples(self, since: int, limit: int) -> list[ResponseSample]: ...
