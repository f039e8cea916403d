"""Two ``supportbot run`` on one database: the second refuses to start, and the lock dies
with its owner (even on kill -9). Read-only commands keep working next to the bot."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import AlreadyRunningError
from bot.instance import InstanceLock, lock_path
from tests.fakes.telegram_server import TelegramServer
from tests.reliability.bot_process import BotProcess, write_config

pytestmark = pytest.mark.slow


def bot(tmp_path: Path, tg: TelegramServer, log: str) -> BotProcess:
    config = write_config(
        tmp_path, {"telegram": {"api_url": tg.url, "poll_timeout": 1}, "desk": "telegram"}
    )
    return BotProcess(config, {"TELEGRAM_BOT_TOKEN": tg.token}, tmp_path / log)


def test_a_second_lock_on_the_same_database_fails_naming_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    with InstanceLock(db):
        with pytest.raises(AlreadyRunningError, match=r"already running .*\(pid \d+\)"):
            InstanceLock(db).acquire()
        InstanceLock(tmp_path / "other.db").acquire()  # another database: free
    with InstanceLock(db):  # released on exit
        assert lock_path(db).exists()


async def test_second_instance_refuses_until_the_first_is_killed(
    tmp_path: Path, tg: TelegramServer
) -> None:
    first, second = bot(tmp_path, tg, "first.log"), bot(tmp_path, tg, "second.log")
    try:
        await first.start()
        assert first.proc is not None
        refused = await second.spawn("run")
        assert await refused.wait() == 3
        message = second.output()
        assert "another supportbot is already running on this database" in message
        assert f"pid {first.proc.pid}" in message
        assert "supportbot started" not in message

        # Read-only commands work alongside the running bot.
        chart = str(tmp_path / "digest.png")
        for command in (
            ("check",),
            ("kpi", "--format", "json"),
            ("digest", "--dry-run", "--out", chart),
        ):
            proc = await second.spawn(*command)
            assert await proc.wait() == 0, second.output()

        # kill -9 runs no cleanup, yet the kernel released the lock: a restart is accepted.
        await first.kill()
        await second.start()
        assert await second.stop() == 0
    finally:
        await first.close()
        await second.close()
