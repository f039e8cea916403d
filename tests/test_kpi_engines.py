"""The same figures on both engines, and the PostgreSQL engine's configuration and
commands: `supportbot kpi --format json` identical on SQLite and PostgreSQL for the same
rows, the KPI property test's data on both, `check` telling a database that needs
migrating, `backup` pointing to pg_dump, the one-process guard, the URL's password never
logged. A real PostgreSQL (tests/pg_cluster.py), nothing mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psycopg
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bot.cli import main
from bot.config import Secrets, settings_from_mapping
from bot.config_storage import StorageSettings
from bot.errors import ConfigError, SchemaError
from bot.insights.report import render
from bot.logs import RedactSecrets
from storage.database import Database, migrations
from storage.kpi_queries import KpiQueries
from tests.fakes.clock import FakeClock
from tests.kpi_seed import seed_week
from tests.pg_cluster import PgCluster
from tests.test_cli import restore_logging  # noqa: F401  (autouse fixture: main() installs a root handler)
from tests.test_kpi_queries import (
    BREAKDOWN,
    CACHED,
    LIVE,
    Data,
    Period,
    calendar,
    datasets,
    insert,
    periods,
)

ROOT = Path(__file__).resolve().parent.parent
SUNDAY = datetime(2026, 11, 22, 20, 0, tzinfo=UTC)


def fresh_database(cluster: PgCluster, template: str, name: str) -> str:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    return cluster.url(name)


async def report_json(target: str, data: Data, period: Period, by: str | None, days: int) -> str:
    db = await Database.open(target)
    try:
        await insert(db, data)
        report = await KpiQueries(db, cache_days=days).report(period, calendar=calendar(), by=by)
    finally:
        await db.close()
    return render(report, "json", "fr")


@settings(
    max_examples=12,
    deadline=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate),  # no shrinking: bounded time
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=datasets(), period=periods(), by=BREAKDOWN, cached=st.booleans())
def test_kpi_report_is_identical_on_both_engines(
    pg_cluster: PgCluster,
    pg_template: str,
    tmp_path_factory: pytest.TempPathFactory,
    data: Data,
    period: Period,
    by: str | None,
    cached: bool,
) -> None:
    """The KPI property test's random data on each engine: the same `kpi --format json`
    text (tests/test_kpi_queries.py checks it against the reference)."""
    days = CACHED if cached else LIVE
    sqlite_file = str(tmp_path_factory.mktemp("kpi") / "kpi.db")
    on_sqlite = asyncio.run(report_json(sqlite_file, data, period, by, days))
    url = fresh_database(pg_cluster, pg_template, "kpi_property")
    on_postgresql = asyncio.run(report_json(url, data, period, by, days))
    assert on_postgresql == on_sqlite


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("config.yaml", "knowledge.yaml", "replies.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "WEB_AGENT_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SUPPORTBOT_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def use_storage(project: Path, **storage: str) -> Path:
    """A config file of the project whose storage section is ``storage``."""
    config = yaml.safe_load((project / "config.yaml").read_text(encoding="utf-8"))
    config["storage"] = storage
    config.setdefault("knowledge", {})["encoder"] = "none"  # check: no model to load
    path = project / f"config-{len(list(project.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def kpi_json(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    argv = ["kpi", "--format", "json", "--config", str(config), *extra]
    assert main(argv, FakeClock(SUNDAY)) == 0
    return capsys.readouterr().out


async def migrate(target: str) -> None:
    db = await Database.open(target)
    await db.close()


async def seeded(target: str) -> None:
    db = await Database.open(target)
    try:
        await seed_week(db)
    finally:
        await db.close()


def test_kpi_command_gives_the_same_json_on_both_engines(
    project: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(seeded(str(project / "supportbot.db")))
    asyncio.run(seeded(pg_url))
    on_sqlite = use_storage(project, path="supportbot.db")
    on_postgresql = use_storage(project, url=pg_url)
    for by in ((), ("--by", "agent"), ("--by", "channel"), ("--by", "topic")):
        sqlite_json = kpi_json(on_sqlite, capsys, *by)
        assert json.loads(sqlite_json)["conversations"]["started"] == 13
        assert kpi_json(on_postgresql, capsys, *by) == sqlite_json, by


def test_check_says_whether_the_database_needs_migrating(
    project: Path, pg_cluster: PgCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    first = (ROOT / "storage" / "migrations" / "0001_initial.sql").read_text(encoding="utf-8")
    with sqlite3.connect(project / "old.db") as conn:
        conn.executescript(first + "\nPRAGMA user_version = 1;")
    known = len(migrations())
    capsys.readouterr()
    assert main(["check", "--config", str(use_storage(project, path="old.db"))]) == 0
    assert f"(SQLite) — schema version 1, NEEDS MIGRATING to {known}" in capsys.readouterr().out
    assert main(["check", "--config", str(use_storage(project, path="new.db"))]) == 0
    assert "not created yet" in capsys.readouterr().out
    assert not (project / "new.db").exists()  # check creates nothing

    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE check_me")
    url = pg_cluster.url("check_me")
    config = use_storage(project, url=url)
    assert main(["check", "--config", str(config)]) == 0
    assert f"(PostgreSQL) — schema version 0, NEEDS MIGRATING to {known}" in (
        capsys.readouterr().out
    )
    asyncio.run(migrate(url))
    assert main(["check", "--config", str(config)]) == 0
    assert f"schema version {known}, up to date" in capsys.readouterr().out


async def test_migrations_do_not_race_and_a_newer_schema_is_refused(
    pg_empty_url: str,
) -> None:
    """Two processes starting together on an empty database: one migrates under the
    advisory lock, the other waits and finds it done; then a newer schema is refused with
    the SQLite engine's own message."""
    both = await asyncio.gather(Database.open(pg_empty_url), Database.open(pg_empty_url))
    for db in both:
        assert await db.schema_version() == len(migrations())
        await db.close()
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("UPDATE supportbot_schema SET version = 99")
    with pytest.raises(SchemaError, match=r"has schema version 99, newer than this supportbot"):
        await Database.open(pg_empty_url)


