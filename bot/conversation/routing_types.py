"""Routing's plain parts: the records storage returns, the per-agent book the engine keeps,
the choice of an agent, the queue order and the wait estimate. No I/O here.

The book is the lesson of Chatwoot's assignment v2: counting each agent's open
conversations with a database query on every assignment makes routing slower as the
history grows. The engine reads the holders once, then moves the counts itself whenever
a committed step changes a conversation's state or agent (``RoutingBook.record``). With
several processes on one database, each reads them again (what is open, from partial
indexes: not the history) at the start of each routing pass, under a lock they share.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from bot.conversation.model import State

DETRACTOR_MAX = 6  # NPS 0–6
MIN_SAMPLES = 3
# An agent's presence as reports name it (``supportbot followups``, ``kpi --by agent``).
AVAILABLE, AWAY, UNKNOWN = (
    "available",
    "away",
    "unknown",
)  # fewer agent answers than this: no estimate, only the position


@dataclass(frozen=True, slots=True)
class PresenceRecord:
    agent_key: str
    name: str
    available: bool
    changed_at: int
    last_assigned_at: int | None = None


def presence_of(words: dict[str, str], agent_key: str | None) -> str | None:
    """An owner's presence word; "unknown" for an agent who never said, None for nobody."""
    return None if agent_key is None else words.get(agent_key, UNKNOWN)


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A queued conversation as routing sees it."""

    id: int
    handed_off_at: int
    reason: str | None
    last_nps: int | None  # the customer's NPS answer in an earlier conversation
    escalated: bool = False
    told_position: int | None = None  # the position the customer was last told

    @property
    def urgent(self) -> bool:
        """Complaints and returning detractors go to the front of the queue."""
        return self.reason == "complaint" or (
            self.last_nps is not None and self.last_nps <= DETRACTOR_MAX
        )


@dataclass(frozen=True, slots=True)
class ResponseSample:
    handed_off_at: int
    first_agent_response_at: int


def queue_order(entries: Iterable[QueueEntry]) -> list[QueueEntry]:
    """Urgent ones first, then first come first served."""
    return sorted(entries, key=lambda e: (not e.urgent, e.handed_off_at, e.id))


def position_of(urgent: bool, handed_off_at: int, others: Iterable[QueueEntry]) -> int:
    """1-based position of a newcomer among ``others`` (it is not in them)."""
    ahead = sum(1 for e in others if (not e.urgent, e.handed_off_at) <= (not urgent, handed_off_at))
    return ahead + 1


def moved_a_lot(told: int, now: int) -> bool:
    """Worth telling again: the position halved (or doubled), by two places at least."""
    if abs(told - now) < 2:
        return False
    return now * 2 <= told or now >= told * 2


@dataclass(frozen=True, slots=True)
class AgentState:
    key: str
    name: str
    available: bool  # what they said (configured agents who said nothing: available)
    load: int
    last_assigned_at: int | None


@dataclass
class RoutingBook:
    """Who holds which assigned conversation, the per-agent counts, and the queued ids.

    ``record`` is called after each committed step; ``seed`` once with what the database
    holds (on a database other processes share: again at each routing pass, after
    ``begin_read``). Steps recorded while the seed was being read are replayed over it, so
    a step that lands between the read and the seed is not lost.
    """

    ready: bool = False
    holder: dict[int, str] = field(default_factory=dict)
    load: dict[str, int] = field(default_factory=dict)
    queued: set[int] = field(default_factory=set)
    _recent: dict[int, tuple[State, str | None]] = field(default_factory=dict)

    def record(self, conversation_id: int, state: State, agent_key: str | None) -> bool:
        """Apply a committed state; True when it may let a queued conversation move
        (a conversation joined or left the queue, or an agent has one fewer)."""
        if not self.ready:
            self._recent[conversation_id] = (state, agent_key)
        return self._apply(conversation_id, state, agent_key)

    def _apply(self, cid: int, state: State, agent_key: str | None) -> bool:
        was_queued = cid in self.queued
        old = self.holder.pop(cid, None)
        if old is not None:
            self.load[old] = self.load.get(old, 1) - 1
            if self.load[old] <= 0:
                del self.load[old]
        self.queued.discard(cid)
        if state == State.ASSIGNED and agent_key:
            self.holder[cid] = agent_key
            self.load[agent_key] = self.load.get(agent_key, 0) + 1
        elif state == State.QUEUED:
            self.queued.add(cid)
        freed = old is not None and self.holder.get(cid) != old
        return freed or was_queued != (state == State.QUEUED)

    def begin_read(self) -> None:
        """A (new) read of the database starts: keep aside what is committed from now on,
        and only that (what came before is in the read; on a shared database, replaying an
        older step could undo another process's later one)."""
        self.ready = False
        self._recent = {}

    def seed(self, holders: Sequence[tuple[int, str]], queued: Sequence[int]) -> None:
        recent, self._recent = self._recent, {}
        self.holder, self.load, self.queued = {}, {}, set()
        for cid, holder in holders:
            self._apply(cid, State.ASSIGNED, holder)
        for cid in queued:
            self._apply(cid, State.QUEUED, None)
        for cid, (state, agent_key) in recent.items():
            self._apply(cid, state, agent_key)
        self.ready = True


def pick_agent(mode: str, agents: Sequence[AgentState], cap: int) -> AgentState | None:
    """The agent the next conversation goes to, or None when nobody can take one.

    round_robin: the available agent under the cap given a conversation longest ago (never
    given one first); least_busy: the one holding fewest, ties by the same rule."""
    free = [a for a in agents if a.available and a.load < cap]
    if not free:
        return None

    def turn(a: AgentState) -> tuple[int, str]:
        return (a.last_assigned_at if a.last_assigned_at is not None else -1, a.key)

    if mode == "least_busy":
        return min(free, key=lambda a: (a.load, *turn(a)))
    return min(free, key=turn)


def median_wait_s(samples: Sequence[float]) -> float | None:
    """The median agent first response in working seconds; None with too little history."""
    if len(samples) < MIN_SAMPLES:
        return None
    return float(statistics.median(samples))


def estimate_s(median_s: float, position: int, agents: int) -> float:
    """Expected wait of the customer at ``position``: one median response per conversation
    ahead of them and their own, shared between the agents who can answer."""
    return median_s * position / max(agents, 1)


def wait_words(seconds: float) -> tuple[str, dict[str, int]]:
    """A text key and its values for an estimate, rounded as a person would say it."""
    minutes = seconds / 60
    if minutes < 5:
        return "wait_few", {}
    if minutes < 30:
        return "wait_minutes", {"minutes": max(5, round(minutes / 5) * 5)}
    if minutes < 50:
        return "wait_minutes", {"minutes": round(minutes / 10) * 10}
    if minutes < 80:
        return "wait_hour", {}
    return "wait_hours", {}
