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
