"""kill -9 under load: the real ``supportbot run`` is killed at random moments while
customers write, and restarted each time.

Afterwards every customer message is stored exactly once and answered; a reply went out
twice only when a kill fell between its send and its record (at most one per kill); the
database is intact; and a conversation queued before the first kill is abandoned by its
timer after a restart. Telegram's side is the fake server: an update fetched by a killed
process was never confirmed (confirmation is the offset of the next getUpdates), so the
next process receives it again and must process it once.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import pytest

from bot.clock import SystemClock, to_ms
from tests.fakes.telegram_server import FakeUser, TelegramServer
from tests.reliability.bot_process import BotProcess, database_rows, write_config
from tests.reliability.inprocess import QUESTION, answers
from tests.waiting import eventually

pytestmark = pytest.mark.slow

SEED = 20261123
KILLS = 4
CUSTOMERS = 40  # Telegram paces one message a second per chat: spread the load
RATE = 25  # customer messages per second while the bot runs or is down


class Load:
    """Customers writing continuously, each message with a unique number."""

    def __init__(self, tg: TelegramServer, customers: list[FakeUser], rng: random.Random) -> None:
        self.tg = tg
        self.customers = customers
        self.rng = rng
        self.sent: dict[str, tuple[FakeUser, int]] = {}  # text → (customer, update_id)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._write())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    async def _write(self) -> None:
        n = 0
        while True:
            n += 1
            who = self.rng.choice(self.customers)
            text = f"{QUESTION} {n}"
            update = await self.tg.customer_sends(who, text)
            self.sent[text] = (who, update["update_id"])
            await asyncio.sleep(1 / RATE)  # pacing the load, not waiting for the bot


async def test_kill_9_at_random_moments_loses_nothing(tmp_path: Path, tg: TelegramServer) -> None:
    rng = random.Random(SEED)
    paul = tg.add_user("Paul", username="paul_agent")
    desk = tg.add_group("Service client", admins=[paul])
    zoe = tg.add_user("Zoé")
    customers = [tg.add_user(f"Client{i}") for i in range(CUSTOMERS)]
    config = write_config(
        tmp_path,
        {
            "telegram": {
                "api_url": tg.url,
                "poll_timeout": 1,
                "agents_chat_id": desk.id,
                "agent_ids": [paul.id],
            },
            "desk": "telegram",
            # No business_hours: always open, so the abandon timer counts plain seconds.
            "conversation": {"abandon_after": "3s", "remind_after": "1h", "sweep_every": "200ms"},
        },
    )
    db = tmp_path / "supportbot.db"
    bot = BotProcess(config, {"TELEGRAM_BOT_TOKEN": tg.token}, tmp_path / "bot.log")
    load = Load(tg, customers, rng)
    try:
        await bot.start()
        # Zoé asks for a person: queued, with its abandon timer, just before the first kill.
        await tg.customer_sends(zoe, "/agent")

        def zoe_queued() -> bool:
            rows = database_rows(
                db,
                "SELECT t.kind FROM timers t JOIN conversations c ON c.id = t.conversation_id"
                " WHERE c.chat_id = ? AND c.state = 'queued'",
                str(zoe.id),
            )
            return "abandon" in {r["kind"] for r in rows}

        await eventually(zoe_queued, within=15)
        load.start()
        first_kill_at = 0
        for kill in range(KILLS):
            if kill:
                await asyncio.sleep(rng.uniform(0.2, 1.5))  # a random moment under load
            await bot.kill()
            first_kill_at = first_kill_at or to_ms(SystemClock().now())
            await bot.start()
        await asyncio.sleep(1.0)  # one more second of load on the last process
        await load.stop()

        def caught_up() -> bool:
            pending = database_rows(
                db, "SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL"
            )[0]["n"]
            return tg.pending_updates() == 0 and pending == 0

        await eventually(caught_up, within=60)
        await eventually(
            lambda: (
                database_rows(db, "SELECT state FROM conversations WHERE chat_id = ?", str(zoe.id))[
                    0
                ]["state"]
                == "closed"
            ),
            within=15,
        )
        assert await bot.stop() == 0
    finally:
        await bot.close()

    # Every message stored exactly once: one inbound key per update, one row per text.
    assert len(load.sent) > 100
    stored = Counter(
        r["text"] for r in database_rows(db, "SELECT text FROM messages WHERE direction = 'in'")
    )
    assert {t for t in stored if t in load.sent} == set(load.sent)
    assert [t for t, n in stored.items() if n > 1] == []
    keys = {r["dedup_key"] for r in database_rows(db, "SELECT dedup_key FROM inbound")}
    assert all(f"telegram:update:{u}" in keys for _, u in load.sent.values())

    # Every message answered: each inbound message is followed by a delivered reply.
    for customer in customers:
        rows = database_rows(
            db,
            "SELECT m.direction, m.delivered_at FROM messages m"
            " JOIN conversations c ON c.id = m.conversation_id WHERE c.chat_id = ?"
            " ORDER BY m.id",
            str(customer.id),
        )
        for this, after in zip(rows, rows[1:], strict=False):
            if this["direction"] == "in":
                assert after["direction"] == "out"
                assert after["delivered_at"] is not None
        assert rows[-1]["direction"] == "out"
        mine = [t for t, (who, _) in load.sent.items() if who is customer]
        assert len(answers(tg, customer.id)) >= len(mine)

    # Duplicates only from a kill between a send and its record. Lanes (one per chat)
    # deliver in parallel, so a kill can catch one send in flight per chat: at most one
    # duplicate per kill in each chat.
    recorded = Counter(
        r["chat"]
        for r in database_rows(
            db, "SELECT json_extract(payload, '$.to.chat_id') AS chat FROM outbox WHERE op = 'send'"
        )
    )
    delivered = Counter(
        str(c.params["chat_id"])
        for c in tg.calls_to("sendMessage", ok=True)
        if c.params["chat_id"] in {u.id for u in [*customers, zoe]}
    )
    assert set(delivered) == set(recorded)
    per_chat = {chat: delivered[chat] - recorded[chat] for chat in recorded}
    assert all(0 <= extra <= KILLS for extra in per_chat.values()), per_chat
    duplicates = sum(per_chat.values())
    failed = database_rows(db, "SELECT COUNT(*) AS n FROM outbox WHERE failed_at IS NOT NULL")
    assert failed[0]["n"] == 0

    # The database is intact, and Zoé's timer, set before the first kill, fired after it.
    assert database_rows(db, "PRAGMA integrity_check")[0][0] == "ok"
    conv = database_rows(
        db, "SELECT abandon_reason, abandoned_at FROM conversations WHERE chat_id = ?", str(zoe.id)
    )[0]
    assert conv["abandon_reason"] == "timeout"
    assert conv["abandoned_at"] > first_kill_at
    assert bot.starts == KILLS + 1
    print(
        f"\nkill -9: {KILLS} kills, {len(load.sent)} messages, 0 lost, "
        f"{duplicates} duplicate replies (≤{KILLS} per chat)"
    )
