"""Follow-ups through the engine: opened by a detractor's survey, owned, due in business
time, contacted, closed with a note, reminded once a business day, across a restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.clock import to_ms
from bot.config import settings_from_mapping
from bot.conversation.model import Agent, AgentActionKind, FollowupAction, Outcome
from tests.fakes.clock import FakeClock
from tests.harness import Harness, make_settings

PARIS = ZoneInfo("Europe/Paris")
HOURS = {
    "mon": "09:00-12:30,14:00-18:00",
    "tue": "09:00-12:30,14:00-18:00",
    "wed": "09:00-12:30,14:00-18:00",
    "thu": "09:00-12:30,14:00-18:00",
    "fri": "09:00-12:30,14:00-18:00",
}
BUTTON_LABELS = ["Je m'en charge", "Contacté", "Résolu", "Injoignable"]


def paris(day: int, hour: int, minute: int = 0) -> datetime:
    """A local instant of November 2026 (the 23rd is a Monday)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=PARIS)


@pytest.fixture
async def office(tmp_path: Path) -> AsyncIterator[Harness]:
    """Business hours in Paris; the clock starts on Monday 23 November, 11:00 local."""
    clock = FakeClock(paris(23, 11).astimezone(UTC))
    h = Harness(make_settings(tmp_path / "f.db", business_hours=HOURS), clock)
    await h.start()
    yield h
    await h.stop()


async def served_and_rated(h: Harness, nps: str, *, user: str = "42") -> None:
    """Customer ``user`` is served by U_AGENT (Paul), resolved, and answers ``nps``."""
    await h.say("Je veux parler à un conseiller", user=user)
    thread = (await h.row("SELECT desk_thread FROM conversations ORDER BY id DESC"))[0]
    await h.agent_does(AgentActionKind.TAKE, thread=thread)
    await h.agent_does(AgentActionKind.RESOLVE, thread=thread)
    await h.press(nps, user=user)


async def followup(h: Harness, fid: int = 1) -> dict[str, Any]:
    row = await h.row("SELECT * FROM followups WHERE id = ?", fid)
    assert row is not None, f"no follow-up #{fid}"
    return dict(row)


async def followup_events(h: Harness) -> list[tuple[str, str | None, dict[str, Any]]]:
    assert h.db is not None
    rows = await h.db.fetchall(
        "SELECT kind, actor, data FROM events WHERE kind LIKE 'followup_%' ORDER BY id"
    )
    return [(r["kind"], r["actor"], json.loads(r["data"] or "{}")) for r in rows]


def followup_alerts(h: Harness) -> list[tuple[str, list[str], list[str]]]:
    """(text, button labels, button tokens) of every desk alert that carries buttons."""
    out = []
    for (text, _thread), buttons in zip(h.desk.alerts, h.desk.alert_buttons, strict=True):
        if buttons:
            out.append((text, [b.label for b in buttons], [b.token for b in buttons]))
    return out


async def act(h: Harness, step: str, *, agent: str = "U_AGENT", fid: int = 1,
              note: str | None = None) -> Outcome:  # fmt: skip
    assert h.engine is not None
    event = FollowupAction(Agent("slack", agent, agent.title()), fid, step, h.key(), note)
    outcome = await h.engine.handle(event)
    await h.drain()
    return outcome


# ---------------------------------------------------------------- opening


