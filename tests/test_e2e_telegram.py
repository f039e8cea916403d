"""End to end on Telegram: the whole product against the local Bot API server.

Each test builds ``SupportApp`` from settings the way ``supportbot run`` does (real
engine, real SQLite file, the shipped knowledge base, real python-telegram-bot over
HTTP); only the clock is fake, so that stored timestamps are exact and timers fire when
the test sweeps. Customers and agents act through the fake server; the tests check what
Telegram received and what the database holds afterwards. No sleeps: every wait is on a
condition (a call the server answered, the outbox drained).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import SupportApp
from bot.clock import to_ms
from bot.config import Secrets, Settings, settings_from_mapping
from bot.knowledge import KnowledgeBase
from handlers.telegram import RateLimits
from tests.fakes.clock import FakeClock
from tests.fakes.telegram_server import FakeChat, FakeUser, TelegramServer, running_server
from tests.logs import assert_no_secret_logged, loggers_at_debug

JSON = dict[str, Any]
ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE = ROOT / "knowledge.yaml"
QUESTION = "Quel est le délai de livraison ?"
DID_IT_HELP = "Cette réponse a-t-elle résolu votre problème ?"
HANDOFF = "Je vous mets en relation avec un conseiller"
NPS_QUESTION = "Sur une échelle de 0 à 10"
CSAT_QUESTION = "Comment évaluez-vous l'aide que vous avez reçue ?"
QUESTION_CLOSED = "Cette question est close."
AGENTS_ONLY = "Réservé aux agents du service client."
WEBHOOK_SECRET = "whsec-e2e-Kq72-not-a-real-secret"
PUBLIC_WEBHOOK = "https://support.example.com/telegram"  # never reached: see start_webhook
WAIT = 5.0


def buttons(message: JSON) -> list[list[tuple[str, str]]]:
    """The inline keyboard of a message as rows of (label, callback data)."""
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [[(b["text"], b["callback_data"]) for b in row] for row in rows]


def button(message: JSON, label: str) -> str:
    """The callback data of the button labelled ``label``."""
    found = [data for row in buttons(message) for text, data in row if text == label]
    assert found, f"no button {label!r} in {buttons(message)}"
    return found[0]


@dataclass
class World:
    """The fake Telegram with its people, a temporary database, and the running apps."""

    tg: TelegramServer
    tmp: Path
    clock: FakeClock
    ana: FakeUser  # a customer
    paul: FakeUser  # an agent (administrator of the agents' group, in agent_ids)
    eve: FakeUser  # a member of the agents' group who is not an agent
    desk: FakeChat  # the agents' forum group
    apps: list[SupportApp] = field(default_factory=list)

    # ------------------------------------------------------------------ the product

    def settings(self, **telegram: Any) -> Settings:
        section: JSON = {
            "api_url": self.tg.url,
            "agents_chat_id": self.desk.id,
            "agent_ids": [self.paul.id],
            "mode": "polling",
            "poll_timeout": 1,
        }
        section.update(telegram)
        return settings_from_mapping(
            {
                "language": "fr",
                "storage": {"path": str(self.tmp / "supportbot.db")},
                "knowledge": {"path": str(KNOWLEDGE)},
                "replies": {"path": str(ROOT / "replies.yaml")},  # the shipped sample
                "web": {"enabled": False},  # this test is about the other channels
                "desk": "telegram",
                "telegram": section,
                "slack": {"enabled": False},
                # Timers fire only when a test sweeps by hand (after moving the clock).
                "conversation": {"sweep_every": "1h"},
                "digest": {"enabled": False},
            }
        )

    async def start(self, webhook_secret: str | None = None, **telegram: Any) -> SupportApp:
        secrets = Secrets(telegram_bot_token=self.tg.token, telegram_webhook_secret=webhook_secret)
        app = SupportApp(
            self.settings(**telegram),
            secrets,
            clock=self.clock,
            transport_options={"telegram": {"limits": RateLimits.unlimited()}},
        )
        self.apps.append(app)
        await app.start()
        return app

    async def start_webhook(self) -> tuple[SupportApp, str]:
        """The app in webhook mode behind a "proxy": Telegram is told the public URL, the
        fake server then pushes to the local port the app listens on. Returns that URL."""
        app = await self.start(
            webhook_secret=WEBHOOK_SECRET,
            mode="webhook",
            webhook_url=PUBLIC_WEBHOOK,
            webhook_listen="127.0.0.1",
            webhook_port=0,
            webhook_path="/telegram",
        )
        port = app.transports[0].webhook_port
        assert port
        local = f"http://127.0.0.1:{port}/telegram"
        await self.tg.deliver_webhook(local, WEBHOOK_SECRET)
        return app, local

    async def stop(self, app: SupportApp) -> None:
        self.apps.remove(app)
        await app.stop()

    async def settle(self) -> None:
        """Until every decided action was delivered (or given up) and recorded."""
        for app in self.apps:
            assert app.components is not None
            async with asyncio.timeout(WAIT):
                await app.components.dispatcher.drain()

    # ------------------------------------------------------------------ the database

    def rows(self, sql: str, *params: object) -> list[sqlite3.Row]:
        """Read the product's database file with a separate connection (WAL: sees commits)."""
        conn = sqlite3.connect(self.tmp / "supportbot.db")
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def row(self, sql: str, *params: object) -> sqlite3.Row:
        found = self.rows(sql, *params)
        assert len(found) == 1, f"{len(found)} rows for {sql}"
        return found[0]

    def event_kinds(self, conversation_id: int) -> list[str]:
        rows = self.rows(
            "SELECT kind FROM events WHERE conversation_id = ? ORDER BY id", conversation_id
        )
        return [r["kind"] for r in rows]

    # ------------------------------------------------------------------ what Telegram got

    def texts_to(self, user: FakeUser) -> list[str]:
        """Every text the bot sent to this person's private chat, in order."""
        return [
            c.params["text"]
            for c in self.tg.calls_to("sendMessage", ok=True)
            if c.params["chat_id"] == user.id
        ]

    def desk_texts(self, thread: int | None = None) -> list[str]:
        """Visible texts the bot posted in the agents' group (or one topic)."""
        return [
            c.result["text"]
            for c in self.tg.calls_to("sendMessage", ok=True)
            if c.params["chat_id"] == self.desk.id
            and (thread is None or c.params.get("message_thread_id") == thread)
        ]

    async def to_customer(self, user: FakeUser, contains: str, *, since: int = 0) -> JSON:
        """The message the bot sent to ``user`` with ``contains`` in it (waits for it)."""
        call = await self.tg.wait_for(
            "sendMessage",
            lambda c: c.params["chat_id"] == user.id and contains in c.params["text"],
            since=since,
        )
        result: JSON = call.result
        return result

    async def to_desk(self, contains: str, *, thread: int | None = None, since: int = 0) -> JSON:
        call = await self.tg.wait_for(
            "sendMessage",
            lambda c: (
                c.params["chat_id"] == self.desk.id
                and contains in c.result["text"]
                and (thread is None or c.params.get("message_thread_id") == thread)
            ),
            since=since,
        )
        result: JSON = call.result
        return result

    async def topic_opened(self, *, since: int = 0) -> tuple[int, JSON]:
        """(thread id, header message) of the next forum topic the bot opened."""
        created = await self.tg.wait_for("createForumTopic", since=since)
        thread = int(created.result["message_thread_id"])
        header = await self.tg.wait_for(
            "sendMessage",
            lambda c: c.params.get("message_thread_id") == thread and "reply_markup" in c.result,
            since=since,
        )
        return thread, header.result

    async def answer_to(self, update: JSON) -> JSON:
        """How the bot answered the button press of this update (answerCallbackQuery)."""
        query_id = update["callback_query"]["id"]
        await self.tg.wait_for(
            "answerCallbackQuery", lambda c: str(c.params["callback_query_id"]) == query_id
        )
        return self.tg.callback_answers[query_id]

    async def handed_off(self, opening: str = "/agent") -> tuple[int, JSON]:
        """Ana asks for a person: the conversation is queued, its topic open."""
        mark = self.tg.mark()
        await self.tg.customer_sends(self.ana, opening)
        thread, header = await self.topic_opened(since=mark)
        await self.to_customer(self.ana, "conseiller", since=mark)
        await self.settle()
        return thread, header


