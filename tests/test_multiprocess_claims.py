"""Routing and follow-up reminders with several processes on one PostgreSQL (issue 19).

Two engine stacks in this test process, each with its own ``Database`` (its own
connections), stand for two ``supportbot run`` behind one Slack desk and one Telegram bot
(the recording desk and channel are shared, as the platforms are). Each stack has read its
routing book before the test starts, as a running process has: what it then learns of the
other's assignments must come from the database, not from its own memory.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.config import settings_from_mapping
from bot.conversation.model import Agent, AgentActionKind, AgentPresence, State
from tests.fakes.clock import FakeClock
from tests.fakes.recording import RecordingChannel, RecordingDesk
from tests.harness import Harness
from tests.test_followups import HOURS, PARIS, paris
from tests.test_routing import ASK, A, B, C, conv_of, holder, one_each, resolve

Pair = tuple[Harness, Harness]


@pytest.fixture
async def processes(pg_url: str, clock: FakeClock) -> AsyncIterator[Callable[..., Any]]:
    """``await start(**settings)``: two processes' engines on one database, one desk."""
    started: list[Harness] = []

    async def start(agents: tuple[str, ...] = (A, B), **overrides: Any) -> Pair:
        data: dict[str, Any] = {"storage": {"url": pg_url}, "desk": "slack",
                                "slack": {"agent_ids": list(agents)}, **overrides}  # fmt: skip
        settings = settings_from_mapping(data)
        desk, channel = RecordingDesk("slack", agents=agents), RecordingChannel("telegram")
        pair = (
            Harness(settings, clock, channel=channel, desk=desk),
            Harness(settings, clock, channel=channel, desk=desk, _ids=itertools.count(10**6)),
        )  # each its own dedup keys: the same key from both would be one redelivered update
        for h in pair:
            await h.start()
            started.append(h)
            assert h.engine is not None
            await h.engine.roster()  # the book is read: the process has been running
        return pair

    yield start
    for h in started:
        await h.stop()


async def loads(h: Harness) -> dict[str, int]:
    assert h.db is not None
    rows = await h.db.fetchall(
        "SELECT agent_key, COUNT(*) AS n FROM conversations WHERE state = 'assigned' "
        "GROUP BY agent_key"
    )
    return {r["agent_key"]: int(r["n"]) for r in rows}


# ---------------------------------------------------------------- routing


@pytest.mark.parametrize("mode", ["round_robin", "least_busy"])
async def test_an_agents_cap_holds_across_processes_and_the_queue_moves_through_either(
    processes: Callable[..., Any], clock: FakeClock, mode: str
) -> None:
    first, second = await processes(routing={"mode": mode, "max_open_per_agent": 1})
    await first.say(ASK, user="1")
    clock.advance(timedelta(seconds=5))
    await second.say(ASK, user="2")  # the other process: U_AGENT already holds one
    assert {await holder(first, "1"), await holder(first, "2")} == {f"slack:{A}", f"slack:{B}"}
    clock.advance(timedelta(seconds=5))
    await second.say(ASK, user="3")  # both at their cap, whichever process asks
    clock.advance(timedelta(seconds=5))
    await first.say(ASK, user="4")
    assert await holder(first, "3") is None
    assert await holder(first, "4") is None
    assert await loads(first) == {f"slack:{A}": 1, f"slack:{B}": 1}
    assert first.channel.texts(first.address("3"))[-1].endswith(
        "Vous êtes le prochain dans la file d'attente."
    )

    # #3 was queued by the second process; the agent frees up through the first one
    held_by = await holder(first, "1")
    assert held_by is not None
    await resolve(first, "1", held_by.partition(":")[2])
    assert await holder(first, "3") == held_by  # at once, the front of the queue first
    assert await holder(first, "4") is None
    await resolve(second, "2", B if held_by == f"slack:{A}" else A)
    assert await holder(first, "4") is not None  # queued by the first, freed by the second
    assert max((await loads(first)).values()) == 1


async def test_least_busy_counts_what_the_other_process_assigned(
    processes: Callable[..., Any], clock: FakeClock
) -> None:
    first, second = await processes(
        agents=(A, B, C), routing={"mode": "least_busy", "max_open_per_agent": 5}
    )
    await one_each(first, clock)
    await resolve(second, "2", B)
    await resolve(second, "3", C)
    await second.say(ASK, user="4")  # A holds one; B and C none, B's turn is the older
    assert await holder(second, "4") == f"slack:{B}"
    await first.say(ASK, user="5")
    assert await holder(first, "5") == f"slack:{C}"
    await second.say(ASK, user="6")  # each holds one now: A's turn is the oldest
    assert await holder(second, "6") == f"slack:{A}"


