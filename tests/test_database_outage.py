"""A database connection lost mid-delivery (a PostgreSQL restart, a failover, a proxy
closing idle connections): the delivery's record waits for the database instead of
being dropped, so the message is not sent a second time once its claim runs out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from bot.config import settings_from_mapping
from bot.conversation.model import Address, Sent
from tests.fakes.clock import FakeClock
from tests.fakes.recording import RecordingChannel
from tests.harness import Harness


class CutAfterSend(RecordingChannel):
    """Sends, then has the server close the bot's write connection (once), as a restart
    does between a platform's answer and the delivery's record."""

    def __init__(self, url: str) -> None:
        super().__init__("telegram")
        self.url = url
        self.harness: Harness | None = None
        self.cut = False

    async def send(self, to: Address, text: str, choices: Any = ()) -> Sent:
        sent = await super().send(to, text, choices)
        if not self.cut and self.harness is not None and self.harness.db is not None:
            self.cut = True
            pid = self.harness.db.pg.info.backend_pid  # type: ignore[attr-defined]
            with psycopg.connect(self.url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        return sent


async def test_a_connection_lost_before_a_deliverys_record_sends_nothing_twice(
    pg_url: str, clock: FakeClock
) -> None:
    channel = CutAfterSend(pg_url)
    settings = settings_from_mapping({"storage": {"url": pg_url}, "desk": "slack"})
    h = Harness(settings, clock, channel=channel)
    channel.harness = h
    await h.start()
    try:
        await h.say("Quel est le délai de livraison ?")
        await h.drain()
        assert channel.cut
        (answer,) = channel.texts()
        assert answer.startswith("Livraison en 2 à 4 jours ouvrés.")
        assert h.db is not None
        rows = await h.db.fetchall("SELECT sent_at FROM outbox")
        assert rows
        assert all(row["sent_at"] is not None for row in rows)
        clock.advance(timedelta(minutes=5))  # every claim of this run has run out
        assert h.dispatcher is not None
        assert await h.dispatcher.resume() == 0
        await h.drain()
        assert channel.texts() == [answer]
    finally:
        await h.stop()