_LOADED: dict[tuple[Any, ...], KnowledgeBase] = {}
_REAL_LOAD = KnowledgeBase.load.__func__  # type: ignore[attr-defined]


def _load_once(
    cls: type[KnowledgeBase], path: Path, threshold: float | None = None, *rest: Any
) -> Any:
    """The shipped knowledge base, parsed for real once per test run: parsing the YAML costs
    most of an app start (0.5-1 s here), and a loaded KnowledgeBase is read-only."""
    key = (Path(path).resolve(), threshold, *map(str, rest))
    if key not in _LOADED:
        _LOADED[key] = _REAL_LOAD(cls, path, threshold, *rest)
    return _LOADED[key]


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setattr(KnowledgeBase, "load", classmethod(_load_once))
    async with telegram_world(tmp_path) as w:
        yield w


@contextlib.asynccontextmanager
async def telegram_world(tmp_path: Path) -> AsyncIterator[World]:
    """The local Bot API server with Ana (customer), Paul (admin agent) and Eve (member)."""
    async with running_server() as tg:
        paul = tg.add_user("Paul", "Martin", username="paul_agent")
        eve = tg.add_user("Eve")
        desk = tg.add_group("Service client", members=[eve], admins=[paul])
        ana = tg.add_user("Ana", "Lopez", language_code="fr")
        w = World(tg, tmp_path, FakeClock(), ana=ana, paul=paul, eve=eve, desk=desk)
        try:
            yield w
        finally:
            for app in reversed(w.apps):
                await app.stop()


@pytest.fixture
async def app(world: World) -> SupportApp:
    return await world.start()


def ms(world: World) -> int:
    return to_ms(world.clock.now())


# ---------------------------------------------------------------------- 1. the whole journey


