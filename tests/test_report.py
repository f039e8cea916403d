"""``supportbot kpi``: the three formats, local dates and time zones, ``--to`` exclusive."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.config import Settings
from bot.errors import StorageError, SupportbotError
from bot.insights.kpi import flatten
from bot.insights.report import kpi_command, report_period, week_summary
from storage.database import Database
from tests.harness import make_settings
from tests.kpi_seed import Seeder, seed_week

PARIS = ZoneInfo("Europe/Paris")
TODAY = date(2026, 11, 22)  # a Sunday: the default period (7 days, today included) is the week


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


@pytest.fixture
async def seeded(tmp_path: Path) -> AsyncIterator[tuple[Settings, Database]]:
    """A week of activity (16–22 Nov 2026) plus rows on both sides of its bounds."""
    settings = make_settings(tmp_path / "kpi.db", language="en")
    db = await Database.open(settings.storage.path)
    await seed_week(db)
    yield settings, db
    await db.close()


async def run(settings: Settings, **kwargs: Any) -> str:
    options: dict[str, Any] = {"date_from": None, "date_to": None, "by": None, "fmt": "json"}
    options.update(kwargs)
    return await kpi_command(settings, today=TODAY, **options)


async def test_json_default_period_is_the_last_seven_days_today_included(
    seeded: tuple[Settings, Database],
) -> None:
    settings, _ = seeded
    data = json.loads(await run(settings))
    assert data["period"] == {
        "start": "2026-11-16T00:00:00+01:00",
        "end": "2026-11-23T00:00:00+01:00",
        "timezone": "Europe/Paris",
    }
    # 3 conversations + the 10 surveyed ones; not the two just outside the bounds.
    assert data["conversations"]["started"] == 13
    assert data["conversations"]["handed_off"] == 2
    assert data["conversations"]["abandoned"] == 1
    assert data["nps"] == {
        "score": 30.0,
        "promoters": 5,
        "passives": 3,
        "detractors": 2,
        "responses": 10,
    }
    assert data["csat"]["score_pct"] == 50.0
    assert data["agent_first_response_s"]["median"] == 120.0
    assert data["abandonment_rate_pct"] == pytest.approx(100 / 13, abs=0.01)
    assert "groups" not in data


async def test_to_is_exclusive_and_dates_are_local(seeded: tuple[Settings, Database]) -> None:
    settings, _ = seeded
    day = json.loads(await run(settings, date_from=date(2026, 11, 22), date_to=date(2026, 11, 23)))
    assert day["conversations"]["started"] == 1  # 22 Nov 23:59:59, not 23 Nov 00:00
    next_day = json.loads(
        await run(settings, date_from=date(2026, 11, 23), date_to=date(2026, 11, 24))
    )
    assert next_day["conversations"]["started"] == 1
    assert next_day["nps"]["score"] is None  # no answers: null, never 0


async def test_the_same_instants_fall_on_other_days_in_another_time_zone(
    seeded: tuple[Settings, Database],
) -> None:
    settings, _ = seeded
    # 23 Nov 00:00 in Paris is 22 Nov 18:00 in New York: it belongs to New York's 22 Nov.
    new_york = settings.model_copy(update={"timezone": "America/New_York"})
    data = json.loads(await run(new_york, date_from=date(2026, 11, 22), date_to=date(2026, 11, 23)))
    assert data["period"]["start"] == "2026-11-22T00:00:00-05:00"
    assert data["conversations"]["started"] == 2


async def test_from_alone_ends_after_today_and_to_alone_covers_seven_days(
    seeded: tuple[Settings, Database],
) -> None:
    settings, _ = seeded
    data = json.loads(await run(settings, date_from=date(2026, 11, 20)))
    assert data["period"]["end"] == "2026-11-23T00:00:00+01:00"  # today (22nd) included
    data = json.loads(await run(settings, date_to=date(2026, 11, 20)))
    assert data["period"]["start"] == "2026-11-13T00:00:00+01:00"


def test_period_across_daylight_saving_keeps_local_midnights() -> None:
    settings = make_settings(Path("unused.db"))
    period = report_period(settings, date(2026, 10, 19), date(2026, 10, 26), TODAY)
    assert period.start.isoformat() == "2026-10-19T00:00:00+02:00"
    assert period.end.isoformat() == "2026-10-26T00:00:00+01:00"


async def test_bad_dates_and_a_missing_database_are_clear_errors(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "missing.db")
    with pytest.raises(SupportbotError, match="must be before --to"):
        await run(settings, date_from=date(2026, 11, 20), date_to=date(2026, 11, 20))
    with pytest.raises(StorageError, match="no database"):
        await run(settings)
    assert not (tmp_path / "missing.db").exists()


async def test_json_breakdown_by_channel(seeded: tuple[Settings, Database]) -> None:
    settings, _ = seeded
    data = json.loads(await run(settings, by="channel"))
    assert data["by"] == "channel"
    groups = {g["key"]: g for g in data["groups"]}
    assert sorted(groups) == ["slack", "telegram", "web"]
    assert groups["slack"]["nps"]["responses"] == 5
    assert groups["telegram"]["nps"]["responses"] == 5
    assert groups["web"]["abandonment_rate_pct"] == 100.0
    total = sum(g["conversations"]["started"] for g in groups.values())
    assert total == data["conversations"]["started"]
    assert groups["web"]["retention"]["start_customers"] is not None


async def test_csv_one_row_total_with_dotted_columns(seeded: tuple[Settings, Database]) -> None:
    settings, _ = seeded
    text = await run(settings, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(text.strip().splitlines()) == 2
    [row] = rows
    json_names = set(flatten(json.loads(await run(settings))))
    assert json_names - {"period.timezone"} <= set(row)
    assert row["period.start"] == "2026-11-16T00:00:00+01:00"
    assert row["nps.score"] == "30.0"
    assert row["conversations.started"] == "13"


async def test_csv_one_row_per_group(seeded: tuple[Settings, Database]) -> None:
    settings, _ = seeded
    rows = list(csv.DictReader(io.StringIO(await run(settings, fmt="csv", by="agent"))))
    keys = [r["key"] for r in rows]
    assert keys == ["slack:UA", "(none)"]
    assert rows[0]["label"] == "Alice"
    assert rows[0]["agent_first_response_s.median"] == "120.0"
    assert rows[1]["agent_first_response_s.median"] == ""  # null → empty cell
    assert rows[0]["retention.rate_pct"] == ""


async def test_csv_names_typed_by_people_never_become_formulas(
    seeded: tuple[Settings, Database],
) -> None:
    settings, db = seeded
    seed = Seeder(db)
    await seed.conversation(
        paris(2026, 11, 19, 9, 0),
        customer="telegram:csv-injection",
        handed_off_s=5,
        agent=("telegram:666", '=HYPERLINK("http://x")'),
        agent_response_s=10,
        resolved_s=60,
        topic="-2+3",
    )
    await seed.survey(paris(2026, 11, 19, 12, 0), nps=0, topic="-2+3", channel="web")
    by_agent = list(csv.DictReader(io.StringIO(await run(settings, fmt="csv", by="agent"))))
    assert {r["label"] for r in by_agent} >= {"Alice", '\'=HYPERLINK("http://x")'}
    by_topic = list(csv.DictReader(io.StringIO(await run(settings, fmt="csv", by="topic"))))
    typed = next(r for r in by_topic if r["key"] == "'-2+3")
    assert typed["nps.score"] == "-100.0"  # a negative number stays a number


async def test_csv_of_an_empty_breakdown_still_has_its_header(
    seeded: tuple[Settings, Database],
) -> None:
    settings, _ = seeded
    text = await run(
        settings, fmt="csv", by="topic", date_from=date(2020, 1, 1), date_to=date(2020, 1, 2)
    )
    lines = text.strip().splitlines()
    assert len(lines) == 1
    assert "nps.score" in lines[0].split(",")


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_table_fits_80_columns_in_each_language(
    seeded: tuple[Settings, Database], language: str
) -> None:
    settings, _ = seeded
    local = settings.model_copy(update={"language": language})
    text = await run(local, fmt="table", by="topic")
    assert max(len(line) for line in text.splitlines()) <= 80
    if language == "fr":
        assert "du 16 nov. 2026 au 22 nov. 2026" in text
        assert "+30 (promoteurs 5" in text
        assert "50\u00a0% satisfaits" in text  # Babel: a no-break space before %
        assert "(sans thème)" in text
    else:
        assert "16 Nov 2026 to 22 Nov 2026" in text
        assert "+30 (promoters 5" in text
        assert "livraison" in text
        assert "2 min" in text  # the agent's first response, 120 s


async def test_week_summary_covers_monday_to_now(seeded: tuple[Settings, Database]) -> None:
    settings, db = seeded
    # Sunday 18:00: the conversation of 23:59:59 has not started yet.
    text = await week_summary(settings, db, now=paris(2026, 11, 22, 18, 0))
    first, second = text.splitlines()
    assert "16 Nov 2026" in first
    assert second.startswith("12 conversations")
    assert "NPS +30" in second
    monday = await week_summary(settings, db, now=paris(2026, 11, 23, 0, 0) + timedelta(hours=1))
    assert "23 Nov 2026" in monday
    assert monday.splitlines()[1].startswith("1 conversations")


async def complaints_seeded(seeded: tuple[Settings, Database]) -> Settings:
    """Three complaints this week (two late deliveries, one without a cause) and one the
    week before; touchpoints and stages on two conversations."""
    settings, db = seeded
    seed = Seeder(db)
    rows = []
    for day, cause in ((17, "retard de livraison"), (18, "retard de livraison"), (19, None)):
        cid = await seed.conversation(
            paris(2026, 11, day, 10, 0),
            customer=f"telegram:complainer{day}",
            handed_off_s=5,
            resolved_s=3600,
            tag="livraison",
        )
        rows.append((cid, cause))
    before = await seed.conversation(
        paris(2026, 11, 10, 10, 0), customer="telegram:earlier", handed_off_s=5
    )
    rows.append((before, "colis endommagé"))
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO complaints (conversation_id, opened_at, opened_by, cause, updated_at) "
            "VALUES (?, 0, 'customer', ?, 0)",
            rows,
        )
        await conn.execute(
            "UPDATE conversations SET touchpoint = 'livraison', stage = 'after' WHERE id IN (?, ?)",
            (rows[0][0], rows[1][0]),
        )
    return settings


async def test_json_by_cause_has_counts_shares_and_the_previous_week(
    seeded: tuple[Settings, Database],
) -> None:
    settings = await complaints_seeded(seeded)
    data = json.loads(await run(settings, by="cause"))
    assert data["complaints"] == {
        "count": 3,
        "by_cause": {"retard de livraison": 2, "(non renseignée)": 1},
    }
    groups = {g["key"]: g for g in data["groups"]}
    late = groups["retard de livraison"]
    assert late["complaints"]["count"] == 2
    assert (late["share_pct"], late["previous_count"], late["change"]) == (66.67, 0, 2)
    assert late["resolution_s"] == {"median": 3600.0, "mean": 3600.0, "p90": 3600.0, "count": 2}
    unset = groups["(non renseignée)"]  # reported, never dropped
    assert (unset["complaints"]["count"], unset["share_pct"]) == (1, 33.33)
    gone = groups["colis endommagé"]  # only last week: shown at 0 with its fall
    assert (gone["complaints"]["count"], gone["previous_count"], gone["change"]) == (0, 1, -1)
    assert groups["(none)"]["complaints"]["count"] == 0  # the conversations that are no complaint
    assert data["resolution_s"]["count"] == data["conversations"]["resolved"]


async def test_csv_by_cause_keeps_one_set_of_columns(seeded: tuple[Settings, Database]) -> None:
    settings = await complaints_seeded(seeded)
    rows = list(csv.DictReader(io.StringIO(await run(settings, fmt="csv", by="cause"))))
    by_key = {r["key"]: r for r in rows}
    assert by_key["retard de livraison"]["complaints.count"] == "2"
    assert by_key["retard de livraison"]["share_pct"] == "66.67"
    assert json.loads(by_key["retard de livraison"]["complaints.by_cause"]) == {
        "retard de livraison": 2
    }
    assert by_key["(none)"]["share_pct"] == ""
    total = list(csv.DictReader(io.StringIO(await run(settings, fmt="csv"))))[0]
    data = json.loads(await run(settings))
    assert total["resolution_s.median"] == str(data["resolution_s"]["median"])
    assert total["resolution_s.count"] == str(data["conversations"]["resolved"])
    assert total["complaints.count"] == "3"


@pytest.mark.parametrize(("by", "key"), [("touchpoint", "livraison"), ("stage", "after")])
async def test_json_by_touchpoint_and_stage(
    seeded: tuple[Settings, Database], by: str, key: str
) -> None:
    settings = await complaints_seeded(seeded)
    data = json.loads(await run(settings, by=by))
    groups = {g["key"]: g for g in data["groups"]}
    assert groups[key]["conversations"]["started"] == 2
    assert groups[key]["complaints"]["count"] == 2
    assert sum(g["conversations"]["started"] for g in groups.values()) == 16


@pytest.mark.parametrize("language", ["en", "fr"])
async def test_table_by_cause_fits_80_columns(
    seeded: tuple[Settings, Database], language: str
) -> None:
    settings = await complaints_seeded(seeded)
    local = settings.model_copy(update={"language": language})
    text = await run(local, fmt="table", by="cause")
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "retard de livraison" in text
    assert "(non renseignée)" in text
    assert ("Délai de résolution" if language == "fr" else "Resolution time") in text