def test_backup_on_postgresql_says_pg_dump(
    project: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = use_storage(project, url=pg_url)
    assert main(["backup", str(project / "copy.db"), "--config", str(config)]) == 2
    assert "pg_dump" in capsys.readouterr().err
    assert not (project / "copy.db").exists()


def test_storage_url_is_checked_and_its_password_comes_from_the_environment() -> None:
    with pytest.raises(ConfigError, match=r"storage\.url"):
        settings_from_mapping({"storage": {"url": "mysql://db/x"}})
    with pytest.raises(ConfigError, match=r"storage\.url"):
        settings_from_mapping({"storage": {"url": "postgresql://db:port/x"}})
    storage = StorageSettings(url="postgresql://bot@db.example:5432/support")
    assert storage.target({}) == "postgresql://bot@db.example:5432/support"
    env = {"SUPPORTBOT_DATABASE_URL": "s3cr:t/pw"}
    assert storage.target(env) == "postgresql://bot:s3cr%3At%2Fpw@db.example:5432/support"
    whole = {"SUPPORTBOT_DATABASE_URL": "postgresql://u:pw123456@other/db"}
    assert storage.target(whole) == "postgresql://u:pw123456@other/db"
    assert StorageSettings().target(whole) == "postgresql://u:pw123456@other/db"
    with pytest.raises(ConfigError, match="SUPPORTBOT_DATABASE_URL"):
        StorageSettings().target({"SUPPORTBOT_DATABASE_URL": "postgresql://host"})
    assert StorageSettings().target({}) == Path("supportbot.db")


def test_the_database_password_is_never_logged(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A connection failure names the database, never its password (in the message or
    in a log line), whether it came from the environment or the file."""
    monkeypatch.setenv("SUPPORTBOT_DATABASE_URL", "Hunter2-secret")
    config = use_storage(project, url="postgresql://bot@127.0.0.1:1/support")
    assert main(["kpi", "--config", str(config)], FakeClock(SUNDAY)) == 1
    err = capsys.readouterr().err
    assert "cannot open database postgresql://bot:***@127.0.0.1:1/support" in err
    assert "Hunter2" not in err
    record = logging.LogRecord("x", logging.ERROR, "", 0, "url %s", ("Hunter2-secret",), None)
    RedactSecrets(Secrets.from_env().values()).filter(record)
    assert record.getMessage() == "url ***"


def test_db_copy_moves_the_sqlite_database_into_an_empty_postgresql_one(
    project: Path, pg_empty_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same `kpi --format json` before and after; new rows get fresh ids; a second
    copy into the now non-empty database is refused and changes nothing."""
    asyncio.run(seeded(str(project / "supportbot.db")))
    on_sqlite = use_storage(project, path="supportbot.db")
    before = {by: kpi_json(on_sqlite, capsys, *by) for by in ((), ("--by", "agent"))}
    assert main(["db", "copy", "--to", pg_empty_url, "--config", str(on_sqlite)]) == 0
    out = capsys.readouterr().out
    assert "customers: 15 rows" in out
    assert "surveys: 10 rows" in out
    assert "copied 40 rows to postgresql://" in out
    on_postgresql = use_storage(project, url=pg_empty_url)
    for by, figures in before.items():
        assert kpi_json(on_postgresql, capsys, *by) == figures, by

    async def new_conversation() -> tuple[int, int]:
        db = await Database.open(pg_empty_url)
        try:
            rows = await db.fetchall(
                "INSERT INTO customers (key, channel, user_id, language, first_seen_at) "
                "VALUES ('web:new', 'web', 'new', 'fr', 4000000000000) RETURNING id"
            )
            top = await db.fetchone("SELECT max(id) FROM customers WHERE key <> 'web:new'")
            assert top is not None
            return int(rows[0][0]), int(top[0])
        finally:
            await db.close()

    new_id, copied_max = asyncio.run(new_conversation())
    assert new_id == copied_max + 1
    assert main(["db", "copy", "--to", pg_empty_url, "--config", str(on_sqlite)]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert kpi_json(on_postgresql, capsys) == before[()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_two_supportbot_runs_serve_on_one_postgresql(project: Path, pg_url: str) -> None:
    """`supportbot run` with `storage.url`: it migrates and serves (/readyz: the database
    answers), and a second `run` on the same database serves too (issue 19: several
    processes share a PostgreSQL database), each stopping cleanly."""
    exe = Path(sys.executable).parent / "supportbot"
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_URL"))}
    ports = [_free_port(), _free_port()]

    def config(port: int) -> Path:
        path = project / f"config-{port}.yaml"
        data = yaml.safe_load(use_storage(project, url=pg_url).read_text(encoding="utf-8"))
        data["web"] = {**data.get("web", {}), "enabled": True, "port": port}
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        return path

    runs = [
        await asyncio.create_subprocess_exec(
            str(exe),
            "run",
            "--config",
            str(config(port)),
            cwd=project,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for port in ports
    ]
    try:
        async with aiohttp.ClientSession() as http:

            async def ready(port: int) -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        return r.status == 200
                return False

            deadline = asyncio.get_running_loop().time() + 60
            for port, run in zip(ports, runs, strict=True):
                while not await ready(port):
                    if run.returncode is not None:
                        err = await run.stderr.read() if run.stderr else b""
                        raise AssertionError(f"a run stopped: {err.decode()[-3000:]}")
                    assert asyncio.get_running_loop().time() < deadline, "never ready"
                    await asyncio.sleep(0.2)
        assert all(run.returncode is None for run in runs)
    finally:
        for run in runs:
            if run.returncode is None:
                run.terminate()
        codes = [await asyncio.wait_for(run.wait(), 30) for run in runs]
    assert codes == [0, 0]
