"""``supportbot backup PATH``: a consistent copy taken while another process writes and
holds the instance lock, restored the README's way, gives the same KPIs."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from bot.cli import main
from bot.instance import InstanceLock
from storage.database import Database
from tests.kpi_seed import seed_week

KPI = ["kpi", "--from", "2026-11-16", "--to", "2026-11-23", "--format", "json"]
FUTURE = 1_900_000_000_000  # 2030: the writer's rows stay out of the reported week


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "config.yaml").write_text("storage: {path: support.db}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)

    async def seed() -> None:
        db = await Database.open(tmp_path / "support.db")
        await seed_week(db)
        await db.close()

    asyncio.run(seed())
    return tmp_path


class Writer(threading.Thread):
    """Another process's connection writing all along: one conversation and its event per
    transaction, so a consistent copy always holds as many of one as of the other."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.count = 0
        self.started_writing = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, isolation_level=None, timeout=10)
        customer = conn.execute(
            "INSERT INTO customers (key, channel, user_id, language, first_seen_at) "
            "VALUES ('load:1', 'web', 'load', 'fr', ?) RETURNING id",
            (FUTURE,),
        ).fetchone()[0]
        while not self.stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            at = FUTURE + self.count
            conv = conn.execute(
                "INSERT INTO conversations (customer_id, channel, address_key, chat_id, "
                "language, state, started_at, updated_at) VALUES (?, 'web', ?, 'load', 'fr', "
                "'closed', ?, ?) RETURNING id",
                (customer, f"load:{self.count}", at, at),
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO events (conversation_id, at, kind) VALUES (?, ?, 'load')", (conv, at)
            )
            conn.execute("COMMIT")
            self.count += 1
            if self.count == 50:
                self.started_writing.set()
        conn.close()


def kpi_json(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(KPI) == 0
    return capsys.readouterr().out


def test_backup_under_writes_restores_to_the_same_kpis(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = project / "support.db"
    expected = kpi_json(capsys)
    writer = Writer(database)
    with InstanceLock(database):  # as `supportbot run` holds it
        writer.start()
        assert writer.started_writing.wait(timeout=10)
        before = writer.count
        assert main(["backup", "backups/copy.db"]) == 0
        during = writer.count
        writer.stop.set()
        writer.join(timeout=10)
    out = capsys.readouterr().out
    copy = project / "backups" / "copy.db"
    assert out.startswith("backup: backups/copy.db (")
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert during > before  # the writer kept writing while the copy was taken
    assert not list((project / "backups").glob(".*partial*"))

    snapshot = sqlite3.connect(copy)
    assert snapshot.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conversations = snapshot.execute(
        "SELECT count(*) FROM conversations WHERE started_at >= ?", (FUTURE,)
    ).fetchone()[0]
    events = snapshot.execute("SELECT count(*) FROM events WHERE kind = 'load'").fetchone()[0]
    snapshot.close()
    assert conversations == events  # one instant: never half a transaction
    assert before <= conversations <= writer.count

    # Restore as the README says: bot stopped, copy over the database, drop -wal/-shm.
    shutil.copy(copy, database)
    for side in ("-wal", "-shm"):
        Path(f"{database}{side}").unlink(missing_ok=True)
    assert kpi_json(capsys) == expected
    restored = sqlite3.connect(database)
    assert restored.execute("SELECT count(*) FROM events WHERE kind = 'load'").fetchone()[0] == (
        events
    )
    restored.close()


def test_backup_into_a_directory_names_a_dated_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "nightly").mkdir()
    assert main(["backup", "nightly"]) == 0
    (made,) = (project / "nightly").iterdir()
    assert made.name.startswith("support-")
    assert made.suffix == ".db"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    capsys.readouterr()


def test_backup_refuses_to_overwrite_the_database(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = os.path.getsize(project / "support.db")
    assert main(["backup", "support.db"]) == 1
    assert "cannot overwrite the database" in capsys.readouterr().err
    assert os.path.getsize(project / "support.db") == size