async def test_full_conversation_from_question_to_survey(world: World, app: SupportApp) -> None:
    tg, ana, paul = world.tg, world.ana, world.paul
    await tg.customer_sends(ana, "/start")
    greeting = await world.to_customer(ana, "Je suis l'assistant du service client")
    assert greeting["text"].startswith("Bonjour")
    assert world.rows("SELECT id FROM conversations") == []  # a greeting opens nothing

    asked_at = ms(world)
    await tg.customer_sends(ana, QUESTION)
    answer = await world.to_customer(ana, DID_IT_HELP)
    assert "livr" in answer["text"].lower()  # the knowledge base's delivery answer
    cid = world.row("SELECT id FROM conversations")["id"]
    assert buttons(answer) == [
        [("Oui, merci", f"c{cid}:help:yes"), ("Non", f"c{cid}:help:no")],
        [("Parler à un conseiller", f"c{cid}:help:agent")],
    ]
    await world.settle()

    # "Non": the question shows the choice, a person is called, a topic opens.
    world.clock.advance(timedelta(seconds=60))
    handoff_at = ms(world)
    mark = tg.mark()
    press = await tg.press_button(ana, answer, f"c{cid}:help:no")
    assert await world.answer_to(press) == {"text": None, "show_alert": False}
    await world.to_customer(ana, HANDOFF, since=mark)
    await tg.wait_for("editMessageText", lambda c: c.params["message_id"] == answer["message_id"])
    edited = tg.message(ana.id, answer["message_id"])
    assert edited["text"].endswith("\n→ Non")
    assert edited["text"].startswith(answer["text"])
    assert "reply_markup" not in edited
    thread, header = await world.topic_opened(since=mark)
    assert tg.topic(world.desk, thread).name == f"#{cid} · Ana Lopez · livraison"
    text = header["text"]
    for expected in ("Ana Lopez", "livraison", "La réponse du bot n'a pas aidé", "En attente",
                     QUESTION, "[Non]", HANDOFF):  # fmt: skip
        assert expected in text, expected
    assert buttons(header) == [[("Prendre", f"a{cid}:take"), ("Résoudre", f"a{cid}:resolve")]]
    await world.settle()

    # Paul takes it from the header's button.
    world.clock.advance(timedelta(seconds=30))
    mark = tg.mark()
    take = await tg.press_button(paul, header, f"a{cid}:take")
    assert await world.answer_to(take) == {
        "text": "Pris en charge par Paul Martin",
        "show_alert": False,
    }
    await world.to_customer(ana, "Paul a rejoint la conversation.", since=mark)
    await world.to_desk("Paul Martin prend la conversation.", thread=thread, since=mark)
    await tg.wait_for("editMessageText", lambda c: c.params["message_id"] == header["message_id"],
                      since=mark)  # fmt: skip
    header_now = tg.message(world.desk, header["message_id"])
    assert "Pris en charge par Paul Martin" in header_now["text"]
    assert buttons(header_now) == [[("Résoudre", f"a{cid}:resolve")]]

    # The customer's photo is copied into the topic.
    mark = tg.mark()
    photo = await tg.customer_sends_photo(ana, caption="Voici le carton abîmé")
    copied = await tg.wait_for("copyMessage", lambda c: c.params["chat_id"] == world.desk.id,
                               since=mark)  # fmt: skip
    assert copied.params["from_chat_id"] == ana.id
    assert copied.params["message_id"] == photo["message"]["message_id"]
    assert copied.params["message_thread_id"] == thread
    in_topic = tg.message(world.desk, copied.result["message_id"])
    assert in_topic["photo"]
    assert in_topic["caption"] == "Voici le carton abîmé"
    await world.settle()

    # Paul answers in the topic: relayed to Ana, marked with a reaction.
    world.clock.advance(timedelta(seconds=60))
    agent_answer_at = ms(world)
    mark = tg.mark()
    reply = await tg.agent_writes(paul, thread, "Bonjour Ana, je lance une enquête transporteur.")
    await world.to_customer(ana, "je lance une enquête transporteur", since=mark)
    reply_id = reply["message"]["message_id"]
    await tg.wait_for("setMessageReaction", lambda c: c.params["message_id"] == reply_id,
                      since=mark)  # fmt: skip
    assert tg.reactions[(world.desk.id, reply_id)] == ["👍"]

    # Internal notes stay on the desk (the command one is acknowledged there).
    world.clock.advance(timedelta(seconds=10))
    mark = tg.mark()
    await tg.agent_writes(paul, thread, "// note interne : client fidèle, geste commercial ok")
    note_command = await tg.agent_writes(paul, thread, "/note à rappeler demain")
    saved = await world.to_desk("Note interne enregistrée", thread=thread, since=mark)
    assert saved["reply_to_message"]["message_id"] == note_command["message"]["message_id"]

    # An agent's file is copied to the customer; the next text proves the notes were kept.
    document = await tg.agent_sends_media(paul, thread, "document", caption="Votre bon de retour")
    document_id = document["message"]["message_id"]
    to_ana = await tg.wait_for("copyMessage", lambda c: c.params["chat_id"] == ana.id, since=mark)
    assert (to_ana.params["from_chat_id"], to_ana.params["message_id"]) == (
        world.desk.id,
        document_id,
    )
    assert tg.message(ana.id, to_ana.result["message_id"])["caption"] == "Votre bon de retour"
    await tg.agent_writes(paul, thread, "Je reviens vers vous très vite.")
    await world.to_customer(ana, "Je reviens vers vous très vite.", since=mark)
    await tg.wait_for("setMessageReaction", lambda c: c.params["message_id"] == document_id,
                      since=mark)  # fmt: skip
    assert not [t for t in world.texts_to(ana) if "note interne" in t or "rappeler" in t]

    # /resolve with a tag: topic closed, the survey starts.
    world.clock.advance(timedelta(seconds=10))
    resolved_at = ms(world)
    mark = tg.mark()
    await tg.agent_writes(paul, thread, "/resolve livraison")
    await world.to_customer(ana, "Votre demande est marquée comme résolue", since=mark)
    await tg.wait_for("closeForumTopic", lambda c: c.params["message_thread_id"] == thread,
                      since=mark)  # fmt: skip
    assert tg.topic(world.desk, thread).closed
    await tg.wait_for("editMessageText", lambda c: c.params["message_id"] == header["message_id"],
                      since=mark)  # fmt: skip
    header_now = tg.message(world.desk, header["message_id"])
    assert "Résolu" in header_now["text"]
    assert "🏷 livraison" in header_now["text"]
    assert buttons(header_now) == []
    await world.to_desk("Résolu par Paul Martin (livraison).", thread=thread, since=mark)
    nps = await world.to_customer(ana, NPS_QUESTION, since=mark)
    assert "recommanderiez-vous" in nps["text"]
    assert [[label for label, _ in row] for row in buttons(nps)] == [
        [str(n) for n in range(6)],
        [str(n) for n in range(6, 11)],
    ]
    assert buttons(nps)[1][3] == ("9", f"c{cid}:nps:9")

    mark = tg.mark()
    await tg.press_button(ana, nps, button(nps, "9"))
    csat = await world.to_customer(ana, CSAT_QUESTION, since=mark)
    assert buttons(csat) == [
        [(face, f"c{cid}:csat:{n}") for n, face in enumerate(["😡", "🙁", "😐", "🙂", "😍"], 1)]
    ]
    await tg.wait_for("editMessageText", lambda c: c.params["message_id"] == nps["message_id"],
                      since=mark)  # fmt: skip
    assert tg.message(ana.id, nps["message_id"])["text"].endswith("\n→ 9")

    mark = tg.mark()
    await tg.press_button(ana, csat, button(csat, "🙂"))
    comment_question = await world.to_customer(
        ana, "Souhaitez-vous ajouter un commentaire", since=mark
    )
    assert buttons(comment_question) == [[("Passer", f"c{cid}:comment:skip")]]
    await tg.customer_sends(ana, "Livreur très aimable, suivi un peu lent.")
    await world.to_customer(ana, "Merci pour votre réponse", since=mark)
    await world.settle()

    # ------------------------------------------------------------ what the database holds
    conv = world.row("SELECT * FROM conversations")
    assert conv["state"] == "closed"
    assert conv["close_reason"] == "survey_done"
    assert conv["resolved_by"] == "agent"
    assert conv["resolved_at"] == resolved_at
    assert conv["tag"] == "livraison"
    assert conv["topic"] == "livraison"
    assert conv["kb_entry"] == "delivery-time"
    assert conv["handoff_reason"] == "not_helpful"
    assert conv["agent_key"] == f"telegram:{paul.id}"
    assert conv["agent_name"] == "Paul Martin"
    assert (conv["desk"], conv["desk_thread"]) == ("telegram", str(thread))
    assert conv["desk_header"] == str(header["message_id"])
    assert conv["started_at"] == asked_at
    assert conv["first_response_at"] == asked_at  # the bot answered at once
    assert conv["handed_off_at"] == handoff_at
    assert conv["first_agent_response_at"] == agent_answer_at  # not the "joined" notice
    assert asked_at < handoff_at < agent_answer_at < resolved_at
    assert conv["abandoned_at"] is None

    survey = world.row("SELECT * FROM surveys")
    assert survey["conversation_id"] == cid
    assert (survey["nps"], survey["csat"]) == (9, 4)
    assert survey["comment"] == "Livreur très aimable, suivi un peu lent."
    assert survey["agent_key"] == f"telegram:{paul.id}"
    assert survey["topic"] == "livraison"
    assert survey["completed_at"] is not None
    assert survey["expired_at"] is None

    kinds = world.event_kinds(cid)
    for kind in ("conversation_started", "message_in", "bot_answered", "choice", "agent_message",
                 "note", "survey_sent", "nps_answered", "csat_answered", "comment"):  # fmt: skip
        assert kind in kinds, kind
    moves = [
        (d["source"], d["target"])
        for d in (json.loads(r["data"]) for r in world.rows(
            "SELECT data FROM events WHERE kind = 'state' ORDER BY id"))
    ]  # fmt: skip
    assert moves == [
        ("bot", "queued"),
        ("queued", "assigned"),
        ("assigned", "resolved"),
        ("resolved", "surveying"),
        ("surveying", "closed"),
    ]
    notes = world.rows("SELECT * FROM messages WHERE author = 'note' ORDER BY id")
    assert [n["text"] for n in notes] == [
        "// note interne : client fidèle, geste commercial ok",
        "à rappeler demain",
    ]
    assert {n["delivered_at"] for n in notes} == {None}
    media = world.rows("SELECT author, media FROM messages WHERE media IS NOT NULL ORDER BY id")
    assert [(m["author"], json.loads(m["media"])["kind"]) for m in media] == [
        ("customer", "photo"),
        ("agent", "document"),
    ]
    assert kinds.count("agent_message") == 3
    assert world.rows("SELECT * FROM outbox WHERE sent_at IS NULL") == []
    assert world.row("SELECT reachable, last_surveyed_at FROM customers")["reachable"] == 1


