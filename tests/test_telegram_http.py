"""PTB's calls over aiohttp: PTB's parameters, uploads, time-outs and errors, no token leaked."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from telegram import Bot, InputFile
from telegram.error import NetworkError, TimedOut
from telegram.request import RequestData
from telegram.request._requestparameter import RequestParameter

from handlers.telegram.http import AiohttpRequest
from tests.fakes.telegram_server import TelegramServer, running_server

TOKEN = "123456789:SECRET-token-part"


@pytest.fixture
async def tg() -> AsyncIterator[TelegramServer]:
    async with running_server() as server:
        yield server


async def test_ptb_calls_and_uploads_go_through(tg: TelegramServer) -> None:
    ana = tg.add_user("Ana")
    request = AiohttpRequest(4)
    bot = Bot(tg.token, base_url=f"{tg.url}/bot", request=request)
    async with bot:
        me = await bot.get_me()
        assert me.username == tg.bot.username
        sent = await bot.send_message(ana.id, "Bonjour <Ana> & co", disable_notification=True)
        assert sent.text == "Bonjour <Ana> & co"
        photo = await bot.send_photo(ana.id, InputFile(b"\x89PNG fake", filename="chart.png"))
        assert photo.photo
    call = await tg.wait_for("sendPhoto")
    assert call.params["chat_id"] in (ana.id, str(ana.id))
    send = await tg.wait_for("sendMessage")
    assert send.params["disable_notification"] in (True, "true")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_server_is_a_network_error_without_the_token() -> None:
    request = AiohttpRequest(1, connect_timeout=2.0)
    await request.initialize()
    try:
        url = f"http://127.0.0.1:{_closed_port()}/bot{TOKEN}/getMe"
        with pytest.raises(NetworkError) as caught:
            await request.do_request(url, "POST", RequestData([]))
    finally:
        await request.shutdown()
    assert "aiohttp." in caught.value.message
    assert "SECRET" not in caught.value.message


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts the request and never answers (until the test ends)."""
    done = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await done.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/{tail:.*}", never)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        done.set()
        await runner.cleanup()


async def test_a_silent_server_is_timed_out_by_the_read_timeout(silent_server: str) -> None:
    request = AiohttpRequest(1, read_timeout=0.2)
    await request.initialize()
    try:
        params = RequestData([RequestParameter("chat_id", 1, None)])
        url = f"{silent_server}/bot{TOKEN}/sendMessage"
        # Well before the 5 s default: the 0.2 s read time-out is the one that fired.
        async with asyncio.timeout(2):
            with pytest.raises(TimedOut):
                await request.do_request(url, "POST", params)
    finally:
        await request.shutdown()


async def test_not_initialized_is_refused() -> None:
    with pytest.raises(RuntimeError, match="not initialized"):
        await AiohttpRequest(1).do_request("http://127.0.0.1:9/x", "POST")


def test_proxy_from_the_environment_unless_no_proxy_covers_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    request = AiohttpRequest(1)
    assert request._proxy("https://api.telegram.org/botX/getMe") == "http://proxy.example:3128"
    assert request._proxy("https://127.0.0.1:8081/botX/getMe") is None
    assert request._proxy("http://api.telegram.org/botX/getMe") is None  # no HTTP_PROXY set
