"""A restart loses nothing: conversations, timers, surveys and undelivered actions resume."""

from __future__ import annotations

from datetime import timedelta

from bot.conversation.model import AgentActionKind, CustomerMessage
from bot.errors import TransientDeliveryError
from tests.harness import Harness


async def state(h: Harness, cid: int = 1) -> str:
    row = await h.row("SELECT state FROM conversations WHERE id = ?", cid)
    return str(row["state"])


async def test_queued_conversation_and_its_timer_survive_a_restart(harness: Harness) -> None:
    await harness.say("", command="agent")
    thread, _ = harness.desk.only_thread()
    await harness.restart()
    assert await state(harness) == "queued"
    await harness.say("toujours là ?")
    assert ("customer", "toujours là ?") in harness.desk.threads[thread].posts
    await harness.restart()
    await harness.tick(timedelta(minutes=16))
    row = await harness.row("SELECT state, abandon_reason FROM conversations")
    assert tuple(row) == ("closed", "timeout")


async def test_survey_continues_after_a_restart(harness: Harness) -> None:
    await harness.say("", command="agent")
    await harness.agent_does(AgentActionKind.TAKE)
    await harness.agent_says("Voilà qui est réglé.")
    await harness.agent_does(AgentActionKind.RESOLVE, tag="facture")
    nps_buttons = harness.channel.last_tokens()
    await harness.restart()
    assert await state(harness) == "surveying"
    outcome = await harness.press("10", token=nps_buttons["10"])
    assert outcome.ok
    await harness.restart()
    await harness.press("😍")
    await harness.restart()
    await harness.press("Passer")
    survey = await harness.row("SELECT nps, csat, completed_at FROM surveys")
    assert survey["nps"] == 10
    assert survey["csat"] == 5
    assert survey["completed_at"] is not None
    conv = await harness.row(
        "SELECT state, resolved_by, tag, first_agent_response_at - handed_off_at AS wait "
        "FROM conversations"
    )
    assert conv["state"] == "closed"
    assert conv["resolved_by"] == "agent"
    assert conv["tag"] == "facture"
    assert conv["wait"] == 0  # the fake clock did not move: the agent answered "at once"


async def test_survey_expiry_timer_survives_a_restart(harness: Harness) -> None:
    await harness.say("Où trouver ma facture ?")
    await harness.press("Oui, merci")
    await harness.restart()
    await harness.tick(timedelta(hours=25))
    row = await harness.row("SELECT expired_at FROM surveys")
    assert row["expired_at"] is not None
    assert await state(harness) == "closed"


async def test_undelivered_message_is_sent_after_restart(harness: Harness) -> None:
    # The platform is down for longer than this process lives.
    harness.channel.fail_next(*[TransientDeliveryError("down", retry_after=30)])
    assert harness.engine is not None
    await harness.engine.handle(
        CustomerMessage(harness.customer(), harness.address(), "Où trouver ma facture ?", "tg:1")
    )
    pending = await harness.row("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
    assert pending["n"] == 1
    await harness.stop()  # killed while waiting to retry
    harness.clock.advance(timedelta(seconds=31))
    await harness.start()
    assert len(harness.channel.texts()) == 1
    row = await harness.row("SELECT sent_at FROM outbox")
    assert row["sent_at"] is not None
    conv = await harness.row("SELECT first_response_at FROM conversations")
    assert conv["first_response_at"] is not None


async def test_resumed_items_wait_for_the_channels_and_keep_lane_order(harness: Harness) -> None:
    assert harness.engine is not None
    await harness.say("Où trouver ma facture ?")
    harness.channel.fail_next(TransientDeliveryError("down", retry_after=30))
    await harness.engine.handle(
        CustomerMessage(harness.customer(), harness.address(), "oui merci", "k2")
    )
    await harness.stop()  # "Ravi d'avoir pu vous aider" and the NPS question are pending
    harness.clock.advance(timedelta(seconds=31))
    await harness.start_held()
    assert harness.engine is not None
    assert harness.dispatcher is not None
    await harness.engine.handle(CustomerMessage(harness.customer(), harness.address(), "7", "k3"))
    assert len(harness.channel.texts()) == 1  # nothing sent while the channels are not up
    harness.dispatcher.release()
    await harness.drain()
    later = harness.channel.texts()[1:]
    assert later[0].startswith("Ravi d'avoir pu vous aider")  # resumed items first, in order
    assert later[1].startswith("Sur une échelle de 0 à 10")
    assert later[2] == "Comment évaluez-vous l'aide que vous avez reçue ?"


async def test_a_lone_process_fires_timers_a_killed_one_had_claimed(harness: Harness) -> None:
    """SQLite is one process at a time: a timer claimed (leased) by a process killed before
    firing it fires at the next sweep, not a lease later (kill -9 CI run: a queued
    conversation stayed open for the whole 60 s lease)."""
    from storage.conversations import SqliteStore

    await harness.say("Je veux parler à un conseiller")
    harness.clock.advance(timedelta(days=2))
    now = int(harness.clock.now().timestamp() * 1000)
    killed = SqliteStore(harness.db, clock=harness.clock, owner="killed-process")
    claimed = await killed.due_timers(now, 10)
    assert claimed
    assert harness.engine is not None
    assert await harness.engine.sweep() == len(claimed)
    assert await harness.engine.sweep() == 0