# ---------------------------------------------------------------------- 2. strangers


@pytest.mark.parametrize("who_decides", ["agent_ids", "group membership"])
async def test_a_stranger_cannot_take_a_conversation(world: World, who_decides: str) -> None:
    tg = world.tg
    if who_decides == "agent_ids":
        await world.start()  # agent_ids = [Paul]: Eve, a member, is no agent
        stranger = world.eve
    else:
        await world.start(agent_ids=[])  # members of the agents' group are agents
        stranger = tg.add_user("Zoé")  # not in the group
    thread, header = await world.handed_off()
    cid = world.row("SELECT id FROM conversations")["id"]

    mark = tg.mark()
    refused = await tg.press_button(stranger, header, f"a{cid}:take")
    assert await world.answer_to(refused) == {"text": AGENTS_ONLY, "show_alert": True}
    await world.settle()
    conv = world.row("SELECT state, agent_key FROM conversations")
    assert tuple(conv) == ("queued", None)
    assert not [t for t in world.texts_to(world.ana) if "a rejoint" in t]
    assert tg.calls_to("editMessageText", since=mark) == []
    assert buttons(tg.message(world.desk, header["message_id"]))[0][0][0] == "Prendre"

    # The same button still works for an agent: the refusal was about the person.
    taken = await tg.press_button(world.paul, header, f"a{cid}:take")
    assert (await world.answer_to(taken))["show_alert"] is False
    await world.to_customer(world.ana, "Paul a rejoint la conversation.", since=mark)
    await world.settle()
    assert world.row("SELECT state FROM conversations")["state"] == "assigned"
    assert thread == int(world.row("SELECT desk_thread FROM conversations")["desk_thread"])


# ---------------------------------------------------------------------- 3. stale buttons


