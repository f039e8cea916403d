"""The Telegram transport against the local Bot API server, with a recording event sink.

Real python-telegram-bot, real HTTP; the engine is replaced by ``RecordingSink``, which
keeps every event and answers with scripted outcomes. No sleeps: tests wait for events
or server calls by condition.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from bot.config import TelegramSettings
from bot.conversation.model import (
    Address,
    Agent,
    AgentAction,
    AgentActionKind,
    AgentMessage,
    Choice,
    CustomerChoice,
    CustomerLeft,
    CustomerMessage,
    CustomerReturned,
    InboundEvent,
    LeaveReason,
    Media,
    Outcome,
    ThreadHeader,
    TranscriptLine,
)
from bot.errors import (
    PermanentDeliveryError,
    RecipientGoneError,
    TransientDeliveryError,
)
from handlers.telegram import RateLimits, TelegramTransport
from tests.fakes.telegram_server import FakeChat, FakeUser, TelegramServer, running_server

E = TypeVar("E")
WAIT = 5.0
WEBHOOK_SECRET = "whsec-Zq81-not-a-real-secret"


class RecordingSink:
    """Our ``EventSink`` faked: records events, answers with scripted outcomes (or raises)."""

    def __init__(self) -> None:
        self.events: list[InboundEvent] = []
        self._script: deque[Outcome | Exception | Callable[[], Awaitable[Outcome]]] = deque()
        self._changed = asyncio.Condition()

    def answer(self, *outcomes: Outcome | Exception | Callable[[], Awaitable[Outcome]]) -> None:
        """The next events get these, in order; then ``Outcome()``."""
        self._script.extend(outcomes)

    async def __call__(self, event: InboundEvent) -> Outcome:
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()
        step = self._script.popleft() if self._script else Outcome()
        if isinstance(step, Exception):
            raise step
        if isinstance(step, Outcome):
            return step
        return await step()

    async def wait(self, count: int) -> list[InboundEvent]:
        """Until ``count`` events arrived in all; returns them all."""
        try:
            async with asyncio.timeout(WAIT), self._changed:
                await self._changed.wait_for(lambda: len(self.events) >= count)
        except TimeoutError:
            raise AssertionError(f"expected {count} event(s), got {self.events}") from None
        return self.events

    async def next(self, kind: type[E]) -> E:
        """The next event, which must be of this type."""
        event = (await self.wait(len(self.events) + 1))[-1]
        assert isinstance(event, kind), event
        return event


@dataclass
class World:
    tg: TelegramServer
    sink: RecordingSink
    ana: FakeUser  # a customer
    bob: FakeUser  # another customer
    paul: FakeUser  # an agent
    lea: FakeUser  # an agent
    eve: FakeUser  # in the agents' group but not an agent
    desk: FakeChat  # the agents' forum group
    transports: list[TelegramTransport]

    def settings(self, **overrides: Any) -> TelegramSettings:
        values: dict[str, Any] = {
            "api_url": self.tg.url,
            "agents_chat_id": self.desk.id,
            "agent_ids": [self.paul.id, self.lea.id],
            "poll_timeout": 10,
        }
        values.update(overrides)
        return TelegramSettings(**values)

    async def start(
        self, limits: RateLimits | None = None, webhook_secret: str | None = None, **overrides: Any
    ) -> TelegramTransport:
        transport = TelegramTransport(
            self.settings(**overrides),
            self.tg.token,
            self.sink,
            "fr",
            webhook_secret=webhook_secret,
            limits=limits or RateLimits.unlimited(),
        )
        await transport.start()
        self.transports.append(transport)
        return transport

    async def barrier(self, user: FakeUser) -> None:
        """Updates are processed in order per chat: once this message from ``user`` reached
        the sink, everything sent before in that chat has been handled."""
        await self.tg.customer_sends(user, "-- barrier --")
        event = await self.sink.next(CustomerMessage)
        assert event.text == "-- barrier --"
        self.sink.events.pop()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with running_server() as tg:
        paul = tg.add_user("Paul", "Martin", username="paul_agent")
        lea = tg.add_user("Léa", username="lea_agent")
        eve = tg.add_user("Eve")
        desk = tg.add_group("Support", members=[paul, lea, eve])
        w = World(
            tg,
            RecordingSink(),
            ana=tg.add_user("Ana", "Lopez", username="ana_l", language_code="fr"),
            bob=tg.add_user("Bob", language_code="en-GB"),
            paul=paul,
            lea=lea,
            eve=eve,
            desk=desk,
            transports=[],
        )
        try:
            yield w
        finally:
            for transport in w.transports:
                await transport.stop()


@pytest.fixture
async def transport(world: World) -> TelegramTransport:
    return await world.start()


def header(conversation_id: int = 7, **changes: Any) -> ThreadHeader:
    values: dict[str, Any] = {
        "conversation_id": conversation_id,
        "title": f"#{conversation_id} · Ana Lopez · livraison",
        "customer_name": "Ana Lopez",
        "channel": "telegram",
        "language": "fr",
        "topic": "livraison",
        "status": "En attente",
        "reason": "Le client demande un conseiller",
        "transcript": (
            TranscriptLine("customer", "Ana Lopez", "Où est mon colis ?"),
            TranscriptLine("bot", "Bot", "Livraison en 2 à 4 jours ouvrés."),
        ),
        "buttons": (Choice("Prendre", f"a{conversation_id}:take"),),
    }
    values.update(changes)
    return ThreadHeader(**values)


def buttons(message: dict[str, Any]) -> list[tuple[str, str]]:
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


def entity_types(message: dict[str, Any]) -> set[str]:
    return {e["type"] for e in message.get("entities", [])}


# ---------------------------------------------------------------------- customers → events


async def test_private_text_becomes_a_customer_message(
    world: World, transport: TelegramTransport
) -> None:
    update = await world.tg.customer_sends(world.ana, "Où est ma commande ?")
    event = await world.sink.next(CustomerMessage)
    assert event.customer.key == f"telegram:{world.ana.id}"
    assert (event.customer.name, event.customer.language) == ("Ana Lopez", "fr")
    assert event.address == Address("telegram", str(world.ana.id))
    assert event.text == "Où est ma commande ?"
    assert event.dedup_key == f"telegram:update:{update['update_id']}"
    assert event.command is None
    assert event.media is None
    assert event.message_ref == str(update["message"]["message_id"])


@pytest.mark.parametrize(
    ("text", "command", "rest"),
    [
        ("/start promo-42", "start", "promo-42"),
        ("/agent", "agent", ""),
        ("/cancel", "cancel", ""),
        ("/forget", "forget", ""),
        ("/Help@supportbot_test_bot", "help", ""),
        ("/kpi semaine", "kpi", "semaine"),
    ],
)
async def test_commands_become_a_command_and_the_rest_of_the_text(
    world: World, transport: TelegramTransport, text: str, command: str, rest: str
) -> None:
    await world.tg.customer_sends(world.bob, text)
    event = await world.sink.next(CustomerMessage)
    assert (event.command, event.text) == (command, rest)
    assert event.customer.language == "en-GB"


async def test_attachments_become_media_with_the_caption_as_text(
    world: World, transport: TelegramTransport
) -> None:
    photo = await world.tg.customer_sends_photo(world.ana, caption="colis abîmé")
    event = await world.sink.next(CustomerMessage)
    biggest = photo["message"]["photo"][-1]["file_id"]
    assert event.text == "colis abîmé"
    assert event.media == Media(
        "photo", "telegram", str(world.ana.id), str(photo["message"]["message_id"]), biggest
    )
    await world.tg.customer_sends_media(world.ana, "document", name="facture.pdf")
    document = (await world.sink.next(CustomerMessage)).media
    assert document is not None
    assert (document.kind, document.name) == ("document", "facture.pdf")
    for kind, expected in (("voice", "voice"), ("sticker", "sticker"), ("video_note", "video")):
        await world.tg.customer_sends_media(world.ana, kind)
        media = (await world.sink.next(CustomerMessage)).media
        assert media is not None
        assert media.kind == expected


async def test_blocking_and_unblocking_the_bot(world: World, transport: TelegramTransport) -> None:
    blocked = await world.tg.user_blocks_bot(world.ana)
    left = await world.sink.next(CustomerLeft)
    assert left.customer.key == f"telegram:{world.ana.id}"
    assert left.reason == LeaveReason.BLOCKED
    assert left.dedup_key == f"telegram:update:{blocked['update_id']}"
    await world.tg.user_unblocks_bot(world.ana)
    back = await world.sink.next(CustomerReturned)
    assert back.customer.key == f"telegram:{world.ana.id}"


async def test_the_same_update_twice_reaches_the_sink_twice_with_one_dedup_key(
    world: World, transport: TelegramTransport
) -> None:
    update = await world.tg.customer_sends(world.ana, "Bonjour")
    first = await world.sink.next(CustomerMessage)
    await world.tg.wait_delivered(update)
    await world.tg.redeliver(update)
    second = await world.sink.next(CustomerMessage)
    assert first.dedup_key == second.dedup_key == f"telegram:update:{update['update_id']}"
    await world.barrier(world.ana)
    assert len(world.sink.events) == 2


async def test_a_chat_is_processed_in_order_while_other_chats_go_on(
    world: World, transport: TelegramTransport
) -> None:
    gate = asyncio.Event()

    async def slow() -> Outcome:
        await gate.wait()
        return Outcome()

    world.sink.answer(slow)
    await world.tg.customer_sends(world.ana, "first")
    await world.tg.customer_sends(world.ana, "second")
    await world.tg.customer_sends(world.bob, "other chat")
    events = await world.sink.wait(2)
    texts = [e.text for e in events if isinstance(e, CustomerMessage)]
    assert texts == ["first", "other chat"]  # ana's second waits for her first
    gate.set()
    events = await world.sink.wait(3)
    assert [e.text for e in events if isinstance(e, CustomerMessage)][-1] == "second"


# ---------------------------------------------------------------------- buttons


async def test_customer_button_is_a_choice_answered_and_written_under_the_question(
    world: World, transport: TelegramTransport
) -> None:
    to = Address("telegram", str(world.ana.id))
    choices = [[Choice("Oui, merci", "c3:help:yes"), Choice("Non", "c3:help:no")]]
    sent = await transport.send(to, "Cette réponse a-t-elle résolu votre problème ?", choices)
    question = world.tg.message(world.ana.id, int(sent.message_id))
    assert buttons(question) == [("Oui, merci", "c3:help:yes"), ("Non", "c3:help:no")]

    world.sink.answer(Outcome(ok=True, chosen="Oui, merci"))
    pressed = await world.tg.press_button(world.ana, question, "c3:help:yes")
    choice = await world.sink.next(CustomerChoice)
    assert choice.token == "c3:help:yes"
    assert choice.address == to
    assert choice.dedup_key == f"telegram:update:{pressed['update_id']}"

    await world.tg.wait_for("editMessageText")
    query_id = pressed["callback_query"]["id"]
    assert world.tg.callback_answers[query_id] == {"text": None, "show_alert": False}
    edited = world.tg.message(world.ana.id, int(sent.message_id))
    assert edited["text"] == "Cette réponse a-t-elle résolu votre problème ?\n→ Oui, merci"
    assert buttons(edited) == []


async def test_a_refused_choice_is_shown_as_an_alert_and_the_question_stays(
    world: World, transport: TelegramTransport
) -> None:
    sent = await transport.send(
        Address("telegram", str(world.ana.id)), "Note ?", [[Choice("9", "c3:nps:9")]]
    )
    question = world.tg.message(world.ana.id, int(sent.message_id))
    world.sink.answer(Outcome(ok=False, notice="Cette question est close."))
    pressed = await world.tg.press_button(world.ana, question, "c3:nps:9")
    await world.sink.next(CustomerChoice)
    await world.barrier(world.ana)
    answer = world.tg.callback_answers[pressed["callback_query"]["id"]]
    assert answer == {"text": "Cette question est close.", "show_alert": True}
    assert world.tg.calls_to("editMessageText") == []
    assert buttons(world.tg.message(world.ana.id, int(sent.message_id))) == [("9", "c3:nps:9")]


async def test_a_failing_sink_is_logged_once_and_the_button_still_answered(
    world: World, transport: TelegramTransport, caplog: pytest.LogCaptureFixture
) -> None:
    sent = await transport.send(
        Address("telegram", str(world.ana.id)), "Note ?", [[Choice("9", "c3:nps:9")]]
    )
    world.sink.answer(RuntimeError("engine bug"))
    pressed = await world.tg.press_button(
        world.ana, world.tg.message(world.ana.id, int(sent.message_id)), "c3:nps:9"
    )
    await world.tg.wait_for("answerCallbackQuery")
    await world.barrier(world.ana)
    assert pressed["callback_query"]["id"] in world.tg.callback_answers
    failures = [r for r in caplog.records if "failed" in r.getMessage() and r.exc_info]
    assert len(failures) == 1
    assert f"update {pressed['update_id']} failed" in failures[0].getMessage()
    assert isinstance(failures[0].exc_info[1], RuntimeError)  # type: ignore[index]


async def test_desk_button_is_an_agent_action_and_leaves_the_header_to_the_engine(
    world: World, transport: TelegramTransport
) -> None:
    ref = await transport.open_thread(header(), None)
    head = world.tg.message(world.desk, int(ref.header_message))
    world.sink.answer(Outcome(ok=True, chosen="Pris en charge par Paul"))
    pressed = await world.tg.press_button(world.paul, head, "a7:take")
    action = await world.sink.next(AgentAction)
    assert action.agent == Agent("telegram", str(world.paul.id), "Paul Martin")
    assert (action.token, action.thread, action.kind) == ("a7:take", ref.thread, None)
    await world.tg.wait_for("answerCallbackQuery")
    answer = world.tg.callback_answers[pressed["callback_query"]["id"]]
    assert answer == {"text": "Pris en charge par Paul", "show_alert": False}
    assert world.tg.calls_to("editMessageText") == []


# ---------------------------------------------------------------------- agents in topics


async def test_topic_messages_and_commands(world: World, transport: TelegramTransport) -> None:
    ref = await transport.open_thread(header(), None)
    thread = int(ref.thread)
    tg, sink = world.tg, world.sink

    written = await tg.agent_writes(world.paul, thread, "Bonjour Ana, je regarde.")
    message = await sink.next(AgentMessage)
    assert message.agent == Agent("telegram", str(world.paul.id), "Paul Martin")
    assert (message.thread, message.text) == (ref.thread, "Bonjour Ana, je regarde.")
    assert message.message_ref == str(written["message"]["message_id"])
    assert message.dedup_key == f"telegram:update:{written['update_id']}"

    expected = [
        ("/take", AgentActionKind.TAKE, None, None),
        ("/resolve livraison", AgentActionKind.RESOLVE, "livraison", None),
        ("/resolve@supportbot_test_bot", AgentActionKind.RESOLVE, None, None),
        ("/note rappeler demain", AgentActionKind.NOTE, None, "rappeler demain"),
    ]
    for text, kind, tag, note in expected:
        await tg.agent_writes(world.paul, thread, text)
        action = await sink.next(AgentAction)
        assert (action.kind, action.thread, action.tag, action.text) == (
            kind,
            ref.thread,
            tag,
            note,
        )

    await tg.agent_writes(world.paul, thread, "/transfer")
    assert (await sink.next(AgentAction)).target is None  # back to the queue
    lea_says = await tg.agent_writes(world.lea, thread, "Je peux prendre")
    await sink.next(AgentMessage)
    lea = Agent("telegram", str(world.lea.id), "Léa")
    reply = lea_says["message"]["message_id"]
    await tg.agent_writes(world.paul, thread, "/transfer", reply_to=reply)
    assert (await sink.next(AgentAction)).target == lea
    await tg.agent_writes(world.paul, thread, "/transfer @lea_agent")
    assert (await sink.next(AgentAction)).target == lea
    await tg.agent_writes(world.paul, thread, "/transfer @nobody_known")
    assert (await sink.next(AgentAction)).target == Agent("telegram", "", "@nobody_known")


async def test_general_topic_and_other_bots_commands_are_ignored(
    world: World, transport: TelegramTransport
) -> None:
    ref = await transport.open_thread(header(), None)
    await world.tg.agent_writes(world.paul, None, "Réunion à 14h")  # General topic
    await world.tg.agent_writes(world.paul, int(ref.thread), "/take@some_other_bot")
    await world.tg.agent_writes(world.paul, int(ref.thread), "ok")
    last = await world.sink.next(AgentMessage)
    assert last.text == "ok"
    assert len(world.sink.events) == 1


async def test_a_notice_answers_the_agent_in_the_topic(
    world: World, transport: TelegramTransport
) -> None:
    ref = await transport.open_thread(header(), None)
    world.sink.answer(Outcome(ok=True, notice="Note interne enregistrée."))
    written = await world.tg.agent_writes(world.paul, int(ref.thread), "/note client VIP")
    await world.sink.next(AgentAction)
    call = await world.tg.wait_for(
        "sendMessage", lambda c: c.params.get("text") == "Note interne enregistrée."
    )
    assert call.params["message_thread_id"] == int(ref.thread)
    assert call.result["reply_to_message"]["message_id"] == written["message"]["message_id"]


async def test_agent_media_in_a_topic(world: World, transport: TelegramTransport) -> None:
    ref = await transport.open_thread(header(), None)
    sent = await world.tg.agent_sends_media(world.paul, int(ref.thread), "photo", caption="voici")
    message = await world.sink.next(AgentMessage)
    assert message.text == "voici"
    assert message.media is not None
    assert (message.media.kind, message.media.message_id) == (
        "photo",
        str(sent["message"]["message_id"]),
    )


# ---------------------------------------------------------------------- the desk


async def test_open_thread_creates_a_topic_with_the_header_and_buttons(
    world: World, transport: TelegramTransport
) -> None:
    ref = await transport.open_thread(header(), None)
    created = await world.tg.wait_for("createForumTopic")
    assert created.params["name"] == "#7 · Ana Lopez · livraison"
    assert ref.thread == str(created.result["message_thread_id"])
    head = world.tg.message(world.desk, int(ref.header_message))
    assert head["message_thread_id"] == int(ref.thread)
    for piece in ("Ana Lopez", "telegram", "fr", "livraison", "En attente",
                  "Le client demande un conseiller", "Où est mon colis ?",
                  "Livraison en 2 à 4 jours ouvrés."):  # fmt: skip
        assert piece in head["text"]
    assert buttons(head) == [("Prendre", "a7:take")]

    taken = header(status="Pris en charge par Paul", buttons=(Choice("Résoudre", "a7:resolve"),))
    await transport.update_header(ref, taken)
    head = world.tg.message(world.desk, int(ref.header_message))
    assert "Pris en charge par Paul" in head["text"]
    assert buttons(head) == [("Résoudre", "a7:resolve")]
    await transport.update_header(ref, taken)  # unchanged: Telegram says "not modified"


async def test_long_titles_and_transcripts_fit_telegrams_limits(
    world: World, transport: TelegramTransport
) -> None:
    lines = tuple(TranscriptLine("customer", "Ana", f"message {i} " + "x" * 900) for i in range(9))
    ref = await transport.open_thread(header(title="T" * 300, transcript=lines), None)
    created = await world.tg.wait_for("createForumTopic")
    assert len(created.params["name"]) == 128
    posted = world.tg.sent_by_bot(world.desk, int(ref.thread))
    assert posted[0]["message_id"] == int(ref.header_message)
    assert "message 0" not in posted[0]["text"]  # the transcript follows the header
    rest = "\n".join(m["text"] for m in posted[1:])
    assert all(f"message {i} " in rest for i in range(9))
    assert all(len(m["text"]) <= 4096 for m in posted)


async def test_previous_topic_is_reopened_and_reused(
    world: World, transport: TelegramTransport
) -> None:
    first = await transport.open_thread(header(7), None)
    await transport.close_thread(first.thread)
    assert world.tg.topic(world.desk, int(first.thread)).closed
    second = await transport.open_thread(header(8), first.thread)
    assert second.thread == first.thread
    assert not world.tg.topic(world.desk, int(first.thread)).closed
    assert len(world.tg.calls_to("createForumTopic")) == 1
    assert len(world.tg.calls_to("reopenForumTopic")) == 1
    head = world.tg.message(world.desk, int(second.header_message))
    assert head["message_thread_id"] == int(first.thread)
    assert buttons(head) == [("Prendre", "a8:take")]

    third = await transport.open_thread(header(9), first.thread)  # still open: reused as is
    assert third.thread == first.thread
    gone = await transport.open_thread(header(10), "987654")  # no such topic: a new one
    assert gone.thread != first.thread
    assert len(world.tg.calls_to("createForumTopic")) == 2


async def test_posts_reactions_topic_state_and_alerts(
    world: World, transport: TelegramTransport
) -> None:
    ref = await transport.open_thread(header(), None)
    thread = int(ref.thread)
    sent = await transport.post(ref.thread, "Mon colis est en retard", "customer", "Ana Lopez")
    posted = world.tg.message(world.desk, int(sent.message_id))
    assert posted["message_thread_id"] == thread
    assert posted["text"] == "👤 Ana Lopez\nMon colis est en retard"
    assert posted["entities"][0]["type"] == "bold"

    agent_said = await world.tg.agent_writes(world.paul, thread, "Je m'en occupe")
    await world.sink.next(AgentMessage)
    await transport.mark_relayed(ref.thread, str(agent_said["message"]["message_id"]))
    assert world.tg.reactions[(world.desk.id, agent_said["message"]["message_id"])] == ["👍"]

    await transport.close_thread(ref.thread)
    await transport.close_thread(ref.thread)  # already closed: nothing to do
    assert world.tg.topic(world.desk, thread).closed
    await transport.reopen_thread(ref.thread)
    assert not world.tg.topic(world.desk, thread).closed

    general = await transport.alert("⚠️ Détracteur : Ana a donné 3/10")
    in_topic = await transport.alert("Conversation #7 en attente depuis 5 min.", ref.thread)
    assert "message_thread_id" not in world.tg.message(world.desk, int(general.message_id))
    assert world.tg.message(world.desk, int(in_topic.message_id))["message_thread_id"] == thread


async def test_media_is_copied_within_telegram_and_a_placeholder_otherwise(
    world: World, transport: TelegramTransport
) -> None:
    ref = await transport.open_thread(header(), None)
    photo = await world.tg.customer_sends_photo(world.ana, caption="colis")
    media = (await world.sink.next(CustomerMessage)).media
    assert media is not None
    copied = await transport.post_media(ref.thread, media, "colis")
    stored = world.tg.message(world.desk, int(copied.message_id))
    assert stored["photo"] == photo["message"]["photo"]
    assert stored["message_thread_id"] == int(ref.thread)

    slack_file = Media("file", "slack", "C1", "1700.1", None, "devis.pdf", "https://files/devis")
    to = Address("telegram", str(world.bob.id))
    sent = await transport.send_media(to, slack_file, "le devis")
    text = world.tg.message(world.bob.id, int(sent.message_id))["text"]
    assert text == "📎 devis.pdf\nhttps://files/devis\n\nle devis"


async def test_customer_text_can_never_format_or_mention_on_the_desk(
    world: World, transport: TelegramTransport
) -> None:
    sly = '<b>gras</b> <a href="tg://user?id=1">toi</a> @everyone & co'
    ref = await transport.open_thread(
        header(customer_name="<i>Ana</i>", transcript=(TranscriptLine("customer", "<u>", sly),)),
        None,
    )
    head = world.tg.message(world.desk, int(ref.header_message))
    assert "<i>Ana</i>" in head["text"]
    assert sly in head["text"]
    assert entity_types(head) <= {"bold"}

    sent = await transport.post(ref.thread, sly, "customer", "<i>Ana</i>")
    posted = world.tg.message(world.desk, int(sent.message_id))
    assert posted["text"] == f"👤 <i>Ana</i>\n{sly}"
    assert entity_types(posted) == {"bold"}
    bold = posted["entities"][0]
    assert (bold["offset"], bold["length"]) == (3, len("<i>Ana</i>"))  # only the name

    to_customer = await transport.send(Address("telegram", str(world.ana.id)), sly)
    call = await world.tg.wait_for("sendMessage", lambda c: c.params["chat_id"] == world.ana.id)
    assert "parse_mode" not in call.params
    assert world.tg.message(world.ana.id, int(to_customer.message_id))["text"] == sly


async def test_messages_over_4096_characters_are_split_and_all_sent(
    world: World, transport: TelegramTransport
) -> None:
    paragraphs = [f"Paragraphe {i}. " + " ".join(["mot"] * 120) for i in range(10)]  # ~5000
    text = "\n\n".join(paragraphs)
    assert len(text) > 4096
    to = Address("telegram", str(world.ana.id))
    mark = world.tg.mark()
    sent = await transport.send(to, text, [[Choice("OK", "c1:help:yes")]])
    calls = world.tg.calls_to("sendMessage", since=mark)
    assert len(calls) == 2
    parts = [c.params["text"] for c in calls]
    assert all(len(p) <= 4096 for p in parts)
    assert parts[0].endswith("mot")  # cut at a paragraph boundary
    assert parts[1].startswith("Paragraphe")
    assert "\n\n".join(parts) == text
    assert sent.message_id == str(calls[-1].result["message_id"])
    assert "reply_markup" not in calls[0].params  # buttons only under the last part
    assert buttons(calls[1].result) == [("OK", "c1:help:yes")]

    ref = await transport.open_thread(header(), None)
    mark = world.tg.mark()
    await transport.post(ref.thread, text, "customer", "Ana")
    posts = [c.result["text"] for c in world.tg.calls_to("sendMessage", since=mark)]
    assert len(posts) == 2
    assert all(p.startswith("👤 Ana\n") for p in posts)


# ---------------------------------------------------------------------- non-forum groups


async def test_a_plain_group_threads_conversations_by_replies(world: World) -> None:
    plain = world.tg.add_group("Support (plain)", forum=False, members=[world.paul])
    transport = await world.start(agents_chat_id=plain.id)
    ref = await transport.open_thread(header(), None)
    assert world.tg.calls_to("createForumTopic") == []
    assert ref.thread == ref.header_message
    sent = await transport.post(ref.thread, "encore une question", "customer", "Ana")
    post = world.tg.message(plain, int(sent.message_id))
    assert post["reply_to_message"]["message_id"] == int(ref.header_message)

    await world.tg.agent_writes(
        world.paul, None, "réponse", chat=plain, reply_to=int(sent.message_id)
    )
    reply = await world.sink.next(AgentMessage)
    assert (reply.thread, reply.text) == (ref.thread, "réponse")
    await world.tg.agent_writes(world.paul, None, "/resolve", chat=plain, reply_to=int(ref.thread))
    assert (await world.sink.next(AgentAction)).thread == ref.thread
    await world.tg.agent_writes(world.paul, None, "bavardage", chat=plain)  # not in a chain
    await world.tg.agent_writes(world.paul, None, "fin", chat=plain, reply_to=int(ref.thread))
    assert (await world.sink.next(AgentMessage)).text == "fin"

    await transport.close_thread(ref.thread)  # nothing to close in a plain group
    assert world.tg.calls_to("closeForumTopic") == []


# ---------------------------------------------------------------------- failures


async def test_telegram_errors_become_our_delivery_errors(
    world: World, transport: TelegramTransport
) -> None:
    to = Address("telegram", str(world.ana.id))
    world.tg.fail("sendMessage", 429, retry_after=5)
    with pytest.raises(TransientDeliveryError) as limited:
        await transport.send(to, "hi")
    assert limited.value.retry_after == 5.0

    for status in (500, 502):
        world.tg.fail("sendMessage", status)
        with pytest.raises(TransientDeliveryError) as broken:
            await transport.send(to, "hi")
        assert broken.value.retry_after is None
    with world.tg.down(), pytest.raises(TransientDeliveryError):
        await transport.send(to, "hi")

    world.tg.blocked.add(world.ana.id)
    with pytest.raises(RecipientGoneError):
        await transport.send(to, "hi")
    with pytest.raises(PermanentDeliveryError) as unknown:
        await transport.send(Address("telegram", "424242"), "hi")
    assert not isinstance(unknown.value, RecipientGoneError)

    ref = await transport.open_thread(header(), None)
    world.tg.set_member(world.desk, world.tg.bot, "left")  # the bot was removed from the desk
    with pytest.raises(PermanentDeliveryError) as removed:
        await transport.post(ref.thread, "hi", "system", "")
    assert not isinstance(removed.value, RecipientGoneError)


async def test_private_chats_are_paced(world: World) -> None:
    transport = await world.start(
        limits=RateLimits(overall_per_second=1000, private_per_second=5, private_burst=1)
    )
    to = Address("telegram", str(world.ana.id))
    mark = world.tg.mark()
    for i in range(3):
        await transport.send(to, f"message {i}")
    await transport.send(Address("telegram", str(world.bob.id)), "another chat")
    calls = world.tg.calls_to("sendMessage", since=mark)
    to_ana = [c.at for c in calls if c.params["chat_id"] == world.ana.id]
    gaps = [later - earlier for earlier, later in zip(to_ana, to_ana[1:], strict=False)]
    assert min(gaps) >= 0.18  # one message per 0.2 s in a private chat
    to_bob = next(c.at for c in calls if c.params["chat_id"] == world.bob.id)
    assert to_bob - to_ana[-1] < 0.15  # another chat has its own bucket: not held back


async def test_stop_ends_a_long_poll_in_flight_at_once(world: World) -> None:
    """Stopping must not wait for the long poll (10 s here) to end."""
    transport = await world.start()
    world.transports.remove(transport)
    in_flight = await world.tg.wait_until(
        lambda: [c for c in world.tg.calls_to("getUpdates") if c.status is None],
        what="a long poll in progress",
    )
    async with asyncio.timeout(5):
        await transport.stop()
    assert in_flight[0].status is None  # still held by the server: stop did not wait for it
    assert transport._poller._task is None


# ---------------------------------------------------------------------- webhook mode


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def webhook_transport(world: World) -> TelegramTransport:
    port = free_port()
    return await world.start(
        webhook_secret=WEBHOOK_SECRET,
        mode="webhook",
        webhook_url=f"http://127.0.0.1:{port}/telegram",
        webhook_listen="127.0.0.1",
        webhook_port=port,
        webhook_path="/telegram",
    )


async def test_webhook_checks_the_secret_before_processing(world: World) -> None:
    transport = await webhook_transport(world)
    call = await world.tg.wait_for("setWebhook")
    assert call.params["secret_token"] == WEBHOOK_SECRET
    assert call.params["url"] == f"http://127.0.0.1:{transport.webhook_port}/telegram"

    forged = world.tg.wrap("message", world.tg.build_text(world.ana, "forged"))
    assert await world.tg.post_to_webhook(forged, secret="guess") == 403
    assert await world.tg.post_to_webhook(forged, secret=None) == 403

    genuine = await world.tg.customer_sends(world.ana, "genuine")  # pushed with the secret
    event = await world.sink.next(CustomerMessage)
    assert event.text == "genuine"
    await world.tg.wait_delivered(genuine)
    assert [e.text for e in world.sink.events if isinstance(e, CustomerMessage)] == ["genuine"]
    assert world.tg.webhook_deliveries == [(genuine["update_id"], 200)]

    await world.tg.redeliver(genuine)  # Telegram retries: the same update again
    again = await world.sink.next(CustomerMessage)
    assert again.dedup_key == event.dedup_key
    assert world.tg.calls_to("getUpdates") == []


# ---------------------------------------------------------------------- agents and secrets


async def test_is_agent_from_agent_ids_without_asking_telegram(
    world: World, transport: TelegramTransport
) -> None:
    mark = world.tg.mark()
    assert await transport.is_agent(str(world.paul.id))
    assert await transport.is_agent(str(world.lea.id))
    assert not await transport.is_agent(str(world.eve.id))  # in the group, not in agent_ids
    assert not await transport.is_agent("")
    assert world.tg.calls_to("getChatMember", since=mark) == []


async def test_is_agent_from_group_membership_is_cached(world: World) -> None:
    transport = await world.start(agent_ids=[])
    outsider = world.tg.add_user("Zoé")
    mark = world.tg.mark()
    assert await transport.is_agent(str(world.eve.id))  # a member of the agents' group
    assert not await transport.is_agent(str(outsider.id))
    assert not await transport.is_agent("123")  # unknown to Telegram
    asked = world.tg.calls_to("getChatMember", since=mark)
    assert [c.params["user_id"] for c in asked] == [world.eve.id, outsider.id, 123]
    world.tg.set_member(world.desk, world.eve, "left")
    assert await transport.is_agent(str(world.eve.id))  # remembered for a while
    assert len(world.tg.calls_to("getChatMember", since=mark)) == 3


@pytest.mark.parametrize("mode", ["polling", "webhook"])
async def test_secrets_never_reach_the_logs(
    world: World, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    caplog.set_level(logging.DEBUG)
    if mode == "webhook":
        transport = await webhook_transport(world)
    else:
        transport = await world.start()
    await world.tg.customer_sends(world.ana, "bonjour")
    await world.sink.next(CustomerMessage)
    await transport.send(Address("telegram", str(world.ana.id)), "réponse")
    await transport.stop()
    world.transports.remove(transport)
    text = caplog.text
    assert "Set Bot API URL" in text  # PTB logged its URL at DEBUG...
    assert world.tg.token not in text  # ...with the token redacted
    assert world.tg.token.split(":")[1] not in text
    assert WEBHOOK_SECRET not in text
    assert not [r for r in caplog.records if r.name.startswith("httpx")]


# ---------------------------------------------------------------------- digest


async def test_publish_posts_the_digest_text_and_the_chart(
    world: World, transport: TelegramTransport
) -> None:
    png = b"\x89PNG\r\n\x1a\n chart bytes"
    text = "KPI de la semaine\nNPS : 42 (▲ 5)\n" + "ligne\n" * 900
    sent = await transport.publish(str(world.desk.id), text, png, "kpi-2026-w48.png")
    messages = world.tg.calls_to("sendMessage")
    assert [len(c.params["text"]) <= 4096 for c in messages] == [True, True]
    photo = await world.tg.wait_for("sendPhoto")
    assert (photo.params["photo"].filename, photo.params["photo"].data) == ("kpi-2026-w48.png", png)
    assert sent.message_id == str(photo.result["message_id"])
