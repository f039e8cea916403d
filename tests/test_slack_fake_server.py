"""The local Slack, checked with the real slack_sdk clients (no supportbot code involved)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import (
    APP_TOKEN,
    BOT_TOKEN,
    BOT_USER_ID,
    EXTERNAL_TEAM_ID,
    SIGNING_SECRET,
    TEAM_ID,
    FakeSlack,
    Message,
    validate_blocks,
)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    fake.add_user("U0MARIE", "marie", locale="fr-FR", real_name="Marie Dupont")
    fake.add_user("U0MARC", "marc", team=EXTERNAL_TEAM_ID, locale="en-GB")
    fake.add_channel("C0SUPPORT", "support", ["U0MARIE", "U0MARC"], ext_shared=True)
    async with fake:
        yield fake


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    # no retry handlers: these tests look at what the server answers
    return AsyncWebClient(token=BOT_TOKEN, base_url=slack.api_url, retry_handlers=[])


def button(action_id: str, label: str, value: str) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }


# ---------------------------------------------------------------------- Web API


async def test_auth_test_and_bad_tokens(slack: FakeSlack, client: AsyncWebClient) -> None:
    me = await client.auth_test()
    assert (me["user_id"], me["team_id"], me["bot_id"]) == (BOT_USER_ID, TEAM_ID, slack.bot_id)
    assert me["url"].startswith("https://")

    with pytest.raises(SlackApiError) as bad:
        await AsyncWebClient(token="xoxb-wrong", base_url=slack.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as none:
        await AsyncWebClient(base_url=slack.api_url).auth_test()
    assert none.value.response["error"] == "not_authed"
    # the app token opens Socket Mode connections, and only that
    with pytest.raises(SlackApiError) as app_token:
        await AsyncWebClient(token=APP_TOKEN, base_url=slack.api_url).auth_test()
    assert app_token.value.response["error"] == "invalid_auth"
    opened = await AsyncWebClient(base_url=slack.api_url).apps_connections_open(app_token=APP_TOKEN)
    assert opened["url"].startswith(f"ws://127.0.0.1:{slack.port}/link/")
    assert [c.method for c in slack.calls] == [
        "auth.test",
        "auth.test",
        "auth.test",
        "auth.test",
        "apps.connections.open",
    ]


async def test_post_message_keeps_threads(slack: FakeSlack, client: AsyncWebClient) -> None:
    top = await client.chat_postMessage(channel="C0SUPPORT", text="question")
    reply = await client.chat_postMessage(channel="C0SUPPORT", text="a", thread_ts=top["ts"])
    # replying to a reply lands in the same thread, as on Slack
    again = await client.chat_postMessage(channel="C0SUPPORT", text="b", thread_ts=reply["ts"])
    assert reply["message"]["thread_ts"] == top["ts"]
    assert again["message"]["thread_ts"] == top["ts"]
    assert [m.text for m in slack.posted("C0SUPPORT", thread_ts=top["ts"])] == ["a", "b"]
    assert top["ts"] < reply["ts"] < again["ts"]

    with pytest.raises(SlackApiError, match="thread_not_found"):
        await client.chat_postMessage(channel="C0SUPPORT", text="x", thread_ts="1.000001")
    with pytest.raises(SlackApiError, match="channel_not_found"):
        await client.chat_postMessage(channel="C0NOPE", text="x")
    with pytest.raises(SlackApiError, match="no_text"):  # (the sdk itself warns before that)
        await client.api_call("chat.postMessage", json={"channel": "C0SUPPORT"})


async def test_post_to_a_user_opens_the_dm(slack: FakeSlack, client: AsyncWebClient) -> None:
    sent = await client.chat_postMessage(channel="U0MARIE", text="hi")
    opened = await client.conversations_open(users="U0MARIE")
    assert sent["channel"] == opened["channel"]["id"] == slack.dm_channel("U0MARIE")
    info = await client.conversations_info(channel=sent["channel"])
    assert info["channel"]["is_im"] is True
    with pytest.raises(SlackApiError, match="user_not_found"):
        await client.conversations_open(users="U0GHOST")


async def test_archived_and_foreign_channels_refuse(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.add_channel("C0OLD", "old", archived=True)
    slack.add_channel("C0OTHER", "other", bot_member=False)
    with pytest.raises(SlackApiError, match="is_archived"):
        await client.chat_postMessage(channel="C0OLD", text="x")
    with pytest.raises(SlackApiError, match="not_in_channel"):
        await client.chat_postMessage(channel="C0OTHER", text="x")
    info = await client.conversations_info(channel="C0OTHER")
    assert info["channel"]["is_member"] is False


async def test_update_ephemeral_and_reactions(slack: FakeSlack, client: AsyncWebClient) -> None:
    sent = await client.chat_postMessage(channel="C0SUPPORT", text="v1")
    await client.chat_update(channel="C0SUPPORT", ts=sent["ts"], text="v2")
    msg = slack.message("C0SUPPORT", sent["ts"])
    assert msg.text == "v2"
    assert msg.edits == [{"text": "v1", "blocks": []}]

    person = slack.channel_message("C0SUPPORT", "U0MARC", "mine")
    with pytest.raises(SlackApiError, match="cant_update_message"):
        await client.chat_update(channel="C0SUPPORT", ts=person["ts"], text="hacked")

    eph = await client.chat_postEphemeral(channel="C0SUPPORT", user="U0MARC", text="psst")
    assert eph["message_ts"]
    assert [(e.user, e.text) for e in slack.ephemerals] == [("U0MARC", "psst")]
    slack.add_user("U0OUT", "out")
    with pytest.raises(SlackApiError, match="user_not_in_channel"):
        await client.chat_postEphemeral(channel="C0SUPPORT", user="U0OUT", text="psst")

    await client.reactions_add(channel="C0SUPPORT", timestamp=person["ts"], name="white_check_mark")
    await client.reactions_add(channel="C0SUPPORT", timestamp=person["ts"], name="eyes")
    with pytest.raises(SlackApiError, match="already_reacted"):
        await client.reactions_add(channel="C0SUPPORT", timestamp=person["ts"], name="eyes")
    assert slack.message("C0SUPPORT", person["ts"]).reactions == {
        "white_check_mark": [BOT_USER_ID],
        "eyes": [BOT_USER_ID],
    }


async def test_users_info_locale_only_when_asked(client: AsyncWebClient) -> None:
    plain = await client.users_info(user="U0MARC")
    assert "locale" not in plain["user"]
    assert plain["user"]["team_id"] == EXTERNAL_TEAM_ID
    full = await client.users_info(user="U0MARIE", include_locale=True)
    assert full["user"]["locale"] == "fr-FR"
    assert full["user"]["profile"]["real_name"] == "Marie Dupont"
    with pytest.raises(SlackApiError, match="user_not_found"):
        await client.users_info(user="U0GHOST")


async def test_members_are_paginated_with_cursors(slack: FakeSlack, client: AsyncWebClient) -> None:
    members = [f"U{i:04d}" for i in range(7)]
    slack.add_channel("C0BIG", "big", members)
    seen: list[str] = []
    async for page in await client.conversations_members(channel="C0BIG", limit=3):
        seen.extend(page["members"])
    assert seen == [*members, BOT_USER_ID]
    cursors = [c.params.get("cursor") for c in slack.calls_to("conversations.members")]
    assert cursors == [None, "off:3", "off:6"]


async def test_files_upload_v2_stores_the_bytes(slack: FakeSlack, client: AsyncWebClient) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    result = await client.files_upload_v2(
        channel="C0SUPPORT", content=png, filename="chart.png", title="Chart"
    )
    file_id = result["file"]["id"]
    assert slack.files[file_id]["content"] == png
    assert slack.files[file_id]["shared_in"] == "C0SUPPORT"
    assert [c.method for c in slack.calls] == [
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    shared = slack.posted("C0SUPPORT")[-1]
    assert shared.subtype == "file_share"
    assert shared.files[0]["name"] == "chart.png"


async def test_block_kit_limits_are_enforced(slack: FakeSlack, client: AsyncWebClient) -> None:
    too_long = [{"type": "actions", "elements": [button("a", "x" * 76, "v")]}]
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        await client.chat_postMessage(channel="C0SUPPORT", text="t", blocks=too_long)
    twice = [{"type": "actions", "elements": [button("a", "x", "1"), button("a", "y", "2")]}]
    assert validate_blocks(twice) == ["[0].elements[1]: duplicate action_id a"]
    empty_section = [{"type": "section", "text": {"type": "mrkdwn", "text": ""}}]
    assert validate_blocks(empty_section)
    header_mrkdwn = [{"type": "header", "text": {"type": "mrkdwn", "text": "t"}}]
    assert validate_blocks(header_mrkdwn) == ["[0].text: must be plain_text"]
    fine = [
        {"type": "header", "text": {"type": "plain_text", "text": "Title"}},
        {"type": "section", "fields": [{"type": "plain_text", "text": "a"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}]},
        {"type": "divider"},
        {"type": "actions", "elements": [button("a", "x", "1"), button("b", "y", "2")]},
    ]
    assert validate_blocks(fine) == []
    sent = await client.chat_postMessage(channel="C0SUPPORT", text="t", blocks=fine)
    assert [b["value"] for b in slack.message("C0SUPPORT", sent["ts"]).buttons()] == ["1", "2"]


async def test_pings_are_found_in_text_and_mrkdwn_only(slack: FakeSlack) -> None:
    msg = Message(
        "C0SUPPORT",
        "1.1",
        "hi <!here> &lt;!channel&gt;",
        blocks=[
            {"type": "section", "text": {"type": "plain_text", "text": "<!channel> literal"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "cc <@U0MARIE>"}},
        ],
    )
    assert slack.pings(msg) == ["!here", "@U0MARIE"]


# ---------------------------------------------------------------------- faults


async def test_rate_limit_then_recovery(slack: FakeSlack, client: AsyncWebClient) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as limited:
        await client.chat_postMessage(channel="C0SUPPORT", text="x")
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert limited.value.response["error"] == "ratelimited"
    # other methods are not limited, and the limit runs out
    await client.auth_test()
    await client.chat_postMessage(channel="C0SUPPORT", text="x")
    assert [(c.method, c.status) for c in slack.calls] == [
        ("chat.postMessage", 429),
        ("auth.test", 200),
        ("chat.postMessage", 200),
    ]


async def test_server_errors_api_errors_and_down_windows(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    slack.fail("auth.test", status=500)
    with pytest.raises(SlackApiError) as failed:
        await client.auth_test()
    assert failed.value.response.status_code == 500
    slack.error("users.info", "fatal_error", times=2)
    for _ in range(2):
        with pytest.raises(SlackApiError, match="fatal_error"):
            await client.users_info(user="U0MARIE")
    assert (await client.users_info(user="U0MARIE"))["ok"]

    slack.down()
    with pytest.raises(SlackApiError) as down:
        await client.auth_test()
    assert down.value.response.status_code == 503
    slack.up()
    assert (await client.auth_test())["ok"]
    slack.down(seconds=60)
    with pytest.raises(SlackApiError):
        await client.auth_test()
    slack.clear_faults()
    assert (await client.auth_test())["ok"]


async def test_wait_for_sees_past_and_future_calls(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    await client.chat_postMessage(channel="C0SUPPORT", text="one")
    first = await slack.wait_for("chat.postMessage", timeout=1)  # already happened
    assert first.params["text"] == "one"
    mark = slack.mark()
    later = asyncio.create_task(
        slack.wait_for("chat.postMessage", lambda c: c.params["text"] == "two", since=mark)
    )
    await asyncio.sleep(0)  # let the waiter start before the call it waits for
    await client.chat_postMessage(channel="C0SUPPORT", text="two")
    assert (await later).params["text"] == "two"
    with pytest.raises(AssertionError, match="timed out"):
        await slack.wait_for("chat.update", timeout=0.05)


# ---------------------------------------------------------------------- Slack → app over HTTP


class Receiver:
    """A stand-in app endpoint that records what Slack POSTs and checks its signature."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], str]] = []
        self.verifier = SignatureVerifier(SIGNING_SECRET)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        headers = dict(request.headers)
        self.requests.append((headers, body))
        if not self.verifier.is_valid_request(body, headers):
            return web.Response(status=401)
        return web.json_response({"got": True})