async def test_stale_survey_buttons_are_refused_and_record_nothing(
    world: World, app: SupportApp
) -> None:
    tg, ana = world.tg, world.ana
    await tg.customer_sends(ana, QUESTION)
    answer = await world.to_customer(ana, DID_IT_HELP)
    mark = tg.mark()
    await tg.press_button(ana, answer, button(answer, "Oui, merci"))
    nps = await world.to_customer(ana, NPS_QUESTION, since=mark)
    first_cid = world.row("SELECT id FROM conversations")["id"]

    # A double tap: both presses leave before the keyboard disappears.
    mark = tg.mark()
    three = await tg.press_button(ana, nps, button(nps, "3"))
    nine = await tg.press_button(ana, nps, button(nps, "9"))
    assert await world.answer_to(three) == {"text": None, "show_alert": False}
    assert await world.answer_to(nine) == {"text": QUESTION_CLOSED, "show_alert": True}
    csat = await world.to_customer(ana, CSAT_QUESTION, since=mark)
    await world.to_desk("Détracteur", since=mark)  # 0-6: the agents are told
    await world.settle()
    assert world.row("SELECT nps FROM surveys")["nps"] == 3
    assert world.event_kinds(first_cid).count("nps_answered") == 1
    assert world.rows("SELECT text FROM messages WHERE text = '[9]'") == []
    alerts = [t for t in world.desk_texts() if "Détracteur" in t]
    assert len(alerts) == 1
    assert "3/10" in alerts[0]
    assert [t for t in world.texts_to(ana) if CSAT_QUESTION in t] == [csat["text"]]
    assert tg.message(ana.id, nps["message_id"])["text"].endswith("\n→ 3")

    # Ana needs a person instead: that survey ends, a new conversation starts.
    mark = tg.mark()
    await tg.customer_sends(ana, "Je veux parler à un conseiller")
    await world.to_customer(ana, HANDOFF, since=mark)
    await world.settle()
    second = world.row("SELECT id, state FROM conversations WHERE id <> ?", first_cid)
    assert second["state"] == "queued"
    events_before = world.row("SELECT COUNT(*) AS n FROM events")["n"]

    # The smileys of the older, closed conversation are still on screen.
    mark = tg.mark()
    old = await tg.press_button(ana, csat, button(csat, "😍"))
    assert await world.answer_to(old) == {"text": QUESTION_CLOSED, "show_alert": True}
    await world.settle()
    survey = world.row("SELECT conversation_id, nps, csat, expired_at FROM surveys")
    assert (survey["conversation_id"], survey["nps"], survey["csat"]) == (first_cid, 3, None)
    assert survey["expired_at"] is not None  # the survey was given up when she left it
    assert world.row("SELECT COUNT(*) AS n FROM events")["n"] == events_before
    assert world.row("SELECT state FROM conversations WHERE id = ?", second["id"])["state"] == (
        "queued"
    )
    assert [
        c for c in tg.calls_to("sendMessage", since=mark) if c.params["chat_id"] == ana.id
    ] == []
    assert "reply_markup" in tg.message(ana.id, csat["message_id"])  # nothing was edited


# ---------------------------------------------------------------------- 4. redelivery


async def test_the_same_update_twice_is_processed_once(world: World, app: SupportApp) -> None:
    tg, ana = world.tg, world.ana
    hello = await tg.customer_sends(ana, "/start")
    await world.to_customer(ana, "Je suis l'assistant du service client")
    question = await tg.customer_sends(ana, QUESTION)
    await world.to_customer(ana, DID_IT_HELP)

    # The confirmations were lost: Telegram sends both again, same update_id.
    await tg.redeliver(hello)
    await tg.redeliver(question)
    await tg.wait_delivered(question, times=2)
    mark = tg.mark()
    await tg.customer_sends(ana, "/help")  # handled after the redeliveries (same chat, in order)
    await world.to_customer(ana, "Écrivez votre question en quelques mots", since=mark)
    await world.settle()

    texts = world.texts_to(ana)
    assert len([t for t in texts if "assistant du service client" in t]) == 1
    assert len([t for t in texts if DID_IT_HELP in t]) == 1
    assert len(texts) == 3
    stored = world.rows("SELECT text FROM messages WHERE direction = 'in' ORDER BY id")
    assert [r["text"] for r in stored] == [QUESTION, "/help"]  # the question once, then /help
    assert world.row("SELECT COUNT(*) AS n FROM conversations")["n"] == 1
    keys = {r["dedup_key"] for r in world.rows("SELECT dedup_key FROM inbound")}
    assert f"telegram:update:{question['update_id']}" in keys
    assert f"telegram:update:{hello['update_id']}" in keys


# ---------------------------------------------------------------------- 5. webhook


async def test_webhook_processes_only_updates_carrying_the_secret(world: World) -> None:
    tg, ana = world.tg, world.ana
    _, local = await world.start_webhook()
    registered = await tg.wait_for("setWebhook")
    assert registered.params["url"] == PUBLIC_WEBHOOK
    assert registered.params["secret_token"] == WEBHOOK_SECRET

    forged = tg.wrap("message", tg.build_text(ana, "/agent"))
    assert await tg.post_to_webhook(forged, url=local, secret="guess") == 403
    assert await tg.post_to_webhook(forged, url=local, secret=None) == 403
    assert await tg.post_to_webhook(forged, url=local, secret=WEBHOOK_SECRET[:-1]) == 403

    genuine = await tg.customer_sends(ana, QUESTION)  # pushed with the secret
    await world.to_customer(ana, DID_IT_HELP)
    await tg.wait_delivered(genuine)
    await world.settle()
    assert tg.webhook_deliveries == [(genuine["update_id"], 200)]
    assert tg.calls_to("getUpdates") == []
    assert tg.calls_to("createForumTopic") == []  # the forged /agent did nothing
    assert len(world.texts_to(ana)) == 1
    keys = [r["dedup_key"] for r in world.rows("SELECT dedup_key FROM inbound")]
    assert keys == [f"telegram:update:{genuine['update_id']}"]
    conv = world.row("SELECT state, handoff_reason FROM conversations")
    assert tuple(conv) == ("bot", None)

    # The same forged body with the right secret is an ordinary update.
    assert await tg.post_to_webhook(forged, url=local, secret=WEBHOOK_SECRET) == 200
    await world.topic_opened()
    await world.settle()
    assert world.row("SELECT state FROM conversations")["state"] == "queued"


