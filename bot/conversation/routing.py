"""Routing: agents' presence, automatic assignment under a cap, the customer's place in the
queue and expected wait, and the escalation of a conversation nobody takes.

A routing pass runs after a step that may let the queue move (a conversation joined or
left it, an agent has one fewer, someone came back) and at every sweep (business hours
open, escalations fall due). It reads the queue once; the per-agent open counts come from
the ``RoutingBook`` kept in memory, never from a count query per assignment.

On a database other processes share (PostgreSQL), each process sees only its own steps, so
a pass runs under a routing-wide lock held against the other processes, and starts by
reading the book again (who holds what, the queue, presences: one snapshot of what is
open). Every automatic assignment is made and committed under that lock, so no process
ever counts from a book that misses another's assignment: the cap and the least-busy
choice hold across processes, and whichever process frees an agent (or sweeps) moves the
queue, wherever the conversation was queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from bot.clock import from_ms
from bot.conversation import payloads as P
from bot.conversation.complaints import Complaints
from bot.conversation.model import Agent, AgentPresence, Outcome, State
from bot.conversation.routing_types import (
    AgentState,
    PresenceRecord,
    QueueEntry,
    RoutingBook,
    estimate_s,
    median_wait_s,
    moved_a_lot,
    pick_agent,
    position_of,
    queue_order,
    wait_words,
)
from bot.conversation.store import ConversationRecord, NewOutbox, Unit
from bot.logs import conversation_id as log_conversation

log = logging.getLogger(__name__)

CONSOLE_DESK = "web"
HISTORY = timedelta(days=14)  # agent answers the wait estimate is drawn from ...
HISTORY_LIMIT = 200  # ... at most this many, the latest
MEDIAN_TTL_MS = 5 * 60 * 1000  # the median is read again at most every five minutes
ROUTING_KEY = "supportbot:routing"  # held across processes for a pass (shared database)


class Routing(Complaints):
    """Presence, assignment, queue position and escalation (``routing:`` in config.yaml)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._routing = self.settings.routing
        self._shared = self.store.shared
        # Shared: only a pass reads the book (again), and replays only what was committed
        # during that read; until then there is nothing to keep aside.
        self._book = RoutingBook(ready=self._shared)
        self._presence: dict[str, PresenceRecord] = {}
        self._route_lock = asyncio.Lock()
        self._route_wanted = False
        self._median: tuple[int, float | None] | None = None  # (read at, median seconds)
        self._assignment_observers: list[Callable[[int, str], None]] = []

    def add_assignment_observer(self, observer: Callable[[int, str], None]) -> None:
        """Call ``observer(conversation_id, agent_key)`` after routing gave a conversation
        to an agent: the console tells that agent (its badge and notice); must not block."""
        self._assignment_observers.append(observer)

    # ------------------------------------------------------------------ bookkeeping

    async def _commit(self, unit: Unit) -> bool:
        conv = unit.conversation
        # On a shared database the book may not know this conversation (another process
        # assigned it since the last pass): any change of state or agent may free someone.
        moved = (
            self._shared and conv is not None and bool({"state", "agent_key"} & set(conv.changes))
        )
        applied = await super()._commit(unit)
        if applied and conv is not None:
            freed = self._book.record(conv.id, conv.state, conv.agent_key)
            self._route_wanted = self._route_wanted or freed or moved
        return applied

    async def _routing_ready(self) -> None:
        """Read presences, holders and the queue once; the book keeps them from then on."""
        if self._book.ready:
            return
        await self._read_book()

    async def _read_book(self) -> None:
        """(Re)read presences, holders and the queue into the book; steps committed while
        reading are replayed over it (``RoutingBook.seed``)."""
        self._book.begin_read()
        self._presence = await self._read_into(self._book)

    async def _read_into(self, book: RoutingBook) -> dict[str, PresenceRecord]:
        """Seed ``book`` with who holds what and the queue; the agents' presences."""
        presences = await self.store.presences()
        holders, queued = await self.store.routing_holders()
        book.seed(holders, queued)
        return {p.agent_key: p for p in presences}

    async def _view(self) -> tuple[RoutingBook, dict[str, PresenceRecord]]:
        """What a decision outside a routing pass reads (the console's roster, what a
        customer is told at handoff): the book, or on a shared database a fresh read of
        its own (only a pass, under the routing lock, rewrites the book then)."""
        if not self._shared:
            await self._routing_ready()
            return self._book, self._presence
        book = RoutingBook()
        return book, await self._read_into(book)

    def _configured_agents(self) -> list[str]:
        ids: list[Any] = []
        if self.desk == "telegram":
            ids = list(self.settings.telegram.agent_ids)
        elif self.desk == "slack":
            ids = list(self.settings.slack.agent_ids)
        return [f"{self.desk}:{i}" for i in ids]

    def _agents(
        self, now: int, view: tuple[RoutingBook, dict[str, PresenceRecord]] | None = None
    ) -> list[AgentState]:
        """Every agent routing knows: the desk's agent_ids and whoever said where they are.
        Outside business hours nobody is available."""
        book, presence = view or (self._book, self._presence)
        at_work = self.calendar.is_open(from_ms(now))
        keys = dict.fromkeys([*self._configured_agents(), *presence])
        agents = []
        for key in keys:
            said = presence.get(key)
            agents.append(
                AgentState(
                    key=key,
                    name=said.name if said else "",  # unknown until they say
                    available=at_work and (said.available if said else True),
                    load=book.load.get(key, 0),
                    last_assigned_at=said.last_assigned_at if said else None,
                )
            )
        return agents

    async def roster(self) -> dict[str, Any]:
        """What the console shows: each agent's presence and open conversations."""
        view = await self._view()
        book, presence = view
        now = self._now()
        at_work = self.calendar.is_open(from_ms(now))
        agents = [
            {
                "key": a.key,
                "name": a.name or a.key.partition(":")[2],
                "available": presence[a.key].available if a.key in presence else True,
                "at_work": a.available,
                "open": a.load,
            }
            for a in self._agents(now, view)
        ]
        return {
            "mode": self._routing.mode,
            "max_open": self._routing.max_open_per_agent,
            "business_hours": at_work,
            "queued": len(book.queued),
            "agents": agents,
        }

    # ------------------------------------------------------------------ presence

    async def _may_route(self, agent: Agent) -> bool:
        if agent.desk == CONSOLE_DESK:
            return True  # the console checked the agent's key
        if self.authority is None or agent.desk != self.desk:
            return False
        return await self.authority.is_agent(agent.user_id)

    async def _presence_change(self, ev: AgentPresence) -> Outcome:
        if not await self._may_route(ev.agent):
            return Outcome(ok=False, notice=self._desk_t("agents_only"))
        await self._routing_ready()
        now = self._now()
        name = ev.agent.name or ev.agent.user_id
        if not await self.store.set_presence(ev.agent.key, name, ev.available, now, ev.dedup_key):
            return Outcome(duplicate=True)
        old = self._presence.get(ev.agent.key)
        last = old.last_assigned_at if old else None
        self._presence[ev.agent.key] = PresenceRecord(ev.agent.key, name, ev.available, now, last)
        log.info("agent %s is %s", ev.agent.key, "available" if ev.available else "away")
        self._route_wanted = True
        if not ev.available:
            key = "presence_away"
        elif self.calendar.is_open(from_ms(now)):
            key = "presence_available"
        else:
            key = "presence_available_closed"
        return Outcome(ok=True, notice=self._desk_t(key, agent=name))

    # ------------------------------------------------------------------ at handoff

    async def _queue_greeting(self, conv: ConversationRecord, unit: Unit, reason: str) -> str:
        """What the customer is told at a handoff in business hours: someone answers
        shortly when an agent can take it now, else their place and, with history, the
        expected wait."""
        complaint = reason == "complaint"
        view = await self._view()
        now = unit.now
        agents = self._agents(now, view)
        cap = self._routing.max_open_per_agent
        if self._routing.mode != "manual" and pick_agent(self._routing.mode, agents, cap):
            return self._t(conv.language, "handoff_complaint" if complaint else "handoff_open")
        last = await self.store.last_nps(conv.customer_id, conv.id)
        urgent = complaint or (last is not None and last <= 6)
        others = [e for e in await self.store.routing_queue() if e.id != conv.id]
        position = position_of(urgent, now, others)
        unit.event("queue_told", "bot", position=position)
        lead = self._t(conv.language, "handoff_complaint" if complaint else "handoff_queued")
        return f"{lead} {await self._place(conv.language, position, now, agents)}"

    async def _place(self, lang: str, position: int, now: int, agents: list[AgentState]) -> str:
        """ "You are number 3 in the queue. Estimated wait: about 20 minutes." """
        if position == 1:
            text = self._t(lang, "queue_first")
        else:
            text = self._t(lang, "queue_position", position=position)
        median = await self._median_wait(now)
        if median is None:
            return text  # no history: only the position, never a made-up time
        helpers = sum(1 for a in agents if a.available)
        key, values = wait_words(estimate_s(median, position, helpers))
        wait = self._t(lang, key, **values)
        return f"{text} {self._t(lang, 'queue_wait', wait=wait)}"

    async def _median_wait(self, now: int) -> float | None:
        """The recent median agent first response, in working seconds (cached a while)."""
        if self._median is not None and now - self._median[0] < MEDIAN_TTL_MS:
            return self._median[1]
        since = now - int(HISTORY.total_seconds() * 1000)
        samples = await self.store.response_samples(since, HISTORY_LIMIT)
        seconds = [
            self.calendar.business_seconds(
                from_ms(s.handed_off_at), from_ms(s.first_agent_response_at)
            )
            for s in samples
        ]
        self._median = (now, median_wait_s(seconds))
        return self._median[1]

    # ------------------------------------------------------------------ routing pass

    async def _route_pending(self, *, force: bool = False) -> None:
        """Assign what can be, escalate what waited too long, tell customers who moved a
        lot. Never raises: a failed pass is retried by the next sweep."""
        if not (self._route_wanted or force):
            return
        async with self._route_lock:
            self._route_wanted = False
            try:
                await self._route_pass()
            except Exception:
                self._route_wanted = True
                log.exception("routing pass failed; the next sweep retries")

    async def _route_pass(self) -> None:
        if not self._shared:
            await self._routing_ready()
            if self._book.queued:
                await self._route_queue()
            return
        if not await self.store.anything_queued():
            return  # the usual case, without taking the lock
        async with self.locks.hold(ROUTING_KEY):
            await self._read_book()  # after the last pass's commits, whoever made them
            if self._book.queued:
                await self._route_queue()

    async def _route_queue(self) -> None:
        now = self._now()
        queue = queue_order(await self.store.routing_queue())
        if self._routing.mode != "manual":
            queue = await self._assign_all(queue, now)
        await self._escalate(queue, now)
        await self._retell(queue, now)

    async def _assign_all(self, queue: list[QueueEntry], now: int) -> list[QueueEntry]:
        """Give queued conversations, front first, to agents who can take one; returns
        the ones still waiting."""
        cap = self._routing.max_open_per_agent
        waiting: list[QueueEntry] = []
        for index, entry in enumerate(queue):
            agent = pick_agent(self._routing.mode, self._agents(now), cap)
            if agent is None:
                waiting.extend(queue[index:])
                break
            if not await self._assign(entry.id, agent) and entry.id in self._book.queued:
                waiting.append(entry)
        return waiting

    async def _assign(self, conversation_id: int, agent: AgentState) -> bool:
        conv = await self.store.load(conversation_id)
        if conv is None:
            return False
        async with self.locks.hold(conv.address.key, load_id=conversation_id):
            fresh = await self.store.load(conversation_id)
            if fresh is None or fresh.state != State.QUEUED:
                return False
            log_conversation.set(fresh.id)
            unit = Unit(self._now(), conversation=fresh)
            self._move(fresh, unit, State.ASSIGNED, actor="bot", target_agent=agent.key,
                       routing=self._routing.mode)  # fmt: skip
            desk, _, user_id = agent.key.partition(":")
            fresh.update(agent_key=agent.key, agent_name=agent.name or user_id)
            unit.clear_timer("remind")
            if agent.name:
                joined = self._t(fresh.language, "agent_joined", agent=agent.name)
            else:  # never a platform id to the customer
                joined = self._t(fresh.language, "agent_joined_unnamed")
            self._say(fresh, unit, fresh.address, joined)
            who = user_id if desk == fresh.desk else None
            text = self._desk_t("routed_to_you")
            self._mention(fresh, unit, who, agent.name or user_id, text, in_thread=True)
            self._refresh_header(fresh, unit)
            done = await self._commit(unit)
        log_conversation.set(None)
        if done:
            log.info("conversation #%d assigned to %s (%s)", conversation_id, agent.key,
                     self._routing.mode)  # fmt: skip
            await self.store.note_assigned(agent.key, agent.name, unit.now)
            said = self._presence.get(agent.key)
            available = said.available if said else True
            self._presence[agent.key] = PresenceRecord(
                agent.key, agent.name, available, said.changed_at if said else unit.now, unit.now
            )
            for observer in self._assignment_observers:
                try:
                    observer(conversation_id, agent.key)
                except Exception:
                    log.exception("assignment observer failed")
        return done

    def _mention(
        self, conv: ConversationRecord, unit: Unit, who: str | None, name: str, text: str,
        *, in_thread: bool,
    ) -> None:  # fmt: skip
        """Queue a desk post that notifies ``who`` (in the thread, or to the whole desk)."""
        if in_thread and conv.desk is None:
            return  # console only: the conversation shows as the agent's own there
        if self.desk is None and not self._observers:
            return
        payload = {"who": who, "name": name, "text": text, "in_thread": in_thread}
        unit.outbox.append(NewOutbox(P.desk_lane(conv.id), P.MENTION, payload))

    async def _escalate(self, queue: list[QueueEntry], now: int) -> None:
        """Call ``escalate_to`` once for each conversation untaken after ``escalate_after``
        of working time."""
        who = self._routing.escalate_to
        if who is None:
            return
        limit = self._routing.escalate_after.total_seconds()
        for entry in queue:
            if entry.escalated:
                continue
            waited = self.calendar.business_seconds(from_ms(entry.handed_off_at), from_ms(now))
            if waited < limit:
                continue
            minutes = int(waited // 60)
            text = self._desk_t("escalated", id=entry.id, minutes=minutes)
            await self._step_if_queued(entry.id, partial(self._escalation, text=text))

    def _escalation(self, conv: ConversationRecord, unit: Unit, text: str) -> None:
        who = self._routing.escalate_to
        unit.event("escalated", "bot", to=who)
        self._mention(conv, unit, who, who or "", text, in_thread=False)
        log.info("conversation #%d escalated to %s", conv.id, who)

    async def _retell(self, queue: list[QueueEntry], now: int) -> None:
        """Tell again customers whose place changed a lot since they were last told."""
        if not self.calendar.is_open(from_ms(now)):
            return
        agents = self._agents(now)
        for index, entry in enumerate(queue):
            position = index + 1
            if entry.told_position is None or not moved_a_lot(entry.told_position, position):
                continue
            conv = await self.store.load(entry.id)
            if conv is None or not conv.customer_reachable:
                continue
            place = await self._place(conv.language, position, now, agents)
            text = f"{self._t(conv.language, 'queue_update')} {place}"
            await self._step_if_queued(entry.id, partial(self._tell, text=text, position=position))

    def _tell(self, conv: ConversationRecord, unit: Unit, text: str, position: int) -> None:
        unit.event("queue_told", "bot", position=position)
        self._say(conv, unit, conv.address, text)

    async def _step_if_queued(
        self, conversation_id: int, step: Callable[[ConversationRecord, Unit], None]
    ) -> None:
        """Run ``step(conv, unit)`` under the conversation's lock if it is still queued."""
        conv = await self.store.load(conversation_id)
        if conv is None:
            return
        async with self.locks.hold(conv.address.key, load_id=conversation_id):
            fresh = await self.store.load(conversation_id)
            if fresh is None or fresh.state != State.QUEUED:
                return
            log_conversation.set(fresh.id)
            unit = Unit(self._now(), conversation=fresh)
            step(fresh, unit)
            await self._commit(unit)
        log_conversation.set(None)
