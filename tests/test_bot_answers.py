"""The bot's answering step: the customer's language, "did you mean …?" and its buttons,
and the record of what the knowledge base could not answer (gaps, picks, weak answers).

Most tests drive the real engine on a real SQLite file with a scripted, recording
knowledge base (what it answers for a text is set by the test), so that each case of
the engine's decision is reached on purpose.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.insights.kpi import Period
from bot.knowledge import Candidate, KbEntry, KbMatch
from storage.kb_questions import KbQuestions
from tests.fakes.clock import FakeClock
from tests.harness import SAMPLE_KB, Harness, make_settings

PICK_DELIVERY = "Quel est le délai de livraison ?"
PICK_REFUND = "Comment être remboursé ?"
OTHER = "Autre chose"
AGENT = "Parler à un conseiller"
CLOSED = "Cette question est close."


class ScriptedAnswerer:
    """A recording fake knowledge base: answers what the test scripted for a text."""

    def __init__(self, entries: tuple[KbEntry, ...] = SAMPLE_KB) -> None:
        self.entries = {e.id: e for e in entries}
        self.script: dict[str, KbMatch] = {}
        self.asked: list[tuple[str, str | None]] = []

    def answers(self, text: str, entry_id: str, language: str | None = None) -> None:
        entry = self.entries[entry_id]
        self.script[text] = KbMatch(entry, 0.9, True, language, (Candidate(entry, 0.9),))

    def hesitates(self, text: str, *entry_ids: str, language: str | None = None) -> None:
        candidates = tuple(Candidate(self.entries[i], 0.7) for i in entry_ids)
        self.script[text] = KbMatch(candidates[0].entry, 0.4, False, language, candidates, True)

    def match(self, text: str, language: str | None = None) -> KbMatch:
        self.asked.append((text, language))
        return self.script.get(text, KbMatch(None, 0.1, False, None))

    def get(self, entry_id: str) -> KbEntry | None:
        return self.entries.get(entry_id)


@pytest.fixture
async def scripted(tmp_path: Path, clock: FakeClock) -> AsyncIterator[tuple[Harness, Any]]:
    kb = ScriptedAnswerer()
    h = Harness(make_settings(tmp_path / "t.db"), clock, kb=kb)
    await h.start()
    yield h, kb
    await h.stop()


async def conversation(h: Harness) -> dict[str, Any]:
    return dict(await h.row("SELECT * FROM conversations ORDER BY id DESC LIMIT 1"))


async def events(h: Harness, kind: str) -> list[dict[str, Any]]:
    assert h.db is not None
    rows = await h.db.fetchall("SELECT data FROM events WHERE kind = ? ORDER BY id", (kind,))
    return [json.loads(r["data"]) if r["data"] else {} for r in rows]


async def questions(h: Harness) -> list[dict[str, Any]]:
    assert h.db is not None
    rows = await h.db.fetchall(
        "SELECT q.*, m.text FROM kb_questions q JOIN messages m ON m.id = q.message_id"
        " ORDER BY q.id"
    )
    return [dict(r) for r in rows]


def whole_day(h: Harness) -> Period:
    now = h.clock.now()
    return Period(now - timedelta(days=1), now + timedelta(days=1))


# ---------------------------------------------------------------------- the customer's language


async def test_an_english_question_in_a_french_conversation_is_answered_in_english(
    harness: Harness,
) -> None:
    """The web widget of a French site (locale fr) and a customer who writes English."""
    await harness.say("How long does delivery take?", lang="fr")
    answer = harness.channel.last()
    assert answer["text"] == "Delivery takes 2-4 days.\n\nDid this answer solve your problem?"
    assert set(harness.channel.last_tokens()) == {"Yes, thanks", "No", "Talk to a person"}
    assert (await conversation(harness))["language"] == "en"
    assert await events(harness, "language") == [{"source": "fr", "target": "en"}]

    await harness.press("No")  # the rest of the conversation is in English too
    assert harness.channel.last()["text"].startswith("I'm putting you through")


async def test_a_french_question_keeps_a_french_conversation(harness: Harness) -> None:
    await harness.say("Quel est le délai de livraison ?", lang="fr")
    assert harness.channel.last()["text"].startswith("Livraison en 2 à 4 jours ouvrés.")
    assert await events(harness, "language") == []


async def test_a_message_that_does_not_tell_its_language_keeps_the_conversations(
    scripted: tuple[Harness, ScriptedAnswerer],
) -> None:
    h, kb = scripted
    kb.answers("Zalando 1234 ?", "invoice", language=None)
    kb.answers("Où trouver ma facture ?", "invoice", language="fr")
    await h.say("Zalando 1234 ?", lang="en-GB")  # the platform's locale breaks the tie
    assert h.channel.last()["text"].startswith("In your account.")
    assert kb.asked == [("Zalando 1234 ?", "en")]
    assert await events(h, "language") == []

    await h.say("Où trouver ma facture ?", lang="en-GB")  # then French, clearly
    assert h.channel.last()["text"].startswith("Votre facture est dans votre compte.")
    assert (await conversation(h))["language"] == "fr"
    assert await events(h, "language") == [{"source": "en", "target": "fr"}]


# ---------------------------------------------------------------------- "did you mean …?"


async def test_did_you_mean_offers_the_candidates_and_a_pick_answers(
    scripted: tuple[Harness, ScriptedAnswerer],
) -> None:
    h, kb = scripted
    kb.hesitates("et mon colis alors", "delivery-time", "refund")
    await h.say("et mon colis alors")
    prompt = h.channel.last()
    assert prompt["text"] == (
        f"Je ne suis pas sûr d'avoir compris. Voulez-vous dire :\n• {PICK_DELIVERY}\n"
        f"• {PICK_REFUND}"
    )
    rows = [[c.label for c in row] for row in prompt["choices"]]
    assert rows == [[PICK_DELIVERY], [PICK_REFUND], [OTHER, AGENT]]
    conv = await conversation(h)
    assert (conv["awaiting"], conv["misses"]) == ("pick", 0)

    outcome = await h.press(PICK_DELIVERY)
    assert outcome.ok
    assert outcome.chosen == PICK_DELIVERY
    answer = h.channel.last()
    assert answer["text"] == (
        "Livraison en 2 à 4 jours ouvrés.\n\nCette réponse a-t-elle résolu votre problème ?"
    )
    assert set(h.channel.last_tokens()) == {"Oui, merci", "Non", AGENT}
    conv = await conversation(h)
    assert (conv["awaiting"], conv["kb_entry"], conv["topic"]) == (
        "help",
        "delivery-time",
        "livraison",
    )
    assert await events(h, "bot_answered") == [
        {"entry": "delivery-time", "topic": "livraison", "via": "pick"}
    ]
    asked = await h.row("SELECT id FROM messages WHERE text = 'et mon colis alors'")
    assert await events(h, "kb_pick") == [
        {
            "message": asked["id"],
            "entry": "delivery-time",
            "candidates": ["delivery-time", "refund"],
        }
    ]
    [question] = await questions(h)
    assert (question["outcome"], question["entry"], question["text"]) == (
        "picked",
        "delivery-time",
        "et mon colis alors",
    )
    picks = await KbQuestions(h.db).picks(whole_day(h))  # type: ignore[arg-type]
    assert [(p.language, p.entry, p.text) for p in picks] == [
        ("fr", "delivery-time", "et mon colis alors")
    ]

    await h.press("Oui, merci")  # the pick then goes on like any answer
    assert (await conversation(h))["state"] == "surveying"


async def test_something_else_is_a_miss_and_hands_off_at_the_configured_count(
    scripted: tuple[Harness, ScriptedAnswerer],
) -> None:
    h, kb = scripted
    kb.hesitates("et mon colis alors", "delivery-time", "refund")
    await h.say("et mon colis alors")
    outcome = await h.press(OTHER)
    assert outcome.ok
    assert outcome.chosen == OTHER
    assert h.channel.last()["text"].startswith("Je ne suis pas sûr d'avoir compris. Pouvez-vous")
    conv = await conversation(h)
    assert (conv["state"], conv["misses"], conv["awaiting"]) == ("bot", 1, None)
    assert await events(h, "bot_missed") == [{"misses": 1, "via": "other"}]
    assert [q["outcome"] for q in await questions(h)] == ["other"]

    h.clock.advance(timedelta(seconds=5))
    await h.say("et mon colis alors")  # misses_before_handoff is 2: the second one hands off
    await h.press(OTHER)
    conv = await conversation(h)
    assert (conv["state"], conv["handoff_reason"], conv["misses"]) == (
        "queued",
        "not_understood",
        2,
    )
    assert [q["outcome"] for q in await questions(h)] == ["other", "other"]


async def test_talk_to_a_person_from_did_you_mean(
    scripted: tuple[Harness, ScriptedAnswerer],
) -> None:
    h, kb = scripted
    kb.hesitates("et mon colis alors", "delivery-time", "refund", "invoice")
    await h.say("et mon colis alors")
    assert len(h.channel.last()["choices"]) == 4  # three candidates, then other / agent
    assert (await h.press(AGENT)).ok
    conv = await conversation(h)
    assert (conv["state"], conv["handoff_reason"]) == ("queued", "requested")
    h.desk.only_thread()  # the agents see it


async def test_stale_pick_buttons_are_refused(
    scripted: tuple[Harness, ScriptedAnswerer],
) -> None:
    h, kb = scripted
    kb.hesitates("et mon colis alors", "delivery-time", "refund")
    kb.hesitates("et le remboursement", "refund", "invoice")
    await h.say("et mon colis alors")
    first = h.channel.last_tokens()
    h.clock.advance(timedelta(seconds=30))
    await h.say("et le remboursement")  # a second question: the first list is stale
    second = h.channel.last_tokens()
    assert set(second) == {PICK_REFUND, "Où trouver ma facture ?", OTHER, AGENT}

    stale = await h.press(PICK_DELIVERY, token=first[PICK_DELIVERY])
    assert (stale.ok, stale.notice) == (False, CLOSED)
    same_place = await h.press(PICK_REFUND, token=first[PICK_REFUND])  # same slot, older list
    assert (same_place.ok, same_place.notice) == (False, CLOSED)
    assert (await conversation(h))["awaiting"] == "pick"

    assert (await h.press(PICK_REFUND, token=second[PICK_REFUND])).ok
    again = await h.press(OTHER, token=second[OTHER])  # once answered, the list is closed
    assert (again.ok, again.notice) == (False, CLOSED)
    forged = await h.press("x", token=second[PICK_REFUND].rsplit(".", 1)[0] + ".9")
    assert not forged.ok
    assert await events(h, "kb_pick") == [
        {
            "message": (
                await h.row("SELECT id FROM messages WHERE text = ?", "et le remboursement")
            )["id"],
            "entry": "refund",
            "candidates": ["refund", "invoice"],
        }
    ]
    assert len(await events(h, "bot_answered")) == 1


# ---------------------------------------------------------------------- the to-do list


async def test_misses_and_unhelpful_answers_are_recorded_by_reference(
    scripted: tuple[Harness, ScriptedAnswerer],
) -> None:
    h, kb = scripted
    kb.answers("c koi le delai", "delivery-time")
    kb.answers("ma facture svp", "invoice")
    await h.say("vous livrez en Allemagne ?")  # not in the knowledge base: a miss
    await h.say("c koi le delai")
    await h.press("Non")  # the answer did not help (button)
    assert (await conversation(h))["handoff_reason"] == "not_helpful"

    h.clock.advance(timedelta(seconds=5))
    await h.say("ma facture svp", user="7")
    await h.say("non", user="7")  # ... typed
    assert (await conversation(h))["handoff_reason"] == "not_helpful"

    rows = await questions(h)
    assert [(q["text"], q["outcome"], q["entry"], q["helped"]) for q in rows] == [
        ("vous livrez en Allemagne ?", "missed", None, None),
        ("c koi le delai", "answered", "delivery-time", 0),
        ("ma facture svp", "answered", "invoice", 0),
    ]
    assert all(q["decided_at"] is not None for q in rows[1:])
    queries = KbQuestions(h.db)  # type: ignore[arg-type]
    gaps = await queries.gaps(whole_day(h))
    assert [(g.text, g.reason, g.entry) for g in gaps] == [
        ("vous livrez en Allemagne ?", "missed", None),
        ("c koi le delai", "not_helpful", "delivery-time"),
        ("ma facture svp", "not_helpful", "invoice"),
    ]
    weak = await queries.weak_answers(whole_day(h))
    assert [(w.entry, w.not_helpful, w.answered) for w in weak] == [
        ("delivery-time", 1, 1),
        ("invoice", 1, 1),
    ]


async def test_gaps_keep_to_the_period_and_drop_erased_messages(
    scripted: tuple[Harness, ScriptedAnswerer],
) -> None:
    h, kb = scripted
    await h.say("vous livrez en Allemagne ?")
    h.clock.advance(timedelta(days=3))
    await h.say("et en Suisse ?", user="7")
    queries = KbQuestions(h.db)  # type: ignore[arg-type]
    assert [g.text for g in await queries.gaps(whole_day(h))] == ["et en Suisse ?"]
    everything = Period(h.clock.now() - timedelta(days=10), h.clock.now() + timedelta(days=1))
    assert len(await queries.gaps(everything)) == 2
    assert h.db is not None
    await h.db.executemany(
        "UPDATE messages SET text = '' WHERE text = ?", [("vous livrez en Allemagne ?",)]
    )
    assert [g.text for g in await queries.gaps(everything)] == ["et en Suisse ?"]