# ---------------------------------------------------------------------- 6. flood control


async def test_reply_arrives_once_after_500_and_429(world: World, app: SupportApp) -> None:
    tg, ana = world.tg, world.ana
    tg.fail("sendMessage", 500)
    tg.fail("sendMessage", 429, retry_after=1)
    mark = tg.mark()
    await tg.customer_sends(ana, QUESTION)
    await world.to_customer(ana, DID_IT_HELP, since=mark)
    await world.settle()

    calls = [c for c in tg.calls_to("sendMessage", since=mark) if c.params["chat_id"] == ana.id]
    assert [c.status for c in calls] == [500, 429, 200]
    assert len({c.params["text"] for c in calls}) == 1  # the same reply, retried
    assert calls[2].at - calls[1].at >= 0.95  # Telegram's retry_after was honoured
    assert len(world.texts_to(ana)) == 1
    sent = world.row("SELECT * FROM outbox WHERE op = 'send'")
    assert sent["attempts"] == 3
    assert sent["sent_at"] is not None
    assert sent["failed_at"] is None
    assert "Flood control exceeded" in (sent["error"] or "")  # the last failure, for the record
    message = world.row("SELECT delivered_at FROM messages WHERE direction = 'out'")
    assert message["delivered_at"] is not None
    assert world.row("SELECT first_response_at FROM conversations")["first_response_at"]


# ---------------------------------------------------------------------- 7. blocked


async def test_customer_blocking_the_bot_while_queued_abandons(
    world: World, app: SupportApp
) -> None:
    tg, ana = world.tg, world.ana
    thread, header = await world.handed_off()
    world.clock.advance(timedelta(minutes=2))
    blocked_at = ms(world)
    mark = tg.mark()
    await tg.user_blocks_bot(ana)
    await world.to_desk("Le client est parti (blocked).", thread=thread, since=mark)
    await world.to_desk("abandonnée (blocked)", thread=thread, since=mark)
    await world.settle()

    conv = world.row("SELECT * FROM conversations")
    assert conv["state"] == "closed"
    assert (conv["abandon_reason"], conv["abandoned_at"]) == ("blocked", blocked_at)
    assert conv["close_reason"] == "abandoned"
    customer = world.row("SELECT id, reachable FROM customers")
    assert customer["reachable"] == 0
    history = world.rows(
        "SELECT at, reachable, reason FROM customer_reachability WHERE customer_id = ?",
        customer["id"],
    )
    assert [tuple(r) for r in history] == [(blocked_at, 0, "blocked")]
    assert world.rows("SELECT * FROM timers") == []
    # Nothing more was sent to someone who blocked the bot (no 403 either).
    to_ana = [c for c in tg.calls_to("sendMessage", since=mark, ok=None)
              if c.params["chat_id"] == ana.id]  # fmt: skip
    assert to_ana == []
    header_now = tg.message(world.desk, header["message_id"])
    assert "Abandonné" in header_now["text"]
    assert buttons(header_now) == []

    # She unblocks the bot later: reachable again, in the history too.
    world.clock.advance(timedelta(days=1))
    mark = tg.mark()
    await tg.user_unblocks_bot(ana)
    await tg.customer_sends(ana, "/start")  # same chat: handled after the unblocking
    await world.to_customer(ana, "Je suis l'assistant du service client", since=mark)
    assert world.row("SELECT reachable FROM customers")["reachable"] == 1
    history = world.rows("SELECT reachable, reason FROM customer_reachability ORDER BY id")
    assert [tuple(r) for r in history] == [(0, "blocked"), (1, "returned")]


# ---------------------------------------------------------------------- 8. restart


async def test_an_agent_answers_after_a_restart(world: World) -> None:
    tg, ana, paul = world.tg, world.ana, world.paul
    first = await world.start()
    thread, _ = await world.handed_off()
    await world.stop(first)

    await world.start()
    world.clock.advance(timedelta(minutes=3))
    mark = tg.mark()
    reply = await tg.agent_writes(paul, thread, "Bonjour Ana, Paul du service client.")
    await world.to_customer(ana, "Paul du service client", since=mark)
    reply_id = reply["message"]["message_id"]
    await tg.wait_for("setMessageReaction", lambda c: c.params["message_id"] == reply_id,
                      since=mark)  # fmt: skip
    mark = tg.mark()
    await tg.customer_sends(ana, "Merci, j'attends votre retour")
    relayed = await world.to_desk("j'attends votre retour", thread=thread, since=mark)
    assert relayed["text"].startswith("👤 Ana Lopez")
    await world.settle()

    conv = world.row("SELECT * FROM conversations")
    assert conv["state"] == "assigned"
    assert conv["agent_key"] == f"telegram:{paul.id}"
    assert conv["first_agent_response_at"] == ms(world)
    assert conv["first_agent_response_at"] > conv["handed_off_at"]
    assert len(tg.calls_to("createForumTopic")) == 1
    assert len([t for t in world.texts_to(ana) if HANDOFF in t]) == 1  # nothing replayed
    assert world.rows("SELECT * FROM outbox WHERE sent_at IS NULL") == []


