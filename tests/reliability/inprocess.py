"""The product in the test's own event loop, on a temp database, against the fake Telegram."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from bot.app import SupportApp
from bot.config import Secrets, settings_from_mapping
from handlers.telegram import RateLimits
from tests.fakes.telegram_server import TelegramServer
from tests.reliability.bot_process import KNOWLEDGE

T = TypeVar("T")

QUESTION = "Quel est le délai de livraison ?"
DID_IT_HELP = "Cette réponse a-t-elle résolu votre problème ?"


@asynccontextmanager
async def telegram_app(
    tg: TelegramServer, db: Path, *, webhook_secret: str | None = None, **sections: dict[str, Any]
) -> AsyncIterator[SupportApp]:
    """A started ``SupportApp`` (real clock, no pacing); ``sections`` override config."""
    config: dict[str, Any] = {
        "storage": {"path": str(db)},
        "knowledge": {"path": str(KNOWLEDGE)},
        "telegram": {"api_url": tg.url, "poll_timeout": 1},
        "slack": {"enabled": False},
        "digest": {"enabled": False},
        "web": {"enabled": False},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    app = SupportApp(
        settings_from_mapping(config),
        Secrets(telegram_bot_token=tg.token, telegram_webhook_secret=webhook_secret),
        transport_options={"telegram": {"limits": RateLimits.unlimited()}},
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def answers(tg: TelegramServer, chat_id: int | None = None) -> list[str]:
    """Knowledge-base answers Telegram accepted (to one chat, or to anyone)."""
    return [
        c.params["text"]
        for c in tg.calls_to("sendMessage", ok=True)
        if DID_IT_HELP in c.params["text"] and chat_id in (None, c.params["chat_id"])
    ]


class BackgroundLoop:
    """An event loop in its own thread, so that sync code (hypothesis) can drive async code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = contextlib.AsyncExitStack()

    def run(self, coro: Awaitable[T], within: float = 30.0) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(within)

    async def start(self, tmp: Path) -> None:
        """Start what the test drives (entering contexts on ``stack``)."""
        raise NotImplementedError

    @classmethod
    @contextlib.contextmanager
    def running(cls, tmp: Path) -> Iterator[Self]:
        """Started in ``tmp``, closed on exit."""
        product = cls()
        try:
            product.run(product.start(tmp))
            yield product
        finally:
            product.close()

    def close(self) -> None:
        """Exit every context entered on ``stack``, then stop the loop and its thread."""
        try:
            self.run(self.stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class Recorder(logging.Handler):
    """Keeps every log record (of every thread) for the test to inspect."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Recorder]:
        logging.getLogger().addHandler(self)
        try:
            yield self
        finally:
            logging.getLogger().removeHandler(self)

    def errors(self, since: int = 0, prefixes: tuple[str, ...] = ("handlers", "bot")) -> list[str]:
        """ERROR lines of our loggers since a position, with the exception they carry."""
        return [
            f"{r.name}: {r.getMessage()}"
            + (f" ({r.exc_info[1]!r})" if r.exc_info and r.exc_info[1] else "")
            for r in self.records[since:]
            if r.levelno >= logging.ERROR and r.name.startswith(prefixes)
        ]
