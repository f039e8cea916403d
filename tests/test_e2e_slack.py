"""End to end on Slack: the whole product against the local Slack (and Telegram) servers.

Real ``SupportApp`` (engine, outbox, SQLite file), real slack-bolt / slack_sdk and real
python-telegram-bot, talking HTTP and WebSocket to ``FakeSlack`` and ``TelegramServer``.
The tests act as Slack and Telegram users do (messages, button presses, thread replies)
and assert on what the fake servers received and on the database; they wait on
conditions, never on sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import SupportApp
from bot.config import Secrets, Settings, settings_from_mapping
from bot.texts import CSAT_FACES
from handlers.slack import SlackTransport
from handlers.telegram import RateLimits, TelegramTransport
from tests.fakes.clock import FakeClock
from tests.fakes.slack_server import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER_ID,
    EXTERNAL_TEAM_ID,
    SIGNING_SECRET,
    Delivery,
    FakeSlack,
    Message,
)
from tests.fakes.telegram_server import FakeChat, TelegramServer, running_server
from tests.logs import assert_no_secret_logged, loggers_at_debug

KNOWLEDGE = Path(__file__).resolve().parent.parent / "knowledge.yaml"
WAIT = 5.0

CUSTOMER = "U0MARIE"  # writes to the app in a DM
EXT = "U0MARC"  # a customer company's employee in the shared (Slack Connect) channel
AGENT = "U0PAUL"  # an agent: member of the agents' channel
EMPLOYEE = "U0EMMA"  # of the business's workspace, in the shared channel, not an agent
STRANGER = "U0EVE"  # of the business's workspace, not an agent
AGENTS = "C0AGENTS"
SUPPORT = "C0SUPPORT"

DELIVERY_QUESTION = "Quel est le délai de livraison ?"
DELIVERY_ANSWER = "livrées en 2 à 4 jours ouvrés"  # a piece of knowledge.yaml's answer
ASK_PERSON = "Je voudrais parler à un conseiller"
MARKUP = "<!channel> <@U0AGENT> *gras* & <b>"


# ---------------------------------------------------------------------- the world


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    fake.add_user(CUSTOMER, "marie", real_name="Marie Dupont", locale="fr-FR")
    fake.add_user(EXT, "marc", team=EXTERNAL_TEAM_ID, locale="fr-FR")
    fake.add_user(AGENT, "paul")
    fake.add_user(EMPLOYEE, "emma")
    fake.add_user(STRANGER, "eve")
    fake.add_channel(AGENTS, "support-agents", [AGENT])
    fake.add_channel(SUPPORT, "acme-support", [EXT, EMPLOYEE], ext_shared=True)
    async with fake:
        yield fake


@pytest.fixture
async def tg() -> AsyncIterator[TelegramServer]:
    async with running_server() as server:
        yield server


def make_settings(
    tmp_path: Path,
    slack: FakeSlack,
    *,
    mode: str = "http",
    desk: str = "slack",
    agent_ids: list[str] | None = None,
    telegram: dict[str, Any] | None = None,
) -> Settings:
    return settings_from_mapping(
        {
            "storage": {"path": str(tmp_path / "e2e.db")},
            "knowledge": {"path": str(KNOWLEDGE)},
            "replies": {"path": str(KNOWLEDGE.parent / "replies.yaml")},  # the shipped sample
            "web": {"enabled": False},  # this test is about the other channels
            "slack": {
                "enabled": True,
                "api_url": slack.api_url,
                "agents_channel": AGENTS,
                "agent_ids": agent_ids or [],
                "support_channels": [SUPPORT],
                "mode": mode,
                "http_port": 0,
            },
            "telegram": telegram or {"enabled": False},
            "desk": desk,
            "digest": {"enabled": False},
        }
    )


SLACK_SECRETS = Secrets(
    slack_bot_token=BOT_TOKEN, slack_signing_secret=SIGNING_SECRET, slack_app_token=APP_TOKEN
)


@dataclass
class Product:
    """The running product and the handles the tests act and look through."""

    app: SupportApp
    slack: FakeSlack
    clock: FakeClock
    db_path: Path

    @property
    def transport(self) -> SlackTransport:
        return next(t for t in self.app.transports if isinstance(t, SlackTransport))

    @property
    def telegram(self) -> TelegramTransport:
        return next(t for t in self.app.transports if isinstance(t, TelegramTransport))

    async def settle(self) -> None:
        """Until everything the engine decided has been delivered (outbox idle)."""
        assert self.app.components is not None
        async with asyncio.timeout(WAIT):
            await self.app.components.dispatcher.drain()

    async def deliver(self, sending: Awaitable[Delivery]) -> Delivery:
        """Slack delivers something; wait until the app handled it and delivered the result."""
        before = self.transport.handled
        delivery = await sending
        assert delivery.status == 200, delivery
        await self.transport.wait_handled(before + 1, within=WAIT)
        await self.settle()
        return delivery

    async def event(self, event: dict[str, Any], **kwargs: Any) -> Delivery:
        return await self.deliver(
            self.slack.send_event(event, via=self.transport.settings.mode, **kwargs)
        )

    async def press(self, user: str, message: Message, **which: str) -> Delivery:
        payload = self.slack.block_action(user, message, **which)
        return await self.deliver(
            self.slack.send_interaction(payload, via=self.transport.settings.mode)
        )

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        """Read the database file as another process would (WAL: committed data only)."""
        with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()

    def dm(self, user: str = CUSTOMER) -> list[Message]:
        """What the bot posted in its DM with ``user``."""
        return self.slack.posted(self.slack.dm_channel(user))

    def threads(self) -> list[Message]:
        """Thread headers in the agents' channel (top-level messages of the bot)."""
        return [m for m in self.slack.posted(AGENTS) if m.thread_ts is None]

    def thread_posts(self, header: Message) -> list[Message]:
        return self.slack.posted(AGENTS, thread_ts=header.ts)