async def test_a_returning_customer_is_served_in_their_reopened_topic(
    world: World, app: SupportApp
) -> None:
    tg, ana, paul = world.tg, world.ana, world.paul
    thread, first_header = await world.handed_off()
    mark = tg.mark()
    resolve = await tg.press_button(paul, first_header, button(first_header, "Résoudre"))
    assert await world.answer_to(resolve) == {"text": "Résolu", "show_alert": False}
    await world.to_customer(ana, NPS_QUESTION, since=mark)
    await tg.wait_for("closeForumTopic", since=mark)
    await world.settle()

    # Instead of answering the survey, Ana needs help again.
    world.clock.advance(timedelta(minutes=1))
    mark = tg.mark()
    await tg.customer_sends(ana, "Je veux parler à un conseiller, encore un souci")
    await world.to_customer(ana, HANDOFF, since=mark)
    await tg.wait_for("reopenForumTopic", lambda c: c.params["message_thread_id"] == thread,
                      since=mark)  # fmt: skip
    header = await world.to_desk("En attente", thread=thread, since=mark)
    assert not tg.topic(world.desk, thread).closed
    assert tg.calls_to("createForumTopic", since=mark) == []
    await world.settle()
    first, second = world.rows("SELECT * FROM conversations ORDER BY id")
    assert (first["state"], first["close_reason"]) == ("closed", "new_request")
    assert second["state"] == "queued"
    assert second["desk_thread"] == str(thread)
    assert second["desk_header"] == str(header["message_id"])
    assert buttons(header)[0][0] == ("Prendre", f"a{second['id']}:take")
    assert world.row("SELECT expired_at FROM surveys")["expired_at"] is not None

    # In the reused topic, Paul's words belong to the new conversation.
    mark = tg.mark()
    await tg.agent_writes(paul, thread, "Re-bonjour Ana, je vous écoute.")
    await world.to_customer(ana, "Re-bonjour Ana", since=mark)
    await world.settle()
    state = {r["id"]: r["state"] for r in world.rows("SELECT id, state FROM conversations")}
    assert state == {first["id"]: "closed", second["id"]: "assigned"}


async def test_stopping_delivers_what_was_already_decided(world: World, app: SupportApp) -> None:
    """``stop`` drains the outbox: a reply waiting out a 429 still goes out, before the
    transport closes, instead of waiting for the next start."""
    tg, ana = world.tg, world.ana
    tg.fail("sendMessage", 429, retry_after=1)
    await tg.customer_sends(ana, QUESTION)
    await tg.wait_for("sendMessage", ok=False)  # the reply is now waiting to be retried
    loop = asyncio.get_running_loop()
    started = loop.time()
    await world.stop(app)
    stopping = loop.time() - started
    assert [t for t in world.texts_to(ana) if DID_IT_HELP in t]
    sent = world.row("SELECT sent_at, attempts FROM outbox WHERE op = 'send'")
    assert sent["sent_at"] is not None
    assert sent["attempts"] == 2
    assert stopping < 4.5  # well under the 5 s drain limit: it did not time out


async def test_an_english_speaking_customer_is_served_in_english(
    world: World, app: SupportApp
) -> None:
    tg = world.tg
    bob = tg.add_user("Bob", language_code="en-GB")
    await tg.customer_sends(bob, "How long does delivery take?")
    answer = await world.to_customer(bob, "Did this answer solve your problem?")
    assert [label for row in buttons(answer) for label, _ in row] == [
        "Yes, thanks",
        "No",
        "Talk to a person",
    ]
    mark = tg.mark()
    await tg.press_button(bob, answer, button(answer, "Talk to a person"))
    await world.to_customer(bob, "I'm putting you through to a member of our team", since=mark)
    _, header = await world.topic_opened(since=mark)
    assert "Le client demande un conseiller" in header["text"]  # the desk keeps its language
    assert "Bob · telegram · en" in header["text"]
    await tg.wait_for("editMessageText", since=mark)
    assert tg.message(bob.id, answer["message_id"])["text"].endswith("\n→ Talk to a person")
    await world.settle()
    conv = world.row("SELECT language, handoff_reason, topic FROM conversations")
    assert tuple(conv) == ("en", "requested", "livraison")


# ---------------------------------------------------------------------- 9. complaints


async def test_a_complaint_goes_to_a_person_at_once(world: World, app: SupportApp) -> None:
    tg, ana = world.tg, world.ana
    complaint = "C'est inadmissible, je veux faire une réclamation <b>maintenant</b> & vite"
    await tg.customer_sends(ana, complaint)
    await world.to_customer(ana, "Je transmets votre message tout de suite à un conseiller")
    thread, header = await world.topic_opened()
    assert "Réclamation" in header["text"]
    assert complaint in header["text"]  # shown as typed: nothing a customer writes formats
    assert {e["type"] for e in header.get("entities", [])} == {"bold"}
    await world.settle()
    conv = world.row("SELECT * FROM conversations")
    assert (conv["state"], conv["handoff_reason"]) == ("queued", "complaint")
    assert conv["desk_thread"] == str(thread)
    assert "bot_answered" not in world.event_kinds(conv["id"])
    assert not [t for t in world.texts_to(ana) if DID_IT_HELP in t]


# ---------------------------------------------------------------------- timers


async def test_a_queued_conversation_reminds_then_is_abandoned(
    world: World, app: SupportApp
) -> None:
    tg, ana = world.tg, world.ana
    thread, _ = await world.handed_off()
    cid = world.row("SELECT id FROM conversations")["id"]

    world.clock.advance(timedelta(minutes=6))
    assert await app.engine.sweep() == 1
    await world.to_desk(f"Conversation #{cid} en attente depuis 6 min.", thread=thread)
    await world.settle()
    assert world.row("SELECT state FROM conversations")["state"] == "queued"

    world.clock.advance(timedelta(minutes=10))
    mark = tg.mark()
    await app.engine.sweep()
    await world.to_customer(ana, "Nous n'avons pas pu vous répondre à temps", since=mark)
    await world.to_desk(f"Conversation #{cid} abandonnée (timeout)", since=mark)
    await world.settle()
    conv = world.row("SELECT state, abandon_reason, abandoned_at FROM conversations")
    assert tuple(conv) == ("closed", "timeout", ms(world))
    assert world.rows("SELECT * FROM timers") == []
    assert await app.engine.sweep() == 0


# ---------------------------------------------------------------------- 10. secrets


