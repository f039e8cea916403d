"""``supportbot followups`` and the follow-up KPIs, from outside: JSON as scripts read it,
and the figures against an independent computation over random rows."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.clock import to_ms
from bot.conversation.model import Agent, FollowupAction
from bot.followup_report import followups_command
from bot.insights.kpi import Period
from bot.insights.report import render_csv, render_table
from storage.database import Database
from storage.kpi_queries import KpiQueries
from tests.fakes.clock import FakeClock
from tests.harness import Harness, make_settings
from tests.test_followups import HOURS, paris, served_and_rated


async def two_followups(tmp_path: Path) -> Harness:
    """#1: Marie, NPS 3, served by U_AGENT, resolved with a note; #3: Paul, NPS 5, open."""
    h = Harness(
        make_settings(tmp_path / "cli.db", business_hours=HOURS),
        FakeClock(paris(23, 11).astimezone(UTC)),
    )
    await h.start()
    await served_and_rated(h, "3")
    assert h.engine is not None
    await h.engine.handle(
        FollowupAction(
            Agent("slack", "U_AGENT", "Paul"), 1, "resolved", h.key(), "Geste commercial accepté"
        )
    )
    await served_and_rated(h, "5", user="77")
    await h.stop()
    return h


async def test_followups_json_lists_every_field_and_open_filters(tmp_path: Path) -> None:
    h = await two_followups(tmp_path)
    later = FakeClock(paris(26, 10).astimezone(UTC))  # Thursday: #2 is past due
    out = json.loads(await followups_command(h.settings, open_only=False, fmt="json", clock=later))
    assert [item["id"] for item in out] == [2, 1]
    second, first = out
    assert first == {
        "id": 1,
        "customer": "telegram:42",
        "customer_name": "Marie",
        "conversation_id": 1,
        "nps": 3,
        "csat": None,
        "owner": "slack:U_AGENT",
        "owner_name": "U_Agent",
        "owner_presence": "unknown",  # U_AGENT never said available or away
        "status": "resolved",
        "opened_at": "2026-11-23T11:00:00+01:00",
        "due_at": "2026-11-25T11:00:00+01:00",
        "contacted_at": "2026-11-23T11:00:00+01:00",
        "closed_at": "2026-11-23T11:00:00+01:00",
        "note": "Geste commercial accepté",
        "overdue": False,
    }
    assert (second["customer"], second["status"], second["nps"]) == ("telegram:77", "open", 5)
    assert (second["due_at"], second["overdue"]) == ("2026-11-25T11:00:00+01:00", True)
    early = FakeClock(paris(24, 10).astimezone(UTC))
    opened = json.loads(
        await followups_command(h.settings, open_only=True, fmt="json", clock=early)
    )
    assert [(item["id"], item["overdue"]) for item in opened] == [(2, False)]
    table = await followups_command(h.settings, open_only=False, fmt="table", clock=later)
    assert "open (overdue)" in table
    assert "Geste commercial accepté" in table


def test_the_command_line_prints_the_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = asyncio.run(two_followups(tmp_path))
    config = tmp_path / "config.yaml"
    config.write_text(f"storage: {{path: {h.settings.storage.path}}}\n", encoding="utf-8")
    assert main(["followups", "--open", "--format", "json", "--config", str(config)]) == 0
    assert [item["id"] for item in json.loads(capsys.readouterr().out)] == [2]
    assert main(["followups", "--config", str(config)]) == 0
    assert "Marie" in capsys.readouterr().out
    missing = tmp_path / "none.yaml"
    missing.write_text(f"storage: {{path: {tmp_path / 'absent.db'}}}\n", encoding="utf-8")
    assert main(["followups", "--config", str(missing)]) == 1


# ---------------------------------------------------------------- KPIs


def reference(rows: list[dict[str, Any]], lo: int, hi: int) -> dict[str, Any]:
    """The SPEC definition, written plainly."""
    mine = [r for r in rows if lo <= r["opened_at"] < hi]
    contacted = [r for r in mine if r["contacted_at"] is not None]
    in_time = [r for r in contacted if r["contacted_at"] <= r["due_at"]]
    waits = [(r["contacted_at"] - r["opened_at"]) / 1000 for r in contacted]
    return {
        "opened": len(mine),
        "contacted": len(contacted),
        "contacted_in_time_pct": round(100 * len(in_time) / len(mine), 2) if mine else None,
        "median_contact_s": round(statistics.median(waits), 3) if waits else None,
    }


