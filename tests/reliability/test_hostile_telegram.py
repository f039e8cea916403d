"""Hostile Telegram updates (odd unicode, 100 KB texts, missing or mistyped fields,
forged button data, huge numbers) fed to the running product's update handling.

Each generated body goes the way a webhook body goes: ``parse_update`` (a body that is
not an update is refused there, with a warning) and then PTB's ``process_update`` into our
handler. Nothing may reach our central error handler (a crash), and afterwards a genuine
customer is still answered. Hypothesis drives sync code: the product runs in an event
loop of its own thread.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.conversation.desk_view import MAX_NAME, thread_header
from bot.conversation.model import Address, State
from bot.conversation.store import ConversationRecord
from handlers.telegram import TelegramTransport
from handlers.telegram.render import MAX_TEXT, post_parts, render_header, split_text, utf16_len
from tests.fakes.telegram_server import FakeChat, TelegramServer
from tests.reliability.inprocess import (
    QUESTION,
    BackgroundLoop,
    Recorder,
    answers,
    telegram_app,
)
from tests.waiting import eventually

pytestmark = pytest.mark.slow

ODD = ["\u202e", "\u200b", "\u200d", "\ufeff", "👍🏽", "🏳️‍🌈", "ﷺ", "é", "\x00", "<b>", "@all", "a"]
CRASHES = ("handlers", "bot", "telegram")  # loggers whose ERROR lines mean a crash
FORGED_DATA = ["c999:nps:11", "a1:take", "c1:nps:5", "c-1:csat:9", "c1:help:yes", "", ":", "a:"]


class Product(BackgroundLoop):
    """Fake Telegram + SupportApp in a background event loop, driven from sync tests."""

    tg: TelegramServer
    desk: FakeChat
    transport: TelegramTransport

    async def start(self, tmp: Path) -> None:
        self.tg = await self.stack.enter_async_context(TelegramServer())
        paul = self.tg.add_user("Paul", username="paul_agent")
        self.desk = self.tg.add_group("Service client", admins=[paul])
        telegram = {"agents_chat_id": self.desk.id, "agent_ids": [paul.id]}
        app = await self.stack.enter_async_context(
            telegram_app(self.tg, tmp / "supportbot.db", telegram=telegram)
        )
        self.transport = app.transports[0]
        self.agent_id = paul.id
        assert app.components is not None
        self.dispatcher = app.components.dispatcher

    async def feed(self, data: dict[str, Any]) -> bool:
        """What the webhook route does with a body, then what PTB does with the update;
        then every reply it caused is delivered (or failed). False: refused as malformed."""
        update = self.transport.parse_update(data)
        if update is not None:
            await self.transport.application.process_update(update)
        async with asyncio.timeout(30):
            await self.dispatcher.drain()
        return update is not None


@pytest.fixture(scope="module")
def product(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[Product]:
    with Product.running(tmp_path_factory.mktemp("hostile")) as p:
        yield p


# ---------------------------------------------------------------------- strategies

texts = st.one_of(
    st.lists(st.sampled_from(ODD), max_size=50).map("".join),
    st.text(max_size=200).filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t)),
    st.builds(lambda piece, n: piece * n, st.sampled_from(ODD), st.integers(20_000, 100_000)),
    st.sampled_from(["/start", "/agent", "/take", "/resolve x", "/note", "/forget", "//x"]),
)
numbers = st.one_of(
    st.integers(-(2**31), 2**31), st.integers(-(2**63), 2**63), st.sampled_from([0, -1, 2**70])
)
wrong = st.one_of(
    st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)
)


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field as generated, missing (a sentinel dropped below), or of the wrong type."""
    return st.one_of(value, st.just(MISSING), wrong)


MISSING = object()


def clean(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: clean(v) for k, v in data.items() if v is not MISSING}
    return data


@st.composite
def users(draw: st.DrawFn) -> dict[str, Any]:
    return clean(
        {
            "id": draw(maybe(numbers)),
            "is_bot": draw(maybe(st.booleans())),
            "first_name": draw(maybe(texts)),
            "username": draw(maybe(st.text(max_size=40))),
            "language_code": draw(maybe(st.sampled_from(["fr", "en", "xx", ""]))),
        }
    )


@st.composite
def messages(draw: st.DrawFn, desk_id: int) -> dict[str, Any]:
    chat_id = draw(st.one_of(numbers, st.just(desk_id)))
    chat_type = "supergroup" if chat_id == desk_id else draw(st.sampled_from(["private", "group"]))
    return clean(
        {
            "message_id": draw(maybe(numbers)),
            "date": draw(maybe(st.integers(0, 2**33))),
            "chat": draw(maybe(st.just({"id": chat_id, "type": chat_type, "is_forum": True}))),
            "from": draw(maybe(users())),
            "text": draw(maybe(texts)),
            "message_thread_id": draw(maybe(numbers)),
            "is_topic_message": draw(maybe(st.booleans())),
        }
    )


