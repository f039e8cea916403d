"""The supportbot command line: names, exit codes, and the JSON scripts rely on."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli import main
from storage.database import Database
from tests.fakes.clock import FakeClock
from tests.fakes.telegram_server import running_server
from tests.kpi_seed import seed_week

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


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``main`` installs the product's log handler on the root logger: undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


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


COLLIDING_KB = """\
entries:
  - id: refund-delay
    topic: refunds
    questions:
      fr: ["Quand serai-je remboursé ?"]
      en: ["When will I get my refund?"]
    answer:
      fr: "Le remboursement arrive sous 5 jours ouvrés."
      en: "Refunds arrive within 5 business days."
  - id: parcel-tracking
    topic: delivery
    questions:
      fr: ["Où est mon colis ?", "Comment suivre ma livraison ?"]
      en: ["Where is my parcel?", "When will I get my refund back?"]
    answer:
      fr: "Suivez votre colis avec le lien reçu par e-mail."
      en: "Track your parcel with the link in your e-mail."
  - id: password
    topic: account
    questions:
      fr: ["J'ai oublié mon mot de passe"]
      en: ["I forgot my password"]
    answer:
      fr: "Cliquez sur « Mot de passe oublié »."
      en: "Click « Forgot password »."
"""


def test_check_hints_at_entries_asked_alike(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "knowledge.yaml").write_text(COLLIDING_KB, encoding="utf-8")
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "knowledge hint:" in out
    assert "parcel-tracking: 'When will I get my refund back?' → refund-delay" in out


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


def test_run_gives_the_database_thread_the_gil_back_quickly(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``supportbot run`` shortens the GIL's switch interval (5 ms by default) so that
    the database thread is not kept waiting by a busy event loop after each statement."""
    from bot.app import SupportApp
    from bot.cli import SWITCH_INTERVAL_S

    seen: list[float] = []

    async def serve_forever(self: SupportApp) -> None:
        seen.append(sys.getswitchinterval())

    monkeypatch.setattr(SupportApp, "serve_forever", serve_forever)
    before = sys.getswitchinterval()
    try:
        assert main(["run", "--config", str(project / "config.yaml")]) == 0
    finally:
        sys.setswitchinterval(before)
    assert seen == [SWITCH_INTERVAL_S]
    assert SWITCH_INTERVAL_S < 0.005


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


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


PROMPTLY_S = 60.0  # a generous bound: a hanging process is killed and the test fails