@asynccontextmanager
async def running(
    settings: Settings,
    slack: FakeSlack,
    secrets: Secrets = SLACK_SECRETS,
    clock: FakeClock | None = None,
) -> AsyncIterator[Product]:
    clock = clock or FakeClock()
    options: dict[str, dict[str, Any]] = {
        "slack": {"pace": 0.0},
        "telegram": {"limits": RateLimits.unlimited()},
    }
    app = SupportApp(settings, secrets, clock=clock, transport_options=options)
    await app.start()
    try:
        product = Product(app, slack, clock, settings.storage.path)
        if settings.slack.mode == "http":
            slack.events_url = product.transport.http_url
        else:
            await slack.wait_socket()
        yield product
    finally:
        await app.stop()


@pytest.fixture
async def product(tmp_path: Path, slack: FakeSlack) -> AsyncIterator[Product]:
    async with running(make_settings(tmp_path, slack), slack) as p:
        yield p


def words(message: Message) -> str:
    """Everything a person sees of a message: its text and every text object of its blocks."""
    return "\n".join([message.text, *message.mrkdwn_texts(), *message.plain_texts()])


def labels(message: Message) -> list[str]:
    return [b["text"]["text"] for b in message.buttons()]


def button_rows(message: Message) -> list[list[str]]:
    return [
        [el["text"]["text"] for el in b["elements"]]
        for b in message.blocks
        if b.get("type") == "actions"
    ]


def contexts(message: Message) -> list[str]:
    return [
        el["text"]
        for b in message.blocks
        if b.get("type") == "context"
        for el in b["elements"]
        if "text" in el
    ]


def with_text(messages: list[Message], fragment: str) -> list[Message]:
    return [m for m in messages if fragment in words(m)]


# ---------------------------------------------------------------------- 1. a DM, start to end


