"""The console's presence toggle over real HTTP: an agent says they are away or available,
the roster shows it, and in round robin the waiting conversation becomes theirs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import SupportApp
from bot.config import Secrets
from handlers.web import WebTransport
from tests.fakes.clock import FakeClock
from tests.test_app import settings_for
from tests.test_web_channel import ALICE_KEY, BOB_KEY, KEYS, Served, queued_conversation
from tests.waiting import eventually


@pytest.fixture
async def routed(tmp_path: Path) -> AsyncIterator[Served]:
    web = {"port": 0, "rate_limit": "8/10s"}
    routing = {"mode": "round_robin", "max_open_per_agent": 1}
    settings = settings_for(tmp_path, web=web, desk="web", routing=routing)
    app = SupportApp(settings, Secrets(web_agent_keys=KEYS), clock=FakeClock())
    await app.start()
    web_transport = next(t for t in app.transports if isinstance(t, WebTransport))
    async with aiohttp.ClientSession() as http:
        try:
            yield Served(app, web_transport, http)
        finally:
            await app.stop()


async def presence(served: Served, key: str = ALICE_KEY, **body: Any) -> Any:
    url = f"{served.base}/api/agent/presence"
    headers = served.auth(key)
    if body:
        async with served.http.post(url, json=body, headers=headers) as resp:
            return resp.status, await resp.json()
    async with served.http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_console_toggle_is_shown_and_routes_the_queue(routed: Served) -> None:
    status, _ = await presence(routed, available=False, id="p1")
    assert status == 200
    status, roster = await presence(routed)
    assert status == 200
    assert roster["me"] == {
        "key": "web:alice", "name": "alice", "available": False, "at_work": False, "open": 0
    }  # fmt: skip
    assert roster["mode"] == "round_robin"

    visitor, cid = await queued_conversation(routed)  # nobody available: it waits
    assert visitor.has("Vous êtes le prochain dans la file d'attente.")

    status, body = await presence(routed, available=True, id="p2")
    assert (status, body["ok"]) == (200, True)
    assert body["notice"].startswith("alice est disponible")
    await eventually(lambda: visitor.has("alice a rejoint la conversation."))
    [conv] = await routed.conversations()
    assert (conv["id"], conv["state"], conv["mine"]) == (cid, "assigned", True)
    _, roster = await presence(routed)
    assert roster["me"]["open"] == 1
    assert roster["me"]["at_work"] is True

    # the same click delivered twice changes nothing; a malformed body is a 400
    status, again = await presence(routed, available=True, id="p2")
    assert (status, again["notice"]) == (200, None)
    status, _ = await presence(routed, available="yes", id="p3")
    assert status == 400


async def test_presence_needs_the_agent_key(routed: Served) -> None:
    async with routed.http.get(f"{routed.base}/api/agent/presence") as resp:
        assert resp.status == 401
    url = f"{routed.base}/api/agent/presence"
    async with routed.http.post(url, json={"available": True, "id": "x"}) as resp:
        assert resp.status == 401


async def frames_until_assigned(console: aiohttp.ClientWebSocketResponse) -> list[Any]:
    """The frames a console receives up to and including its first "assigned" one."""
    frames: list[Any] = []
    while not frames or frames[-1]["type"] != "assigned":
        frames.append(await asyncio.wait_for(console.receive_json(), 5))
    return frames


async def test_routed_conversation_is_announced_to_its_agent_only(routed: Served) -> None:
    """Round robin gives the first conversation to alice, the second to bob (alice is at
    her cap): each console hears "assigned" for its own conversation, never the other's."""
    ws = f"{routed.base}/ws/agent"
    async with (
        routed.http.ws_connect(ws, headers=routed.auth()) as alice,
        routed.http.ws_connect(ws, headers=routed.auth(BOB_KEY)) as bob,
    ):
        await presence(routed, available=True, id="a1")  # console agents say so first
        visitor = await routed.widget(await routed.token())
        await visitor.say("je veux parler à un conseiller")
        await eventually(lambda: visitor.has("alice a rejoint la conversation."))
        [conv] = await routed.conversations()
        first = conv["id"]
        alice_frames = await frames_until_assigned(alice)
        assert alice_frames[-1] == {"type": "assigned", "id": first}
        assert {"type": "changed", "id": first} in alice_frames

        await presence(routed, BOB_KEY, available=True, id="b2")
        visitor = await routed.widget(await routed.token())
        await visitor.say("je veux parler à un conseiller")
        await eventually(lambda: visitor.has("bob a rejoint la conversation."))
        second = next(c["id"] for c in await routed.conversations() if c["id"] != first)
        bob_frames = await frames_until_assigned(bob)
        assert bob_frames[-1] == {"type": "assigned", "id": second}
        assert {"type": "assigned", "id": first} not in bob_frames
        # alice hears of the second conversation (a change) but it is not hers
        later = [await asyncio.wait_for(alice.receive_json(), 5)]
        while {"type": "changed", "id": second} not in later:
            later.append(await asyncio.wait_for(alice.receive_json(), 5))
        assert all(f["type"] != "assigned" for f in later)
