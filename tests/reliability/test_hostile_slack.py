"""Hostile Slack payloads, signed and POSTed to the real Bolt HTTP endpoint: events with
odd unicode, huge texts, missing or mistyped fields; block_actions with forged values
and from strangers; slash commands. No listener failure may reach our central error
handler, and a genuine DM is still answered afterwards."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import SupportApp
from bot.config import Secrets, settings_from_mapping
from handlers.slack import SlackTransport
from tests.fakes.slack_server import APP_TOKEN, BOT_TOKEN, SIGNING_SECRET, Delivery, FakeSlack
from tests.reliability.bot_process import KNOWLEDGE
from tests.reliability.inprocess import QUESTION, BackgroundLoop, Recorder
from tests.reliability.test_hostile_telegram import (
    FORGED_DATA,
    MISSING,
    clean,
    maybe,
    numbers,
    wrong,
)
from tests.reliability.test_hostile_telegram import texts as telegram_texts

pytestmark = pytest.mark.slow

CUSTOMER, AGENT, STRANGER = "U0MARIE", "U0PAUL", "U0EVE"
AGENTS, SUPPORT = "C0AGENTS", "C0SUPPORT"
CRASHES = ("handlers", "bot", "slack_bolt")


class Product(BackgroundLoop):
    """FakeSlack + SupportApp (Slack, HTTP mode) in a background event loop."""

    slack: FakeSlack
    app: SupportApp

    async def start(self, tmp: Path) -> None:
        slack = FakeSlack()
        slack.add_user(CUSTOMER, "marie", locale="fr-FR")
        slack.add_user(AGENT, "paul")
        slack.add_user(STRANGER, "eve")
        slack.add_channel(AGENTS, "support-agents", [AGENT])
        slack.add_channel(SUPPORT, "acme-support", [CUSTOMER], ext_shared=True)
        self.slack = await self.stack.enter_async_context(slack)
        config = {
            "storage": {"path": str(tmp / "supportbot.db")},
            "knowledge": {"path": str(KNOWLEDGE)},
            "slack": {
                "enabled": True,
                "api_url": slack.api_url,
                "agents_channel": AGENTS,
                "agent_ids": [AGENT],
                "support_channels": [SUPPORT],
                "mode": "http",
                "http_port": 0,
            },
            "telegram": {"enabled": False},
            "desk": "slack",
            "digest": {"enabled": False},
            "web": {"enabled": False},
        }
        secrets = Secrets(
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_app_token=APP_TOKEN,
        )
        self.app = SupportApp(
            settings_from_mapping(config), secrets, transport_options={"slack": {"pace": 0.0}}
        )
        await self.app.start()
        self.stack.push_async_callback(self.app.stop)
        slack.events_url = self.transport.http_url

    @property
    def transport(self) -> SlackTransport:
        return next(t for t in self.app.transports if isinstance(t, SlackTransport))

    async def post(self, kind: str, body: dict[str, Any]) -> Delivery:
        """Sign and POST like Slack; wait until the listener it started (if any) is done.

        Events and button presses are stored and acknowledged before they are handled
        (a repeated event_id or payload is acknowledged only): wait for that to end."""
        if kind == "event":
            delivery = await self.slack.post_signed(json.dumps(body), "application/json")
        else:
            fields = {"payload": json.dumps(body)} if kind == "interaction" else body
            text = urllib.parse.urlencode({k: str(v) for k, v in fields.items()})
            delivery = await self.slack.post_signed(text, "application/x-www-form-urlencoded")
        if delivery.status == 200:
            await self.transport.wait_idle(within=10)
        assert self.app.components is not None
        async with asyncio.timeout(30):  # the replies it caused are delivered (or failed)
            await self.app.components.dispatcher.drain()
        return delivery


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[Product]:
    with Product.running(tmp_path_factory.mktemp("hostile-slack")) as p:
        yield p


# ---------------------------------------------------------------------- strategies

texts = telegram_texts.map(lambda t: t[:40_000])  # Slack's own limit on a message's text
people = st.sampled_from([CUSTOMER, AGENT, STRANGER, "U0NOBODY", "", "W" * 300])
channels = st.sampled_from(["D0MARIE", AGENTS, SUPPORT, "C0NOWHERE", ""])
timestamps = st.one_of(st.sampled_from(["1700000000.000100", "0", "-1", "x"]), wrong)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    event = clean(
        {
            "type": draw(maybe(st.sampled_from(["message", "app_mention", "member_left_channel"]))),
            "channel": draw(maybe(channels)),
            "channel_type": draw(maybe(st.sampled_from(["im", "channel", "group"]))),
            "user": draw(maybe(people)),
            "text": draw(maybe(texts)),
            "ts": draw(maybe(timestamps)),
            "thread_ts": draw(maybe(timestamps)),
            "subtype": draw(st.one_of(st.just(MISSING), st.sampled_from(["bot_message", "x"]))),
            "files": draw(maybe(st.lists(st.dictionaries(st.text(max_size=5), wrong), max_size=2))),
        }
    )
    return {
        "token": "x",
        "team_id": "T0FAKE",
        "api_app_id": "A0FAKE",
        "type": "event_callback",
        "event_id": f"Ev{draw(st.integers(0, 10**12))}",
        "event_time": draw(numbers),
        "event": event,
    }


@st.composite
def actions(draw: st.DrawFn) -> dict[str, Any]:
    action = clean(
        {
            "action_id": draw(st.sampled_from(["sb_choice", "sb_take", "sb_0", "sb_"])),
            "value": draw(maybe(st.one_of(st.sampled_from(FORGED_DATA), texts))),
            "block_id": draw(maybe(st.text(max_size=10))),
            "type": "button",
        }
    )
    channel = draw(channels)
    return clean(
        {
            "type": "block_actions",
            "user": draw(maybe(st.builds(lambda u: {"id": u, "team_id": "T0FAKE"}, people))),
            "team": {"id": "T0FAKE"},
            "api_app_id": "A0FAKE",
            "token": "x",
            "trigger_id": "1.2.3",
            "channel": draw(maybe(st.just({"id": channel}))),
            "container": draw(maybe(st.just({"channel_id": channel, "message_ts": "1.2"}))),
            "message": draw(maybe(st.builds(lambda t: {"ts": t, "text": "q"}, timestamps))),
            "actions": draw(maybe(st.lists(st.just(action), min_size=1, max_size=2))),
        }
    )


@st.composite
def commands(draw: st.DrawFn) -> dict[str, Any]:
    return clean(
        {
            "command": "/support-kpi",
            "text": draw(maybe(texts)),
            "user_id": draw(maybe(people)),
            "channel_id": draw(maybe(channels)),
            "team_id": "T0FAKE",
            "trigger_id": "1.2.3",
            "response_url": "http://127.0.0.1:9/nowhere",
        }
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_hostile_payloads_never_crash_a_listener(
    product: Product, recorder: Recorder, data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(["event", "interaction", "command"]))
    body = data.draw({"event": events(), "interaction": actions(), "command": commands()}[kind])
    before = len(recorder.records)
    errors_before = len(product.transport.errors)
    delivery = product.run(product.post(kind, body))
    assert recorder.errors(since=before, prefixes=CRASHES) == []
    assert delivery.status < 500
    assert len(product.transport.errors) == errors_before


@st.composite
def wellformed_messages(draw: st.DrawFn, slack: FakeSlack) -> dict[str, Any]:
    """Messages Slack could really deliver, so that they reach our listener: only the
    people, the text and the thread are hostile."""
    text = draw(texts) or "."
    if draw(st.booleans()):
        event = slack.dm_message(draw(st.sampled_from([CUSTOMER, STRANGER])), text)
    else:
        thread = draw(st.one_of(st.none(), timestamps.filter(lambda t: isinstance(t, str))))
        who = draw(st.sampled_from([AGENT, STRANGER]))
        event = slack.channel_message(AGENTS, who, text, thread_ts=thread)
    return slack.event_callback(event, event_id=f"Ev{draw(st.integers(0, 10**12))}")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_hostile_content_in_wellformed_messages_reaches_a_listener_without_a_crash(
    product: Product, recorder: Recorder, data: st.DataObject
) -> None:
    body = data.draw(wellformed_messages(product.slack))
    before = len(recorder.records)
    errors_before = len(product.transport.errors)
    delivery = product.run(product.post("event", body))
    assert delivery.status == 200  # accepted, and ``post`` waited for its listener
    assert recorder.errors(since=before, prefixes=CRASHES) == []
    assert len(product.transport.errors) == errors_before


def test_a_genuine_dm_is_answered_after_the_fuzz(product: Product, recorder: Recorder) -> None:
    async def ask() -> None:
        slack = product.slack
        slack.add_user("U0NEWCOMER", "lea", locale="fr-FR")  # the fuzz's people are mid-talk
        await product.post("event", slack.event_callback(slack.dm_message("U0NEWCOMER", QUESTION)))
        answers = [m for m in slack.posted(slack.dm_channel("U0NEWCOMER")) if "livr" in m.text]
        assert answers

    product.run(ask())
    assert recorder.errors(prefixes=CRASHES) == []
