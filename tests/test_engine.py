"""The conversation lifecycle end to end through the engine, on a real SQLite file and
on a real PostgreSQL database (the ``harness`` below runs every test on both engines)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.conversation.lifecycle import check_transition
from bot.conversation.model import AgentActionKind, LeaveReason, Media, State
from bot.errors import DatabaseLockedError, InvalidTransitionError, TransientDeliveryError
from tests.fakes.clock import FakeClock
from tests.harness import Harness, make_settings

TAKE, RESOLVE, TRANSFER = AgentActionKind.TAKE, AgentActionKind.RESOLVE, AgentActionKind.TRANSFER


@pytest.fixture(params=["sqlite", "postgresql"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Harness]:
    """The engine on each storage engine in turn (the shared fixture is SQLite only)."""
    storage: dict[str, str] = {"path": str(tmp_path / "t.db")}
    if request.param == "postgresql":
        storage["url"] = request.getfixturevalue("pg_url")
    h = Harness(make_settings(tmp_path / "t.db", storage=storage), clock)
    await h.start()
    yield h
    await h.stop()


async def conversation(h: Harness, cid: int = 1) -> dict[str, object]:
    row = await h.row("SELECT * FROM conversations WHERE id = ?", cid)
    assert row is not None
    return dict(row)


async def handed_off(h: Harness) -> str:
    """Bring customer 42 to the queue (asks for a person) and return the desk thread."""
    await h.say("Je veux parler à un conseiller")
    thread, _ = h.desk.only_thread()
    return thread


async def test_full_lifecycle_answer_handoff_relay_resolve_survey(harness: Harness) -> None:
    h = harness
    await h.say("Bonjour, quel est le délai de livraison ?")
    answer = h.channel.last()
    assert "2 à 4 jours" in answer["text"]
    assert set(h.channel.last_tokens()) == {"Oui, merci", "Non", "Parler à un conseiller"}

    outcome = await h.press("Non")
    assert outcome.ok
    assert outcome.chosen == "Non"
    thread, t = h.desk.only_thread()
    assert t.header.status == "En attente"
    assert [b.label for b in t.header.buttons] == ["Prendre", "Résoudre"]
    assert any("délai de livraison" in line.text for line in t.header.transcript)
    assert "conseiller" in h.channel.last()["text"]
    assert (await conversation(h))["state"] == "queued"

    take = next(b.token for b in t.header.buttons if b.label == "Prendre")
    outcome = await h.agent_presses(take)
    assert outcome.ok
    assert "U_Agent a rejoint la conversation." in h.channel.texts()
    assert h.desk.threads[thread].header.status == "Pris en charge par U_Agent"

    await h.say("Ma commande 123 n'est toujours pas arrivée")
    assert ("customer", "Ma commande 123 n'est toujours pas arrivée") in t.posts

    await h.agent_says("Je regarde tout de suite.")
    assert h.channel.last()["text"] == "Je regarde tout de suite."
    assert len(t.relayed) == 1
    await h.agent_says("// client VIP, geste commercial possible")
    assert "// client VIP, geste commercial possible" not in h.channel.texts()
    await h.agent_says("note: vérifier le transporteur")
    assert all("transporteur" not in text for text in h.channel.texts())

    outcome = await h.agent_does(RESOLVE, tag="livraison-retard")
    assert outcome.ok
    assert t.closed
    assert h.channel.last()["text"].startswith("Sur une échelle de 0 à 10")
    nps_tokens = h.channel.last_tokens()
    assert list(nps_tokens) == [str(n) for n in range(11)]

    assert (await h.press("9")).chosen == "9"
    assert set(h.channel.last_tokens()) == {"😡", "🙁", "😐", "🙂", "😍"}
    assert (await h.press("🙂")).chosen == "🙂"
    assert "Passer" in h.channel.last_tokens()
    await h.say("Très bon service, merci")
    assert h.channel.last()["text"].startswith("Merci pour votre réponse")

    conv = await conversation(h)
    assert conv["state"] == "closed"
    assert conv["resolved_by"] == "agent"
    assert conv["tag"] == "livraison-retard"
    assert conv["agent_key"] == "slack:U_AGENT"
    assert conv["first_response_at"] is not None
    assert conv["first_agent_response_at"] is not None
    survey = await h.row("SELECT nps, csat, comment, completed_at FROM surveys")
    assert tuple(survey) == (9, 4, "Très bon service, merci", survey["completed_at"])
    assert survey["completed_at"] is not None
    kinds = [r["kind"] for r in await h.db.fetchall("SELECT kind FROM events ORDER BY id")]  # type: ignore[union-attr]
    for kind in ("conversation_started", "bot_answered", "state", "agent_message", "note",
                 "survey_sent", "nps_answered", "csat_answered", "comment"):  # fmt: skip
        assert kind in kinds


async def test_complaint_goes_to_a_person_at_once(harness: Harness) -> None:
    await harness.say("Je veux déposer une réclamation, c'est inadmissible")
    conv = await conversation(harness)
    assert conv["state"] == "queued"
    assert conv["handoff_reason"] == "complaint"
    assert "désolé" in harness.channel.last()["text"]


async def test_refund_question_is_answered_not_escalated(harness: Harness) -> None:
    await harness.say("Comment me faire rembourser ?")
    conv = await conversation(harness)
    assert conv["state"] == "bot"
    assert conv["topic"] == "remboursement"


async def test_two_unconfident_answers_in_a_row_hand_off(harness: Harness) -> None:
    await harness.say("xqzt blorp wibble")
    assert (await conversation(harness))["state"] == "bot"
    assert "reformuler" in harness.channel.last()["text"]
    await harness.say("flibber glorp zonk")
    conv = await conversation(harness)
    assert conv["state"] == "queued"
    assert conv["handoff_reason"] == "not_understood"


async def test_typed_yes_resolves_by_bot_and_surveys(harness: Harness) -> None:
    await harness.say("Où trouver ma facture ?")
    await harness.say("oui merci")
    conv = await conversation(harness)
    assert conv["resolved_by"] == "bot"
    assert conv["state"] == "surveying"
    assert harness.desk.threads == {}


async def test_abandonment_by_timeout_in_queue(harness: Harness) -> None:
    await handed_off(harness)
    assert await harness.tick(timedelta(minutes=14)) == 1  # the 5-minute reminder
    assert any("en attente depuis" in text for text, _ in harness.desk.alerts)
    assert (await conversation(harness))["state"] == "queued"
    await harness.tick(timedelta(minutes=2))
    conv = await conversation(harness)
    assert conv["state"] == "closed"
    assert conv["abandon_reason"] == "timeout"
    assert "reviendra vers vous" in harness.channel.last()["text"]
    assert any("abandonnée" in text for text, _ in harness.desk.alerts)


async def test_unanswered_customer_message_in_assigned_is_abandoned(harness: Harness) -> None:
    await handed_off(harness)
    await harness.agent_does(TAKE)
    await harness.agent_says("Bonjour, je m'en occupe")
    await harness.tick(timedelta(minutes=30))
    assert (await conversation(harness))["state"] == "assigned"  # nobody is waiting
    await harness.say("Vous êtes là ?")
    await harness.tick(timedelta(minutes=16))
    conv = await conversation(harness)
    assert conv["abandoned_at"] is not None
    assert conv["state"] == "closed"


async def test_abandonment_when_customer_blocks_the_bot(harness: Harness) -> None:
    await handed_off(harness)
    await harness.leaves(LeaveReason.BLOCKED)
    conv = await conversation(harness)
    assert conv["abandon_reason"] == "blocked"
    customer = await harness.row("SELECT reachable FROM customers")
    assert customer["reachable"] == 0
    history = await harness.row("SELECT reachable, reason FROM customer_reachability")
    assert tuple(history) == (0, "blocked")


async def test_cancel_leaves_the_queue(harness: Harness) -> None:
    await handed_off(harness)
    await harness.say("", command="cancel")
    conv = await conversation(harness)
    assert conv["abandon_reason"] == "cancelled"
    assert "annulée" in harness.channel.last()["text"]


async def test_survey_expires_unanswered(harness: Harness) -> None:
    await harness.say("Où trouver ma facture ?")
    await harness.press("Oui, merci")
    await harness.tick(timedelta(hours=23))
    assert (await conversation(harness))["state"] == "surveying"
    await harness.tick(timedelta(hours=2))
    conv = await conversation(harness)
    assert conv["state"] == "closed"
    survey = await harness.row("SELECT nps, expired_at FROM surveys")
    assert survey["nps"] is None
    assert survey["expired_at"] is not None


async def test_survey_cooldown(harness: Harness) -> None:
    await harness.say("Où trouver ma facture ?")
    await harness.press("Oui, merci")
    await harness.press("10")
    await harness.press("😍")
    await harness.press("Passer")
    assert (await conversation(harness))["state"] == "closed"
    harness.clock.advance(timedelta(days=2))
    await harness.say("Quel est le délai de livraison ?")
    await harness.press("Oui, merci")
    second = await conversation(harness, 2)
    assert second["state"] == "closed"  # resolved, not surveyed again within 7 days
    assert (await harness.row("SELECT COUNT(*) AS n FROM surveys"))["n"] == 1
    harness.clock.advance(timedelta(days=6))
    await harness.say("Comment être remboursé ?")
    await harness.press("Oui, merci")
    assert (await conversation(harness, 3))["state"] == "surveying"


async def test_detractor_alert_and_typed_answers(harness: Harness) -> None:
    await handed_off(harness)
    await harness.agent_does(TAKE)
    await harness.agent_does(RESOLVE)
    await harness.say("bof")
    assert "nombre de 0 à 10" in harness.channel.last()["text"]
    await harness.say("11")
    assert "nombre de 0 à 10" in harness.channel.last()["text"]
    await harness.say("trois")
    assert any("Détracteur" in text and "3/10" in text for text, _ in harness.desk.alerts)
    await harness.say("super")
    assert "smileys" in harness.channel.last()["text"]
    await harness.say("2")
    await harness.say("Trop long à répondre")
    survey = await harness.row("SELECT nps, csat, comment FROM surveys")
    assert tuple(survey) == (3, 2, "Trop long à répondre")


async def test_typed_nps_forms(harness: Harness) -> None:
    await harness.say("Où trouver ma facture ?")
    await harness.press("Oui, merci")
    await harness.say("8/10")
    assert (await harness.row("SELECT nps FROM surveys"))["nps"] == 8


async def test_stale_and_foreign_buttons_are_refused(harness: Harness) -> None:
    await harness.say("Où trouver ma facture ?")
    await harness.press("Oui, merci")
    old_nps = harness.channel.last_tokens()["7"]
    await harness.press("7")
    again = await harness.press("7", token=old_nps)
    assert not again.ok
    assert again.notice == "Cette question est close."
    assert (await harness.row("SELECT nps FROM surveys"))["nps"] == 7
    await harness.say("Quel est le délai de livraison ?", user="99")
    other = harness.channel.last_tokens(harness.address("99"))["Oui, merci"]
    stolen = await harness.press("Oui, merci", token=other)  # customer 42 presses 99's button
    assert not stolen.ok
    assert (await conversation(harness, 2))["state"] == "bot"
    forged = await harness.press("x", token="c999:nps:10")
    assert not forged.ok


async def test_stranger_cannot_take_or_relay(harness: Harness) -> None:
    thread = await handed_off(harness)
    refused = await harness.agent_does(TAKE, agent="U_STRANGER")
    assert not refused.ok
    assert refused.notice == "Réservé aux agents du service client."
    refused = await harness.agent_says("hello", agent="U_STRANGER", thread=thread)
    assert not refused.ok
    assert "hello" not in harness.channel.texts()
    assert (await conversation(harness))["state"] == "queued"


async def test_second_agent_cannot_take_a_taken_conversation(harness: Harness) -> None:
    await handed_off(harness)
    assert (await harness.agent_does(TAKE)).ok
    second = await harness.agent_does(TAKE, agent="U_AGENT2")
    assert not second.ok
    assert "U_Agent" in (second.notice or "")


async def test_transfer_back_to_queue(harness: Harness) -> None:
    await handed_off(harness)
    await harness.agent_does(TAKE)
    assert (await harness.agent_does(TRANSFER)).ok
    conv = await conversation(harness)
    assert conv["state"] == "queued"
    assert conv["agent_key"] is None
    assert (await harness.agent_does(TAKE, agent="U_AGENT2")).ok
    assert (await conversation(harness))["agent_key"] == "slack:U_AGENT2"


async def test_redelivered_message_is_processed_once(harness: Harness) -> None:
    first = await harness.say("Où trouver ma facture ?", dedup_key="telegram:update:7")
    again = await harness.say("Où trouver ma facture ?", dedup_key="telegram:update:7")
    assert not first.duplicate
    assert again.duplicate
    assert len(harness.channel.texts()) == 1
    messages = await harness.row("SELECT COUNT(*) AS n FROM messages WHERE direction = 'in'")
    assert messages["n"] == 1


async def test_redelivery_after_close_opens_nothing(harness: Harness) -> None:
    await harness.say("Où trouver ma facture ?", dedup_key="telegram:update:8")
    await harness.press("Oui, merci")
    await harness.tick(timedelta(days=2))  # survey expired: conversation closed
    await harness.say("Où trouver ma facture ?", dedup_key="telegram:update:8")
    count = await harness.row("SELECT COUNT(*) AS n FROM conversations")
    assert count["n"] == 1


async def test_media_in_bot_state_then_relayed_at_handoff(harness: Harness) -> None:
    photo = Media("photo", "telegram", "42", "77", file_id="F1")
    await harness.say("", media=photo)
    assert "que du texte" in harness.channel.last()["text"]
    await harness.say("", command="agent")
    thread, t = harness.desk.only_thread()
    assert ("media", "photo") in t.posts
    await harness.agent_does(TAKE)
    await harness.agent_says("voici l'étiquette", media=Media("document", "slack", "C", "9"))
    assert harness.channel.ops("send_media")[-1]["caption"] == "voici l'étiquette"


async def test_stateless_replies_open_no_conversation(harness: Harness) -> None:
    await harness.say("", command="start")
    assert harness.channel.last()["text"].startswith("Bonjour")
    await harness.say("   ")
    assert "pas reçu de texte" in harness.channel.last()["text"]
    await harness.say("", command="frobnicate")
    assert "/frobnicate" in harness.channel.last()["text"]
    assert (await harness.row("SELECT COUNT(*) AS n FROM conversations"))["n"] == 0


async def test_huge_message_is_stored_whole_and_answered(harness: Harness) -> None:
    text = "Quel est le délai de livraison ? " + "x" * 20_000
    await harness.say(text)
    stored = await harness.row("SELECT length(text) AS n FROM messages WHERE direction = 'in'")
    assert stored["n"] == len(text)
    assert harness.channel.texts()


async def test_english_customer_gets_english(harness: Harness) -> None:
    await harness.say("How long does delivery take?", lang="en-GB", user="7")
    assert "Did this answer solve your problem?" in harness.channel.last()["text"]


async def test_handoff_outside_business_hours_says_when(tmp_path: Path) -> None:
    friday_evening = datetime(2026, 11, 27, 19, 0, tzinfo=UTC)  # 20:00 in Paris
    hours = {d: "09:00-12:30,14:00-18:00" for d in ("mon", "tue", "wed", "thu", "fri")}
    settings = make_settings(tmp_path / "h.db", business_hours=hours)
    h = Harness(settings, FakeClock(friday_evening))
    await h.start()
    try:
        await h.say("", command="agent")
        text = h.channel.last()["text"]
        assert "lundi 30 novembre à 09:00" in text
        await h.tick(timedelta(hours=12))  # still the weekend: nobody abandons
        assert (await conversation(h))["state"] == "queued"
        h.clock.set(datetime(2026, 11, 30, 8, 14, tzinfo=UTC))  # Monday 09:14 Paris
        await h.tick(timedelta(0))
        assert (await conversation(h))["state"] == "queued"
        await h.tick(timedelta(minutes=2))  # 15 working minutes have passed
        assert (await conversation(h))["abandon_reason"] == "timeout"
    finally:
        await h.stop()


async def test_delivery_retried_after_transient_failure(harness: Harness) -> None:
    harness.channel.fail_next(TransientDeliveryError("429", retry_after=0.01))
    await harness.say("Où trouver ma facture ?")
    assert len(harness.channel.texts()) == 1
    row = await harness.row("SELECT attempts, sent_at FROM outbox")
    assert row["attempts"] == 2
    assert row["sent_at"] is not None


async def test_a_delivery_record_waits_out_a_locked_database(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The send went out: its record must be written once the lock is gone, not lost."""
    write = harness.store.outbox_sent
    refused: list[int] = []

    async def locked_once(*args: Any) -> Any:
        if not refused:
            refused.append(1)
            raise DatabaseLockedError("database is locked by another process")
        return await write(*args)

    monkeypatch.setattr(harness.store, "outbox_sent", locked_once)
    await harness.say("Où trouver ma facture ?")
    assert refused == [1]
    assert len(harness.channel.texts()) == 1  # sent once, not again for the retried record
    row = await harness.row("SELECT attempts, sent_at FROM outbox")
    assert row["sent_at"] is not None


