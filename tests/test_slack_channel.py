"""SlackTransport against the local Slack, in HTTP and Socket Mode, with a recording sink.

The engine is not involved: ``RecordingSink`` records the normalized events and answers
scripted Outcomes, and the fake Slack records what the adapter sent back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bot.config import SlackSettings
from bot.conversation.model import (
    Address,
    AgentAction,
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
    ConfigError,
    PermanentDeliveryError,
    RecipientGoneError,
    TransientDeliveryError,
)
from handlers.slack import SlackTransport
from handlers.slack.translate import slack_to_plain
from tests.fakes.slack_server import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER_ID,
    EXTERNAL_TEAM_ID,
    SIGNING_SECRET,
    FakeSlack,
    Message,
    RecordingSink,
)

CUSTOMER = "U0MARIE"  # writes to the app in a DM
EXT = "U0MARC"  # a customer's employee in the shared (Slack Connect) support channel
EXT2 = "U0LEA"  # another customer in the same shared channel
AGENT = "U0PAUL"  # an agent: in the agents' channel
CONTRACTOR = "U0CARL"  # an agent from another workspace, in the agents' channel
EMPLOYEE = "U0EMMA"  # of the business's workspace, not an agent
AGENTS = "C0AGENTS"
SUPPORT = "C0SUPPORT"
MARKUP = "<!channel> <@U999> *x* & <b>"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    fake.add_user(CUSTOMER, "marie", real_name="Marie Dupont", locale="fr-FR")
    fake.add_user(EXT, "marc", team=EXTERNAL_TEAM_ID, locale="en-GB")
    fake.add_user(EXT2, "lea", team=EXTERNAL_TEAM_ID, locale="fr-CA")
    fake.add_user(AGENT, "paul", locale="fr-FR")
    fake.add_user(CONTRACTOR, "carl", team=EXTERNAL_TEAM_ID)
    fake.add_user(EMPLOYEE, "emma")
    fake.add_channel(AGENTS, "support-agents", [AGENT, CONTRACTOR])
    fake.add_channel(SUPPORT, "acme-support", [EXT, EXT2, EMPLOYEE, AGENT], ext_shared=True)
    fake.add_channel("C0KPI", "kpi")
    async with fake:
        yield fake


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


def make_settings(slack: FakeSlack, mode: str = "http", **changes: Any) -> SlackSettings:
    settings = SlackSettings(
        api_url=slack.api_url,
        agents_channel=AGENTS,
        support_channels=[SUPPORT],
        mode=mode,
    )
    return settings.model_copy(update={"http_port": 0, **changes})  # 0: any free port


def make_transport(
    slack: FakeSlack, sink: RecordingSink, mode: str = "http", **kwargs: Any
) -> SlackTransport:
    settings = kwargs.pop("settings", None) or make_settings(slack, mode)
    options: dict[str, Any] = {
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "app_token": APP_TOKEN,
        "pace": 0.0,
        "language": "fr",
        **kwargs,
    }
    return SlackTransport(settings, on_event=sink, **options)


@asynccontextmanager
async def running(
    slack: FakeSlack, sink: RecordingSink, mode: str = "http", **kwargs: Any
) -> AsyncIterator[SlackTransport]:
    transport = make_transport(slack, sink, mode, **kwargs)
    await transport.start()
    if mode == "http":
        slack.events_url = transport.http_url
    else:
        await slack.wait_socket()
    try:
        yield transport
    finally:
        await transport.stop()


@pytest.fixture(params=["http", "socket"])
async def transport(
    request: pytest.FixtureRequest, slack: FakeSlack, sink: RecordingSink
) -> AsyncIterator[SlackTransport]:
    """A started transport, once per connection mode."""
    async with running(slack, sink, request.param) as t:
        yield t


@pytest.fixture
async def http(slack: FakeSlack, sink: RecordingSink) -> AsyncIterator[SlackTransport]:
    async with running(slack, sink, "http") as t:
        yield t


@pytest.fixture
def outbound(slack: FakeSlack, sink: RecordingSink) -> SlackTransport:
    """A transport used only to send (nothing listens, nothing to start)."""
    return make_transport(slack, sink)


def via(t: SlackTransport) -> str:
    return t.settings.mode


def header(**changes: Any) -> ThreadHeader:
    base = ThreadHeader(
        conversation_id=42,
        title="#42 · Marie Dupont · livraison",
        customer_name="Marie Dupont",
        channel="slack",
        language="fr",
        topic="livraison",
        status="En attente",
        reason="Le client demande un conseiller",
        transcript=(
            TranscriptLine("customer", "Marie Dupont", "Où est mon colis ?"),
            TranscriptLine("bot", "Bot", "Votre colis arrive sous 48 h."),
        ),
        buttons=(Choice("Prendre", "a42:take"),),
    )
    return dataclasses.replace(base, **changes)


def last_message(slack: FakeSlack, channel: str) -> Message:
    return slack.posted(channel)[-1]


# ---------------------------------------------------------------------- customers


async def test_a_dm_is_a_customer_message(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    event = slack.dm_message(CUSTOMER, "Où est ma commande ?")
    delivery = await slack.send_event(event, via=via(transport))
    assert delivery.status == 200
    got = await sink.wait(CustomerMessage)
    assert got.customer.key == f"slack:{CUSTOMER}"
    assert (got.customer.name, got.customer.language) == ("marie", "fr-FR")
    assert got.address == Address("slack", slack.dm_channel(CUSTOMER))
    assert got.text == "Où est ma commande ?"
    assert got.dedup_key == f"slack:{delivery.event_id}"
    assert got.message_ref == event["ts"]
    assert got.media is None


async def test_support_channel_message_is_a_conversation_in_its_thread(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    top = slack.channel_message(SUPPORT, EXT, "Our invoice is wrong")
    await slack.send_event(top, via=via(transport))
    first = await sink.wait(CustomerMessage)
    assert first.address == Address("slack", SUPPORT, top["ts"])
    assert (first.customer.user_id, first.customer.language) == (EXT, "en-GB")

    sent = await transport.send(first.address, "Thanks, looking into it")
    assert slack.message(SUPPORT, str(sent.message_id)).thread_ts == top["ts"]

    reply = slack.channel_message(SUPPORT, EXT, "It's invoice 12", thread_ts=top["ts"])
    other = slack.channel_message(SUPPORT, EXT2, "Same for us!", thread_ts=top["ts"])
    await slack.send_event(reply, via=via(transport))
    await slack.send_event(other, via=via(transport))
    await transport.wait_handled(3)
    messages = sink.of(CustomerMessage)
    assert [m.text for m in messages] == ["Our invoice is wrong", "It's invoice 12"]
    assert messages[1].address == first.address
    assert messages[1].message_ref == reply["ts"]


async def test_the_business_own_people_are_not_customers_in_support_channels(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    for user in (EMPLOYEE, CONTRACTOR, AGENT):
        slack.join(SUPPORT, user)
        await slack.send_event(slack.channel_message(SUPPORT, user, "hi"), via=via(transport))
    await slack.send_event(slack.channel_message(SUPPORT, EXT2, "help"), via=via(transport))
    await transport.wait_handled(4)
    assert [e.customer.user_id for e in sink.of(CustomerMessage)] == [EXT2]


async def test_messages_elsewhere_from_bots_and_edits_are_ignored(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    sent = await transport.send(Address("slack", slack.dm_channel(CUSTOMER)), "Bonjour")
    own = slack.message(slack.dm_channel(CUSTOMER), str(sent.message_id))
    person = slack.dm_message(CUSTOMER, "first")
    slack.add_channel("C0RANDOM", "random", [CUSTOMER])
    events = [
        slack.own_message_event(own),
        slack.bot_message(SUPPORT, "deploy done"),
        slack.message_changed(slack.dm_channel(CUSTOMER), person["ts"], "edited"),
        slack.message_deleted(slack.dm_channel(CUSTOMER), person["ts"]),
        slack.channel_message("C0RANDOM", CUSTOMER, "not a support channel"),
        slack.app_home_opened(CUSTOMER),
    ]
    for event in events:
        assert (await slack.send_event(event, via=via(transport))).status == 200
    await transport.wait_handled(len(events))
    assert sink.events == []


async def test_a_shared_file_is_kept_as_a_reference(
    slack: FakeSlack, sink: RecordingSink, http: SlackTransport
) -> None:
    event = slack.file_share(slack.dm_channel(CUSTOMER), CUSTOMER, name="colis.jpg",
                             mimetype="image/jpeg", text="voilà")  # fmt: skip
    await slack.send_event(event)
    got = await sink.wait(CustomerMessage)
    assert got.text == "voilà"
    assert got.media is not None
    assert (got.media.kind, got.media.name, got.media.channel) == ("photo", "colis.jpg", "slack")
    assert got.media.message_id == event["ts"]
    assert got.media.url == event["files"][0]["permalink"]


async def test_leaving_and_rejoining_the_support_channel(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    await slack.send_event(slack.member_left_channel(SUPPORT, EXT), via=via(transport))
    left = await sink.wait(CustomerLeft)
    assert (left.customer.user_id, left.reason) == (EXT, LeaveReason.LEFT_CHANNEL)
    await slack.send_event(slack.member_joined_channel(SUPPORT, EXT), via=via(transport))
    back = await sink.wait(CustomerReturned)
    assert back.customer.user_id == EXT
    await slack.send_event(slack.member_left_channel(SUPPORT, EMPLOYEE), via=via(transport))
    await slack.send_event(slack.member_left_channel(AGENTS, AGENT), via=via(transport))
    await transport.wait_handled(4)
    assert len(sink.events) == 2


# ---------------------------------------------------------------------- agents


async def test_agent_replies_in_a_conversation_thread(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    ref = await transport.open_thread(header(), None)
    texts = ["Bonjour, je regarde", "note: client VIP", "// à rappeler"]
    events = [slack.channel_message(AGENTS, AGENT, t, thread_ts=ref.thread) for t in texts]
    chatter = slack.channel_message(AGENTS, AGENT, "top-level chatter")
    side = slack.channel_message(AGENTS, CONTRACTOR, "side thread", thread_ts=chatter["ts"])
    for event in [*events, chatter, side]:
        await slack.send_event(event, via=via(transport))
    await transport.wait_handled(5)
    got = sorted(sink.of(AgentMessage), key=lambda m: str(m.message_ref))
    assert [m.text for m in got] == texts
    assert {m.thread for m in got} == {ref.thread}
    assert [m.message_ref for m in got] == [e["ts"] for e in events]
    assert got[0].agent.key == f"slack:{AGENT}"
    assert got[0].agent.name == "paul"
    assert len(sink.events) == 3


async def test_a_refused_agent_message_is_explained_to_its_author(
    slack: FakeSlack, sink: RecordingSink, http: SlackTransport
) -> None:
    sink.script = lambda ev: Outcome(ok=False, notice="Cette conversation est close.")
    ref = await http.open_thread(header(), None)
    await slack.send_event(slack.channel_message(AGENTS, AGENT, "hello?", thread_ts=ref.thread))
    await slack.wait_for("chat.postEphemeral")
    (eph,) = slack.ephemerals
    assert (eph.channel, eph.user, eph.thread_ts) == (AGENTS, AGENT, ref.thread)
    assert eph.text == "Cette conversation est close."


# ---------------------------------------------------------------------- buttons


async def test_a_customer_button_that_is_accepted_shows_the_choice(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    sink.script = lambda ev: Outcome(ok=True, chosen="Oui, merci")
    dm = Address("slack", slack.dm_channel(CUSTOMER))
    choices = [[Choice("Oui, merci", "c7:help:yes"), Choice("Non", "c7:help:no")]]
    sent = await transport.send(dm, "Cette réponse a-t-elle résolu votre problème ?", choices)
    question = slack.message(dm.chat_id, str(sent.message_id))
    payload = slack.block_action(CUSTOMER, question, label="Oui, merci")
    assert (await slack.send_interaction(payload, via=via(transport))).status == 200
    choice = await sink.wait(CustomerChoice)
    assert (choice.token, choice.address, choice.customer.user_id) == ("c7:help:yes", dm, CUSTOMER)
    assert choice.dedup_key == f"slack:action:{payload['actions'][0]['action_ts']}"
    await slack.wait_for("chat.update")
    assert question.buttons() == []
    assert "✅ Oui, merci" in question.plain_texts()
    assert question.mrkdwn_texts() == ["Cette réponse a-t-elle résolu votre problème ?"]
    assert slack.ephemerals == []


async def test_a_refused_button_press_gets_an_ephemeral_notice(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    sink.script = lambda ev: Outcome(ok=False, notice="Cette question est close.")
    dm = Address("slack", slack.dm_channel(CUSTOMER))
    sent = await transport.send(dm, "NPS ?", [[Choice(str(n), f"c7:nps:{n}") for n in range(6)]])
    question = slack.message(dm.chat_id, str(sent.message_id))
    await slack.send_interaction(slack.block_action(CUSTOMER, question, label="5"),
                                    via=via(transport))  # fmt: skip
    await slack.wait_for("chat.postEphemeral")
    assert [(e.user, e.text) for e in slack.ephemerals] == [(CUSTOMER, "Cette question est close.")]
    assert len(question.buttons()) == 6  # the question is left as it was
    assert slack.calls_to("chat.update") == []


async def test_a_button_in_a_support_thread_names_that_thread(
    slack: FakeSlack, sink: RecordingSink, http: SlackTransport
) -> None:
    top = slack.channel_message(SUPPORT, EXT, "Help")
    address = Address("slack", SUPPORT, top["ts"])
    rows = [[Choice(face, f"c9:csat:{n}") for n, face in enumerate("😡🙁😐🙂😍", 1)]]
    sent = await http.send(address, "How was it?", rows)
    question = slack.message(SUPPORT, str(sent.message_id))
    assert [b["text"]["text"] for b in question.buttons()] == list("😡🙁😐🙂😍")
    await slack.send_interaction(slack.block_action(EXT, question, value="c9:csat:4"))
    choice = await sink.wait(CustomerChoice)
    assert (choice.address, choice.token) == (address, "c9:csat:4")


async def test_agent_header_buttons_become_agent_actions(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    def script(ev: InboundEvent) -> Outcome:
        assert isinstance(ev, AgentAction)
        if ev.agent.user_id == AGENT:
            return Outcome(ok=True, chosen="Pris en charge par paul")
        return Outcome(ok=False, notice="Réservé aux agents du service client.")

    sink.script = script
    ref = await transport.open_thread(header(), None)
    head = slack.message(AGENTS, ref.header_message)
    await slack.send_interaction(slack.block_action(AGENT, head, value="a42:take"),
                                    via=via(transport))  # fmt: skip
    action = await sink.wait(AgentAction)
    assert (action.agent.key, action.agent.name) == (f"slack:{AGENT}", "paul")
    assert (action.token, action.thread) == ("a42:take", ref.thread)
    assert action.dedup_key.startswith("slack:action:")

    await slack.send_interaction(slack.block_action(CONTRACTOR, head, value="a42:take"),
                                    via=via(transport))  # fmt: skip
    await slack.wait_for("chat.postEphemeral")
    await transport.wait_handled(2)
    assert [(e.channel, e.user) for e in slack.ephemerals] == [(AGENTS, CONTRACTOR)]
    # the header is re-rendered by the engine (update_header), never edited here
    assert slack.calls_to("chat.update") == []
    assert len(head.buttons()) == 1


# ---------------------------------------------------------------------- HTTP security, retries


async def test_bad_signatures_and_stale_requests_are_refused(
    slack: FakeSlack, sink: RecordingSink, http: SlackTransport
) -> None:
    forged = await slack.send_event(slack.dm_message(CUSTOMER, "forged"), secret="guess")
    stale = await slack.send_event(
        slack.dm_message(CUSTOMER, "replayed"), timestamp=int(time.time()) - 5 * 60 - 30
    )
    unsigned = await slack.post_signed("{}", "application/json", signed=False)
    assert (forged.status, stale.status, unsigned.status) == (401, 401, 401)
    await slack.send_event(slack.dm_message(CUSTOMER, "genuine"))
    await sink.wait(CustomerMessage)
    await http.wait_handled(1)
    assert [e.text for e in sink.of(CustomerMessage)] == ["genuine"]
    assert http.handled == 1


async def test_the_events_url_answers_slack_url_verification(
    slack: FakeSlack, sink: RecordingSink, http: SlackTransport
) -> None:
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps({"token": "x", "challenge": challenge, "type": "url_verification"})
    answer = await slack.post_signed(body, "application/json")
    assert answer.status == 200
    assert answer.body == {"challenge": challenge}
    assert sink.events == []


async def test_socket_mode_reconnects_when_slack_asks(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    async with running(slack, sink, "socket"):
        await slack.disconnect_socket()
        await slack.wait_for("apps.connections.open", count=2)
        await slack.wait_until(lambda: slack.socket_connections == 2, what="a new connection")
        await slack.wait_socket()
        delivery = await slack.send_event(slack.dm_message(CUSTOMER, "still there?"),
                                             via="socket")  # fmt: skip
        assert delivery.status == 200
        assert (await sink.wait(CustomerMessage)).text == "still there?"


async def test_redeliveries_carry_the_same_dedup_key(
    slack: FakeSlack, sink: RecordingSink, transport: SlackTransport
) -> None:
    event = slack.dm_message(CUSTOMER, "Bonjour")
    first = await slack.send_event(event, via=via(transport))
    for n in (1, 2, 3):
        retry = await slack.send_event(event, via=via(transport), event_id=first.event_id,
                                          retry=n)  # fmt: skip
        assert retry.status == 200
    await sink.wait(CustomerMessage, count=4)
    assert {m.dedup_key for m in sink.of(CustomerMessage)} == {f"slack:{first.event_id}"}


async def test_socket_envelopes_are_acked_and_a_lost_ack_is_redelivered(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    async with running(slack, sink, "socket"):
        assert len(slack.calls_to("apps.connections.open")) == 1  # through our base_url
        slack.drop_acks(1)
        slack.redeliver_unacked(after=0.3)
        first = await slack.send_event(slack.dm_message(CUSTOMER, "hi"), via="socket",
                                          wait_ack=False)  # fmt: skip
        assert first.envelope_id is not None
        original = slack.envelope(first.envelope_id)
        retry_id = await slack.wait_until(lambda: original.redelivered_as, what="redelivery")
        await slack.wait_ack(retry_id)
        await sink.wait(CustomerMessage, count=2)
        keys = {m.dedup_key for m in sink.of(CustomerMessage)}
        assert keys == {f"slack:{first.event_id}"}
        assert slack.envelope(retry_id).retry_attempt == 1
        assert original.ack is None
        assert all(e.ack is not None for e in slack.envelopes if e is not original)
    assert not [s for s in slack._sockets if not s.ws.closed]  # stop() hung up


# ---------------------------------------------------------------------- escaping


async def test_customer_markup_never_pings_anyone(
    slack: FakeSlack, sink: RecordingSink, http: SlackTransport
) -> None:
    await slack.send_event(slack.dm_message(CUSTOMER, MARKUP))
    await slack.send_event(slack.dm_message(CUSTOMER, "cc <@U0PAUL> <!here>", raw=True))
    await sink.wait(CustomerMessage, count=2)
    typed, picked = sorted(sink.of(CustomerMessage), key=lambda m: str(m.message_ref))
    assert typed.text == MARKUP  # what the customer typed, plain
    assert picked.text == "cc @U0PAUL @here"  # real mentions become inert words

    ref = await http.open_thread(header(
        title=f"#42 · {MARKUP}", customer_name="<!here> Marie",
        transcript=(TranscriptLine("customer", "<!here> Marie", MARKUP),)), None)  # fmt: skip
    await http.post(ref.thread, MARKUP, "customer", "<!here> Marie")
    await http.alert(f"Détracteur : {MARKUP}")
    await http.send(Address("slack", slack.dm_channel(CUSTOMER)), MARKUP,
                    [[Choice(MARKUP, "c1:help:yes")]])  # fmt: skip
    await http.send(Address("slack", slack.dm_channel(CUSTOMER)), MARKUP)
    posted = slack.posted()
    assert len(posted) == 5
    for message in posted:
        assert slack.pings(message) == [], message
        assert "&lt;!channel&gt; &lt;@U999&gt;" in message.text
        assert "&amp; &lt;b&gt;" in message.text
    thread_post = slack.posted(AGENTS, thread_ts=ref.thread)[0]
    assert MARKUP in thread_post.plain_texts()  # shown literally to agents
    assert thread_post.mrkdwn_texts() == []  # so *x* is not bold either
    to_customer = posted[-1]
    assert to_customer.text == "&lt;!channel&gt; &lt;@U999&gt; *x* &amp; &lt;b&gt;"


@pytest.mark.parametrize(
    ("wire", "plain"),
    [
        ("see <https://acme.com/faq|the FAQ>", "see the FAQ (https://acme.com/faq)"),
        ("<https://acme.com/a?b=1&amp;c=2>", "https://acme.com/a?b=1&c=2"),
        ("ask <#C0SUPPORT|acme-support> or <@U0PAUL|paul>", "ask #acme-support or @paul"),
        ("<!subteam^S123|@support> <!here>", "@support @here"),
        (
            "<mailto:a@acme.com|a@acme.com> 3 &lt; 4 &amp;&amp; 5 &gt; 2",
            "a@acme.com 3 < 4 && 5 > 2",
        ),
    ],
)
def test_slack_wire_text_becomes_what_the_person_typed(wire: str, plain: str) -> None:
    assert slack_to_plain(wire) == plain


async def test_agent_links_stay_clickable_for_customers(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    dm = Address("slack", slack.dm_channel(CUSTOMER))
    await outbound.send(dm, "Suivi : https://example.com/track?a=1&b=2. Merci")
    assert last_message(slack, dm.chat_id).text == (
        "Suivi : <https://example.com/track?a=1&amp;b=2>. Merci"
    )


async def test_an_agent_cannot_hide_a_link_behind_words(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    """Typed as text, Slack's masked-link syntax reaches the customer with the real URL."""
    typed = slack_to_plain(
        "Voir &lt;https://evil.example/x|cliquez ici&gt; ou <https://ok.example>"
    )
    dm = Address("slack", slack.dm_channel(CUSTOMER))
    await outbound.send(dm, typed)
    plain_message = last_message(slack, dm.chat_id).text
    await outbound.send(dm, typed, [[Choice("OK", "c1:help:yes")]])  # blocks this time
    for shown in (plain_message, *last_message(slack, dm.chat_id).mrkdwn_texts()):
        links = re.findall(r"<([^<>]*)>", shown)
        assert "https://evil.example/x" in links  # clickable, and showing where it goes
        assert not any("|" in link for link in links)


