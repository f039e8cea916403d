"""End to end on Telegram: "did you mean …?" buttons through the local Bot API server.

The whole product (``SupportApp``, the shipped knowledge base with its encoder, the real
python-telegram-bot over HTTP). The shipped knowledge base rarely hesitates, so one
message is made ambiguous on purpose: the real match is kept (its real candidates), only
its verdict is changed to "unsure between these". Everything after that — the buttons
Telegram shows, the callback data, the press, the answer, the refusal of a stale button,
what the database records — is the product's own.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.knowledge import KbMatch, KnowledgeBase
from tests.test_e2e_telegram import DID_IT_HELP, QUESTION_CLOSED, World, buttons, telegram_world

UNSURE = "et pour mon colis alors ?"
DID_YOU_MEAN = "Voulez-vous dire :"
NOT_SURE = "Je ne suis pas sûr d'avoir compris. Pouvez-vous reformuler"


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    real_match = KnowledgeBase.match

    def match(self: KnowledgeBase, text: str, language: str | None = None) -> KbMatch:
        found = real_match(self, text, language)
        if text == UNSURE:
            return dataclasses.replace(found, answered=False, ambiguous=True)
        return found

    monkeypatch.setattr(KnowledgeBase, "match", match)
    async with telegram_world(tmp_path) as w:
        yield w


async def test_did_you_mean_buttons_pick_refuse_stale_and_something_else(world: World) -> None:
    await world.start()
    tg, ana = world.tg, world.ana
    await tg.customer_sends(ana, UNSURE)
    first = prompt = await world.to_customer(ana, DID_YOU_MEAN)
    cid = world.row("SELECT id FROM conversations")["id"]
    rows = buttons(prompt)
    candidates = rows[:-1]
    assert len(candidates) >= 2
    assert all(len(row) == 1 for row in candidates)
    assert [label for label, _ in rows[-1]] == ["Autre chose", "Parler à un conseiller"]
    assert rows[-1][1][1] == f"c{cid}:help:agent"
    for number, [(label, data)] in enumerate(candidates, start=1):
        assert data.startswith(f"c{cid}:pick:")
        assert data.endswith(f".{number}")
        assert len(data.encode()) <= 64
        assert f"• {label}" in prompt["text"]

    # Ana types the question again instead: a new list; the first one's buttons are stale.
    world.clock.advance(timedelta(seconds=20))
    mark = tg.mark()
    await tg.customer_sends(ana, UNSURE)
    prompt = await world.to_customer(ana, DID_YOU_MEAN, since=mark)
    await world.settle()
    events_before = world.row("SELECT COUNT(*) AS n FROM events")["n"]
    stale = await tg.press_button(ana, first, candidates[0][0][1])
    assert await world.answer_to(stale) == {"text": QUESTION_CLOSED, "show_alert": True}
    await world.settle()
    assert world.row("SELECT COUNT(*) AS n FROM events")["n"] == events_before

    # She picks the first candidate of the new list: answered like a sure answer.
    candidates = buttons(prompt)[:-1]
    label, data = candidates[0][0]
    mark = tg.mark()
    press = await tg.press_button(ana, prompt, data)
    assert await world.answer_to(press) == {"text": None, "show_alert": False}
    answer = await world.to_customer(ana, DID_IT_HELP, since=mark)
    assert [lbl for row in buttons(answer) for lbl, _ in row] == [
        "Oui, merci",
        "Non",
        "Parler à un conseiller",
    ]
    await tg.wait_for("editMessageText", lambda c: c.params["message_id"] == prompt["message_id"])
    assert tg.message(ana.id, prompt["message_id"])["text"].endswith(f"\n→ {label}")
    await world.settle()
    picked = world.rows("SELECT outcome, entry, message_id FROM kb_questions ORDER BY id")[-1]
    assert picked["outcome"] == "picked"
    asked = world.rows("SELECT id FROM messages WHERE text = ? ORDER BY id", UNSURE)[-1]["id"]
    assert picked["message_id"] == asked
    event = json.loads(world.row("SELECT data FROM events WHERE kind = 'kb_pick'")["data"])
    assert (event["message"], event["entry"]) == (asked, picked["entry"])
    answered: Any = json.loads(
        world.row("SELECT data FROM events WHERE kind = 'bot_answered'")["data"]
    )
    assert (answered["entry"], answered["via"]) == (picked["entry"], "pick")

    # Asked once more, "Autre chose": a miss, the bot asks to rephrase and offers a person.
    world.clock.advance(timedelta(seconds=20))
    mark = tg.mark()
    await tg.customer_sends(ana, UNSURE)
    third = await world.to_customer(ana, DID_YOU_MEAN, since=mark)
    mark = tg.mark()
    other = dict(buttons(third)[-1])["Autre chose"]
    press = await tg.press_button(ana, third, other)
    assert await world.answer_to(press) == {"text": None, "show_alert": False}
    await world.to_customer(ana, NOT_SURE, since=mark)
    await world.settle()
    conv = world.row("SELECT state, misses, awaiting FROM conversations")
    assert tuple(conv) == ("bot", 1, None)
    outcomes = [r["outcome"] for r in world.rows("SELECT outcome FROM kb_questions ORDER BY id")]
    assert outcomes == ["ambiguous", "picked", "other"]