def test_impossible_transition_raises() -> None:
    with pytest.raises(InvalidTransitionError, match="no transition from 'closed' to 'bot'"):
        check_transition(5, State.CLOSED, State.BOT)
    with pytest.raises(InvalidTransitionError):
        check_transition(5, State.BOT, State.ASSIGNED)
    check_transition(5, State.QUEUED, State.ASSIGNED)


async def test_short_yes_without_a_pending_question_is_not_a_miss(harness: Harness) -> None:
    await harness.say("oui")
    await harness.say("non")
    conv = await conversation(harness)
    assert conv["state"] == "bot"
    assert conv["misses"] == 0
    assert harness.channel.last()["text"] == "Très bien. Quelle est votre question ?"


async def test_transfer_to_a_non_agent_is_refused(harness: Harness) -> None:
    from bot.conversation.model import Agent

    await handed_off(harness)
    await harness.agent_does(TAKE)
    refused = await harness.agent_does(TRANSFER, target=Agent("slack", "U_STRANGER", "Bob"))
    assert not refused.ok
    assert refused.notice == "Bob n'est pas un agent : transfert impossible."
    moved = await harness.agent_does(TRANSFER, target=Agent("slack", "U_AGENT2", "Zoé"))
    assert moved.ok
    assert (await conversation(harness))["agent_key"] == "slack:U_AGENT2"