@pytest.fixture
async def receiver(slack: FakeSlack) -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/slack/events", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    slack.events_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    yield rec
    await runner.cleanup()


async def test_events_are_signed_and_retries_keep_the_event_id(
    slack: FakeSlack, receiver: Receiver
) -> None:
    event = slack.dm_message("U0MARIE", "Bonjour <b> & co")
    first = await slack.send_event(event)
    retry = await slack.send_event(event, event_id=first.event_id, retry=2)
    assert (first.status, first.body, retry.status) == (200, {"got": True}, 200)
    (h1, b1), (h2, b2) = receiver.requests
    assert "X-Slack-Retry-Num" not in h1
    assert (h2["X-Slack-Retry-Num"], h2["X-Slack-Retry-Reason"]) == ("2", "http_timeout")
    p1, p2 = json.loads(b1), json.loads(b2)
    assert p1["event_id"] == p2["event_id"] == first.event_id
    assert p1["type"] == "event_callback"
    assert p1["event"]["channel_type"] == "im"
    assert p1["event"]["text"] == "Bonjour &lt;b&gt; &amp; co"  # Slack escapes what people type


async def test_forged_and_stale_signatures_are_refused_by_a_real_verifier(
    slack: FakeSlack, receiver: Receiver
) -> None:
    event = slack.dm_message("U0MARIE", "x")
    forged = await slack.send_event(event, secret="not-the-secret")
    stale = await slack.send_event(event, timestamp=int(time.time()) - 6 * 60)
    assert (forged.status, stale.status) == (401, 401)