async def test_round_robin_turns_and_presence_are_shared_by_the_processes(
    processes: Callable[..., Any], clock: FakeClock
) -> None:
    first, second = await processes(
        agents=(A, B, C), routing={"mode": "round_robin", "max_open_per_agent": 5}
    )
    users = [str(n) for n in range(1, 7)]
    for n, user in enumerate(users):
        await (first, second)[n % 2].say(ASK, user=user)
        clock.advance(timedelta(seconds=5))
    holders = [await holder(first, u) for u in users]
    assert holders == [f"slack:{x}" for x in (A, B, C, A, B, C)]

    assert second.engine is not None
    away = AgentPresence(Agent("slack", A, "Paul"), False, "presence:away")
    assert (await second.engine.handle(away)).ok  # said to the second process
    await first.say(ASK, user="7")  # the first process knows A is away
    assert await holder(first, "7") == f"slack:{B}"
    assert first.engine is not None
    roster = await first.engine.roster()
    shown = {a["key"]: (a["available"], a["open"]) for a in roster["agents"]}
    assert shown == {f"slack:{A}": (False, 2), f"slack:{B}": (True, 3), f"slack:{C}": (True, 2)}


async def test_concurrent_handoffs_on_two_processes_never_exceed_the_cap(
    processes: Callable[..., Any], clock: FakeClock
) -> None:
    first, second = await processes(routing={"mode": "least_busy", "max_open_per_agent": 2})
    users = [str(n) for n in range(10, 20)]
    await asyncio.gather(*((first, second)[n % 2].say(ASK, user=u) for n, u in enumerate(users)))
    assert await loads(first) == {f"slack:{A}": 2, f"slack:{B}": 2}
    states = [(await conv_of(first, u))["state"] for u in users]
    assert states.count(State.QUEUED) == 6

    # a sweep of either process moves the queue after a change it did not make itself
    assert first.db is not None
    await first.db.write(
        lambda conn: conn.execute(
            "UPDATE conversations SET state = 'resolved', agent_key = NULL "
            "WHERE state = 'assigned' AND agent_key = ?",
            (f"slack:{A}",),
        )
    )
    await second.tick(timedelta(seconds=1))
    assert await loads(first) == {f"slack:{A}": 2, f"slack:{B}": 2}
    states = [(await conv_of(first, u))["state"] for u in users]
    assert states.count(State.QUEUED) == 4


async def test_a_conversation_nobody_takes_is_escalated_once_by_two_processes(
    processes: Callable[..., Any], clock: FakeClock
) -> None:
    first, second = await processes(routing={"escalate_to": "S_LEADS", "escalate_after": "10m"})
    await first.say(ASK, user="1")
    await second.restart()  # both processes know the waiting conversation
    assert second.engine is not None
    await second.engine.roster()
    for _ in range(3):
        clock.advance(timedelta(minutes=6))
        assert first.engine is not None
        await asyncio.gather(first.engine.sweep(), second.engine.sweep())
        await first.drain()
        await second.drain()
    called = [m for m in first.desk.mentions if m[0] == "S_LEADS"]
    assert len(called) == 1, called
    events = await first.row("SELECT COUNT(*) FROM events WHERE kind = 'escalated'")
    assert events[0] == 1


# ---------------------------------------------------------------- follow-up reminders


async def test_an_overdue_followup_is_reminded_once_by_two_processes_sweeping_together(
    processes: Callable[..., Any], clock: FakeClock
) -> None:
    clock.set(paris(23, 11).astimezone(UTC))
    first, second = await processes(business_hours=HOURS)
    customers = [str(n) for n in range(50, 56)]
    for user in customers:  # six detractors served by U_AGENT: six follow-ups
        await first.say(ASK, user=user)
        thread = (await conv_of(first, user))["desk_thread"]
        await first.agent_does(AgentActionKind.TAKE, thread=thread)
        await first.agent_does(AgentActionKind.RESOLVE, thread=thread)
        await first.press("2", user=user)
    assert first.db is not None
    opened = await first.row("SELECT COUNT(*) FROM followups WHERE status = 'open'")
    assert opened[0] == len(customers)

    def reminders() -> list[str]:
        return [text for text, _thread in first.desk.alerts if text.startswith("⏰")]

    for day in (25, 26):  # Wednesday, when they fall due; Thursday's opening
        clock.set(datetime(2026, 11, day, 11, tzinfo=PARIS).astimezone(UTC))
        assert first.engine is not None
        assert second.engine is not None
        await asyncio.gather(first.engine.sweep(), second.engine.sweep())
        await first.drain()
        await second.drain()
    assert len(reminders()) == 2 * len(customers)
    per_followup = await first.db.fetchall(
        "SELECT json_extract(data, '$.followup') AS f, COUNT(*) AS n FROM events "
        "WHERE kind = 'followup_reminder' GROUP BY f"
    )
    assert sorted(int(r["n"]) for r in per_followup) == [2] * len(customers)