async def test_failed_thread_never_blocks_the_customer_side(harness: Harness) -> None:
    from bot.errors import PermanentDeliveryError

    harness.desk.fail_next(PermanentDeliveryError("channel_not_found"))
    await harness.say("", command="agent")
    assert "conseiller" in harness.channel.last()["text"]
    failed = await harness.row("SELECT COUNT(*) AS n FROM outbox WHERE failed_at IS NOT NULL")
    assert failed["n"] >= 1
    await harness.say("Il y a quelqu'un ?")  # the lane moved on: nothing is stuck
    pending = await harness.row(
        "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
    )
    assert pending["n"] == 0


async def test_leaving_while_served_closes_without_abandonment(harness: Harness) -> None:
    await handed_off(harness)
    await harness.agent_does(TAKE)
    await harness.agent_says("C'est réglé de mon côté.")
    await harness.leaves(LeaveReason.BLOCKED)
    conv = await conversation(harness)
    assert conv["state"] == "closed"
    assert conv["close_reason"] == "customer_left"
    assert conv["abandoned_at"] is None
    assert harness.desk.only_thread()[1].closed


async def test_timers_follow_the_state(harness: Harness) -> None:
    async def kinds() -> set[str]:
        assert harness.db is not None
        return {r["kind"] for r in await harness.db.fetchall("SELECT kind FROM timers")}

    await harness.say("Où trouver ma facture ?")
    assert await kinds() == {"idle"}
    await harness.press("Parler à un conseiller")
    assert await kinds() == {"abandon", "remind"}
    await harness.agent_does(TAKE)
    await harness.agent_says("Bonjour")
    assert await kinds() == set()
    await harness.agent_does(RESOLVE)
    assert await kinds() == {"survey_expiry"}
    await harness.press("8")
    await harness.press("🙂")
    await harness.press("Passer")
    assert await kinds() == set()