# ---------------------------------------------------------------------- the desk


async def test_long_texts_are_split_within_block_kit_limits(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    dm = Address("slack", slack.dm_channel(CUSTOMER))
    ampersands = "&" * 7000  # 35,000 characters once escaped
    await outbound.send(dm, ampersands, [[Choice("OK", "c1:help:yes")]])
    question = last_message(slack, dm.chat_id)  # accepted: every section within 3,000
    sections = question.mrkdwn_texts()
    assert len(sections) >= 12
    assert "".join(sections).replace("&amp;", "&") == ampersands

    ref = await outbound.open_thread(header(), None)
    words = " ".join(f"mot{i}" for i in range(2500))  # ~14,000 characters
    await outbound.post(ref.thread, words, "customer", "Marie")
    post = slack.posted(AGENTS, thread_ts=ref.thread)[0]
    assert " ".join(t.strip() for t in post.plain_texts()[1:]) == words


async def test_open_thread_renders_the_header_and_update_header_edits_it(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    ref = await outbound.open_thread(header(), previous="1.000001")
    assert ref.thread == ref.header_message
    head = slack.message(AGENTS, ref.header_message)
    assert head.thread_ts is None  # a top-level message, whose thread is the conversation
    assert head.blocks[0] == {"type": "header", "text": {
        "type": "plain_text", "text": "#42 · Marie Dupont · livraison", "emoji": True}}  # fmt: skip
    shown = "\n".join(head.plain_texts())
    expected = ["Marie Dupont", "slack", "fr", "livraison", "Le client demande un conseiller",
                "En attente", "Où est mon colis ?", "Votre colis arrive sous 48 h."]  # fmt: skip
    for part in expected:
        assert part in shown
    assert [(b["value"], b["text"]["text"]) for b in head.buttons()] == [("a42:take", "Prendre")]
    assert "En attente" in head.text

    taken = header(
        status="Pris en charge par paul",
        buttons=(Choice("Résoudre", "a42:resolve"), Choice("Transférer", "a42:transfer")),
    )
    await outbound.update_header(ref, taken)
    assert len(head.edits) == 1
    assert "📌 Pris en charge par paul" in head.plain_texts()
    assert "📌 En attente" not in head.plain_texts()
    assert [b["value"] for b in head.buttons()] == ["a42:resolve", "a42:transfer"]
    assert len({b["action_id"] for b in head.buttons()}) == 2
    await outbound.update_header(ref, header(status="Résolu", buttons=()))
    assert head.buttons() == []


async def test_a_long_transcript_is_cut_to_fit_block_kit(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    lines = tuple(TranscriptLine("customer", "Marie", f"message {i} " + "x" * 400)
                  for i in range(60))  # fmt: skip
    ref = await outbound.open_thread(header(transcript=lines, title="t" * 300), None)
    head = slack.message(AGENTS, ref.header_message)  # accepted: within Slack's limits
    shown = "\n".join(head.plain_texts())
    assert "message 59 " in shown  # the latest lines are kept
    assert "message 0 " not in shown


async def test_posts_media_notes_and_alerts_in_threads(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    ref = await outbound.open_thread(header(), None)
    await outbound.post(ref.thread, "Toujours rien reçu", "customer", "Marie Dupont")
    await outbound.post(ref.thread, "Paul prend la conversation.", "system", "")
    media = Media("photo", "telegram", "123", "77", file_id="AgAD", name="colis.jpg",
                  url="https://example.com/c.jpg")  # fmt: skip
    await outbound.post_media(ref.thread, media, "le carton")
    await outbound.close_thread(ref.thread)
    await outbound.reopen_thread(ref.thread)
    await outbound.alert("Conversation #42 en attente depuis 10 min.", ref.thread)
    await outbound.alert("⚠️ Détracteur : Marie a donné 3/10")
    in_thread = slack.posted(AGENTS, thread_ts=ref.thread)
    assert len(in_thread) == 6
    customer_post, system_post, media_post, closed, reopened, reminder = in_thread
    assert customer_post.plain_texts() == ["👤 Marie Dupont", "Toujours rien reçu"]
    assert system_post.plain_texts() == ["ℹ️ Paul prend la conversation."]
    assert media_post.mrkdwn_texts() == ["📎 <https://example.com/c.jpg|colis.jpg>"]
    assert "le carton" in media_post.plain_texts()
    assert closed.plain_texts() == ["🔒 Conversation close."]
    assert reopened.plain_texts() == ["🔓 Conversation rouverte."]
    assert reminder.plain_texts() == ["Conversation #42 en attente depuis 10 min."]
    top_level = [m for m in slack.posted(AGENTS) if m.thread_ts is None]
    assert [m.plain_texts()[0] for m in top_level[1:]] == ["⚠️ Détracteur : Marie a donné 3/10"]


async def test_mark_relayed_adds_one_reaction(slack: FakeSlack, outbound: SlackTransport) -> None:
    ref = await outbound.open_thread(header(), None)
    agent_msg = slack.channel_message(AGENTS, AGENT, "Bonjour", thread_ts=ref.thread)
    await outbound.mark_relayed(ref.thread, agent_msg["ts"])
    await outbound.mark_relayed(ref.thread, agent_msg["ts"])  # a redelivered outbox item
    reactions = slack.message(AGENTS, agent_msg["ts"]).reactions
    assert reactions == {"white_check_mark": [BOT_USER_ID]}


async def test_is_agent_from_agent_ids_or_agents_channel_members(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    listed = make_transport(slack, sink, settings=make_settings(slack, agent_ids=[EMPLOYEE]))
    assert await listed.is_agent(EMPLOYEE)
    assert not await listed.is_agent(AGENT)
    assert slack.calls_to("conversations.members") == []

    crowd = [f"U{i:05d}" for i in range(250)]
    for user in crowd:
        slack.join(AGENTS, user)
    by_channel = make_transport(slack, sink)
    assert await by_channel.is_agent(AGENT)
    assert await by_channel.is_agent(crowd[-1])  # on the second page
    assert not await by_channel.is_agent(EMPLOYEE)
    assert len(slack.calls_to("conversations.members")) == 2  # two pages, then cached
    assert not await by_channel.is_agent(EXT)
    assert len(slack.calls_to("conversations.members")) == 2


# ---------------------------------------------------------------------- limits and errors


async def test_a_rate_limited_send_waits_retry_after_then_succeeds(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=1)
    sent = await outbound.send(Address("slack", slack.dm_channel(CUSTOMER)), "Bonjour")
    limited, ok = slack.calls_to("chat.postMessage")
    assert (limited.status, ok.status) == (429, 200)
    assert ok.at - limited.at >= 1.0
    assert sent.message_id == last_message(slack, slack.dm_channel(CUSTOMER)).ts


async def test_a_persistent_rate_limit_is_a_transient_error(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    dm = Address("slack", slack.dm_channel(CUSTOMER))
    slack.rate_limit("chat.postMessage", times=5, retry_after=1)
    with pytest.raises(TransientDeliveryError) as short:
        await outbound.send(dm, "Bonjour")
    assert short.value.retry_after == 1.0
    assert len(slack.calls_to("chat.postMessage")) == 2  # one wait inside, then give up
    slack.clear_faults()
    slack.rate_limit("chat.postMessage", times=1, retry_after=120)
    with pytest.raises(TransientDeliveryError) as long:
        await outbound.send(dm, "Bonjour")
    assert long.value.retry_after == 120.0  # too long to wait here: the outbox reschedules
    assert len(slack.calls_to("chat.postMessage")) == 3


@pytest.mark.parametrize(
    ("fault", "customer", "expected"),
    [
        ("500", True, TransientDeliveryError),
        ("down", True, TransientDeliveryError),
        ("internal_error", True, TransientDeliveryError),
        ("channel_not_found", True, RecipientGoneError),
        ("is_archived", True, RecipientGoneError),
        ("user_not_found", True, RecipientGoneError),
        ("not_in_channel", True, PermanentDeliveryError),
        ("invalid_blocks", True, PermanentDeliveryError),
        ("channel_not_found", False, PermanentDeliveryError),
    ],
)
async def test_slack_errors_map_onto_the_delivery_tree(
    slack: FakeSlack,
    outbound: SlackTransport,
    fault: str,
    customer: bool,
    expected: type[Exception],
) -> None:
    if fault == "500":
        slack.fail("chat.postMessage", status=500)
    elif fault == "down":
        slack.down()
    else:
        slack.error("chat.postMessage", fault)
    attempt: Awaitable[object]
    if customer:
        attempt = outbound.send(Address("slack", slack.dm_channel(CUSTOMER)), "Bonjour")
    else:
        attempt = outbound.post("1.000001", "text", "bot", "Bot")
    with pytest.raises(expected) as caught:
        await attempt
    assert type(caught.value) is expected
    assert BOT_TOKEN not in str(caught.value)


async def test_an_unreachable_slack_is_a_transient_error(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    gone = FakeSlack()
    await gone.start()
    settings = make_settings(slack).model_copy(update={"api_url": gone.api_url})
    await gone.stop()  # nobody listens on that port any more
    t = make_transport(slack, sink, settings=settings)
    with pytest.raises(TransientDeliveryError):
        await t.send(Address("slack", "D0X"), "Bonjour")


async def test_each_channel_is_paced(slack: FakeSlack, sink: RecordingSink) -> None:
    t = make_transport(slack, sink, pace=0.2)
    dm = Address("slack", slack.dm_channel(CUSTOMER))
    slack.channel_message(SUPPORT, EXT, "x")  # a thread parent for `other`
    other = Address("slack", SUPPORT, slack.messages[-1].ts)
    await asyncio.gather(*(t.send(dm, f"m{i}") for i in range(3)), t.send(other, "o"))
    times = [c.at for c in slack.calls_to("chat.postMessage") if c.params["channel"] == dm.chat_id]
    assert len(times) == 3
    assert all(b - a >= 0.19 for a, b in zip(times, times[1:], strict=False))
    (other_call,) = [c for c in slack.calls_to("chat.postMessage")
                     if c.params["channel"] == SUPPORT]  # fmt: skip
    assert other_call.at < times[1]  # another channel does not wait behind this one


async def test_refused_tokens_stop_start_with_a_config_error(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    t = SlackTransport(make_settings(slack), bot_token="xoxb-revoked",
                       signing_secret=SIGNING_SECRET, on_event=sink)  # fmt: skip
    with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
        await t.start()
    await t.stop()
    wrong_app = make_transport(slack, sink, "socket", app_token="xapp-revoked")
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        await wrong_app.start()
    await wrong_app.stop()
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
        SlackTransport(make_settings(slack), bot_token=BOT_TOKEN, on_event=sink)
    with pytest.raises(ConfigError, match="SLACK_APP_TOKEN"):
        SlackTransport(make_settings(slack, "socket"), bot_token=BOT_TOKEN, on_event=sink)


# ---------------------------------------------------------------------- slash command, digest


async def test_the_kpi_command_answers_only_the_asker(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    async def summary() -> str:
        return "NPS +42 (semaine) <!channel>"

    for mode in ("http", "socket"):
        async with running(slack, sink, mode, kpi_summary=summary):
            mine = await slack.send_command("/support-kpi", user=EMPLOYEE, channel=SUPPORT,
                                               via=mode)  # fmt: skip
            refused = await slack.send_command("/support-kpi", user=EXT, channel=SUPPORT,
                                                  via=mode)  # fmt: skip
            assert (mine.status, refused.status) == (200, 200)
            assert mine.body == {"text": "NPS +42 (semaine) &lt;!channel&gt;",
                                 "response_type": "ephemeral"}  # fmt: skip
            assert refused.body["response_type"] == "ephemeral"
            assert refused.body["text"] == "Réservé aux agents du service client."
    assert slack.posted() == []  # nothing public


async def test_a_slow_kpi_summary_follows_up_privately(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    release = asyncio.Event()

    async def summary() -> str:
        await release.wait()
        return "CSAT 91 %"

    async with running(slack, sink, "http", kpi_summary=summary, ack_budget=0.05):
        first = await slack.send_command("/support-kpi", user=AGENT, channel=AGENTS)
        assert first.body == {"text": "⏳ Calcul des indicateurs…", "response_type": "ephemeral"}
        release.set()
        followed = await slack.wait_for("response_url")
    assert followed.params["text"] == "CSAT 91 %"
    assert followed.params["response_type"] == "ephemeral"
    assert [(e.user, e.text) for e in slack.ephemerals] == [(AGENT, "CSAT 91 %")]


async def test_a_failing_kpi_summary_is_reported_and_logged(
    slack: FakeSlack, sink: RecordingSink
) -> None:
    async def summary() -> str:
        raise RuntimeError("database is locked")

    async with running(slack, sink, "http", kpi_summary=summary) as t:
        answer = await slack.send_command("/support-kpi", user=AGENT, channel=AGENTS)
        await t.wait_handled(1)
    assert answer.body == {"text": "Les indicateurs ne sont pas disponibles.",
                           "response_type": "ephemeral"}  # fmt: skip
    assert [str(e) for e in t.errors] == ["database is locked"]


async def test_publish_posts_the_digest_and_uploads_its_chart(
    slack: FakeSlack, outbound: SlackTransport
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    text = "KPI de la semaine\nNPS : +40 (▲ 5)\nCommentaire : « <!here> trop lent »"
    sent = await outbound.publish("C0KPI", text, png, "kpi-2026-11-23.png")
    digest, shared = slack.posted("C0KPI")
    assert digest.ts == sent.message_id
    assert text in digest.plain_texts()
    assert slack.pings(digest) == []
    file_id = sent.extra["file_id"]
    assert slack.files[file_id]["content"] == png
    assert slack.files[file_id]["name"] == "kpi-2026-11-23.png"
    assert shared.files[0]["id"] == file_id
    await outbound.publish("C0KPI", "sans graphique", None, "x.png")
    assert len(slack.calls_to("files.getUploadURLExternal")) == 1


# ---------------------------------------------------------------------- errors and logs


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


async def test_listener_errors_reach_the_central_handler_and_secrets_stay_out_of_logs(
    slack: FakeSlack, sink: RecordingSink, all_logs: pytest.LogCaptureFixture
) -> None:
    sink.fail_with = RuntimeError("engine exploded")
    dm = Address("slack", slack.dm_channel(CUSTOMER))
    for mode in ("http", "socket"):
        async with running(slack, sink, mode) as t:
            event = await slack.send_event(slack.dm_message(CUSTOMER, "hi"), via=mode)
            sent = await t.send(dm, "Ça aide ?", [[Choice("Oui", "c1:help:yes")]])
            question = slack.message(dm.chat_id, str(sent.message_id))
            payload = slack.block_action(CUSTOMER, question, label="Oui")
            press = await slack.send_interaction(payload, via=mode)
            await t.wait_handled(2)
            # acked all the same (a failure after the ack must not undo it)
            assert (event.status, press.status) == (200, 200)
            assert [str(e) for e in t.errors] == ["engine exploded", "engine exploded"]
    failures = [r for r in all_logs.records if r.levelno >= logging.ERROR]
    assert len(failures) == 4
    assert all(r.exc_info and "engine exploded" in str(r.exc_info[1]) for r in failures)
    text = "\n".join(r.getMessage() for r in all_logs.records)
    # the sdk's DEBUG request logs (headers included) were captured, and are redacted
    assert "Sending a request - url: POST http://127.0.0.1" in text
    assert "'Authorization': '(redacted)'" in text
    for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET):
        assert secret not in text