async def test_a_dm_conversation_from_question_to_survey(product: Product) -> None:
    p, slack = product, product.slack

    # the knowledge base answers, with Block Kit buttons
    await p.event(slack.dm_message(CUSTOMER, DELIVERY_QUESTION))
    (answer,) = p.dm()
    assert DELIVERY_ANSWER in " ".join(answer.mrkdwn_texts())
    assert "Cette réponse a-t-elle résolu votre problème ?" in " ".join(answer.mrkdwn_texts())
    assert button_rows(answer) == [["Oui, merci", "Non"], ["Parler à un conseiller"]]
    assert answer.thread_ts is None

    # "Non": the question shows the choice, and the conversation goes to the agents
    p.clock.advance(timedelta(seconds=20))
    await p.press(CUSTOMER, answer, label="Non")
    assert answer.buttons() == []
    assert "✅ Non" in contexts(answer)
    assert any("conseiller" in words(m) for m in p.dm()[1:])
    (header,) = p.threads()
    assert "#1" in header.text
    assert "📌 En attente" in contexts(header)
    assert labels(header) == ["Prendre", "Résoudre"]
    assert "❓ La réponse du bot n'a pas aidé" in header.plain_texts()

    # an agent takes it: the header says who, the customer is told
    p.clock.advance(timedelta(seconds=40))
    await p.press(AGENT, header, label="Prendre")
    assert "📌 Pris en charge par paul" in contexts(header)
    assert labels(header) == ["Résoudre"]
    assert with_text(p.dm(), "Paul a rejoint la conversation.")  # the name, not the handle
    assert not with_text(p.dm(), "paul a rejoint")
    assert with_text(p.thread_posts(header), "paul prend la conversation.")

    # the customer's message reaches the thread
    await p.event(slack.dm_message(CUSTOMER, "Ma commande 4521 n'est toujours pas là."))
    (relayed_in,) = with_text(p.thread_posts(header), "Ma commande 4521 n'est toujours pas là.")
    assert "👤 marie" in contexts(relayed_in)

    # the agent's thread reply reaches the customer's DM, and is marked as relayed
    p.clock.advance(timedelta(seconds=30))
    reply = slack.channel_message(
        AGENTS, AGENT, "Bonjour Marie, elle part demain.", thread_ts=header.ts
    )
    await p.event(reply)
    assert with_text(p.dm(), "Bonjour Marie, elle part demain.")
    assert slack.message(AGENTS, reply["ts"]).reactions == {"white_check_mark": [BOT_USER_ID]}

    # an internal note stays in the thread
    dm_before = len(p.dm())
    note = slack.channel_message(AGENTS, AGENT, "note: cliente VIP", thread_ts=header.ts)
    await p.event(note)
    assert len(p.dm()) == dm_before
    assert not with_text(p.dm(), "VIP")
    assert slack.message(AGENTS, note["ts"]).reactions == {}

    # resolve from the header: the NPS question, eleven buttons on two rows
    await p.press(AGENT, header, label="Résoudre")
    assert with_text(p.dm(), "Votre demande est marquée comme résolue.")
    (nps,) = with_text(p.dm(), "Sur une échelle de 0 à 10")
    assert button_rows(nps) == [[str(n) for n in range(6)], [str(n) for n in range(6, 11)]]
    assert labels(header) == []
    assert "📌 Résolu" in contexts(header)
    assert with_text(p.thread_posts(header), "Résolu par paul.")
    assert with_text(p.thread_posts(header), "Conversation close.")

    await p.press(CUSTOMER, nps, label="9")
    assert nps.buttons() == []
    assert "✅ 9" in contexts(nps)
    (csat,) = with_text(p.dm(), "Comment évaluez-vous l'aide que vous avez reçue ?")
    assert button_rows(csat) == [list(CSAT_FACES)]

    await p.press(CUSTOMER, csat, label="😍")
    assert "✅ 😍" in contexts(csat)
    (comment,) = with_text(p.dm(), "Souhaitez-vous ajouter un commentaire ?")
    assert labels(comment) == ["Passer"]

    await p.press(CUSTOMER, comment, label="Passer")
    assert "✅ Passer" in contexts(comment)
    assert "Merci pour votre réponse" in words(p.dm()[-1])

    (conv,) = p.rows("SELECT * FROM conversations")
    assert conv["channel"] == "slack"
    assert conv["state"] == "closed"
    assert conv["resolved_by"] == "agent"
    assert conv["agent_key"] == f"slack:{AGENT}"
    assert conv["handoff_reason"] == "not_helpful"
    assert conv["topic"] == "livraison"
    assert conv["first_response_at"] == conv["started_at"]  # the bot answered at once
    # handed off at +20 s, taken at +60 s ("joined" counts for nothing), answered at +90 s
    assert conv["first_agent_response_at"] - conv["handed_off_at"] == 70_000
    (survey,) = p.rows("SELECT * FROM surveys")
    assert (survey["nps"], survey["csat"], survey["comment"]) == (9, 5, None)
    assert survey["completed_at"] is not None
    assert survey["agent_key"] == f"slack:{AGENT}"
    notes = p.rows("SELECT text FROM messages WHERE author = 'note'")
    assert [n["text"] for n in notes] == ["note: cliente VIP"]
    failed = p.rows("SELECT op, error FROM outbox WHERE failed_at IS NOT NULL")
    assert [tuple(r) for r in failed] == []
    assert p.transport.errors == []