async def test_conversation_locks_are_released_after_each_step(harness: Harness) -> None:
    assert harness.engine is not None
    await harness.say("Où trouver ma facture ?")
    await harness.say("Quel est le délai de livraison ?", user="77")
    await handed_off(harness)
    await harness.agent_does(TAKE)
    await harness.tick(timedelta(minutes=1))
    assert len(harness.engine.locks) == 0  # idle conversations hold no lock object


async def test_a_customer_message_reads_its_conversation_with_the_key(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the conversation's key is a round trip to the lock connection; the
    open conversation comes back with it (``Follow``), so a message that the bot answers
    takes no trip to the read connection. Each message still sees what the one before
    wrote (its misses, its state), on both engines."""
    h = harness
    trips: list[str] = []
    reader = getattr(h.db, "_reader", None)
    if reader is not None:
        run = reader.run
        monkeypatch.setattr(reader, "run", lambda *a: trips.append(str(a[1:])) or run(*a))
    await h.say("Bonjour, quel est le délai de livraison ?")
    trips.clear()
    await h.say("zorglub quantique ?")  # not understood: a miss, written by this step
    await h.say("Quel est le délai de livraison ?")  # answered: the misses start again
    assert trips == []
    assert (await conversation(h))["misses"] == 0
    await h.say("zorglub quantique ?")
    await h.say("xylophone intergalactique ?")  # the second miss in a row hands off
    assert (await conversation(h))["state"] == State.QUEUED.value
