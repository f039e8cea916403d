"""Another process holds the database's write lock for longer than ``busy_timeout``
while customers write: the bot waits, then catches up without losing or doubling a
message (before the fix, each update that hit "database is locked" was dropped)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.fakes.telegram_server import running_server
from tests.reliability.bot_process import database_rows
from tests.reliability.inprocess import QUESTION, answers, telegram_app
from tests.waiting import eventually

pytestmark = pytest.mark.slow

LONGEST_HOLD_S = 30.0  # a safety net: the test releases the lock once the bot waited


class WriteLockHolder(threading.Thread):
    """A separate connection that takes the write lock and keeps it until ``release``."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.holding = threading.Event()
        self.release = threading.Event()
        self.released = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.holding.set()
            self.release.wait(LONGEST_HOLD_S)
            conn.execute("COMMIT")
        finally:
            conn.close()
            self.released.set()


async def test_bot_waits_out_a_write_lock_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    db = tmp_path / "supportbot.db"
    async with running_server() as tg:
        customers = [tg.add_user(f"Client{i}") for i in range(5)]
        async with telegram_app(
            tg,
            db,
            storage={"busy_timeout": "500ms"},
            conversation={"sweep_every": "100ms"},
        ) as app:
            holder = WriteLockHolder(db)
            holder.start()
            assert await asyncio.to_thread(holder.holding.wait, 5)
            sent = []
            for round_ in range(3):
                for i, customer in enumerate(customers):
                    text = f"{QUESTION} {round_}-{i}"
                    await tg.customer_sends(customer, text)
                    sent.append(text)
            await eventually(lambda: "waiting until the lock is released" in caplog.text)
            await eventually(lambda: "timer sweep postponed" in caplog.text)
            assert database_rows(db, "SELECT COUNT(*) AS n FROM inbound")[0]["n"] == 0
            holder.release.set()  # the other process's long write ends
            assert await asyncio.to_thread(holder.released.wait, 5)

            await eventually(lambda: len(answers(tg)) == len(sent), within=20)
            await eventually(lambda: tg.pending_updates() == 0)
            assert app.components is not None
            async with asyncio.timeout(5):
                await app.components.dispatcher.drain()
            sweeper = next(t for t in app._tasks if t.get_name() == "sweeper")
            assert not sweeper.done()  # the timer sweeper survived the lock

    stored = [
        r["text"] for r in database_rows(db, "SELECT text FROM messages WHERE direction = 'in'")
    ]
    assert sorted(stored) == sorted(sent)  # each exactly once
    assert len(answers(tg)) == len(sent)  # each answered exactly once
    assert "update None failed" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert database_rows(db, "PRAGMA integrity_check")[0][0] == "ok"