async def test_detractor_nps_opens_one_followup_for_the_agent_due_in_two_business_days(
    office: Harness,
) -> None:
    h = office
    await served_and_rated(h, "3")
    f = await followup(h)
    assert (f["nps"], f["csat"], f["status"]) == (3, None, "open")
    assert (f["owner_key"], f["owner_name"]) == ("slack:U_AGENT", "U_Agent")
    assert f["opened_at"] == to_ms(paris(23, 11))
    assert f["due_at"] == to_ms(paris(25, 11))  # Monday 11:00 + 2 business days
    assert f["remind_at"] == f["due_at"]
    [(text, labels, tokens)] = followup_alerts(h)
    assert "Détracteur : Marie a donné 3/10 (conversation #1, U_Agent)" in text
    assert (
        "Suivi #1 — responsable : U_Agent ; à recontacter avant mercredi 25 novembre à 11:00"
        in text
    )
    assert labels == BUTTON_LABELS
    assert tokens == ["a1:fu_take", "a1:fu_contacted", "a1:fu_resolved", "a1:fu_unreachable"]
    # The unhappy smiley that follows belongs to the same survey: recorded, not reopened.
    await h.press("🙁")
    f = await followup(h)
    assert (f["nps"], f["csat"]) == (3, 2)
    assert (await h.row("SELECT COUNT(*) FROM followups"))[0] == 1
    assert len(followup_alerts(h)) == 1
    [(kind, actor, data)] = await followup_events(h)
    assert (kind, actor) == ("followup_opened", "bot")
    assert (data["nps"], data["owner"]) == (3, "slack:U_AGENT")


async def test_unhappy_smiley_opens_an_unassigned_followup_when_nps_did_not(
    harness: Harness,
) -> None:
    h = harness
    await h.say("Où trouver ma facture ?")  # answered by the bot: nobody served
    await h.press("Oui, merci")
    await h.press("8")
    assert (await h.row("SELECT COUNT(*) FROM followups"))[0] == 0
    await h.press("😡")
    f = await followup(h)
    assert (f["nps"], f["csat"], f["owner_key"], f["status"]) == (8, 1, None, "open")
    [(text, labels, _tokens)] = followup_alerts(h)
    assert "Client insatisfait : Marie a donné 😡 (1/5) (conversation #1)" in text
    assert "responsable : personne (prenez-le)" in text
    assert labels == BUTTON_LABELS


async def test_satisfied_answers_open_nothing(harness: Harness) -> None:
    h = harness
    await h.say("Où trouver ma facture ?")
    await h.press("Oui, merci")
    await h.press("7")
    await h.press("😐")
    await h.press("Passer")
    assert (await h.row("SELECT COUNT(*) FROM followups"))[0] == 0
    assert h.desk.alerts == []


async def test_followups_off_keeps_the_plain_alert(tmp_path: Path, clock: FakeClock) -> None:
    h = Harness(make_settings(tmp_path / "o.db", followup={"enabled": False}), clock)
    await h.start()
    try:
        await served_and_rated(h, "2")
        assert (await h.row("SELECT COUNT(*) FROM followups"))[0] == 0
        assert [b for b in h.desk.alert_buttons] == [()]
        assert "Détracteur" in h.desk.alerts[0][0]
    finally:
        await h.stop()


def test_due_after_counts_business_days_and_else_business_time() -> None:
    settings = settings_from_mapping({"business_hours": HOURS})
    cal = settings.calendar()
    utc = lambda d: d.astimezone(UTC)  # noqa: E731
    assert cal.add_business_days(utc(paris(27, 17)), 2) == utc(
        datetime(2026, 12, 1, 17, tzinfo=PARIS)
    )
    assert cal.add_business_days(utc(paris(28, 10)), 2) == utc(
        datetime(2026, 12, 2, 9, tzinfo=PARIS)
    )
    assert cal.add_business_days(utc(paris(23, 13)), 2) == utc(paris(25, 14))  # lunch break
    assert settings.followup.due_after == timedelta(days=2)
    hours = settings_from_mapping({"followup": {"due_after": "4h"}}).followup.due_after
    assert hours == timedelta(hours=4)


# ---------------------------------------------------------------- contact