async def supportbot(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Done:
    """The installed console script as a user runs it, killed after ``PROMPTLY_S``.

    asyncio's child watcher, not ``subprocess.run(timeout=…)``: that polls with time.sleep,
    which libfaketime breaks (EINVAL) under ``make test-dates``.
    """
    exe = Path(sys.executable).parent / "supportbot"
    base = {k: v for k, v in os.environ.items() if k not in TOKENS}
    proc = await asyncio.create_subprocess_exec(
        str(exe), *args, cwd=cwd, env={**base, **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROMPTLY_S)
    finally:
        if proc.returncode is None:  # timed out: the test fails, the process goes
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode())


async def test_console_script_is_installed(project: Path) -> None:
    config = str(project / "config.yaml")
    done = await supportbot(project, "--config", config, "kb", "ask", "--json", "facture")
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


def test_help_names_the_web_channel(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "for Telegram and Slack." not in text
    assert "chat widget" in text
    assert "agent console" in text


@pytest.mark.parametrize(
    ("schedule", "why"),
    [("0 25 * * mon", "higher than the maximum value (23)"), ("0 9 * * lundi", "lundi")],
)
def test_check_refuses_an_invalid_cron_naming_the_key(
    project: Path, capsys: pytest.CaptureFixture[str], schedule: str, why: str
) -> None:
    config = project / "cron.yaml"
    config.write_text(f'digest:\n  schedule: "{schedule}"\n', encoding="utf-8")
    assert main(["check", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "digest.schedule" in err
    assert why in err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("schedule", ["0 25 * * mon", "0 9 * * lundi"])
async def test_run_with_an_invalid_cron_exits_2_at_once(project: Path, schedule: str) -> None:
    config = project / "cron.yaml"
    config.write_text(
        f'web:\n  port: {_free_port()}\ndigest:\n  schedule: "{schedule}"\n  targets: '
        '["slack:C1"]\n',
        encoding="utf-8",
    )
    done = await supportbot(project, "run", "--config", str(config))
    assert done.returncode == 2, done.stderr
    assert "digest.schedule" in done.stderr


async def test_run_with_a_busy_port_exits_2_at_once_naming_the_key(project: Path) -> None:
    """A start-up error after the database is open used to print and then hang."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = project / "busy.yaml"
        config.write_text(f"web:\n  enabled: true\n  port: {port}\n", encoding="utf-8")
        done = await supportbot(project, "run", "--config", str(config))
    assert done.returncode == 2, done.stderr
    assert "web.port" in done.stderr
    assert "cannot listen" in done.stderr


async def test_run_refused_by_telegram_exits_2_and_frees_the_web_port(project: Path) -> None:
    """The web server listens before Telegram refuses the token: the port is released and
    the process ends (it used to stay up with the port open)."""
    port = _free_port()
    async with running_server() as tg:
        config = project / "refused.yaml"
        config.write_text(
            f"web:\n  port: {port}\ntelegram:\n  enabled: true\n  api_url: {tg.url}\n",
            encoding="utf-8",
        )
        token = {"TELEGRAM_BOT_TOKEN": "42:not-the-servers-token"}
        done = await supportbot(project, "run", "--config", str(config), env=token)
        assert tg.calls_to("getMe")  # it did get that far
    assert done.returncode == 2, done.stderr
    assert "TELEGRAM_BOT_TOKEN" in done.stderr
    assert "web channel on" in done.stderr  # the port had been opened…
    with socket.socket() as again:  # …and is free again
        again.bind(("127.0.0.1", port))


async def test_kpi_default_is_the_dashboards_seven_days_today_included(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without dates: the last 7 days up to now, by the app's clock, the period on top;
    groups without a key are named in the configured language."""
    db = await Database.open(project / "supportbot.db")
    try:
        await seed_week(db)  # 16–22 Nov 2026, and a conversation on 23 Nov 00:00
    finally:
        await db.close()
    sunday = FakeClock(datetime(2026, 11, 22, 20, 0, tzinfo=UTC))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["kpi", "--format", "json"], sunday) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["period"]["start"] == "2026-11-16T00:00:00+01:00"
    assert report["period"]["end"] == "2026-11-23T00:00:00+01:00"
    assert report["conversations"]["started"] == 13  # the week's, the Sunday 23:59 one too

    assert await asyncio.to_thread(main, ["kpi", "--by", "agent"], sunday) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[:2] == [
        "KPI du support — du 16 nov. 2026 au 22 nov. 2026 (Europe/Paris)",
        "Aujourd'hui inclus, jusqu'à maintenant.",
    ]
    assert "(aucun)" in table  # conversations no agent took
    assert "(none)" not in table

    monday = FakeClock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    assert await asyncio.to_thread(main, ["kpi"], monday) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        "KPI du support — du 17 nov. 2026 au 23 nov. 2026 (Europe/Paris)",
        "Aujourd'hui inclus, jusqu'à maintenant.",
    ]
    assert await asyncio.to_thread(main, ["kpi", "--to", "2026-11-23"], monday) == 0
    assert "Aujourd'hui" not in capsys.readouterr().out  # a period that ended


async def test_kpi_by_agent_table_shows_presence(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--by agent: a presence mark after each agent's name, as they last said; none for
    the conversations no agent took; a legend under the table."""
    db = await Database.open(project / "supportbot.db")
    try:
        await seed_week(db)
        await db.executemany(
            "INSERT INTO agent_presence (agent_key, name, available, changed_at)"
            " VALUES (?, ?, 0, 0)",
            [("slack:UA", "Alice")],
        )
    finally:
        await db.close()
    sunday = FakeClock(datetime(2026, 11, 22, 20, 0, tzinfo=UTC))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["kpi", "--by", "agent"], sunday) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "● disponible · ○ absent (présence actuelle)" in lines
    assert any(line.lstrip().startswith("Alice ○") for line in lines)
    assert "(aucun)" in "".join(lines)
    assert sum("○" in line for line in lines) == 2  # Alice's line and the legend