# ---------------------------------------------------------------------- 2. a shared channel


async def test_shared_channel_messages_are_conversations_answered_in_their_threads(
    product: Product,
) -> None:
    p, slack = product, product.slack

    first = slack.channel_message(SUPPORT, EXT, DELIVERY_QUESTION)
    await p.event(first)
    (answer,) = slack.posted(SUPPORT)
    assert answer.thread_ts == first["ts"]  # in the customer's thread, not in the channel
    assert DELIVERY_ANSWER in words(answer)

    second = slack.channel_message(SUPPORT, EXT, "Où trouver ma facture ?")
    await p.event(second)
    in_second = slack.posted(SUPPORT, thread_ts=second["ts"])
    assert len(in_second) == 1
    assert "facture" in words(in_second[0]).lower()
    assert slack.posted(SUPPORT, thread_ts=first["ts"]) == [answer]

    # a button in a thread answers that thread's conversation
    await p.press(EXT, answer, label="Oui, merci")
    in_first = slack.posted(SUPPORT, thread_ts=first["ts"])
    assert with_text(in_first, "Ravi d'avoir pu vous aider")
    assert with_text(in_first, "Sur une échelle de 0 à 10")
    assert slack.posted(SUPPORT, thread_ts=second["ts"]) == in_second
    assert all(m.thread_ts is not None for m in slack.posted(SUPPORT))

    # a member of the business's workspace posting there is not a customer
    await p.event(slack.channel_message(SUPPORT, EMPLOYEE, "Quelqu'un a vu le colis de Marc ?"))
    assert len(slack.posted(SUPPORT)) == 4
    assert p.threads() == []  # nobody was handed off yet

    # the customer answers in the second thread: that conversation goes to the agents,
    # and the agent's reply comes back into that thread
    later = slack.channel_message(SUPPORT, EXT, ASK_PERSON, thread_ts=second["ts"])
    await p.event(later)
    (header,) = p.threads()
    assert "#2" in header.text
    assert len(slack.posted(SUPPORT, thread_ts=second["ts"])) == 2
    reply = slack.channel_message(AGENTS, AGENT, "Je vous l'envoie, Marc.", thread_ts=header.ts)
    await p.event(reply)
    assert with_text(slack.posted(SUPPORT, thread_ts=second["ts"]), "Je vous l'envoie, Marc.")
    assert not with_text(slack.posted(SUPPORT, thread_ts=first["ts"]), "Marc.")
    assert all(m.thread_ts is not None for m in slack.posted(SUPPORT))

    convs = p.rows("SELECT * FROM conversations ORDER BY id")
    assert [(c["chat_id"], c["thread_id"]) for c in convs] == [
        (SUPPORT, first["ts"]),
        (SUPPORT, second["ts"]),
    ]
    assert [c["state"] for c in convs] == ["surveying", "assigned"]
    assert [c["resolved_by"] for c in convs] == ["bot", None]
    customers = p.rows("SELECT key FROM customers")
    assert [c["key"] for c in customers] == [f"slack:{EXT}"]


# ---------------------------------------------------------------------- 3–4. across platforms


def telegram_settings(tg: TelegramServer, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "api_url": tg.url, "poll_timeout": 10, **extra}


def both_secrets(tg: TelegramServer) -> Secrets:
    return Secrets(
        telegram_bot_token=tg.token,
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_app_token=APP_TOKEN,
    )


def bot_texts(tg: TelegramServer, chat: FakeChat | int, thread: int | None = None) -> list[str]:
    return [m.get("text", "") for m in tg.sent_by_bot(chat, thread)]


