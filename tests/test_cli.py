"""The supportbot command line: names, exit codes, and the JSON scripts rely on."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
TOKENS = (
    "TELEGRAM_BOT_TOKEN",
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "WEB_AGENT_KEYS",
    "WEB_SECRET",
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped config, knowledge base and saved replies in a scratch folder,
    no tokens."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copy(ROOT / "knowledge.yaml", tmp_path / "knowledge.yaml")
    shutil.copy(ROOT / "replies.yaml", tmp_path / "replies.yaml")
    for name in TOKENS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_check_reports_what_is_enabled(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "config: ok" in out
    assert "knowledge base:" in out
    assert "entries" in out
    assert "telegram: off" in out
    assert "slack: off" in out
    assert "web: enabled on http://127.0.0.1:8080" in out  # runs with no token at all
    assert "TELEGRAM_BOT_TOKEN" in out


def test_bad_config_names_key_and_exits_2(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = project / "bad.yaml"
    bad.write_text("survey:\n  cooldown: sometimes\n", encoding="utf-8")
    assert main(["check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "survey.cooldown" in err
    assert "not a duration" in err


def test_run_with_web_off_and_no_token_says_what_to_set(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project / "off.yaml"
    config.write_text("web:\n  enabled: false\n", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "TELEGRAM_BOT_TOKEN" in err
    assert "SLACK_BOT_TOKEN" in err


def test_run_with_enabled_channel_but_no_token_names_the_key(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = project / "on.yaml"
    config.write_text("telegram:\n  enabled: true\n", encoding="utf-8")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "telegram.enabled" in err
    assert "TELEGRAM_BOT_TOKEN" in err


def test_kb_ask_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kb", "ask", "--json", "Quel est le délai de livraison ?"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) >= {"id", "topic", "score", "answered", "language", "candidates"}
    assert record["language"] == "fr"
    assert record["candidates"][0]["id"] == record["id"]
    assert record["answered"] is True
    assert isinstance(record["score"], float)


def test_kb_ask_reads_questions_from_stdin(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    questions = "Comment suivre ma commande ?\nblorp zonk flibber\nHow do I reset my password?\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(questions))
    assert main(["kb", "ask", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3
    assert lines[0]["answered"]
    assert lines[2]["answered"]
    assert lines[1]["answered"] is False


def test_kb_ask_human_output(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kb", "ask", "Où est ma facture ?"]) == 0
    assert "score" in capsys.readouterr().out


def test_console_script_is_installed(project: Path) -> None:
    exe = Path(sys.executable).parent / "supportbot"
    env = {k: v for k, v in os.environ.items() if k not in TOKENS}
    done = subprocess.run(
        [str(exe), "--config", str(project / "config.yaml"), "kb", "ask", "--json", "facture"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"]


# ---------------------------------------------------------------- privacy (issue 18)

SECRET_MARK = "Okapi-51D9"


def _seed_customer(path: Path) -> None:
    """One customer with a conversation and a message, written through the schema."""
    import asyncio

    from storage.database import Database

    async def seed() -> None:
        db = await Database.open(path)
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO customers (id, key, channel, user_id, name, language, "
                "first_seen_at) VALUES (1, 'telegram:4242', 'telegram', '4242', ?, 'fr', 1000)",
                (f"Jeanne {SECRET_MARK}",),
            )
            await conn.execute(
                "INSERT INTO conversations (id, customer_id, channel, address_key, chat_id, "
                "language, state, started_at, updated_at) VALUES "
                "(1, 1, 'telegram', 'telegram:4242', '4242', 'fr', 'closed', 1000, 1000)"
            )
            await conn.execute(
                "INSERT INTO messages (conversation_id, direction, author, text, created_at) "
                "VALUES (1, 'in', 'customer', ?, 1000)",
                (f"Mon colis {SECRET_MARK}",),
            )
        await db.close()

    asyncio.run(seed())


def test_customer_export_then_erase_with_json_logs(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = project / "supportbot.db"
    _seed_customer(database)
    assert main(["customer", "export", "telegram:4242"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["customer"]["name"] == f"Jeanne {SECRET_MARK}"
    assert doc["conversations"][0]["messages"][0]["text"] == f"Mon colis {SECRET_MARK}"

    assert main(["--log-format", "json", "customer", "erase", "telegram:4242"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("erased telegram:4242: 1 conversation(s), 1 message text(s)")
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    erased = [r for r in lines if r["logger"] == "bot.privacy"]
    assert erased
    assert set(erased[0]) >= {"time", "level", "logger", "message"}
    assert "erased by cli:" in erased[0]["message"]
    wal = Path(f"{database}-wal")
    raw = database.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert SECRET_MARK.encode() not in raw

    assert main(["customer", "export", "telegram:4242"]) == 1
    assert "no customer 'telegram:4242'" in capsys.readouterr().err
    assert main(["customer", "erase", "telegram:4242"]) == 1


def test_json_log_lines_name_the_conversation_and_redact_secrets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from bot.logs import conversation_id, setup_logging

    setup_logging(["xoxb-secret-token-1"], "INFO", "json")
    log = logging.getLogger("test.json")
    token = conversation_id.set(17)
    try:
        log.info("sent with %s", "xoxb-secret-token-1")
    finally:
        conversation_id.reset(token)
    log.warning("no conversation here")
    log.info("explicit", extra={"conversation_id": 5})
    setup_logging([], "INFO")  # back to text for the other tests
    first, second, third = (json.loads(x) for x in capsys.readouterr().err.splitlines())
    assert first["conversation_id"] == 17
    assert first["message"] == "sent with ***"
    assert (first["level"], first["logger"]) == ("INFO", "test.json")
    assert first["time"].endswith("+00:00")
    assert "conversation_id" not in second
    assert third["conversation_id"] == 5


def test_default_log_format_stays_text(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from bot.logs import setup_logging

    setup_logging([], "INFO")
    logging.getLogger("test.text").warning("plain %s", "words")
    line = capsys.readouterr().err.strip()
    assert line.endswith("WARNING test.text: plain words")


def test_kb_eval_one_shipped_set_with_sweep(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped sets are found from the package, whatever the working directory."""
    assert main(["kb", "eval", "--set", "shop/holdout", "--sweep"]) == 0
    out = capsys.readouterr().out
    assert "shop/holdout (threshold 0.50)" in out
    assert "in scope, answered right" in out
    assert "suggested threshold:" in out
    assert "Misses" in out


def test_kb_eval_a_users_own_set(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = project / "mine.yaml"
    dataset.write_text(
        "cases:\n"
        '  - {lang: fr, expected: delivery-time, text: "ça met combien de temps à arriver ?"}\n'
        '  - {lang: en, expected: null, text: "what is the capital of Peru"}\n',
        encoding="utf-8",
    )
    assert main(["kb", "eval", "--dataset", str(dataset), "--knowledge", "knowledge.yaml"]) == 0
    out = capsys.readouterr().out
    assert str(dataset) in out
    assert "(1/1)" in out  # one in scope, one out of scope: each counted


def test_kb_eval_unknown_set_is_a_usage_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kb", "eval", "--set", "nope"]) == 2
    assert "shop/eval" in capsys.readouterr().err