async def test_interactions_and_commands_are_form_encoded(
    slack: FakeSlack, client: AsyncWebClient, receiver: Receiver
) -> None:
    blocks = [{"type": "actions", "elements": [button("sb_c0_0", "Oui", "c1:help:yes")]}]
    sent = await client.chat_postMessage(channel="U0MARIE", text="Ça aide ?", blocks=blocks)
    message = slack.message(sent["channel"], sent["ts"])
    payload = slack.block_action("U0MARIE", message, value="c1:help:yes")
    assert (await slack.send_interaction(payload)).status == 200
    assert (
        await slack.send_command("/support-kpi", user="U0MARIE", channel="C0SUPPORT")
    ).status == 200
    (_, interaction), (_, command) = receiver.requests
    decoded = json.loads(urllib.parse.parse_qs(interaction)["payload"][0])
    assert decoded["type"] == "block_actions"
    assert decoded["actions"][0]["value"] == "c1:help:yes"
    assert decoded["container"]["message_ts"] == sent["ts"]
    assert decoded["message"]["blocks"] == blocks
    fields = urllib.parse.parse_qs(command)
    assert (fields["command"], fields["user_id"]) == (["/support-kpi"], ["U0MARIE"])
    with pytest.raises(AssertionError, match="no such button"):
        slack.block_action("U0MARIE", message, value="c1:help:no")