HTTP_LOGGERS = ("httpx", "httpcore", "aiohttp", "telegram")


async def _talk_through_a_failure(world: World, app: SupportApp) -> None:
    world.tg.fail("sendMessage", 500)  # a failure path too: it is logged with its reason
    await world.tg.customer_sends(world.ana, QUESTION)
    await world.to_customer(world.ana, DID_IT_HELP)
    await world.handed_off("Je voudrais parler à un conseiller")
    await world.stop(app)


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_secrets_never_reach_the_logs(
    world: World, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.DEBUG)
    tg = world.tg
    if mode == "webhook":
        app, _ = await world.start_webhook()
    else:
        app = await world.start()
    # An operator debugging the HTTP layer turns its loggers up after the start.
    with loggers_at_debug(HTTP_LOGGERS):
        await _talk_through_a_failure(world, app)

    records = caplog.records
    assert any("Set Bot API URL" in r.getMessage() for r in records)  # PTB logged its URL
    assert any("retry 1" in r.getMessage() for r in records)  # the outbox logged the 500
    # HTTP logging was on: PTB logged every call (our aiohttp client logs no URL at all).
    assert any("Calling Bot API endpoint `sendMessage`" in r.getMessage() for r in records)
    assert_no_secret_logged(caplog, [tg.token, tg.token.split(":", 1)[1], WEBHOOK_SECRET])


# ---------------------------------------------------------------------- complaints


async def test_a_complaint_resolved_without_cause_gets_a_menu_in_its_topic(
    world: World, app: SupportApp
) -> None:
    tg, ana, paul = world.tg, world.ana, world.paul
    mark = tg.mark()
    await tg.customer_sends(ana, "Je veux déposer une réclamation, colis jamais reçu")
    thread, _ = await world.topic_opened(since=mark)
    cid = world.row("SELECT id FROM conversations")["id"]
    await world.settle()
    assert world.row("SELECT opened_by FROM complaints")["opened_by"] == "customer"

    mark = tg.mark()
    await tg.agent_writes(paul, thread, "/resolve cause=la météo")  # refused, still open
    await world.to_desk("Cause inconnue « la météo »", since=mark)
    await world.settle()
    assert world.row("SELECT state FROM conversations")["state"] == "queued"

    mark = tg.mark()
    await tg.agent_writes(paul, thread, "/resolve livraison")
    menu = await world.to_desk("choisissez la cause et la solution", thread=thread, since=mark)
    rows = buttons(menu)
    assert rows[0] == [("retard de livraison", f"k{cid}:c:0"), ("colis endommagé", f"k{cid}:c:1")]
    assert ("Livraison offerte", f"k{cid}:s:4") in [b for row in rows for b in row]
    await world.settle()

    press = await tg.press_button(paul, menu, button(menu, "colis perdu"))
    answer = await world.answer_to(press)
    assert answer["show_alert"] is False
    assert "colis perdu" in answer["text"]
    press = await tg.press_button(paul, menu, button(menu, "Livraison offerte"))
    assert "Livraison offerte" in (await world.answer_to(press))["text"]
    await world.settle()
    record = world.row("SELECT cause, solution, updated_by FROM complaints")
    assert tuple(record) == ("colis perdu", "free_delivery", f"telegram:{paul.id}")

    refused = await tg.press_button(world.eve, menu, button(menu, "autre"))  # not an agent
    assert await world.answer_to(refused) == {"text": AGENTS_ONLY, "show_alert": True}
    assert world.row("SELECT cause FROM complaints")["cause"] == "colis perdu"


async def test_saved_replies_in_a_topic_and_the_customer_context(
    world: World, app: SupportApp
) -> None:
    tg, ana, paul = world.tg, world.ana, world.paul
    thread, header = await world.handed_off()
    assert "🗂 Premier contact" in header["text"]

    # /r alone lists the replies under Paul's message, in the topic; Ana gets nothing.
    mark = tg.mark()
    await tg.agent_writes(paul, thread, "/r")
    listing = await world.to_desk("bonjour — Greeting", thread=thread, since=mark)
    assert "merci — Closing" in listing["text"]
    await world.settle()
    assert [
        c for c in tg.calls_to("sendMessage", since=mark) if c.params["chat_id"] == ana.id
    ] == []

    # A wrong shortcut is refused with the close ones, to Paul only.
    mark = tg.mark()
    await tg.agent_writes(paul, thread, "/r bonjuor")
    await world.to_desk("Vouliez-vous dire : bonjour", thread=thread, since=mark)
    await world.settle()
    assert [
        c for c in tg.calls_to("sendMessage", since=mark) if c.params["chat_id"] == ana.id
    ] == []

    # /r bonjour: the text, placeholders filled, reaches Ana and is shown in the topic.
    mark = tg.mark()
    await tg.agent_writes(paul, thread, "/r bonjour")
    sent = "Bonjour Ana Lopez, je suis Paul du service client."
    await world.to_customer(ana, sent, since=mark)
    await world.to_desk(sent, thread=thread, since=mark)
    await world.settle()
    conv = world.row("SELECT state, agent_name FROM conversations")
    assert (conv["state"], conv["agent_name"]) == ("assigned", "Paul Martin")
    assert "Paul Martin" not in " ".join(world.texts_to(ana))  # customers see the first name

    # Resolved with a tag and rated; her next request's header tells who she is.
    mark = tg.mark()
    await tg.agent_writes(paul, thread, "/resolve livraison")
    await world.to_customer(ana, NPS_QUESTION, since=mark)
    await world.settle()
    world.clock.advance(timedelta(minutes=5))
    mark = tg.mark()
    await tg.customer_sends(ana, "Je veux parler à un conseiller, encore un souci")
    again = await world.to_desk("En attente", thread=thread, since=mark)
    assert "1 conversation(s) avant celle-ci · dernière le" in again["text"]
    assert ": livraison" in again["text"]
