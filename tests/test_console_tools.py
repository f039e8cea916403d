"""The console's agent tools over real HTTP: saved replies (picker API and the action), the
agent's name on the widget, the customer's history and the conversation search."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import SupportApp
from bot.config import Secrets
from handlers.web import WebTransport
from tests.fakes.clock import FakeClock
from tests.test_app import settings_for
from tests.test_web_channel import KEYS, Served, Visitor, queued_conversation
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    web = {"port": 0, "rate_limit": "50/10s"}
    replies = {"path": str(ROOT / "replies.yaml")}
    settings = settings_for(tmp_path, web=web, desk="web", replies=replies)
    app = SupportApp(settings, Secrets(web_agent_keys=KEYS), clock=FakeClock())
    await app.start()
    transport = next(t for t in app.transports if isinstance(t, WebTransport))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        try:
            yield Served(app, transport, http)
        finally:
            await app.stop()


async def get(served: Served, path: str, status: int = 200, **auth: Any) -> Any:
    headers = served.auth() if not auth.get("anonymous") else {}
    async with served.http.get(served.base + path, headers=headers) as resp:
        assert resp.status == status, await resp.text()
        return await resp.json(content_type=None)


async def test_saved_reply_from_the_console_is_labelled_with_the_agent_name(
    served: Served,
) -> None:
    token = await served.token()
    visitor = await served.widget(token)
    await visitor.say("je veux parler à un conseiller")
    await eventually(lambda: visitor.has("conseiller") and len(visitor.lines()) >= 2)
    (conv,) = await served.conversations()
    cid = int(conv["id"])
    listed = (await get(served, "/api/agent/replies"))["replies"]
    assert {"bonjour", "merci", "retour"} <= {r["shortcut"] for r in listed}
    assert all(set(r["text"]) == {"fr", "en"} for r in listed)
    before = len(visitor.lines())

    shown = await served.act(cid, "saved", text="")  # the list: for the agent only
    assert shown["ok"]
    assert "bonjour — Greeting" in shown["notice"]
    refused = await served.act(cid, "saved", text="bonjuor", status=409)
    assert "Vouliez-vous dire : bonjour" in refused["notice"]
    assert len(visitor.lines()) == before

    assert (await served.act(cid, "saved", text="bonjour"))["ok"]
    await eventually(lambda: visitor.has("je suis alice du service client"))
    line = visitor.lines()[-1]
    assert line["text"].startswith("Bonjour Web ")  # {customer}: the visitor's name
    assert (line["author"], line["name"]) == ("agent", "alice")

    await served.act(cid, "reply", text="Je regarde votre commande.")
    await eventually(lambda: visitor.has("Je regarde votre commande."))
    assert visitor.lines()[-1]["name"] == "alice"
    await visitor.close()

    reloaded = await served.widget(token)  # a reload replays the names too
    await eventually(lambda: reloaded.has("Je regarde votre commande."))
    named = [(line["text"][:16], line.get("name")) for line in reloaded.lines()]
    assert ("Je regarde votre", "alice") in named
    assert all(name is None for text, name in named if not text.startswith(("Bonjour", "Je r")))
    await reloaded.close()


async def finished_conversation(served: Served, visitor: Visitor, cid: int) -> None:
    await served.act(cid, "take")
    await served.act(cid, "reply", text="Votre colis arrive demain.")
    await served.act(cid, "resolve", tag="livraison")
    await eventually(lambda: visitor.asked(11))
    await visitor.press("4")
    await eventually(lambda: visitor.asked(5))
    await visitor.press("🙁")
    await eventually(lambda: visitor.has("commentaire"))
    await visitor.press("Passer")
    await eventually(lambda: visitor.has("Merci pour votre réponse"))


async def test_history_and_search(served: Served) -> None:
    visitor, first = await queued_conversation(served)
    await finished_conversation(served, visitor, first)
    clock = served.app.clock
    assert isinstance(clock, FakeClock)
    clock.advance(timedelta(days=3))
    await visitor.say("je veux parler à un conseiller, toujours pas de colis")
    await eventually(lambda: visitor.has("Je vous mets en relation") and visitor.lines()[-1]
                     ["text"].startswith("Je vous mets en relation"))  # fmt: skip
    convs = await served.conversations()
    second = next(c["id"] for c in convs if c["state"] == "queued")

    history = await get(served, f"/api/agent/conversations/{second}/history")
    assert [c["id"] for c in history["conversations"]] == [second, first]
    current, past = history["conversations"]
    assert current["current"]
    assert not past["current"]
    assert (past["topic"], past["nps"], past["csat"], past["state"]) == (
        "livraison",
        4,
        2,
        "closed",
    )
    assert history["followup"]["status"] == "open"  # the NPS of 4 opened a follow-up
    await get(served, "/api/agent/conversations/999999/history", status=404)

    found = await get(served, "/api/agent/search?q=colis+arrive")
    assert [c["id"] for c in found["conversations"]] == [first]
    assert found["conversations"][0]["snippet"] == "Votre colis arrive demain."
    by_topic = await get(served, "/api/agent/search?topic=livraison")
    assert [c["id"] for c in by_topic["conversations"]] == [first]
    both = await get(served, "/api/agent/search?q=conseiller")
    assert [c["id"] for c in both["conversations"]] == [second, first]  # newest first
    folded = await get(served, "/api/agent/search?q=VOUS+METS+EN+RELATION")  # « Je vous mets »
    assert [c["id"] for c in folded["conversations"]] == [second, first]
    accents = await get(served, "/api/agent/search?q=parler%20a%20un%20conseiller")  # « à »
    assert second in [c["id"] for c in accents["conversations"]]
    literal = await get(served, "/api/agent/search?q=100%25")  # % is a character, not "any"
    assert literal["conversations"] == []

    day = clock.now().astimezone(served.app.settings.tz).date()
    today = await get(served, f"/api/agent/search?from={day.isoformat()}&to={day.isoformat()}")
    assert [c["id"] for c in today["conversations"]] == [second]
    bad = await get(served, "/api/agent/search?from=yesterday", status=400)
    assert bad["parameter"] == "from"
    await get(served, "/api/agent/search", status=400)
    await get(served, "/api/agent/search?q=colis", status=401, anonymous=True)


async def test_complaint_options_and_record_for_the_console(served: Served) -> None:
    """The selects' lists (config causes and categories, fixed solutions with their French
    label) and a conversation's record, before and after a resolution with its fields."""
    options = await get(served, "/api/agent/complaint-options")
    assert options["causes"][:2] == ["retard de livraison", "colis endommagé"]
    assert "livraison" in options["categories"]
    solutions = {s["key"]: s["label"] for s in options["solutions"]}
    assert list(solutions)[:3] == ["refund", "partial_refund", "replacement"]
    assert solutions["free_delivery"] == "Livraison offerte"
    token = await served.token()
    visitor = await served.widget(token)
    await visitor.say("je veux parler à un conseiller")
    # the bot's handoff line, not the customer's own (which has the word too)
    await eventually(lambda: visitor.has("conseiller") and len(visitor.lines()) >= 2)
    (conv,) = await served.conversations()
    cid = int(conv["id"])
    path = f"/api/agent/conversations/{cid}/complaint"
    assert await get(served, path) == {"complaint": None}
    await served.act(cid, "take")
    await served.act(cid, "resolve", cause="colis perdu", solution="voucher", note="Bon de 20 €")
    record = (await get(served, path))["complaint"]
    assert (record["cause"], record["solution"], record["note"]) == (
        "colis perdu",
        "voucher",
        "Bon de 20 €",
    )
    assert record["category"] is None
    assert record["opened_by"] == "web:alice"
    await get(served, path, status=401, anonymous=True)
    await get(served, "/api/agent/complaint-options", status=401, anonymous=True)
    await get(served, "/api/agent/conversations/99999999999999999/complaint", status=400)
