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
    """A copy of the shipped config and knowledge base in a scratch folder, no tokens."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copy(ROOT / "knowledge.yaml", tmp_path / "knowledge.yaml")
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