async def test_telegram_customer_served_by_slack_agents(
    tmp_path: Path, slack: FakeSlack, tg: TelegramServer
) -> None:
    ana = tg.add_user("Ana", "Lopez", language_code="fr")
    settings = make_settings(tmp_path, slack, telegram=telegram_settings(tg))
    async with running(settings, slack, both_secrets(tg)) as p:
        assert {type(t) for t in p.app.transports} == {TelegramTransport, SlackTransport}

        await tg.customer_sends(ana, "/agent")
        header = await slack.wait_until(lambda: next(iter(p.threads()), None), what="a thread")
        await p.settle()
        assert "📌 En attente" in contexts(header)
        assert "💬 telegram" in header.plain_texts()
        assert "👤 Ana Lopez" in header.plain_texts()
        assert labels(header) == ["Prendre", "Résoudre"]
        await tg.wait_until(
            lambda: any("conseiller" in t for t in bot_texts(tg, ana.id)), what="handoff notice"
        )

        text = "Bonjour Ana, je regarde (R&D <urgent>)."  # Slack sends it as &amp; &lt; &gt;
        reply = slack.channel_message(AGENTS, AGENT, text, thread_ts=header.ts)
        await p.event(reply)
        await tg.wait_until(lambda: text in bot_texts(tg, ana.id), what="the agent's reply")
        await p.settle()
        assert slack.message(AGENTS, reply["ts"]).reactions == {"white_check_mark": [BOT_USER_ID]}
        assert "📌 Pris en charge par paul" in contexts(header)

        await tg.customer_sends(ana, "Merci !")
        await slack.wait_until(
            lambda: with_text(p.thread_posts(header), "Merci !"), what="the customer's answer"
        )

    (conv,) = p.rows("SELECT * FROM conversations")
    assert (conv["channel"], conv["desk"], conv["state"]) == ("telegram", "slack", "assigned")
    assert conv["desk_thread"] == header.ts
    assert conv["agent_key"] == f"slack:{AGENT}"
    assert conv["first_agent_response_at"] is not None


async def test_slack_customer_served_by_telegram_agents(
    tmp_path: Path, slack: FakeSlack, tg: TelegramServer
) -> None:
    paul = tg.add_user("Paul", "Martin", username="paul_agent")
    forum = tg.add_group("Support", members=[paul])
    telegram = telegram_settings(tg, agents_chat_id=forum.id, agent_ids=[paul.id])
    settings = make_settings(tmp_path, slack, desk="telegram", telegram=telegram)
    async with running(settings, slack, both_secrets(tg)) as p:
        await p.event(slack.dm_message(CUSTOMER, ASK_PERSON))
        assert any("conseiller" in words(m) for m in p.dm())
        (topic_id,) = forum.topics
        assert forum.topics[topic_id].name.startswith("#1")
        header = tg.sent_by_bot(forum, topic_id)[0]
        assert "marie" in header["text"]
        assert p.threads() == []  # the Slack agents' channel is not the desk here

        written = await tg.agent_writes(paul, topic_id, "Bonjour Marie, c'est Paul <!here> & co")
        relayed = await slack.wait_until(
            lambda: with_text(p.dm(), "Bonjour Marie, c'est Paul"), what="the agent's reply"
        )
        assert relayed[0].text == "Bonjour Marie, c'est Paul &lt;!here&gt; &amp; co"
        assert slack.pings(relayed[0]) == []
        agent_message_id = written["message"]["message_id"]
        await tg.wait_until(
            lambda: tg.reactions.get((forum.id, agent_message_id)), what="the relayed mark"
        )

        await p.event(slack.dm_message(CUSTOMER, "Super, merci Paul"))
        await tg.wait_until(
            lambda: any("Super, merci Paul" in t for t in bot_texts(tg, forum, topic_id)),
            what="the customer's answer in the topic",
        )

    (conv,) = p.rows("SELECT * FROM conversations")
    assert (conv["channel"], conv["desk"], conv["state"]) == ("slack", "telegram", "assigned")
    assert conv["desk_thread"] == str(topic_id)
    assert conv["agent_key"] == f"telegram:{paul.id}"


# ---------------------------------------------------------------------- 5–6. Slack's deliveries