async def test_an_agent_message_to_the_customer_in_a_new_conversation_counts_as_contact(
    office: Harness,
) -> None:
    h = office
    await served_and_rated(h, "4")
    await h.press("😐")
    await h.press("Passer")
    h.clock.advance(timedelta(hours=1))
    await h.say("Je veux parler à un conseiller")  # conversation #2, a new thread
    thread = (await h.row("SELECT desk_thread FROM conversations WHERE id = 2"))[0]
    await h.agent_says("// il avait noté 4, attention", agent="U_AGENT2", thread=thread)
    assert (await followup(h))["status"] == "open"  # a note reaches nobody
    await h.agent_says("Bonjour Marie, je reviens vers vous.", agent="U_AGENT2", thread=thread)
    f = await followup(h)
    assert (f["status"], f["contacted_at"], f["remind_at"]) == (
        "contacted",
        to_ms(paris(23, 12)),
        None,
    )
    assert f["owner_key"] == "slack:U_AGENT"  # the owner stays who served
    kinds = [(kind, actor, data.get("via")) for kind, actor, data in await followup_events(h)]
    assert kinds[-1] == ("followup_contacted", "slack:U_AGENT2", "message")
    await h.agent_says("Encore un message", agent="U_AGENT2", thread=thread)
    assert (await followup(h))["contacted_at"] == to_ms(paris(23, 12))  # the first contact


# ---------------------------------------------------------------- agents' steps


async def test_buttons_take_contacted_resolved_then_the_note(office: Harness) -> None:
    h = office
    await served_and_rated(h, "1")
    [(_text, _labels, tokens)] = followup_alerts(h)
    take, contacted, resolved, _unreachable = tokens
    refused = await h.agent_presses(take, agent="U_STRANGER")
    assert (refused.ok, refused.notice) == (False, "Réservé aux agents du service client.")
    assert (await followup(h))["owner_key"] == "slack:U_AGENT"

    outcome = await h.agent_presses(take, agent="U_AGENT2")
    assert (outcome.ok, outcome.notice, outcome.chosen) == (
        True,
        "Suivi #1 : pris en charge par U_Agent2.",
        None,
    )
    assert (await followup(h))["owner_key"] == "slack:U_AGENT2"
    h.clock.advance(timedelta(minutes=30))
    outcome = await h.agent_presses(contacted, agent="U_AGENT2")
    assert outcome.ok
    f = await followup(h)
    assert (f["status"], f["contacted_at"]) == ("contacted", to_ms(paris(23, 11, 30)))
    h.clock.advance(timedelta(minutes=30))
    outcome = await h.agent_presses(resolved, agent="U_AGENT2")
    assert outcome.notice == (
        "Suivi #1 : résolu par U_Agent2. Ajoutez le résultat : !followup 1 note <texte>."
    )
    f = await followup(h)
    assert (f["status"], f["closed_at"], f["contacted_at"]) == (
        "resolved", to_ms(paris(23, 12)), to_ms(paris(23, 11, 30)))  # fmt: skip
    outcome = await act(h, "note", agent="U_AGENT2", note="Bon d'achat de 10 € envoyé")
    assert (outcome.ok, outcome.notice) == (True, "Suivi #1 : note enregistrée.")
    assert (await followup(h))["note"] == "Bon d'achat de 10 € envoyé"
    again = await h.agent_presses(contacted)
    assert (again.ok, again.notice) == (False, "Le suivi #1 est déjà clos (resolved).")
    thread = (await h.row("SELECT desk_thread FROM conversations WHERE id = 1"))[0]
    posts = [text for _a, text in h.desk.threads[thread].posts]
    assert "Suivi #1 : note enregistrée. — Bon d'achat de 10 € envoyé" in posts
    steps = [kind for kind, _actor, _data in await followup_events(h)]
    assert steps == ["followup_opened", "followup_take", "followup_contacted",
                     "followup_resolved", "followup_note"]  # fmt: skip