async def test_response_url_replaces_or_answers_ephemerally(
    slack: FakeSlack, client: AsyncWebClient
) -> None:
    blocks = [{"type": "actions", "elements": [button("sb_c0_0", "Oui", "yes")]}]
    sent = await client.chat_postMessage(channel="C0SUPPORT", text="q", blocks=blocks)
    payload = slack.block_action("U0MARC", slack.message("C0SUPPORT", sent["ts"]), value="yes")
    url = payload["response_url"]
    async with aiohttp.ClientSession() as http:
        await http.post(url, json={"text": "only you", "response_type": "ephemeral"})
        await http.post(url, json={"text": "done", "replace_original": True})
    assert [(e.user, e.text) for e in slack.ephemerals] == [("U0MARC", "only you")]
    msg = slack.message("C0SUPPORT", sent["ts"])
    assert (msg.text, msg.blocks) == ("done", [])
    assert len(slack.calls_to("response_url")) == 2


# ---------------------------------------------------------------------- Socket Mode


async def test_socket_mode_hello_envelopes_acks_and_redelivery(slack: FakeSlack) -> None:
    received: list[SocketModeRequest] = []
    hello = asyncio.Event()

    async def on_message(_client: Any, message: dict[str, Any], _raw: str | None) -> None:
        if message.get("type") == "hello":
            hello.set()

    async def on_request(client: SocketModeClient, req: SocketModeRequest) -> None:
        received.append(req)
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=req.envelope_id, payload={"seen": len(received)})
        )

    web_client = AsyncWebClient(base_url=slack.api_url)
    socket = SocketModeClient(app_token=APP_TOKEN, web_client=web_client, ping_interval=30)
    socket.message_listeners.append(on_message)
    socket.socket_mode_request_listeners.append(on_request)
    try:
        await socket.connect()
        await slack.wait_socket()
        await asyncio.wait_for(hello.wait(), 5)

        body = slack.event_callback(slack.dm_message("U0MARIE", "hi"))
        env = await slack.send_envelope("events_api", body)
        assert await slack.wait_ack(env.envelope_id) == {"seen": 1}
        assert received[0].type == "events_api"
        assert received[0].payload["event_id"] == body["event_id"]

        # a lost ack makes Slack send the envelope again, marked as a retry
        slack.drop_acks(1)
        slack.redeliver_unacked(after=0.2)
        lost = await slack.send_envelope("events_api", body)
        retry_id = await slack.wait_until(lambda: lost.redelivered_as, what="a redelivery")
        assert await slack.wait_ack(retry_id) == {"seen": 3}
        retry = slack.envelope(retry_id)
        assert (retry.retry_attempt, retry.retry_reason) == (1, "timeout")
        assert retry.payload["event_id"] == body["event_id"]
        assert lost.ack is None
        assert len(slack.dropped_acks) == 1
        assert (received[2].retry_attempt, received[2].retry_reason) == (1, "timeout")
    finally:
        await socket.close()
