"""Files the bot writes are its owner's only, the signing secret is not in the database,
and DEBUG logs show neither secrets nor what customers wrote (issue 13, items 2 and 3)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bot.app import SupportApp
from bot.config import Secrets
from bot.instance import InstanceLock
from bot.logs import QUIET_LOGGERS, RedactSecrets, redact, setup_logging
from handlers.web import WebTransport
from handlers.web.auth import Signer, secret_file, secret_file_for
from storage.database import Database
from tests.fakes.clock import FakeClock
from tests.reliability.bot_process import BotProcess, database_rows, write_config
from tests.test_app import settings_for

ALICE = "alice-key-Zq81-0123456789"
BOB = "bob-key-Wp52-0123456789"
MARKER = "ma commande 7f3a-unique-marker est en retard"
TOKENS = ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """Files created as most systems do by default (0644), to see the bot tighten them."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_a_running_bot_keeps_its_files_private_and_its_debug_log_clean(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path,
        {"web": {"enabled": True, "port": 0}, "desk": "web", "telegram": {"enabled": False}},
    )
    env = {name: "" for name in (*TOKENS, "WEB_SECRET")}
    env |= {"WEB_AGENT_KEYS": f"alice:{ALICE},bob:{BOB}", "SUPPORTBOT_LOG_LEVEL": "DEBUG"}
    bot = BotProcess(config, env, tmp_path / "bot.log")
    database = tmp_path / "supportbot.db"
    try:
        await bot.start()
        port = re.search(r"web channel on http://127\.0\.0\.1:(\d+)", bot.output())
        assert port is not None, bot.output()
        base = f"http://127.0.0.1:{port.group(1)}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/api/web/session") as resp:
                token = (await resp.json())["token"]
            async with http.ws_connect(f"{base}/ws/widget?token={token}") as ws:
                await ws.send_json({"type": "message", "id": "m1", "text": MARKER})
                authors = [(await ws.receive_json(timeout=10))["author"] for _ in range(2)]
                assert authors == ["customer", "bot"]
            for key, status in ((ALICE, 200), ("wrong-key-0123456789abc", 401)):
                headers = {"Authorization": f"Bearer {key}"}
                async with http.get(f"{base}/api/agent/conversations", headers=headers) as resp:
                    assert resp.status == status
            async with http.post(f"{base}/agent/login", json={"key": BOB}) as resp:
                assert resp.status == 200
        secret_path = secret_file_for(database)
        files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
        files += [Path(f"{database}.lock"), secret_path]
        assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        secret = secret_path.read_text(encoding="utf-8").strip()
        assert len(secret) >= 32
        assert database_rows(database, "SELECT key FROM web_settings") == []
        assert await bot.stop() == 0
    finally:
        await bot.close()
    log = bot.all_output()
    assert " DEBUG " in log  # DEBUG was on
    assert "agent key refused" in log
    for leak in (MARKER, ALICE, BOB, secret, token.rsplit(".", 1)[1]):
        assert leak not in log


async def test_the_old_secret_row_moves_to_its_own_file(tmp_path: Path, loose_umask: None) -> None:
    """A database from an older version: its secret leaves it, and tokens stay valid."""
    database = tmp_path / "app.db"
    legacy = "legacy-secret-5d1c-0123456789abcdef0123456789"
    db = await Database.open(database)
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO web_settings(key, value) VALUES ('token_secret', ?)", (legacy,)
        )
    await db.close()
    _visitor, token = Signer(legacy).new_visitor()

    settings = settings_for(tmp_path, web={"port": 0}, desk="web")
    app = SupportApp(settings, Secrets(web_agent_keys=f"alice:{ALICE}"), clock=FakeClock())
    try:
        await app.start()
        web = next(t for t in app.transports if isinstance(t, WebTransport))
        path = secret_file_for(database)
        assert path.read_text(encoding="utf-8").strip() == legacy
        assert mode(path) == 0o600
        assert await app._db.fetchall("SELECT * FROM web_settings") == []
        async with aiohttp.ClientSession() as http:  # an old visitor's token still works
            url = f"http://127.0.0.1:{web.port}/ws/widget?token={token}"
            async with http.ws_connect(url) as ws:
                await ws.send_json({"type": "message", "id": "m1", "text": "bonjour"})
                assert (await ws.receive_json(timeout=5))["text"] == "bonjour"
    finally:
        await app.stop()
    stored = await asyncio.to_thread(database.read_bytes)
    assert legacy.encode() not in stored  # not even in a free page
    assert not await asyncio.to_thread(Path(f"{database}-wal").exists)


async def test_database_and_lock_files_are_private_even_under_a_loose_umask(
    tmp_path: Path, loose_umask: None
) -> None:
    old = tmp_path / "old.db"
    old.write_bytes(b"")
    old.chmod(0o644)  # as an older version left it
    for path in (tmp_path / "new.db", old):
        db = await Database.open(path)
        try:
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO web_settings(key, value) VALUES ('k', 'v')")
            files = (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
            assert {f.name: oct(mode(f)) for f in files} == {f.name: "0o600" for f in files}
        finally:
            await db.close()
    with InstanceLock(tmp_path / "new.db") as lock:
        assert mode(lock.path) == 0o600
    secret = secret_file(tmp_path / "x.web-secret", lambda: "s" * 40)
    assert mode(tmp_path / "x.web-secret") == 0o600
    assert secret == "s" * 40


def test_each_agent_key_is_redacted_on_its_own() -> None:
    secrets = Secrets(web_agent_keys=f"alice:{ALICE}, bob:{BOB}")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactSecrets(secrets.values()))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("someone tried %s", BOB)
        logger.warning("and %s", ALICE)
        generated = "generated-secret-9a8b7c6d5e"
        redact(generated)
        logger.warning("the generated one: %s", generated)
        try:
            raise ValueError(f"bad value {BOB}")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = out.getvalue()
    assert "someone tried ***" in text
    assert "the generated one: ***" in text
    assert "bad value ***" in text
    for leak in (ALICE, BOB, generated):
        assert leak not in text


@pytest.fixture
def logging_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)


async def test_sql_parameters_stay_out_of_a_debug_log(
    tmp_path: Path, logging_restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging([], "DEBUG")
    db = await Database.open(tmp_path / "app.db")
    try:
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO web_settings(key, value) VALUES ('k', ?)", (MARKER,))
    finally:
        await db.close()
    logging.getLogger("bot.test").debug("debug is on")
    err = capsys.readouterr().err
    assert "debug is on" in err
    assert MARKER not in err


def test_processes_starting_together_share_the_first_secret_written(tmp_path: Path) -> None:
    """Two `supportbot run` on one PostgreSQL database and one folder: the other process
    writes the secret between this one's look and its write. Before, this one died with
    FileExistsError."""
    path = tmp_path / "support.web-secret"

    def other_process_first() -> str:
        path.write_text("theirs" * 8 + "\n", encoding="utf-8")
        path.chmod(0o600)
        return "mine" * 10

    assert secret_file(path, other_process_first) == "theirs" * 8
    assert path.read_text(encoding="utf-8") == "theirs" * 8 + "\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no draft left behind
    assert secret_file(path, lambda: "never") == "theirs" * 8
