"""Console agents in the engine: web-desk agents act by conversation id, their actions
reach the Slack/Telegram thread too, and observers hear of every committed step."""

from __future__ import annotations

from bot.conversation.model import Agent, AgentAction, AgentActionKind, AgentMessage
from tests.harness import Harness

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