async def test_unsigned_forged_and_stale_requests_are_refused_and_leave_no_trace(
    product: Product,
) -> None:
    p, slack = product, product.slack
    forged = await slack.send_event(slack.dm_message(CUSTOMER, "forged"), secret="not-the-secret")
    stale = await slack.send_event(
        slack.dm_message(CUSTOMER, "replayed"), timestamp=int(time.time()) - 6 * 60
    )
    unsigned = await slack.post_signed(
        '{"type": "event_callback", "event": {}}', "application/json", signed=False
    )
    assert (forged.status, stale.status, unsigned.status) == (401, 401, 401)

    # the next genuine event is handled: the refused ones were not merely late
    await p.event(slack.dm_message(CUSTOMER, DELIVERY_QUESTION))
    assert p.transport.handled == 1
    assert [m["text"] for m in p.rows("SELECT text FROM messages WHERE author = 'customer'")] == [
        DELIVERY_QUESTION
    ]
    assert len(p.rows("SELECT * FROM inbound")) == 1
    assert len(p.rows("SELECT * FROM conversations")) == 1
    assert len(slack.calls_to("chat.postMessage")) == 1


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_an_event_redelivered_by_slack_is_handled_once(
    tmp_path: Path, slack: FakeSlack, mode: str
) -> None:
    """The original delivery, then Slack's retries 1, 2 and 3 of the same event_id, all at
    once (X-Slack-Retry-Num over HTTP, retry_attempt in Socket Mode)."""
    async with running(make_settings(tmp_path, slack, mode=mode), slack) as p:
        event = slack.dm_message(CUSTOMER, DELIVERY_QUESTION)
        first = await slack.send_event(event, via=mode)
        assert first.status == 200
        again = [
            slack.send_event(event, via=mode, event_id=first.event_id, retry=n) for n in (1, 2, 3)
        ]
        retries = await asyncio.gather(*again)
        assert [d.status for d in retries] == [200, 200, 200]
        # Over HTTP a redelivery stops at the door (its event_id is stored already);
        # in Socket Mode each copy reaches the listener and the engine drops the repeats.
        await p.transport.wait_handled(1 if mode == "http" else 4, within=WAIT)
        await p.settle()
        if mode == "http":
            stored = p.rows("SELECT delivery_key FROM inbound_queue")
            assert [r["delivery_key"] for r in stored] == [f"slack:event:{first.event_id}"]

        customer_lines = p.rows("SELECT text FROM messages WHERE author = 'customer'")
        assert [m["text"] for m in customer_lines] == [DELIVERY_QUESTION]
        assert len(p.rows("SELECT * FROM messages WHERE direction = 'out'")) == 1
        assert len(p.rows("SELECT * FROM conversations")) == 1
        assert len(p.dm()) == 1
        assert len(slack.calls_to("chat.postMessage")) == 1

        # Slack also echoes the app's own messages back as events: they are not customers'
        await p.event(slack.own_message_event(p.dm()[0]))
        assert len(p.rows("SELECT * FROM messages")) == 2
        assert len(slack.calls_to("chat.postMessage")) == 1
        assert p.transport.errors == []


# ---------------------------------------------------------------------- 7. markup injection


async def test_customer_markup_reaches_the_agents_escaped(product: Product) -> None:
    p, slack = product, product.slack
    await p.event(slack.dm_message(CUSTOMER, ASK_PERSON))
    (header,) = p.threads()

    await p.event(slack.dm_message(CUSTOMER, MARKUP))  # typed: Slack sends &lt;!channel&gt;…
    (post,) = with_text(p.thread_posts(header), "*gras*")
    assert "<!channel>" not in post.text
    assert "<@U0AGENT>" not in post.text
    assert "&lt;!channel&gt; &lt;@U0AGENT&gt; *gras* &amp; &lt;b&gt;" in post.text
    assert MARKUP in post.plain_texts()  # shown literally, as the customer typed it
    assert slack.pings(post) == []
    assert slack.pings(header) == []

    # a real @channel and mention picked in Slack's composer (wire format) are defused too
    picked = "<!channel> <@U0PAUL> regardez &amp; vite"
    await p.event(slack.dm_message(CUSTOMER, picked, raw=True))
    (post2,) = with_text(p.thread_posts(header), "regardez")
    assert slack.pings(post2) == []
    assert "&amp;" in post2.text
    assert all(slack.pings(m) == [] for m in slack.posted(AGENTS))


