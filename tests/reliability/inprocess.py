"""The product in the test's own event loop, on a temp database, against the fake Telegram."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.app import SupportApp
from bot.config import Secrets, settings_from_mapping
from handlers.telegram import RateLimits
from tests.fakes.telegram_server import TelegramServer
from tests.reliability.bot_process import KNOWLEDGE

QUESTION = "Quel est le délai de livraison ?"
DID_IT_HELP = "Cette réponse a-t-elle résolu votre problème ?"


@asynccontextmanager
async def telegram_app(
    tg: TelegramServer, db: Path, **sections: dict[str, Any]
) -> AsyncIterator[SupportApp]:
    """A started ``SupportApp`` (real clock, no pacing); ``sections`` override config."""
    config: dict[str, Any] = {
        "storage": {"path": str(db)},
        "knowledge": {"path": str(KNOWLEDGE)},
        "telegram": {"api_url": tg.url, "poll_timeout": 1},
        "slack": {"enabled": False},
        "digest": {"enabled": False},
    }
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    app = SupportApp(
        settings_from_mapping(config),
        Secrets(telegram_bot_token=tg.token),
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