async def test_unreachable_with_its_note_in_one_command(office: Harness) -> None:
    h = office
    await served_and_rated(h, "0")
    outcome = await act(h, "unreachable", note="Trois appels sans réponse")
    assert outcome.notice == "Suivi #1 : client injoignable (U_Agent)."
    f = await followup(h)
    assert (f["status"], f["note"], f["contacted_at"]) == (
        "unreachable",
        "Trois appels sans réponse",
        None,
    )
    bad = await act(h, "maybe")
    assert (bad.ok, bad.notice) == (
        False, "Usage : !followup ID take|contacted|resolved|unreachable|note [note]")  # fmt: skip
    unknown = await act(h, "take", fid=99)
    assert (unknown.ok, unknown.notice) == (False, "Suivi #99 inconnu.")
    stranger = await act(h, "note", agent="U_STRANGER", note="x")
    assert not stranger.ok
    assert (await followup(h))["note"] == "Trois appels sans réponse"


async def test_a_redelivered_step_is_applied_once(office: Harness) -> None:
    h = office
    await served_and_rated(h, "5")
    assert h.engine is not None
    event = FollowupAction(Agent("slack", "U_AGENT2", "Lea"), 1, "take", "slack:action:1")
    assert (await h.engine.handle(event)).ok
    assert (await h.engine.handle(event)).duplicate
    assert [k for k, _a, _d in await followup_events(h)].count("followup_take") == 1


# ---------------------------------------------------------------- reminders


async def reminders(h: Harness) -> list[str]:
    return [text for text, _labels, _tokens in followup_alerts(h) if text.startswith("⏰")]


async def test_overdue_followups_are_reminded_once_a_business_day_across_a_restart(
    office: Harness,
) -> None:
    h = office
    await served_and_rated(h, "2")  # Monday 23, 11:00: due Wednesday 25, 11:00
    assert h.engine is not None

    async def at(moment: datetime) -> None:
        h.clock.set(moment.astimezone(UTC))
        assert h.engine is not None
        await h.engine.sweep()
        await h.drain()

    await at(paris(25, 10, 59))
    assert await reminders(h) == []
    await at(paris(25, 11))
    [first] = await reminders(h)
    assert first == (
        "⏰ Suivi #1 en retard : Marie (NPS 2/10) n'a pas été recontacté (échéance mercredi "
        "25 novembre à 11:00) ; responsable : U_Agent."
    )
    assert h.desk.alerts[-1][1] is None  # to the whole desk, not the closed thread
    assert h.desk.alert_buttons[-1][0].token == "a1:fu_take"
    for hour in (12, 15, 17):
        await at(paris(25, hour))
    assert len(await reminders(h)) == 1  # once that business day
    await h.restart()
    await at(paris(26, 8, 59))
    assert len(await reminders(h)) == 1
    await at(paris(26, 9))  # Thursday's opening
    assert len(await reminders(h)) == 2
    await h.restart()
    await at(paris(26, 16))
    assert len(await reminders(h)) == 2  # the stored time survives the restart
    for moment in (paris(27, 9, 30), paris(28, 10), paris(29, 10)):  # Fri, Sat, Sun
        await at(moment)
    assert len(await reminders(h)) == 3  # Friday only: the weekend is not business time
    await at(paris(30, 9))
    assert len(await reminders(h)) == 4
    kinds = [k for k, _a, _d in await followup_events(h)]
    assert kinds.count("followup_reminder") == 4
    await act(h, "contacted")
    await at(datetime(2026, 12, 1, 9, tzinfo=PARIS))
    assert len(await reminders(h)) == 4  # contacted: no longer overdue
    f = await followup(h)
    assert f["remind_at"] is None


async def test_an_erased_customer_is_not_reminded_and_their_note_goes(office: Harness) -> None:
    h = office
    await served_and_rated(h, "3")
    await h.press("🙁")
    await h.press("Passer")
    await act(h, "take", note="Client très fâché, appeler M. Dupont")
    assert (await followup(h))["note"] == "Client très fâché, appeler M. Dupont"
    await h.say("", command="forget")
    await h.press("Oui, effacer mes données")
    assert (await followup(h))["note"] is None
    h.clock.set(paris(25, 11).astimezone(UTC))
    assert h.engine is not None
    await h.engine.sweep()
    await h.drain()
    assert await reminders(h) == []
    f = await followup(h)
    assert (f["status"], f["remind_at"]) == ("unreachable", None)
