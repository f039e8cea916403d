"""Console agents in the engine: web-desk agents act by conversation id, their actions
reach the Slack/Telegram thread too, observers hear of every committed step, and with
``desk: web`` the alerts reach the console."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.conversation.model import Agent, AgentAction, AgentActionKind, AgentMessage
from tests.fakes.clock import FakeClock
from tests.harness import Harness, make_settings

PAUL = Agent("web", "Paul", "Paul")


async def queued(h: Harness) -> tuple[int, str]:
    await h.say("Je veux parler à un conseiller")
    thread, _ = h.desk.only_thread()
    row = await h.row("SELECT id FROM conversations")
    return int(row["id"]), thread


async def console(h: Harness, event: AgentMessage | AgentAction) -> bool:
    assert h.engine is not None
    outcome = await h.engine.handle(event)
    await h.drain()
    return outcome.ok


async def test_console_agent_serves_a_slack_desk_conversation(harness: Harness) -> None:
    h = harness
    cid, thread = await queued(h)
    take = AgentAction(PAUL, h.key(), AgentActionKind.TAKE, conversation_id=cid)
    assert await console(h, take)
    assert "Paul a rejoint la conversation." in h.channel.texts()
    reply = AgentMessage(PAUL, None, "Je regarde votre commande.", h.key(), conversation_id=cid)
    assert await console(h, reply)
    assert "Je regarde votre commande." in h.channel.texts()
    posts = h.desk.threads[thread].posts
    assert ("agent", "Je regarde votre commande.") in posts  # Slack agents see it
    note = AgentAction(PAUL, h.key(), AgentActionKind.NOTE, conversation_id=cid, text="VIP")
    assert await console(h, note)
    assert ("note", "VIP") in h.desk.threads[thread].posts
    assert "VIP" not in h.channel.texts()
    resolve = AgentAction(PAUL, h.key(), AgentActionKind.RESOLVE, conversation_id=cid, tag="colis")
    assert await console(h, resolve)
    row = await h.row("SELECT state, agent_key, tag FROM conversations WHERE id = ?", cid)
    assert tuple(row) == ("surveying", "web:Paul", "colis")
    assert h.desk.threads[thread].closed


async def test_slack_strangers_still_refused_and_reply_needs_a_conversation(
    harness: Harness,
) -> None:
    h = harness
    cid, _thread = await queued(h)
    assert h.engine is not None
    stranger = Agent("slack", "U_STRANGER", "Eve")
    refused = await h.engine.handle(
        AgentMessage(stranger, None, "hi", h.key(), conversation_id=cid)
    )
    assert (refused.ok, refused.notice) == (False, "Réservé aux agents du service client.")
    assert "hi" not in h.channel.texts()
    nowhere = AgentMessage(PAUL, None, "hello", h.key())
    missing = AgentMessage(PAUL, None, "hello", h.key(), conversation_id=999)
    for event in (nowhere, missing):
        outcome = await h.engine.handle(event)
        assert (outcome.ok, outcome.notice) == (False, "Conversation inconnue.")


async def test_observers_hear_each_committed_step_once(harness: Harness) -> None:
    h = harness
    assert h.engine is not None
    seen: list[int] = []
    h.engine.add_observer(seen.append)
    h.engine.add_observer(lambda cid: 1 // 0)  # a failing observer never breaks a step
    await h.say("Où trouver ma facture ?")
    assert seen == []  # a bot-only step concerns no agent
    cid, _thread = await queued(h)
    assert seen == [cid]
    key = h.key()
    take = AgentAction(PAUL, key, AgentActionKind.TAKE, conversation_id=cid)
    assert await console(h, take)
    redelivered = await h.engine.handle(take)
    assert redelivered.duplicate  # no new step
    assert seen == [cid, cid]


async def test_transfer_of_a_queued_conversation_to_the_queue_is_refused(
    harness: Harness,
) -> None:
    h = harness
    cid, _thread = await queued(h)
    assert h.engine is not None
    transfer = AgentAction(PAUL, h.key(), AgentActionKind.TRANSFER, conversation_id=cid)
    outcome = await h.engine.handle(transfer)
    assert (outcome.ok, outcome.notice) == (
        False,
        "Cette conversation est déjà dans la file d'attente : transférez-la à un agent, "
        "ou prenez-la.",
    )
    row = await h.row("SELECT state FROM conversations WHERE id = ?", cid)
    assert row["state"] == "queued"


# ---------------------------------------------------------------- desk: web


@pytest.fixture
async def web_desk(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    h = Harness(make_settings(tmp_path / "w.db", desk="web"), clock, web_desk=True)
    await h.start()
    yield h
    await h.stop()


async def alerts_of_a_day(h: Harness) -> list[str]:
    """A customer waits until abandoned; another, served by Paul, answers NPS 3."""
    await h.say("Je veux parler à un conseiller", user="1")
    for _ in range(3):  # reminders at 5 and 10 min, abandoned at 15 min
        await h.tick(timedelta(minutes=5))
    await h.say("Je veux parler à un conseiller", user="2")
    row = await h.row("SELECT id FROM conversations WHERE state = 'queued'")
    cid = int(row["id"])
    assert h.engine is not None
    for kind in (AgentActionKind.TAKE, AgentActionKind.RESOLVE):
        assert await console(h, AgentAction(PAUL, h.key(), kind, conversation_id=cid))
    await h.press("3", user="2")
    return [
        "Conversation #1 en attente depuis 5 min.",
        "Conversation #1 en attente depuis 10 min.",
        "Conversation #1 abandonnée (timeout) : recontactez le client.",
        "⚠️ Détracteur : Marie a donné 3/10 (conversation #2, Paul). Recontactez ce client.\n"
        "Suivi #2 — responsable : Paul ; à recontacter avant mercredi 25 novembre à 11:15.",
    ]


async def test_with_the_web_desk_alerts_reach_the_console(web_desk: Harness) -> None:
    h = web_desk
    expected = await alerts_of_a_day(h)
    assert h.board.texts() == expected
    assert [conversation for _id, conversation, _text in h.board.alerts] == [1, 1, 1, 2]
    assert h.desk.calls == []  # no desk transport at all
    failed = await h.row("SELECT COUNT(*) FROM outbox WHERE failed_at IS NOT NULL")
    assert failed[0] == 0


async def test_console_alerts_say_what_the_slack_desk_says(
    harness: Harness, web_desk: Harness
) -> None:
    start = harness.clock.now()  # one clock for both: the same day, the same due times
    await alerts_of_a_day(harness)
    web_desk.clock.set(start)
    await alerts_of_a_day(web_desk)
    assert [text for text, _thread in harness.desk.alerts] == web_desk.board.texts()
