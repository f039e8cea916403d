"""The web channel under attack: what a review of the running product found (issue 13)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
import yaml

from bot.app import SupportApp
from bot.config import Secrets
from handlers.web import WebTransport
from tests.fakes.clock import FakeClock
from tests.rawws import StalledSocket
from tests.test_app import settings_for
from tests.test_web_channel import KEYS, Visitor

BIG = "😀" * 4000  # 16 KB of UTF-8; 48 KB of JSON when every emoji is escaped
BIG_QUESTION = "envoyez la grande affiche"
QUESTION = "Quel est le délai de livraison ?"


def big_answer_kb(folder: Path) -> Path:
    """A knowledge base whose one answer is a 4,000-emoji message."""
    entries = [
        {
            "id": "poster",
            "topic": "affiche",
            "questions": {"fr": [BIG_QUESTION], "en": ["send the big poster"]},
            "answer": {"fr": BIG, "en": BIG},
        },
        {
            "id": "delivery-time",
            "topic": "livraison",
            "questions": {"fr": [QUESTION], "en": ["How long does delivery take?"]},
            "answer": {"fr": "Livraison en 3 jours ouvrés.", "en": "Delivery takes 3 days."},
        },
    ]
    path = folder / "big.yaml"
    path.write_text(yaml.safe_dump({"entries": entries}, allow_unicode=True), encoding="utf-8")
    return path


async def until(check: Callable[[], Awaitable[bool]], *, within: float) -> None:
    async with asyncio.timeout(within):
        while not await check():
            await asyncio.sleep(0.02)


def small_send_buffers(web: WebTransport, size: int = 128 * 1024) -> None:
    """Accepted sockets inherit the listener's SO_SNDBUF: emulate a host whose TCP send
    buffers stay at 256 KiB (the kernel doubles the value) instead of growing to 4 MiB."""
    assert web._runner is not None
    for site in web._runner.sites:
        for listener in site._server.sockets:  # type: ignore[attr-defined]
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


@pytest.fixture
async def big(tmp_path: Path) -> AsyncIterator[tuple[SupportApp, WebTransport]]:
    settings = settings_for(
        tmp_path,
        web={"port": 0},
        desk="web",
        knowledge={"path": str(big_answer_kb(tmp_path))},
    )
    app = SupportApp(settings, Secrets(web_agent_keys=KEYS), clock=FakeClock())
    await app.start()
    web = next(t for t in app.transports if isinstance(t, WebTransport))
    try:
        yield app, web
    finally:
        await app.stop()


async def test_stalled_widget_sockets_never_delay_another_visitor(
    big: tuple[SupportApp, WebTransport],
) -> None:
    """Dozens of sockets that stopped reading (each from its own address, as a botnet
    would) ask for a huge answer over and over; a fresh visitor still gets theirs at once."""
    app, web = big
    assert web.port is not None
    small_send_buffers(web)
    stalled: list[StalledSocket] = []
    for n in range(70):
        _visitor, token = web.signer.new_visitor()
        path = f"/ws/widget?token={token}"
        stalled.append(await StalledSocket.open(web.port, path, source=f"127.0.1.{n + 1}"))
    for sock in stalled:
        for i in range(20):
            await sock.send_json({"type": "message", "id": f"q{i}", "text": BIG_QUESTION})

    async def answered() -> bool:
        """Every stalled visitor's answers are being pushed (the 5th fills 256 KiB)."""
        rows = await app._db.fetchall(
            "SELECT COUNT(*) FROM web_messages WHERE author = 'bot' GROUP BY visitor"
        )
        return len(rows) == len(stalled) and all(row[0] >= 4 for row in rows)

    try:
        await until(answered, within=30)
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{web.port}/api/web/session") as resp:
                token = (await resp.json())["token"]
            fresh = Visitor(
                await http.ws_connect(f"http://127.0.0.1:{web.port}/ws/widget?token={token}")
            )
            started = time.monotonic()
            await fresh.say(QUESTION)
            async with asyncio.timeout(5):
                while not fresh.has("3 jours"):
                    await asyncio.sleep(0.01)
            took = time.monotonic() - started
            await fresh.close()
    finally:
        for sock in stalled:
            sock.close()
    assert took < 2.0, f"the fresh visitor waited {took:.2f}s"