@st.composite
def updates(draw: st.DrawFn, desk_id: int) -> dict[str, Any]:
    update_id = draw(st.integers(1, 2**62))
    kind = draw(st.sampled_from(["message", "callback_query", "my_chat_member", "unknown"]))
    if kind == "message":
        body: Any = draw(maybe(messages(desk_id)))
    elif kind == "callback_query":
        body = clean(
            {
                "id": draw(maybe(st.text(min_size=1, max_size=10))),
                "from": draw(maybe(users())),
                "chat_instance": "x",
                "data": draw(maybe(st.one_of(st.sampled_from(FORGED_DATA), texts))),
                "message": draw(maybe(messages(desk_id))),
            }
        )
    elif kind == "my_chat_member":
        body = clean(
            {
                "chat": {"id": draw(numbers), "type": "private"},
                "from": draw(maybe(users())),
                "date": 0,
                "old_chat_member": {"status": "member", "user": draw(users())},
                "new_chat_member": {"status": draw(st.text(max_size=10)), "user": draw(users())},
            }
        )
    else:
        body = draw(wrong)
    return {"update_id": update_id, kind: body}


@st.composite
def wellformed_updates(draw: st.DrawFn, desk_id: int, agent_id: int) -> dict[str, Any]:
    """Updates Telegram could really send, so that they reach our handler: only the text,
    the people, the topics and the button data are hostile."""
    user_id = draw(st.one_of(st.just(agent_id), st.integers(1, 2**40)))
    user = {"id": user_id, "is_bot": False, "first_name": draw(texts) or "x"}
    where = draw(st.sampled_from(["private", "desk"]))
    message: dict[str, Any] = {
        "message_id": draw(st.integers(1, 2**31 - 1)),
        "date": 1_790_000_000,
        "from": user,
        "text": draw(texts) or ".",
    }
    if where == "private":
        message["chat"] = {"id": user_id, "type": "private", "first_name": "x"}
    else:
        message["chat"] = {"id": desk_id, "type": "supergroup", "is_forum": True}
        message["message_thread_id"] = draw(st.integers(1, 60))
        message["is_topic_message"] = True
    update_id = draw(st.integers(1, 2**62))
    if draw(st.booleans()):
        return {"update_id": update_id, "message": message}
    data = draw(st.one_of(st.sampled_from(FORGED_DATA), texts.map(lambda t: t[:64])))
    query = {"id": str(update_id), "from": user, "chat_instance": "x", "data": data}
    return {"update_id": update_id, "callback_query": {**query, "message": message}}


# ---------------------------------------------------------------------- the test


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_hostile_content_in_wellformed_updates_is_handled_without_a_crash(
    product: Product, recorder: Recorder, data: st.DataObject
) -> None:
    update = data.draw(wellformed_updates(product.desk.id, product.agent_id))
    before = len(recorder.records)
    assert product.run(product.feed(update)), update  # it reached our handler
    assert recorder.errors(since=before, prefixes=CRASHES) == []


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_hostile_updates_never_crash_the_handler(
    product: Product, recorder: Recorder, data: st.DataObject
) -> None:
    update = data.draw(updates(product.desk.id))
    before = len(recorder.records)
    product.run(product.feed(update))
    assert recorder.errors(since=before, prefixes=CRASHES) == []


def test_a_genuine_customer_is_answered_after_the_fuzz(
    product: Product, recorder: Recorder
) -> None:
    async def ask() -> None:
        ana = product.tg.add_user("Ana")
        await product.tg.customer_sends(ana, QUESTION)
        await eventually(lambda: len(answers(product.tg, ana.id)) == 1, within=10)

    product.run(ask())
    assert recorder.errors(prefixes=CRASHES) == []


def test_a_malformed_update_is_refused_with_a_line_naming_it(
    product: Product, recorder: Recorder
) -> None:
    before = len(recorder.records)
    user = {"id": 7, "is_bot": False, "first_name": "X"}
    product.run(
        product.feed(
            {
                "update_id": 424242,
                "my_chat_member": {  # "from" missing: Telegram always fills it
                    "chat": {"id": 7, "type": "private"},
                    "date": 0,
                    "old_chat_member": {"status": "member", "user": user},
                    "new_chat_member": {"status": "kicked", "user": user, "until_date": 0},
                },
            }
        )
    )
    lines = [r.getMessage() for r in recorder.records[before:] if r.levelno == logging.WARNING]
    assert any(line.startswith("telegram: update 424242 rejected: malformed") for line in lines)
    assert recorder.errors(since=before, prefixes=CRASHES) == []


def test_a_huge_customer_name_is_cut_in_the_desk_header() -> None:
    """Found by the fuzz above: a 100,000-character first name made a header over 1 MB,
    refused at every attempt, which held the conversation's desk lane for ever."""
    conv = ConversationRecord(
        id=7, customer_id=1, customer_key="telegram:1", customer_name="👾" * 100_000,
        customer_reachable=True, last_surveyed_at=None, channel="telegram",
        address=Address("telegram", "1"), language="fr", state=State.QUEUED, started_at=0,
    )  # fmt: skip
    header = thread_header(conv, lambda key, **values: key)
    assert len(header.customer_name) == MAX_NAME
    html, _ = render_header(header)
    assert len(html) < 4 * MAX_TEXT


def test_a_huge_author_name_leaves_room_for_the_text_of_a_desk_post() -> None:
    """Found by the fuzz above: a name longer than a message made the space left for the
    text negative, and splitting the text into parts of that size never ended (the event
    loop spun, the whole bot froze)."""
    parts = post_parts("👍🏽" * 3_000, "customer", "\u202e" * 10_000)
    assert len(parts) > 1
    assert all(utf16_len(html.unescape(p.replace("<b>", "").replace("</b>", ""))) <= MAX_TEXT
               for p in parts)  # fmt: skip
    with pytest.raises(ValueError, match="UTF-16"):
        split_text("👍🏽", 1)
