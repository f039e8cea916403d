"""The fake Telegram Bot API server, checked with python-telegram-bot's own ``Bot``.

If PTB can parse what it answers and raises the right errors, tests of the transport
against it mean something.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)

from tests.fakes.telegram_server import TelegramServer, running_server


@pytest.fixture
async def tg() -> AsyncIterator[TelegramServer]:
    async with running_server() as server:
        yield server


@pytest.fixture
async def bot(tg: TelegramServer) -> AsyncIterator[Bot]:
    async with Bot(tg.token, base_url=f"{tg.url}/bot", base_file_url=tg.file_url) as bot:
        yield bot


async def test_get_me_answers_the_bot_identity(tg: TelegramServer, bot: Bot) -> None:
    assert bot.username == tg.bot.username
    assert bot.id == tg.bot.id
    assert (await tg.wait_for("getMe")).ok


async def test_updates_stay_until_an_offset_confirms_them(tg: TelegramServer, bot: Bot) -> None:
    ana = tg.add_user("Ana", "Lopez", language_code="fr")
    first = await tg.customer_sends(ana, "/start promo")
    second = await tg.customer_sends(ana, "Bonjour")

    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == [first["update_id"], second["update_id"]]
    message = updates[0].message
    assert message is not None
    assert message.text == "/start promo"
    assert message.from_user is not None
    assert message.from_user.language_code == "fr"
    assert [(e.type, e.offset, e.length) for e in message.entities] == [("bot_command", 0, 6)]

    again = await bot.get_updates(timeout=0)  # nothing confirmed: the same two again
    assert [u.update_id for u in again] == [first["update_id"], second["update_id"]]

    partial = await bot.get_updates(offset=second["update_id"], timeout=0)
    assert [u.update_id for u in partial] == [second["update_id"]]
    assert await bot.get_updates(offset=second["update_id"] + 1, timeout=0) == ()
    await tg.wait_delivered(first)
    await tg.wait_delivered(second)


async def test_long_poll_returns_as_soon_as_an_update_arrives(tg: TelegramServer, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=20, read_timeout=25))
    await tg.wait_until(
        lambda: any(c.status is None for c in tg.calls_to("getUpdates")), what="a waiting poll"
    )
    sent = await tg.customer_sends(ana, "hello")
    updates = await asyncio.wait_for(poll, 5)
    assert [u.update_id for u in updates] == [sent["update_id"]]
    assert time.monotonic() - started < 5  # far from the 20 s timeout


async def test_a_second_concurrent_poll_terminates_the_waiting_one_with_409(
    tg: TelegramServer, bot: Bot
) -> None:
    """Like Telegram: one poller per bot; a newer getUpdates ends a waiting one (409)."""
    ana = tg.add_user("Ana")
    first = asyncio.create_task(bot.get_updates(timeout=20, read_timeout=25))
    await tg.wait_until(
        lambda: any(c.status is None for c in tg.calls_to("getUpdates")), what="a waiting poll"
    )
    async with Bot(tg.token, base_url=f"{tg.url}/bot") as other:  # another process
        second = asyncio.create_task(other.get_updates(timeout=20, read_timeout=25))
        with pytest.raises(Conflict, match="terminated by other getUpdates request"):
            await asyncio.wait_for(first, 5)
        sent = await tg.customer_sends(ana, "hello")
        updates = await asyncio.wait_for(second, 5)  # the newer poll goes on
    assert [u.update_id for u in updates] == [sent["update_id"]]
    assert [c.status for c in tg.calls_to("getUpdates")] == [409, 200]


async def test_long_poll_honours_its_timeout_when_nothing_comes(
    tg: TelegramServer, bot: Bot
) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == ()
    assert 0.9 <= time.monotonic() - started < 4


async def test_allowed_updates_drop_the_other_kinds(tg: TelegramServer, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    await tg.customer_sends(ana, "dropped")
    blocked = await tg.user_blocks_bot(ana)
    updates = await bot.get_updates(timeout=0, allowed_updates=["my_chat_member"])
    assert [u.update_id for u in updates] == [blocked["update_id"]]
    await tg.customer_sends(ana, "also dropped")
    assert await bot.get_updates(offset=blocked["update_id"] + 1, timeout=0) == ()
    assert tg.pending_updates() == 0


async def test_redelivery_repeats_the_same_update_id(tg: TelegramServer, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    sent = await tg.customer_sends(ana, "hello")
    (first,) = await bot.get_updates(timeout=0)
    assert await bot.get_updates(offset=first.update_id + 1, timeout=0) == ()
    await tg.redeliver(sent)
    (again,) = await bot.get_updates(offset=first.update_id + 1, timeout=0)
    assert again.update_id == first.update_id
    assert again.message is not None
    assert again.message.text == "hello"
    assert await bot.get_updates(offset=again.update_id + 1, timeout=0) == ()
    await tg.wait_delivered(sent, times=2)


async def test_429_surfaces_as_retry_after(
    tg: TelegramServer, bot: Bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    ana = tg.add_user("Ana")
    tg.fail("sendMessage", 429, retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(ana.id, "hi")
    assert caught.value.retry_after == timedelta(seconds=7)
    assert (await bot.send_message(ana.id, "hi")).text == "hi"  # the fault was used up
    failed = tg.calls_to("sendMessage", ok=False)
    assert [c.status for c in failed] == [429]


async def test_5xx_faults_and_down_windows_are_network_errors(tg: TelegramServer, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    tg.fail("sendMessage", 500, times=2)
    for _ in range(2):
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await bot.send_message(ana.id, "hi")
    with tg.down():
        with pytest.raises(NetworkError, match="Bad Gateway"):
            await bot.send_message(ana.id, "hi")
        with pytest.raises(NetworkError):
            await bot.get_me()
    assert (await bot.send_message(ana.id, "back")).text == "back"


async def test_unknown_token_and_method_answer_like_telegram(tg: TelegramServer) -> None:
    wrong = Bot("999:wrong-token-xyz", base_url=f"{tg.url}/bot")
    with pytest.raises(InvalidToken):
        await wrong.initialize()
    await wrong.shutdown()
    async with Bot(tg.token, base_url=f"{tg.url}/bot") as bot:
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("sendTelepathy", api_kwargs={"chat_id": 1})
    assert [c.status for c in tg.calls_to("sendTelepathy", ok=False)] == [404]


async def test_blocked_user_gives_forbidden(tg: TelegramServer, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    update = await tg.user_blocks_bot(ana)
    assert update["my_chat_member"]["new_chat_member"]["status"] == "kicked"
    with pytest.raises(Forbidden, match="blocked by the user"):
        await bot.send_message(ana.id, "still there?")
    await tg.user_unblocks_bot(ana)
    assert (await bot.send_message(ana.id, "welcome back")).chat.id == ana.id


async def test_html_is_parsed_into_entities_and_checked(tg: TelegramServer, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    sent = await bot.send_message(ana.id, "<b>Total</b> &lt;b&gt; &amp; co", parse_mode="HTML")
    assert sent.text == "Total <b> & co"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 5)]
    with pytest.raises(BadRequest, match="(?i)can't parse entities"):
        await bot.send_message(ana.id, "<unknown>x</unknown>", parse_mode="HTML")
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(ana.id, "x" * 4097)
    assert (await bot.send_message(ana.id, "😀" * 2048)).text == "😀" * 2048  # 4096 UTF-16 units
    with pytest.raises(BadRequest, match="(?i)message is too long"):
        await bot.send_message(ana.id, "😀" * 2049)


async def test_buttons_callbacks_and_edits(tg: TelegramServer, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Oui", callback_data="c1:help:yes")]])
    question = await bot.send_message(ana.id, "Résolu ?", reply_markup=markup)
    stored = tg.message(ana.id, question.message_id)
    with pytest.raises(AssertionError, match="no button"):
        await tg.press_button(ana, stored, "c1:help:maybe")
    update = await tg.press_button(ana, stored, "c1:help:yes")
    query_id = update["callback_query"]["id"]
    assert await bot.answer_callback_query(query_id, text="Merci", show_alert=True)
    assert tg.callback_answers[query_id] == {"text": "Merci", "show_alert": True}
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(query_id)

    edited = await bot.edit_message_text("Résolu ?\n→ Oui", ana.id, question.message_id)
    assert not isinstance(edited, bool)
    assert edited.reply_markup is None  # no reply_markup given: the keyboard is removed
    with pytest.raises(BadRequest, match="not modified"):
        await bot.edit_message_text("Résolu ?\n→ Oui", ana.id, question.message_id)


async def test_forum_topics_open_close_and_carry_messages(tg: TelegramServer, bot: Bot) -> None:
    paul = tg.add_user("Paul")
    group = tg.add_group(members=[paul])
    chat = await bot.get_chat(group.id)
    assert chat.is_forum
    topic = await bot.create_forum_topic(group.id, "#1 · Ana")
    thread = topic.message_thread_id
    posted = await bot.send_message(group.id, "header", message_thread_id=thread)
    assert posted.is_topic_message
    assert posted.message_thread_id == thread
    with pytest.raises(BadRequest, match="thread not found"):
        await bot.send_message(group.id, "lost", message_thread_id=thread + 100)

    assert await bot.close_forum_topic(group.id, thread)
    with pytest.raises(BadRequest, match="(?i)topic_not_modified"):
        await bot.close_forum_topic(group.id, thread)
    assert tg.topic(group, thread).closed
    assert await bot.reopen_forum_topic(group.id, thread)
    assert not tg.topic(group, thread).closed

    update = await tg.agent_writes(paul, thread, "Bonjour Ana")
    message = update["message"]
    assert message["is_topic_message"]
    assert message["message_thread_id"] == thread
    assert "forum_topic_created" in message["reply_to_message"]  # like Telegram does

    assert await bot.set_message_reaction(group.id, message["message_id"], "👍")
    assert tg.reactions[(group.id, message["message_id"])] == ["👍"]
    with pytest.raises(BadRequest, match="(?i)reaction_invalid"):
        await bot.set_message_reaction(group.id, message["message_id"], "✅")


async def test_members_files_and_copies(tg: TelegramServer, bot: Bot) -> None:
    ana, paul, eve = tg.add_user("Ana"), tg.add_user("Paul"), tg.add_user("Eve")
    group = tg.add_group(members=[paul])
    assert (await bot.get_chat_member(group.id, paul.id)).status == "member"
    assert (await bot.get_chat_member(group.id, eve.id)).status == "left"
    assert (await bot.get_chat_member(group.id, bot.id)).status == "administrator"

    photo = await bot.send_photo(ana.id, b"\x89PNG chart", filename="kpi.png", caption="KPI")
    assert photo.caption == "KPI"
    assert tg.files[photo.photo[-1].file_id] == b"\x89PNG chart"
    upload = (await tg.wait_for("sendPhoto")).params["photo"]
    assert (upload.filename, upload.data) == ("kpi.png", b"\x89PNG chart")
    file = await bot.get_file(photo.photo[-1].file_id)
    assert await file.download_as_bytearray() == bytearray(b"\x89PNG chart")

    update = await tg.customer_sends_media(
        ana, "document", name="facture.pdf", caption="ma facture"
    )
    copied = await bot.copy_message(group.id, ana.id, update["message"]["message_id"])
    stored = tg.message(group, copied.message_id)
    assert stored["document"]["file_name"] == "facture.pdf"
    assert stored["caption"] == "ma facture"


async def test_webhook_mode_pushes_updates_with_the_secret(tg: TelegramServer, bot: Bot) -> None:
    received: list[tuple[str | None, dict[str, object]]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(
            (request.headers.get("X-Telegram-Bot-Api-Secret-Token"), await request.json())
        )
        arrived.set()
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        assert await bot.set_webhook(f"http://{host}:{port}/hook", secret_token="s3cret-value")
        assert (await bot.get_webhook_info()).url.endswith("/hook")
        with pytest.raises(Conflict):
            await bot.get_updates(timeout=0)
        ana = tg.add_user("Ana")
        sent = await tg.customer_sends(ana, "via webhook")
        await asyncio.wait_for(arrived.wait(), 5)
        await tg.wait_delivered(sent)
        assert received == [("s3cret-value", sent)]
        assert await tg.post_to_webhook(sent, secret="other") == 200  # this hook checks nothing
        assert received[-1][0] == "other"
    finally:
        await runner.cleanup()


async def test_wait_for_matches_a_predicate_after_a_mark(tg: TelegramServer, bot: Bot) -> None:
    ana, bob = tg.add_user("Ana"), tg.add_user("Bob")
    await bot.send_message(ana.id, "one")
    mark = tg.mark()
    await bot.send_message(bob.id, "two")
    await bot.send_message(ana.id, "three")
    call = await tg.wait_for("sendMessage", lambda c: c.params["chat_id"] == ana.id, since=mark)
    assert call.params["text"] == "three"
    assert call.result["message_id"] == 2
    with pytest.raises(AssertionError, match="timed out"):
        await tg.wait_for("sendMessage", lambda c: c.params["text"] == "never", timeout=0.2)
