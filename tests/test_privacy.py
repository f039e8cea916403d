"""Export, erasure (command line and /forget), retention and the privacy notice.

Everything runs on a real SQLite file through the real engine; "gone" is checked on the
raw bytes of the database file and its WAL, and "KPIs unchanged" on the JSON report.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.app import SupportApp
from bot.config import Secrets
from bot.conversation.model import Customer, CustomerMessage
from bot.errors import UnknownCustomerError
from bot.insights.report import kpi_command
from bot.privacy import PrivacyService
from handlers.web import WebTransport
from storage.database import Database
from tests.fakes.clock import FakeClock
from tests.harness import Harness, make_settings
from tests.test_app import settings_for
from tests.test_web_channel import KEYS, Served
from tests.waiting import eventually

MARK = "Zanzibar-7F3A"  # in the erased customer's messages, comment and name
KEEP = "Quetzal-9B2C"  # in the other customer's: must survive (proves the scan sees text)
NAME = f"Marie {MARK}"


def raw_bytes(db: Path) -> bytes:
    """The database file and its WAL, as a disk forensics tool would read them."""
    data = db.read_bytes()
    wal = Path(f"{db}-wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


async def kpis(h: Harness) -> str:
    return await kpi_command(
        h.settings,
        date_from=date(2026, 11, 1),
        date_to=date(2026, 12, 31),
        by=None,
        fmt="json",
        today=date(2026, 12, 31),
    )


async def say_as(h: Harness, user: str, name: str, text: str, lang: str = "fr") -> None:
    assert h.engine is not None
    customer = Customer("telegram", user, name, lang)
    command = text[1:] if text.startswith("/") else None  # as the transports parse it
    body = "" if command else text
    event = CustomerMessage(customer, h.address(user), body, h.key(), command=command)
    await h.engine.handle(event)
    await h.drain()


async def served_and_surveyed(h: Harness, user: str, name: str, mark: str) -> None:
    """A customer asks, is handed off, served, resolved, and answers the survey (detractor)."""
    await say_as(h, user, name, f"Ma commande {mark} n'est pas arrivée")
    await say_as(h, user, name, "je veux parler à un conseiller")
    thread = next(t for t, th in h.desk.threads.items() if th.header.status == "En attente")
    await say_as(h, user, name, f"Mon adresse est 3 rue {mark}")
    await h.agent_says(f"Je regarde votre commande {mark}.", thread=thread)
    from bot.conversation.model import AgentActionKind

    await h.agent_does(AgentActionKind.RESOLVE, thread=thread, tag="livraison")
    await h.press("3", user=user)
    await h.press("🙁", user=user)
    await say_as(h, user, name, f"Livreur {mark} très en retard")


def privacy(h: Harness) -> PrivacyService:
    assert h.db is not None
    assert h.engine is not None
    return PrivacyService(
        h.db, h.settings, h.clock, store=h.engine.store, outbox=h.dispatcher, desk="slack"
    )


async def test_export_holds_everything_stored_about_the_customer(harness: Harness) -> None:
    h = harness
    await served_and_surveyed(h, "42", NAME, MARK)
    await served_and_surveyed(h, "43", "Paul", KEEP)
    doc = await privacy(h).export("telegram:42")
    json.dumps(doc)  # one JSON document
    assert doc["customer"]["key"] == "telegram:42"
    assert doc["customer"]["name"] == NAME
    assert [r["reason"] for r in doc["reachability"]] == []
    (conv,) = doc["conversations"]
    texts = [m["text"] for m in conv["messages"]]
    assert f"Ma commande {MARK} n'est pas arrivée" in texts
    assert f"Je regarde votre commande {MARK}." in texts
    assert conv["survey"]["nps"] == 3
    assert conv["survey"]["csat"] == 2
    assert conv["survey"]["comment"] == f"Livreur {MARK} très en retard"
    assert conv["started_at"].startswith("2026-11-23T")
    assert "nps_answered" in [e["kind"] for e in conv["events"]]
    assert KEEP not in json.dumps(doc)  # nobody else's data
    with pytest.raises(UnknownCustomerError):
        await privacy(h).export("telegram:999")


async def test_erase_from_outside_leaves_no_text_in_db_or_wal_and_kpis_unchanged(
    harness: Harness,
) -> None:
    h = harness
    await served_and_surveyed(h, "42", NAME, MARK)
    await served_and_surveyed(h, "43", "Paul", KEEP)
    before = await kpis(h)
    assert MARK.encode() in raw_bytes(h.settings.storage.path)

    # Another connection, as `supportbot customer erase` in another process.
    outside = await Database.open(h.settings.storage.path)
    try:
        erased = await PrivacyService(outside, h.settings, h.clock).erase(
            "telegram:42", actor="cli:ops"
        )
    finally:
        await outside.close()
    assert erased.conversations == 1
    assert erased.comments == 1

    assert await kpis(h) == before
    raw = raw_bytes(h.settings.storage.path)
    assert MARK.encode() not in raw
    assert b"telegram:42" not in raw
    assert KEEP.encode() in raw
    assert await h.row("SELECT 1 FROM customers WHERE key = 'telegram:42'") is None
    audit = await h.row("SELECT actor, data FROM events WHERE kind = 'customer_erased'")
    assert audit["actor"] == "cli:ops"
    assert MARK not in audit["data"]
    with pytest.raises(UnknownCustomerError):
        await privacy(h).erase("telegram:42", actor="cli:ops")

    # The running bot finishes it: agents' header says erased, without the transcript.
    thread = next(
        th for th in h.desk.threads.values() if "Marie" in th.header.title or "effacé" in
        th.header.title
    )  # fmt: skip
    done = await privacy(h).finish()
    await h.drain()
    assert (done.erasures, done.headers) == (1, 1)
    assert thread.header.customer_name == "client effacé (RGPD)"
    assert "client effacé" in thread.header.title
    assert thread.header.transcript == ()
    assert (await privacy(h).finish()).erasures == 0  # finished once
    assert await kpis(h) == before
    assert MARK.encode() not in raw_bytes(h.settings.storage.path)


async def test_forget_asks_first_then_erases_everything(harness: Harness) -> None:
    h = harness
    await say_as(h, "42", NAME, f"Bonjour, ma commande {MARK}")
    await say_as(h, "42", NAME, "/forget")
    assert h.channel.last()["text"].startswith("Voulez-vous vraiment effacer vos données")
    assert set(h.channel.last_tokens()) == {"Oui, effacer mes données", "Annuler"}
    cancelled = await h.press("Annuler")
    assert cancelled.chosen == "Annuler"
    assert h.channel.last()["text"] == "D'accord, rien n'a été effacé."
    assert MARK.encode() in raw_bytes(h.settings.storage.path)

    await say_as(h, "42", NAME, "/forget")
    before = await kpis(h)
    confirmed = await h.press("Oui, effacer mes données")
    assert confirmed.ok
    assert h.channel.last()["text"].startswith("C'est fait : vos données")  # still delivered
    await privacy(h).finish()
    assert MARK.encode() not in raw_bytes(h.settings.storage.path)
    assert b"telegram:42" not in raw_bytes(h.settings.storage.path)
    reach = await h.row("SELECT reachable, reason FROM customer_reachability")
    assert (reach["reachable"], reach["reason"]) == (0, "forget")  # CRR: asked to be forgotten
    audit = await h.row("SELECT actor FROM events WHERE kind = 'customer_erased'")
    assert audit["actor"] == "customer"
    # Asking to be forgotten is the customer leaving (retention rate), nothing else moves.
    after, earlier = json.loads(await kpis(h)), json.loads(before)
    assert after.pop("retention")["end_customers"] == earlier.pop("retention")["end_customers"] - 1
    assert after == earlier

    await say_as(h, "42", "Marie", "Bonjour")  # comes back: a new customer
    assert (await h.row("SELECT count(*) AS n FROM customers"))["n"] == 2


async def test_forget_with_no_open_conversation(harness: Harness) -> None:
    h = harness
    await say_as(h, "42", NAME, f"Ma commande {MARK}")
    await h.tick(timedelta(hours=3))  # closed as idle
    await say_as(h, "42", NAME, "/forget")
    assert set(h.channel.last_tokens()) == {"Oui, effacer mes données", "Annuler"}
    await h.press("Oui, effacer mes données")
    assert h.channel.last()["text"].startswith("C'est fait")
    await privacy(h).finish()
    assert MARK.encode() not in raw_bytes(h.settings.storage.path)
    assert (await h.row("SELECT count(*) AS n FROM conversations"))["n"] == 1  # no new one


async def test_retention_clears_old_texts_and_keeps_kpis(tmp_path: Path, clock: object) -> None:
    h = Harness(make_settings(tmp_path / "t.db", privacy={"retain_messages": "30d"}), clock)  # type: ignore[arg-type]
    await h.start()
    try:
        await served_and_surveyed(h, "42", NAME, MARK)
        h.clock.advance(timedelta(days=31))
        await served_and_surveyed(h, "43", "Paul", KEEP)
        before = await kpis(h)
        expired = await privacy(h).expire()
        assert expired is not None
        assert expired.messages > 0
        assert expired.comments == 1
        assert await kpis(h) == before
        raw = raw_bytes(h.settings.storage.path)
        assert f"Livreur {MARK}".encode() not in raw
        assert f"rue {MARK}".encode() not in raw
        assert KEEP.encode() in raw  # newer than 30 days
        # The name is not a message text: retention keeps the customer, erase removes it.
        assert (await h.row("SELECT name FROM customers WHERE key = 'telegram:42'"))[0] == NAME
        assert (await privacy(h).expire()).total == 0  # type: ignore[union-attr]
    finally:
        await h.stop()


async def test_retention_off_by_default(harness: Harness) -> None:
    assert harness.settings.privacy.retain_messages is None
    assert await privacy(harness).expire() is None


async def test_privacy_notice_once_at_first_contact_in_their_language(
    tmp_path: Path, clock: object
) -> None:
    notice = {
        "fr": "Vos messages sont conservés pour vous répondre : https://ex.fr/confidentialite",
        "en": "We keep your messages to answer you: https://ex.com/privacy",
    }
    h = Harness(make_settings(tmp_path / "t.db", privacy={"notice": notice}), clock)  # type: ignore[arg-type]
    await h.start()
    try:
        await say_as(h, "7", "Ann", "How long does delivery take?", lang="en-GB")
        texts = h.channel.texts(h.address("7"))
        assert texts[0] == notice["en"]
        assert "Delivery takes 2-4 days." in texts[1]
        await say_as(h, "7", "Ann", "thanks")
        assert h.channel.texts(h.address("7")).count(notice["en"]) == 1
        await say_as(h, "8", "Luc", "Bonjour")
        assert h.channel.texts(h.address("8"))[0] == notice["fr"]
    finally:
        await h.stop()


# ---------------------------------------------------------------- the widget's token


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    """The whole app with the web channel on port 0 (as in test_web_channel)."""
    settings = settings_for(tmp_path, web={"port": 0}, desk="web")
    app = SupportApp(settings, Secrets(web_agent_keys=KEYS), clock=FakeClock())
    await app.start()
    web = next(t for t in app.transports if isinstance(t, WebTransport))
    async with aiohttp.ClientSession() as http:
        try:
            yield Served(app, web, http)
        finally:
            await app.stop()


async def test_a_socket_open_when_its_visitor_is_erased_elsewhere_is_closed(
    served: Served,
) -> None:
    """Erased by `supportbot customer erase` while the widget is open: its next message
    is not stored, reaches no conversation, and the socket is closed."""
    token = await served.token()
    visitor_id = served.web.signer.visitor_of(token)
    assert visitor_id is not None
    visitor = await served.widget(token)
    await visitor.say(f"Ma commande {MARK} est en retard")
    await eventually(lambda: len(visitor.lines()) >= 2)
    db = served.app.settings.storage.path
    outside = await Database.open(db)
    try:
        await PrivacyService(outside, served.app.settings, FakeClock()).erase(
            f"web:{visitor_id}", actor="cli:ops"
        )
    finally:
        await outside.close()
    await visitor.say(f"Encore {KEEP}")
    await eventually(lambda: visitor.ws.closed)
    assert KEEP.encode() not in raw_bytes(db)


async def test_forget_on_the_widget_revokes_its_token(served: Served) -> None:
    token = await served.token()
    visitor = await served.widget(token)
    await visitor.say(f"Ma commande {MARK} est en retard")
    await eventually(lambda: len(visitor.lines()) >= 2)
    await visitor.say("/forget")
    await eventually(lambda: visitor.has("Voulez-vous vraiment effacer"))
    await visitor.press("Oui, effacer mes données")
    # The goodbye is shown live (as a notice, not stored), then the socket is closed.
    await eventually(lambda: any("C'est fait" in f.get("text", "") for f in visitor.frames))
    await eventually(lambda: visitor.ws.closed)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await served.widget(token)  # the same token opens nothing any more
    assert refused.value.status == 401
    await eventually(lambda: served.app.privacy is not None)
    await served.app.privacy.finish()
    db = served.app.settings.storage.path
    assert MARK.encode() not in raw_bytes(db)
    fresh = await served.widget(await served.token())  # a new visitor starts afresh
    await fresh.say("bonjour")
    await eventually(lambda: len(fresh.lines()) == 2)
    await fresh.close()