# ---------------------------------------------------------------------- 8. who may take


@pytest.mark.parametrize(
    "agent_ids",
    [[AGENT], []],
    ids=["not-in-agent_ids", "not-a-member-of-the-agents-channel"],
)
async def test_a_stranger_cannot_take_a_conversation(
    tmp_path: Path, slack: FakeSlack, agent_ids: list[str]
) -> None:
    if agent_ids:  # with agent_ids, being in the agents' channel is not enough
        slack.join(AGENTS, STRANGER)
    async with running(make_settings(tmp_path, slack, agent_ids=agent_ids), slack) as p:
        await p.event(slack.dm_message(CUSTOMER, ASK_PERSON))
        (header,) = p.threads()
        dm_before = len(p.dm())

        await p.press(STRANGER, header, label="Prendre")
        notices = [e for e in slack.ephemerals if e.user == STRANGER]
        assert [n.text for n in notices] == ["Réservé aux agents du service client."]
        assert "📌 En attente" in contexts(header)
        assert labels(header) == ["Prendre", "Résoudre"]
        assert header.edits == []
        assert len(p.dm()) == dm_before
        (conv,) = p.rows("SELECT state, agent_key FROM conversations")
        assert tuple(conv) == ("queued", None)

        # the refusal is not a lock-out: a real agent still takes it
        await p.press(AGENT, header, label="Prendre")
        assert "📌 Pris en charge par paul" in contexts(header)


# ---------------------------------------------------------------------- 9. rate limits


async def test_a_reply_rate_limited_by_slack_arrives_exactly_once(product: Product) -> None:
    p, slack = product, product.slack
    slack.rate_limit("chat.postMessage", times=3, retry_after=1)
    await p.event(slack.dm_message(CUSTOMER, DELIVERY_QUESTION))

    (answer,) = p.dm()
    assert DELIVERY_ANSWER in words(answer)
    posts = slack.calls_to("chat.postMessage")
    assert [c.status for c in posts] == [429, 429, 429, 200]
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(posts)]
    assert all(gap >= 0.9 for gap in gaps)  # Retry-After was respected each time
    (item,) = p.rows("SELECT * FROM outbox WHERE op = 'send'")
    assert item["sent_at"] is not None
    assert item["failed_at"] is None
    assert item["attempts"] >= 1  # the outbox retried after the client's own retry gave up
    (conv,) = p.rows("SELECT first_response_at FROM conversations")
    assert conv["first_response_at"] is not None


# ---------------------------------------------------------------------- 10. Socket Mode


async def test_socket_mode_dm_is_answered_and_every_envelope_acked(
    tmp_path: Path, slack: FakeSlack
) -> None:
    settings = make_settings(tmp_path, slack, mode="socket")
    async with running(settings, slack) as p:
        assert p.transport.settings.mode == "socket"
        assert slack.socket_connections == 1
        delivery = await p.event(slack.dm_message(CUSTOMER, DELIVERY_QUESTION))
        assert delivery.via == "socket"
        (answer,) = p.dm()
        assert DELIVERY_ANSWER in words(answer)

        await p.press(CUSTOMER, answer, label="Oui, merci")
        assert "✅ Oui, merci" in contexts(answer)
        assert with_text(p.dm(), "Ravi d'avoir pu vous aider")
        assert with_text(p.dm(), "Sur une échelle de 0 à 10")

        assert [e.type for e in slack.envelopes] == ["events_api", "interactive"]
        assert all(e.ack is not None for e in slack.envelopes)
        assert all(e.redelivered_as is None for e in slack.envelopes)
        (conv,) = p.rows("SELECT state, resolved_by FROM conversations")
        assert tuple(conv) == ("surveying", "bot")


# ---------------------------------------------------------------------- 11. secrets