async def seeded(path: Path, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    db = await Database.open(path)
    rows = []
    base = to_ms(datetime(2026, 3, 20, tzinfo=UTC))  # across the DST change of 29 March
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO customers (id, key, channel, user_id, name, language,"
            " first_seen_at) VALUES (1, 'telegram:1', 'telegram', '1', 'A', 'fr', 0)"
        )
        for n in range(1, rnd.randint(40, 90)):
            opened = base + rnd.randint(0, 20 * 86_400_000)
            due = opened + 2 * 86_400_000
            contacted = None if rnd.random() < 0.3 else opened + rnd.randint(0, 4 * 86_400_000)
            owner = rnd.choice([None, "slack:U1", "slack:U2"])
            channel = rnd.choice(["telegram", "slack"])
            rows.append(
                {
                    "opened_at": opened,
                    "due_at": due,
                    "contacted_at": contacted,
                    "owner": owner,
                    "channel": channel,
                }
            )
            await conn.execute(
                "INSERT INTO conversations (id, customer_id, channel, address_key, chat_id,"
                " language, state, started_at, updated_at) VALUES (?, 1, ?, ?, '1', 'fr',"
                " 'closed', ?, ?)",
                (n, channel, f"{channel}:{n}", opened - 60_000, opened),
            )
            await conn.execute(
                "INSERT INTO followups (id, conversation_id, customer_id, nps, owner_key, status,"
                " opened_at, due_at, contacted_at) VALUES (?, ?, 1, 3, ?, ?, ?, ?, ?)",
                (n, n, owner, "contacted" if contacted else "open", opened, due, contacted),
            )
    await db.close()
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_followup_kpis_match_an_independent_computation(tmp_path: Path, seed: int) -> None:
    rows = await seeded(tmp_path / "k.db", seed)
    settings = make_settings(tmp_path / "k.db")
    db = await Database.open(tmp_path / "k.db")
    try:
        for first, end in (
            (date(2026, 3, 22), date(2026, 4, 2)),
            (date(2026, 3, 26), date(2026, 3, 30)),
            (date(2026, 5, 1), date(2026, 5, 8)),
        ):
            period = Period.of_days(first, end, settings.tz)
            lo, hi = period.start_ms, period.end_ms
            report = await KpiQueries(db).report(period, calendar=settings.calendar())
            assert report.to_json()["followups"] == reference(rows, lo, hi)
            by_agent = await KpiQueries(db).report(period, calendar=settings.calendar(), by="agent")
            for group in by_agent.to_json()["groups"]:
                owner = None if group["key"] == "(none)" else group["key"]
                mine = [r for r in rows if r["owner"] == owner]
                assert group["followups"] == reference(mine, lo, hi), group["key"]
            by_channel = await KpiQueries(db).report(
                period, calendar=settings.calendar(), by="channel"
            )
            for group in by_channel.to_json()["groups"]:
                mine = [r for r in rows if r["channel"] == group["key"]]
                assert group["followups"] == reference(mine, lo, hi), group["key"]
    finally:
        await db.close()


async def test_no_followups_is_null_not_zero_and_table_and_csv_show_them(tmp_path: Path) -> None:
    rows = await seeded(tmp_path / "e.db", 4)
    settings = make_settings(tmp_path / "e.db")
    db = await Database.open(tmp_path / "e.db")
    try:
        empty = Period.of_days(date(2025, 1, 1), date(2025, 1, 8), settings.tz)
        report = await KpiQueries(db).report(empty, calendar=settings.calendar())
        assert report.to_json()["followups"] == {
            "opened": 0,
            "contacted": 0,
            "contacted_in_time_pct": None,
            "median_contact_s": None,
        }
        full = Period.of_days(date(2026, 3, 1), date(2026, 5, 1), settings.tz)
        report = await KpiQueries(db).report(full, calendar=settings.calendar())
    finally:
        await db.close()
    expected = reference(rows, full.start_ms, full.end_ms)
    header, line = render_csv(report).splitlines()
    values = dict(zip(header.split(","), line.split(","), strict=True))
    assert int(values["followups.opened"]) == expected["opened"]
    assert float(values["followups.contacted_in_time_pct"]) == expected["contacted_in_time_pct"]
    table = render_table(report, "en")
    assert f"{expected['opened']} opened · {expected['contacted']} contacted" in table


async def test_followups_show_the_owners_presence(tmp_path: Path) -> None:
    """The owner's presence as last said; "unknown" for an owner who never said."""
    h = await two_followups(tmp_path)
    later = FakeClock(paris(26, 10).astimezone(UTC))
    out = json.loads(await followups_command(h.settings, open_only=False, fmt="json", clock=later))
    assert {item["owner_presence"] for item in out} == {"unknown"}
    db = await Database.open(h.settings.storage.path)
    try:
        await db.executemany(
            "INSERT INTO agent_presence (agent_key, name, available, changed_at)"
            " VALUES (?, 'Paul', 0, 0)",
            [("slack:U_AGENT",)],
        )
    finally:
        await db.close()
    out = json.loads(await followups_command(h.settings, open_only=False, fmt="json", clock=later))
    assert {item["owner"]: item["owner_presence"] for item in out} == {"slack:U_AGENT": "away"}
    table = await followups_command(h.settings, open_only=False, fmt="table", clock=later)
    assert "U_Agent (away)" in table
