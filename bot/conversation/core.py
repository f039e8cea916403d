"""The engine's common ground: its collaborators, and the steps every concern uses.

Every step runs under a per-conversation lock, reads the conversation, decides,
and hands one ``Unit`` to storage (state, messages, events, timers and the actions
to deliver, in one transaction). Delivery happens afterwards, from the outbox, so a
crash never loses a decided action and a restart resumes everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Protocol

from bot.calendar import BusinessCalendar
from bot.clock import Clock, from_ms, to_ms
from bot.config import Settings
from bot.conversation import payloads as P
from bot.conversation.desk_view import thread_header
from bot.conversation.lifecycle import check_transition
from bot.conversation.locks import KeyedLocks
from bot.conversation.model import Address, Choice, State
from bot.conversation.store import (
    ConversationRecord,
    NewMessage,
    NewOutbox,
    OutboxItem,
    Store,
    Unit,
)
from bot.metrics import EngineMetrics
from bot.texts import Texts

log = logging.getLogger(__name__)

KB_OUTCOME = {"missed": "declined"}  # a stored outcome → its /metrics label


class KbEntryLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def touchpoint(self) -> str | None: ...
    @property
    def stage(self) -> str | None: ...
    @property
    def questions(self) -> Mapping[str, tuple[str, ...]]: ...
    def answer(self, language: str) -> str: ...


class CandidateLike(Protocol):
    @property
    def entry(self) -> KbEntryLike: ...


class KbMatchLike(Protocol):
    @property
    def entry(self) -> KbEntryLike | None: ...
    @property
    def answered(self) -> bool: ...
    @property
    def score(self) -> float: ...
    @property
    def language(self) -> str | None: ...
    @property
    def ambiguous(self) -> bool: ...
    @property
    def candidates(self) -> Sequence[CandidateLike]: ...


class Answerer(Protocol):
    """The knowledge base as the engine sees it."""

    def match(self, text: str, language: str | None = None) -> KbMatchLike: ...

    def get(self, entry_id: str) -> KbEntryLike | None: ...


class OutboxSink(Protocol):
    def submit(self, items: Sequence[OutboxItem]) -> None: ...


class AgentAuthority(Protocol):
    async def is_agent(self, user_id: str) -> bool: ...


class EngineCore:
    """State and helpers shared by the concerns (customer turns, agent actions, surveys,
    timers); each concern is a subclass, and ``ConversationService`` joins them."""

    def __init__(
        self,
        store: Store,
        kb: Answerer,
        settings: Settings,
        clock: Clock,
        outbox: OutboxSink,
        *,
        desk: str | None,
        authority: AgentAuthority | None = None,
        texts: Texts | None = None,
    ) -> None:
        self.store = store
        self.kb = kb
        self.settings = settings
        self.clock = clock
        self.outbox = outbox
        self.desk = desk
        self.authority = authority
        self.texts = texts or Texts(settings.language, dict(settings.messages.items()))
        self.calendar: BusinessCalendar = settings.calendar()
        # A store on a database other processes share holds each step's key there too.
        shared = getattr(store, "shared", False)
        self.locks = KeyedLocks(getattr(store, "hold", None) if shared else None)
        self._conv = settings.conversation
        self._observers: list[Callable[[int], None]] = []
        self.metrics = EngineMetrics()  # step latency, KB confidence (GET /metrics)

    def add_observer(self, observer: Callable[[int], None]) -> None:
        """Call ``observer(conversation_id)`` after each committed step of a conversation
        agents can see (handed off at least once); must not block. Bot-only chats are most
        steps and concern no agent: telling consoles of them would make each re-read.
        Consoles register here, so with an observer alerts are queued even without a desk."""
        self._observers.append(observer)

    # ------------------------------------------------------------------ helpers

    def _now(self) -> int:
        return to_ms(self.clock.now())

    def _t(self, lang: str, key: str, **values: object) -> str:
        return self.texts.get(lang, key, **values)

    def _desk_t(self, key: str, **values: object) -> str:
        return self.texts.get(self.settings.language, key, **values)

    async def _commit(self, unit: Unit) -> bool:
        applied = await self.store.apply(unit)
        if applied.outbox:
            self.outbox.submit(applied.outbox)
        question = unit.kb_question
        if applied.applied and question is not None and question.score is not None:
            self.metrics.kb_match(KB_OUTCOME.get(question.outcome, question.outcome),
                                  question.score)  # fmt: skip
        conv = unit.conversation
        if applied.applied and conv is not None and conv.handed_off_at is not None:
            for observer in self._observers:
                try:
                    observer(conv.id)
                except Exception:
                    log.exception("conversation observer failed")
        return applied.applied

    def _move(self, conv: ConversationRecord, unit: Unit, target: State, **data: object) -> None:
        check_transition(conv.id, conv.state, target)
        actor = str(data.pop("actor", None) or "bot")
        unit.event("state", actor, source=conv.state.value, target=target.value, **data)
        conv.update(state=target)

    def _say(
        self,
        conv: ConversationRecord | None,
        unit: Unit,
        address: Address,
        text: str,
        choices: Sequence[Sequence[Choice]] = (),
        *,
        author: str = "bot",
        agent_key: str | None = None,
        relayed: str | None = None,
        name: str | None = None,
    ) -> None:
        """Queue a message to the customer and store it in the transcript; ``name`` is the
        agent's display name, for channels that label who speaks (the web widget)."""
        index = unit.message(NewMessage("out", author, text, agent_key)) if conv else None
        payload: dict[str, object] = {
            "to": P.address_json(address),
            "text": text,
            "choices": P.choices_json(choices),
            "author": author,
        }
        if relayed:
            payload["relayed"] = relayed
        if name:
            payload["name"] = name
        unit.outbox.append(NewOutbox(P.customer_lane(address), P.SEND, payload, index))

    def _desk(self, conv: ConversationRecord, unit: Unit, op: str, **payload: object) -> None:
        """Queue an action on the conversation's thread at the agents' desk."""
        if self.desk is None or conv.desk is None:
            return
        unit.outbox.append(NewOutbox(P.desk_lane(conv.id), op, dict(payload)))

    def _alert(
        self,
        conv: ConversationRecord | None,
        unit: Unit,
        text: str,
        buttons: Sequence[Choice] = (),
        *,
        in_thread: bool = True,
    ) -> None:
        """Queue an alert for agents: the desk shows it (in the conversation's thread when
        it has one, unless ``in_thread`` is False), with ``buttons`` under it if any, and so
        does the web console, which keeps it until read."""
        if self.desk is None and not self._observers:
            return  # no desk and no console: nobody to tell
        lane = P.desk_lane(conv.id if conv else None)
        threaded = in_thread and conv is not None and conv.desk is not None
        payload: dict[str, object] = {"text": text, "in_thread": threaded}
        if buttons:
            payload["buttons"] = P.choices_json([buttons])
        unit.outbox.append(NewOutbox(lane, P.ALERT, payload))

    def _business_deadline(self, start_ms: int, delta: timedelta) -> int:
        return to_ms(self.calendar.add_business_time(from_ms(start_ms), delta))

    def _refresh_header(self, conv: ConversationRecord, unit: Unit) -> None:
        if conv.desk is not None:
            self._desk(
                conv, unit, P.UPDATE_HEADER, header=P.header_json(thread_header(conv, self._desk_t))
            )

    def _close(self, conv: ConversationRecord, unit: Unit, reason: str) -> None:
        self._move(conv, unit, State.CLOSED, reason=reason)
        conv.update(closed_at=unit.now, close_reason=reason, awaiting=None, pending_since=None)
        unit.clear_timers()

    def _abandon(self, conv: ConversationRecord, unit: Unit, reason: str) -> None:
        self._move(conv, unit, State.ABANDONED, reason=reason)
        conv.update(abandoned_at=unit.now, abandon_reason=reason)
        if conv.customer_reachable:
            key = "cancelled" if reason == "cancelled" else "abandoned"
            self._say(conv, unit, conv.address, self._t(conv.language, key))
        self._alert(conv, unit, self._desk_t("abandoned_desk", id=conv.id, reason=reason))
        self._close(conv, unit, "abandoned")
        self._refresh_header(conv, unit)