HTTP_LOGGERS = ("aiohttp", "slack_sdk", "slack_bolt", "handlers.slack")


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_secrets_never_reach_debug_logs_with_http_logging_on(
    tmp_path: Path, slack: FakeSlack, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.DEBUG)
    with loggers_at_debug(HTTP_LOGGERS):
        async with running(make_settings(tmp_path, slack, mode=mode), slack) as p:
            await p.event(slack.dm_message(CUSTOMER, DELIVERY_QUESTION))
            await p.event(slack.dm_message(CUSTOMER, "Je voudrais parler à un conseiller"))

    records = caplog.records
    assert any(r.name == "handlers.slack.sdk" for r in records)  # HTTP logging was on
    assert any("chat.postMessage" in r.getMessage() for r in records)
    assert_no_secret_logged(caplog, [BOT_TOKEN, SIGNING_SECRET, APP_TOKEN])


# ---------------------------------------------------------------------- complaints


async def test_complaint_commands_and_the_menu_in_the_thread(product: Product) -> None:
    p, slack = product, product.slack
    await p.event(slack.dm_message(CUSTOMER, ASK_PERSON))
    (header,) = p.threads()
    await p.event(slack.channel_message(AGENTS, AGENT, "!complaint", thread_ts=header.ts))
    assert with_text(p.thread_posts(header), "marquée comme réclamation par paul")
    (record,) = p.rows("SELECT opened_by, cause FROM complaints")
    assert tuple(record) == (f"slack:{AGENT}", None)

    # an unknown solution: refused with the valid ones, nothing resolved
    await p.event(
        slack.channel_message(AGENTS, AGENT, "!resolve solution=cadeau", thread_ts=header.ts)
    )
    (refusal,) = [e for e in slack.ephemerals if e.user == AGENT and "cadeau" in e.text]
    assert "Solution inconnue « cadeau »" in refusal.text
    assert "Remboursement partiel (partial_refund)" in refusal.text
    (conv,) = p.rows("SELECT state FROM conversations")
    assert conv["state"] == "queued"

    # a cause typed, the solution left: the menu offers the solutions only
    await p.event(
        slack.channel_message(
            AGENTS, AGENT, "!resolve cause=erreur de facturation", thread_ts=header.ts
        )
    )
    (menu,) = with_text(p.thread_posts(header), "choisissez la cause et la solution")
    assert button_rows(menu) == [
        ["Remboursement", "Remboursement partiel"],
        ["Remplacement", "Bon d'achat"],
        ["Livraison offerte", "Médiation"],
        ["Aucune"],
    ]
    await p.press(AGENT, menu, label="Bon d'achat")
    (record,) = p.rows("SELECT cause, solution FROM complaints")
    assert tuple(record) == ("erreur de facturation", "voucher")
    assert labels(menu)  # the menu stays, to correct a mis-tap
    assert any("Bon d'achat" in e.text for e in slack.ephemerals if e.user == AGENT)


async def test_saved_replies_in_a_slack_thread(product: Product) -> None:
    p, slack = product, product.slack
    await p.event(slack.dm_message(CUSTOMER, ASK_PERSON))
    (header,) = p.threads()
    dm_before = len(p.dm())

    # !r alone: the list, ephemeral to the agent; the customer gets nothing
    await p.event(slack.channel_message(AGENTS, AGENT, "!r", thread_ts=header.ts))
    (listing,) = [e for e in slack.ephemerals if e.user == AGENT]
    assert "bonjour — Greeting" in listing.text
    assert listing.thread_ts == header.ts
    assert len(p.dm()) == dm_before

    # a wrong shortcut: refused with the close ones, still only to the agent
    await p.event(slack.channel_message(AGENTS, AGENT, "!r merc", thread_ts=header.ts))
    refused = [e for e in slack.ephemerals if e.user == AGENT][-1]
    assert "Vouliez-vous dire : merci" in refused.text
    assert len(p.dm()) == dm_before

    # !r merci: in the customer's DM with both placeholders, and shown in the thread
    await p.event(slack.channel_message(AGENTS, AGENT, "!r merci", thread_ts=header.ts))
    (sent,) = with_text(p.dm(), "pour votre patience")
    assert words(sent).startswith("Merci marie pour votre patience.")  # her Slack name
    assert words(sent).rstrip().endswith("— Paul")
    assert with_text(p.thread_posts(header), "pour votre patience")
    (conv,) = p.rows("SELECT state, agent_key FROM conversations")
    assert (conv["state"], conv["agent_key"]) == ("assigned", f"slack:{AGENT}")
