"""Routing through the engine on a real SQLite file, with the injected clock: presence,
assignment under caps, re-assignment, priority, escalation, queue position and wait."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from bot.conversation.model import Agent, AgentActionKind, AgentPresence, State
from bot.conversation.routing_types import (
    QueueEntry,
    RoutingBook,
    moved_a_lot,
    queue_order,
    wait_words,
)
from tests.fakes.clock import FakeClock
from tests.fakes.recording import RecordingDesk
from tests.harness import Harness, make_settings

TAKE, RESOLVE = AgentActionKind.TAKE, AgentActionKind.RESOLVE
ASK = "Je veux parler à un conseiller"
A, B, C = "U_AGENT", "U_AGENT2", "U_AGENT3"


async def routed(
    tmp_path: Path, clock: FakeClock, agents: tuple[str, ...] = (A, B), **routing: Any
) -> Harness:
    settings = make_settings(tmp_path / "r.db", slack={"agent_ids": list(agents)}, routing=routing)
    h = Harness(settings, clock, desk=RecordingDesk("slack", agents=agents))
    await h.start()
    return h


@pytest.fixture
async def stop_later() -> AsyncIterator[list[Harness]]:
    started: list[Harness] = []
    yield started
    for h in started:
        await h.stop()


async def conv_of(h: Harness, user: str) -> dict[str, Any]:
    row = await h.row(
        "SELECT c.* FROM conversations c JOIN customers cu ON cu.id = c.customer_id "
        "WHERE cu.user_id = ? ORDER BY c.id DESC LIMIT 1",
        user,
    )
    assert row is not None
    return dict(row)


async def holder(h: Harness, user: str) -> str | None:
    conv = await conv_of(h, user)
    return conv["agent_key"] if conv["state"] == State.ASSIGNED else None


async def presence(h: Harness, agent: str, available: bool) -> Any:
    assert h.engine is not None
    outcome = await h.engine.handle(AgentPresence(Agent("slack", agent, agent.title()),
                                                  available, f"presence:{uuid4()}"))  # fmt: skip
    await h.drain()
    return outcome


async def one_each(h: Harness, clock: FakeClock) -> None:
    """Customers 1, 2 and 3 ask for a person 5 s apart: A, B and C get one each."""
    for user in ("1", "2", "3"):
        await h.say(ASK, user=user)
        clock.advance(timedelta(seconds=5))
    assert [await holder(h, u) for u in ("1", "2", "3")] == [f"slack:{x}" for x in (A, B, C)]


async def resolve(h: Harness, user: str, agent: str) -> None:
    thread = (await conv_of(h, user))["desk_thread"]
    outcome = await h.agent_does(RESOLVE, agent=agent, thread=thread)
    assert outcome.ok, outcome


def last_to(h: Harness, user: str) -> str:
    return str(h.channel.last(h.address(user))["text"])


# ---------------------------------------------------------------- pure parts


def test_wait_words_round_as_a_person_would_say() -> None:
    assert wait_words(60) == ("wait_few", {})
    assert wait_words(4 * 60 + 59) == ("wait_few", {})
    assert wait_words(7 * 60) == ("wait_minutes", {"minutes": 5})
    assert wait_words(19 * 60) == ("wait_minutes", {"minutes": 20})
    assert wait_words(41 * 60) == ("wait_minutes", {"minutes": 40})
    assert wait_words(65 * 60) == ("wait_hour", {})
    assert wait_words(200 * 60) == ("wait_hours", {})


def test_queue_order_puts_complaints_and_detractors_first() -> None:
    plain = QueueEntry(1, 100, "requested", None)
    promoter = QueueEntry(2, 150, "requested", 9)
    complaint = QueueEntry(3, 300, "complaint", None)
    detractor = QueueEntry(4, 200, "requested", 6)
    assert [e.id for e in queue_order([plain, promoter, complaint, detractor])] == [4, 3, 1, 2]


def test_moved_a_lot_only_for_big_changes() -> None:
    assert not moved_a_lot(2, 1)  # one place: not worth a message
    assert moved_a_lot(5, 2)
    assert not moved_a_lot(5, 3)
    assert moved_a_lot(2, 5)


def test_book_replays_steps_recorded_while_seeding() -> None:
    book = RoutingBook()
    assert book.record(7, State.QUEUED, None)  # before the seed: kept aside
    book.record(5, State.RESOLVED, None)  # the seed's read still saw #5 assigned
    book.seed([(5, "slack:A"), (6, "slack:A")], [])
    assert book.load == {"slack:A": 1}
    assert book.queued == {7}
    assert book.record(6, State.RESOLVED, "slack:A")  # capacity freed
    assert book.load == {}
    assert not book.record(8, State.BOT, None)


def test_book_read_again_replays_only_what_was_committed_during_the_read() -> None:
    """On a shared database the book is read again at each pass: a step this process
    committed before that read must not undo what another process did since (#7 queued
    here, then assigned by the other process)."""
    book = RoutingBook()
    book.record(7, State.QUEUED, None)  # before any read: kept aside
    book.begin_read()
    book.record(9, State.QUEUED, None)  # during the read: replayed
    book.seed([(7, "slack:B")], [])
    assert (book.holder, book.load, book.queued) == ({7: "slack:B"}, {"slack:B": 1}, {9})


# ---------------------------------------------------------------- presence


async def test_presence_is_stored_shown_and_away_outside_business_hours(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock)
    stop_later.append(h)
    assert h.engine is not None
    away = await presence(h, A, False)
    assert away.ok
    assert away.notice == "U_Agent est absent : plus aucune conversation ne lui est attribuée."
    roster = await h.engine.roster()
    shown = {a["key"]: (a["available"], a["at_work"]) for a in roster["agents"]}
    assert shown == {"slack:U_AGENT": (False, False), "slack:U_AGENT2": (True, True)}
    row = await h.row(
        "SELECT available, name FROM agent_presence WHERE agent_key = ?", "slack:U_AGENT"
    )
    assert (row["available"], row["name"]) == (0, "U_Agent")

    refused = await presence(h, "U_STRANGER", True)
    assert not refused.ok
    assert refused.notice == "Réservé aux agents du service client."

    # the same engine with business hours: at 19:00 Paris everybody is away
    await h.stop()
    stop_later.clear()
    clock.set(datetime(2026, 11, 23, 18, 0, tzinfo=UTC))
    hours = {"mon": "09:00-18:00", "tue": "09:00-18:00"}
    settings = make_settings(tmp_path / "r.db", slack={"agent_ids": [A, B]},
                             routing={"mode": "round_robin"}, business_hours=hours)  # fmt: skip
    h2 = Harness(settings, clock, desk=RecordingDesk("slack", agents=(A, B)))
    await h2.start()
    stop_later.append(h2)
    assert h2.engine is not None
    back = await presence(h2, A, True)
    assert "hors des heures d'ouverture" in (back.notice or "")
    assert {a["at_work"] for a in (await h2.engine.roster())["agents"]} == {False}
    await h2.say(ASK)
    assert await holder(h2, "42") is None  # nobody assigned at night
    assert "Notre équipe est actuellement absente" in last_to(h2, "42")
    clock.set(datetime(2026, 11, 24, 8, 0, 30, tzinfo=UTC))  # Tuesday 09:00:30 Paris
    await h2.tick(timedelta(seconds=1))
    assert await holder(h2, "42") == "slack:U_AGENT"  # assigned when the team opens


# ---------------------------------------------------------------- assignment


async def test_round_robin_under_cap_then_reassigned_when_capacity_frees(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock, mode="round_robin", max_open_per_agent=1)
    stop_later.append(h)
    await h.say(ASK, user="1")
    assert await holder(h, "1") == "slack:U_AGENT"
    texts = h.channel.texts(h.address("1"))
    assert texts[-2].startswith("Je vous mets en relation avec un conseiller, il vous répond")
    assert texts[-1] == "Un conseiller a rejoint la conversation."  # no name known yet
    thread1 = (await conv_of(h, "1"))["desk_thread"]
    assert (A, "Cette conversation vous est attribuée : à vous de répondre.", thread1) in (
        h.desk.mentions
    )
    assert h.desk.threads[thread1].header.status == "Pris en charge par U_AGENT"

    clock.advance(timedelta(seconds=10))
    await h.say(ASK, user="2")
    assert await holder(h, "2") == "slack:U_AGENT2"
    clock.advance(timedelta(seconds=10))
    await h.say(ASK, user="3")
    assert await holder(h, "3") is None  # both at their cap: it waits
    assert last_to(h, "3") == (
        "Je vous mets en relation avec un conseiller. Vous êtes le prochain dans la file d'attente."
    )

    await resolve(h, "1", A)
    assert await holder(h, "3") == "slack:U_AGENT"  # capacity freed: assigned at once
    assert last_to(h, "3") == "Un conseiller a rejoint la conversation."

    # restarted, the counts come back from the database: U_AGENT is at the cap again
    await h.restart()
    await h.say(ASK, user="4")
    assert await holder(h, "4") is None
    await resolve(h, "2", B)
    assert await holder(h, "4") == "slack:U_AGENT2"


@pytest.mark.parametrize(("mode", "expected"), [("round_robin", A), ("least_busy", B)])
async def test_round_robin_takes_turns_least_busy_takes_the_lightest(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness], mode: str, expected: str
) -> None:
    h = await routed(tmp_path, clock, agents=(A, B, C), mode=mode, max_open_per_agent=5)
    stop_later.append(h)
    await one_each(h, clock)
    await resolve(h, "2", B)
    await resolve(h, "3", C)
    clock.advance(timedelta(seconds=5))
    await h.say(ASK, user="4")  # A holds one and had the oldest turn; B and C hold none
    assert await holder(h, "4") == f"slack:{expected}"


async def test_waiting_conversation_is_assigned_when_an_agent_comes_back(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock, mode="least_busy")
    stop_later.append(h)
    await presence(h, A, False)
    await presence(h, B, False)
    await h.say(ASK)
    assert await holder(h, "42") is None
    assert "Vous êtes le prochain" in last_to(h, "42")
    back = await presence(h, B, True)
    assert (
        back.notice
        == "U_Agent2 est disponible : les nouvelles conversations peuvent lui être attribuées."
    )
    assert await holder(h, "42") == "slack:U_AGENT2"


async def test_manual_mode_assigns_nobody(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock)
    stop_later.append(h)
    await h.say(ASK)
    await h.tick(timedelta(minutes=1))
    assert await holder(h, "42") is None
    assert h.desk.mentions == []


# ---------------------------------------------------------------- priority


async def _detractor_history(h: Harness, user: str) -> None:
    """``user`` had a conversation and answered 3/10 to the survey."""
    await h.say(ASK, user=user)
    thread = (await conv_of(h, user))["desk_thread"]
    await h.agent_does(TAKE, agent=A, thread=thread)
    await h.agent_does(RESOLVE, agent=A, thread=thread)
    await h.press("3", user=user)
    await h.press("😡", user=user)
    await h.press("Passer", user=user)
    assert (await conv_of(h, user))["state"] == "closed"


async def test_complaints_and_returning_detractors_go_first(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock, agents=(A,))
    stop_later.append(h)
    await _detractor_history(h, "9")
    h.desk.mentions.clear()
    await presence(h, A, False)
    await h.say(ASK, user="1")
    clock.advance(timedelta(seconds=5))
    await h.say(ASK, user="2")
    assert "en position 2" in last_to(h, "2")
    clock.advance(timedelta(seconds=5))
    await h.say("Je veux déposer une réclamation, c'est inadmissible", user="3")
    assert (await conv_of(h, "3"))["handoff_reason"] == "complaint"
    assert last_to(h, "3") == (
        "Je suis désolé pour ce désagrément. Je transmets votre message tout de suite à un "
        "conseiller. Vous êtes le prochain dans la file d'attente."
    )
    clock.advance(timedelta(seconds=5))
    await h.say(ASK, user="9")  # a returning detractor: behind the complaint only
    assert "en position 2" in last_to(h, "9")

    await h.stop()
    stop_later.clear()
    settings = make_settings(tmp_path / "r.db", slack={"agent_ids": [A]},
                             routing={"mode": "round_robin", "max_open_per_agent": 1})  # fmt: skip
    # the same chats and database, restarted in round robin (fresh delivery keys)
    h = Harness(settings, clock, channel=h.channel, desk=h.desk, _ids=itertools.count(10_000))
    await h.start()
    stop_later.append(h)
    order = []
    await presence(h, A, True)
    for _ in range(4):
        taken = [u for u in ("1", "2", "3", "9") if await holder(h, u) == "slack:U_AGENT"]
        assert len(taken) == 1, taken
        order.append(taken[0])
        await resolve(h, taken[0], A)
    assert order == ["3", "9", "1", "2"]


# ---------------------------------------------------------------- escalation


async def test_escalated_once_after_working_minutes(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock, escalate_to="S_LEADS", escalate_after="10m")
    stop_later.append(h)
    await h.say(ASK)
    cid = (await conv_of(h, "42"))["id"]
    await h.tick(timedelta(minutes=9))
    assert h.desk.mentions == []
    await h.tick(timedelta(minutes=2))
    assert h.desk.mentions == [
        ("S_LEADS", f"La conversation #{cid} attend depuis 11 min sans être prise en charge.", None)
    ]
    await h.tick(timedelta(minutes=2))
    await h.restart()
    await h.tick(timedelta(minutes=1))
    assert len(h.desk.mentions) == 1  # once, restarts included
    events = await h.row("SELECT COUNT(*) AS n FROM events WHERE kind = 'escalated'")
    assert events["n"] == 1


async def test_escalation_counts_working_time_only(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    clock.set(datetime(2026, 11, 23, 16, 55, tzinfo=UTC))  # Monday 17:55 Paris
    hours = {"mon": "09:00-18:00", "tue": "09:00-18:00"}
    settings = make_settings(tmp_path / "r.db", slack={"agent_ids": [A]}, business_hours=hours,
                             routing={"escalate_to": "S_LEADS"},
                             conversation={"abandon_after": "1d"})  # fmt: skip
    h = Harness(settings, clock, desk=RecordingDesk("slack", agents=(A,)))
    await h.start()
    stop_later.append(h)
    await h.say(ASK)
    await h.tick(timedelta(hours=15, minutes=9))  # Tuesday 09:04: 9 working minutes
    assert h.desk.mentions == []
    await h.tick(timedelta(minutes=2))
    assert [m[0] for m in h.desk.mentions] == ["S_LEADS"]


async def test_no_escalation_once_taken(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock, escalate_to="S_LEADS")
    stop_later.append(h)
    await h.say(ASK)
    await h.agent_does(TAKE, agent=A)
    await h.tick(timedelta(minutes=12))
    assert h.desk.mentions == []


# ---------------------------------------------------------------- position and wait


async def _history(h: Harness, clock: FakeClock, users: tuple[str, ...], answer_after: int) -> None:
    """Conversations that an agent answered ``answer_after`` minutes after the handoff."""
    for user in users:
        await h.say(ASK, user=user)
        clock.advance(timedelta(minutes=answer_after))
        thread = (await conv_of(h, user))["desk_thread"]
        await h.agent_says("Bonjour, je suis là.", agent=A, thread=thread)
        await h.agent_does(RESOLVE, agent=A, thread=thread)


async def test_wait_estimate_from_recent_median_and_queue_length(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock, agents=(A,))
    stop_later.append(h)
    await h.say(ASK, user="1")
    assert last_to(h, "1") == (  # no history yet: only the position
        "Je vous mets en relation avec un conseiller. Vous êtes le prochain dans la file d'attente."
    )
    thread = (await conv_of(h, "1"))["desk_thread"]
    await h.agent_does(RESOLVE, agent=A, thread=thread)
    await _history(h, clock, ("2", "3", "4"), answer_after=9)
    clock.advance(timedelta(minutes=6))  # the median is read again
    await h.say(ASK, user="10")
    assert last_to(h, "10").endswith(
        "Vous êtes le prochain dans la file d'attente. Attente estimée : environ 10 minutes."
    )
    await h.say(ASK, user="11", lang="en")
    assert last_to(h, "11") == (
        "I'm putting you through to a member of our team. You are number 2 in the queue. "
        "Estimated wait: about 20 minutes."
    )


async def test_customer_told_again_when_the_place_changes_a_lot(
    tmp_path: Path, clock: FakeClock, stop_later: list[Harness]
) -> None:
    h = await routed(tmp_path, clock)
    stop_later.append(h)
    for user in ("1", "2", "3", "4", "5"):
        await h.say(ASK, user=user)
        clock.advance(timedelta(seconds=5))
    assert "en position 5" in last_to(h, "5")
    told = len(h.channel.texts(h.address("5")))
    for user in ("1", "2"):
        thread = (await conv_of(h, user))["desk_thread"]
        await h.agent_does(TAKE, agent=A, thread=thread)
    assert len(h.channel.texts(h.address("5"))) == told  # 5 → 3: not worth a message
    thread = (await conv_of(h, "3"))["desk_thread"]
    await h.agent_does(TAKE, agent=B, thread=thread)
    assert last_to(h, "5") == (
        "Votre place a changé. Vous êtes en position 2 dans la file d'attente."
    )
    # customer 4 was told 4 → 2 at the second take, and not again for 2 → 1
    assert h.channel.texts(h.address("4"))[1:] == [
        "Votre place a changé. Vous êtes en position 2 dans la file d'attente."
    ]
