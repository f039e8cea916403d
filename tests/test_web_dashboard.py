"""The KPI dashboard over HTTP: the figures of ``supportbot kpi``, series, CSV, errors, page."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.config import Settings
from bot.insights.dashboard import display
from bot.insights.kpi import Csat, Figures
from bot.insights.kpi_series import trend_buckets
from bot.insights.kpi_texts import KpiTexts
from bot.insights.report import kpi_command
from handlers.web.dashboard import dashboard_routes
from handlers.web.site import static_dir
from storage.database import Database
from tests.fakes.clock import FakeClock
from tests.harness import make_settings
from tests.kpi_seed import Seeder, seed_week

PARIS = ZoneInfo("Europe/Paris")
TODAY = date(2026, 11, 23)  # a Monday; the fake clock's default day
WEEK = {"from": "2026-11-16", "to": "2026-11-23"}
WEEK_DATES = {"date_from": date(2026, 11, 16), "date_to": date(2026, 11, 23)}


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "kpi.db")
    yield database
    await database.close()


def _settings(db: Database, language: str = "en") -> Settings:
    return make_settings(Path(db.path), language=language, timezone="Europe/Paris")


async def _client(db: Database, clock: FakeClock, language: str = "en") -> TestClient[Any, Any]:
    app = web.Application()
    app.add_routes(dashboard_routes(db, _settings(db, language), clock))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(db: Database, clock: FakeClock) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _client(db, clock)
    yield c
    await c.close()


async def get_json(client: TestClient[Any, Any], path: str, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def cli(db: Database, fmt: str, by: str | None = None, **dates: date) -> str:
    return await kpi_command(
        _settings(db),
        date_from=dates.get("date_from"),
        date_to=dates.get("date_to"),
        by=by,
        fmt=fmt,
        today=TODAY,
    )


# --- the figures are the CLI's ---------------------------------------------------------


async def test_default_period_is_the_cli_report_of_the_last_seven_days_today_included(
    db: Database, client: TestClient[Any, Any]
) -> None:
    seed = await seed_week(db)
    # Retention with customers known before the week, one of whom blocks the bot in it.
    await seed.conversation(paris(2026, 11, 2, 9, 0), customer="telegram:old1")
    gone = await seed.customer("telegram:old2", paris(2026, 11, 3, 9, 0))
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO customer_reachability (customer_id, at, reachable, reason) "
            "VALUES (?, ?, 0, 'blocked')",
            (gone, int(paris(2026, 11, 19, 8, 0).timestamp() * 1000)),
        )
    data = await get_json(client, "/api/kpi")
    # `supportbot kpi` without dates: the same default period, today included.
    expected = json.loads(await cli(db, "json"))
    assert expected["period"]["start"] == "2026-11-17T00:00:00+01:00"
    assert expected["retention"]["start_customers"] == 4  # the 16th is before the period now
    assert expected["retention"]["rate_pct"] is not None
    assert expected["conversations"]["started"] == 13  # 3 + the 10 surveyed ones
    assert {k: data[k] for k in expected} == expected
    assert data["dates"] == {"from": "2026-11-17", "to": "2026-11-24", "today": "2026-11-23"}
    assert data["display"]["figures"]["nps"] == "+30"


async def test_breakdowns_are_the_cli_groups(db: Database, client: TestClient[Any, Any]) -> None:
    await seed_week(db)
    data = await get_json(client, "/api/kpi", **WEEK)
    for by in ("channel", "agent", "topic", "touchpoint", "stage", "cause"):
        expected = json.loads(await cli(db, "json", by=by, **WEEK_DATES))
        assert data["by"][by] == expected["groups"]
        assert [g["key"] for g in data["display"]["by"][by]] == [
            g["key"] for g in expected["groups"]
        ]
    columns = data["display"]["columns"]
    assert [c["label"] for c in columns] == [
        "Conv.",
        "NPS",
        "CSAT",
        "1st rep.",
        "Agent",
        "Aband.",
        "Bot",
        "Resolution",
        "Compl.",
    ]  # the headers of `supportbot kpi --by`, then resolution time and complaints
    for rows in data["display"]["by"].values():
        assert all(set(row) == {"key", "name"} | {c["key"] for c in columns} for row in rows)
    channels = {g["key"]: g for g in data["display"]["by"]["channel"]}
    assert channels["web"]["abandonment"] == "100%"
    agents = {g["key"]: g["name"] for g in data["display"]["by"]["agent"]}
    assert agents["slack:UA"] == "Alice"
    topics = {g["key"]: g["name"] for g in data["display"]["by"]["topic"]}
    assert topics["(none)"] == "(no topic)"


async def test_cause_chart_is_this_period_against_the_previous_one(
    db: Database, client: TestClient[Any, Any]
) -> None:
    """The chart beside the cause table: ``--by cause``'s counts, shares and previous counts
    (the seven days before), largest first, an unset cause as a bar of its own."""
    seeder = Seeder(db)
    complaints = [
        (paris(2026, 11, 17, 10), "colis endommagé"),
        (paris(2026, 11, 18, 10), "colis endommagé"),
        (paris(2026, 11, 19, 10), "colis endommagé"),
        (paris(2026, 11, 20, 10), None),
        (paris(2026, 11, 10, 10), "colis endommagé"),  # the week before
        (paris(2026, 11, 11, 10), "retard de livraison"),
        (paris(2026, 11, 12, 10), "retard de livraison"),
    ]
    await seeder.conversation(paris(2026, 11, 18, 12))  # not a complaint: no bar
    for started, cause in complaints:
        cid = await seeder.conversation(started, resolved_s=600.0)
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO complaints (conversation_id, opened_at, opened_by, cause, "
                "updated_at) VALUES (?, ?, 'customer', ?, ?)",
                (cid, int(started.timestamp() * 1000), cause, int(started.timestamp() * 1000)),
            )
    data = await get_json(client, "/api/kpi", **WEEK)
    expected = json.loads(await cli(db, "json", by="cause", **WEEK_DATES))["groups"]
    chart = data["series"]["causes"]
    keys = [g["key"] for g in expected]
    assert "(none)" in keys  # the group of conversations that are not complaints
    assert sorted(c["key"] for c in chart) == sorted(k for k in keys if k != "(none)")
    rows = [(c["name"], c["count"], c["previous_count"], c["share_pct"]) for c in chart]
    assert rows == [
        ("colis endommagé", 3, 1, 75.0),
        ("(non renseignée)", 1, 0, 25.0),  # the stored name of an unset cause, as the CLI's
        ("retard de livraison", 0, 2, 0.0),  # gone this period: still a bar, for the trend
    ]
    assert data["labels"]["chart_this_period"] == "This period"
    assert data["labels"]["chart_previous_period"] == "Previous period"


async def test_explicit_dates_follow_the_cli_with_to_exclusive(
    db: Database, client: TestClient[Any, Any]
) -> None:
    await seed_week(db)
    data = await get_json(client, "/api/kpi", **{"from": "2026-11-18", "to": "2026-11-20"})
    expected = json.loads(
        await cli(db, "json", date_from=date(2026, 11, 18), date_to=date(2026, 11, 20))
    )
    assert {k: data[k] for k in expected} == expected
    assert data["conversations"]["started"] == 1
    assert data["nps"]["score"] is None  # the answers of the 20th are outside


async def test_default_period_uses_the_injected_clock_in_the_configured_zone(
    db: Database, clock: FakeClock, client: TestClient[Any, Any]
) -> None:
    clock.set(datetime(2026, 11, 22, 23, 30, tzinfo=UTC))  # already the 23rd in Paris
    data = await get_json(client, "/api/kpi")
    assert data["period"]["start"] == "2026-11-17T00:00:00+01:00"
    assert data["period"]["end"] == "2026-11-24T00:00:00+01:00"


# --- series ----------------------------------------------------------------------------


async def test_daily_trend_on_a_known_dataset(db: Database, client: TestClient[Any, Any]) -> None:
    await seed_week(db)
    data = await get_json(client, "/api/kpi", **WEEK)
    series = data["series"]
    assert series["granularity"] == "day"
    points = {p["start"]: p for p in series["trend"]}
    assert list(points) == [f"2026-11-{d}" for d in range(16, 23)]
    day = points["2026-11-20"]
    assert day["end"] == "2026-11-21"
    assert day["nps"] == {
        "score": 30.0,
        "promoters": 5,
        "passives": 3,
        "detractors": 2,
        "responses": 10,
    }
    assert day["csat"]["score_pct"] == 50.0
    assert day["csat"]["responses"] == 10
    assert [p["nps"]["score"] for d, p in points.items() if d != "2026-11-20"] == [None] * 6
    abandonment = {d: p["abandonment_rate_pct"] for d, p in points.items()}
    # 16th: 1 started, none abandoned; 22nd: 1 of 1; no conversation = no rate, not 0.
    assert abandonment["2026-11-16"] == 0.0
    assert abandonment["2026-11-22"] == 100.0
    assert abandonment["2026-11-17"] is None
    # The points add up to the period (the 20th's survey conversations started then too).
    assert (
        sum(p["conversations"]["started"] for p in points.values())
        == (data["conversations"]["started"])
    )
    assert sum(p["nps"]["responses"] for p in points.values()) == data["nps"]["responses"]


async def test_weekly_trend_beyond_31_days(db: Database, client: TestClient[Any, Any]) -> None:
    seed = await seed_week(db)
    await seed.survey(paris(2026, 10, 1, 9, 0), nps=10)  # the first (partial) week
    data = await get_json(client, "/api/kpi", **{"from": "2026-10-01", "to": "2026-11-23"})
    series = data["series"]
    assert series["granularity"] == "week"
    starts = [p["start"] for p in series["trend"]]
    # Thursday 1 Oct, then every Monday; the last week ends with the period.
    assert starts[:3] == ["2026-10-01", "2026-10-05", "2026-10-12"]
    assert starts[-1] == "2026-11-16"
    assert series["trend"][-1]["end"] == "2026-11-23"
    assert all(date.fromisoformat(s).weekday() == 0 for s in starts[1:])
    assert series["trend"][0]["nps"]["score"] == 100.0
    assert series["trend"][-1]["nps"]["score"] == 30.0
    assert sum(p["nps"]["responses"] for p in series["trend"]) == data["nps"]["responses"] == 11


def test_buckets_are_whole_local_days_across_dst() -> None:
    granularity, days = trend_buckets(date(2026, 10, 24), date(2026, 10, 27), PARIS)
    assert granularity == "day"
    hours = [(p.end_ms - p.start_ms) / 3_600_000 for p in days]
    assert hours == [24, 25, 24]  # clocks go back on Sunday 25 October
    assert trend_buckets(date(2026, 1, 1), date(2026, 2, 1), PARIS)[0] == "day"  # 31 days
    assert trend_buckets(date(2026, 1, 1), date(2026, 2, 2), PARIS)[0] == "week"


async def test_first_response_histogram(db: Database, client: TestClient[Any, Any]) -> None:
    seed = Seeder(db)
    delays = [30, 59.9, 60, 200, 900, 3599, 3600, 14400, 20000]
    for i, delay in enumerate(delays):
        await seed.conversation(paris(2026, 11, 17, 9, i), first_response_s=delay)
    await seed.conversation(paris(2026, 11, 17, 10, 0), first_response_s=None)
    await seed.conversation(
        paris(2026, 11, 17, 11, 0), first_response_s=1, handed_off_s=10, agent_response_s=400
    )
    data = await get_json(client, "/api/kpi", **WEEK)
    histogram = data["series"]["frt_histogram"]
    assert histogram["edges_s"] == [60, 300, 900, 3600, 14400]
    assert histogram["first"] == [3, 2, 0, 2, 1, 2]  # the handed-off one answered in 1 s
    assert histogram["agent_first"] == [0, 0, 1, 0, 0, 0]  # 390 s after the handoff
    assert sum(histogram["first"]) == data["first_response_s"]["count"]
    assert histogram["labels"] == [
        "< 1 min",
        "1 min – 5 min",
        "5 min – 15 min",
        "15 min – 1 h",
        "1 h – 4 h",
        "> 4 h",
    ]


# --- empty periods, errors -------------------------------------------------------------


async def test_empty_period_is_null_and_dashes(db: Database, client: TestClient[Any, Any]) -> None:
    data = await get_json(client, "/api/kpi", **WEEK)
    assert data["nps"]["score"] is None
    assert data["csat"]["score_pct"] is None
    assert data["abandonment_rate_pct"] is None
    assert data["first_response_s"]["median"] is None
    shown = data["display"]["figures"]
    for key in ("nps", "csat", "frt_median", "frt_p90", "abandonment", "retention"):
        assert shown[key] == "—", key
    assert shown["csat_detail"] == "no answers"
    assert shown["started"] == "0"
    assert all(p["nps"]["score"] is None for p in data["series"]["trend"])
    assert all(p["abandonment_rate_pct"] is None for p in data["series"]["trend"])
    assert data["series"]["frt_histogram"]["first"] == [0] * 6
    assert data["by"] == dict.fromkeys(
        ("channel", "agent", "topic", "touchpoint", "stage", "cause"), []
    )
    assert data["resolution_s"] == {"median": None, "mean": None, "p90": None, "count": 0}
    assert shown["resolution_median"] == "—"
    assert "NaN" not in json.dumps(data)


@pytest.mark.parametrize(
    ("language", "responses", "total", "shown"),
    [
        ("fr", 1, 5, "moyenne 5,0 / 5 · 1 réponse"),
        ("fr", 2, 7, "moyenne 3,5 / 5 · 2 réponses"),
        ("fr", 0, 0, "aucune réponse"),
        ("en", 1, 5, "mean 5.0 / 5 · 1 answer"),
        ("en", 3, 13, "mean 4.3 / 5 · 3 answers"),
        ("en", 0, 0, "no answers"),
    ],
)
def test_csat_card_says_mean_and_answers_in_words(
    language: str, responses: int, total: int, shown: str
) -> None:
    figures = Figures(csat=Csat(responses=responses, satisfied=responses, total=total))
    assert display(KpiTexts(language), figures, ["csat_detail"]) == {"csat_detail": shown}


async def test_csat_card_shows_the_sentence_not_bare_numbers(client: TestClient[Any, Any]) -> None:
    html = await (await client.get("/dashboard")).text()
    card = html[html.index('data-label="row_csat"') : html.index('data-label="row_frt"')]
    assert 'data-kpi="csat_detail"' in card
    assert "<dt>/5</dt>" not in card
    assert "<dt>n</dt>" not in card


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"from": "2026-13-01"}, "from"),
        ({"from": "16/11/2026"}, "from"),
        ({"to": "20261123"}, "to"),
        ({"from": "2026-11-20", "to": "2026-11-18"}, "to"),
        ({"from": "2026-11-20", "to": "2026-11-20"}, "to"),
        ({"from": "2026-11-24"}, "from"),  # only from, after today
        ({"from": "1900-01-01", "to": "2026-11-23"}, "from"),  # beyond ten years
    ],
)
async def test_bad_dates_are_400_naming_the_parameter(
    client: TestClient[Any, Any], params: dict[str, str], parameter: str
) -> None:
    for path in ("/api/kpi", "/api/kpi.csv"):
        response = await client.get(path, params=params)
        assert response.status == 400
        body = await response.json()
        assert body["parameter"] == parameter
        assert body["error"].startswith(f"{parameter}: ")


async def test_bad_breakdown_is_400(client: TestClient[Any, Any]) -> None:
    response = await client.get("/api/kpi.csv", params={"by": "mood"})
    assert response.status == 400
    assert (await response.json())["parameter"] == "by"


# --- CSV -------------------------------------------------------------------------------


@pytest.mark.parametrize("by", [None, "channel", "agent", "topic"])
async def test_csv_is_the_cli_csv(
    db: Database, client: TestClient[Any, Any], by: str | None
) -> None:
    await seed_week(db)
    params = {**WEEK, **({"by": by} if by else {})}
    response = await client.get("/api/kpi.csv", params=params)
    assert response.status == 200
    assert response.content_type == "text/csv"
    suffix = f"-by-{by}" if by else ""
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="supportbot-kpi-2026-11-16-2026-11-23{suffix}.csv"'
    )
    text = await response.text()
    assert text == await cli(db, "csv", by=by, **WEEK_DATES)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows
    assert rows[0]["period.start"] == "2026-11-16T00:00:00+01:00"


# --- the page --------------------------------------------------------------------------


async def test_page_and_assets(client: TestClient[Any, Any]) -> None:
    page = await client.get("/dashboard")
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.text()
    assert 'data-kpi="nps"' in html
    # No inline script or handler, so a strict CSP (script-src 'self') works.
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts == ['<script src="/dashboard/static/dashboard.js" defer>']
    assert not re.search(r"\son[a-z]+=", html)
    assert "style=" not in html
    for name, content_type in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        response = await client.get(f"/dashboard/static/{name}")
        assert response.status == 200
        assert response.content_type == content_type
        assert await response.read() == (static_dir() / name).read_bytes()
        assert f"/dashboard/static/{name}" in html
    for missing in ("nope.js", "..%2Fdashboard.py"):
        assert (await client.get(f"/dashboard/static/{missing}")).status == 404


def test_script_never_writes_markup() -> None:
    script = (static_dir() / "dashboard.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


async def test_labels_and_formats_follow_the_configured_language(
    db: Database, clock: FakeClock
) -> None:
    await seed_week(db)
    client = await _client(db, clock, language="fr")
    try:
        data = await get_json(client, "/api/kpi", **WEEK)
    finally:
        await client.close()
    assert data["language"] == "fr"
    assert data["labels"]["dash_title"] == "Tableau de bord du support"
    assert data["labels"]["row_car"] == "Taux d'abandon"
    assert data["labels"]["preset_7"] == "7 j"
    assert data["display"]["figures"]["csat"] == "50\u00a0%"
    assert data["display"]["figures"]["csat_detail"] == "moyenne 3,5 / 5 · 10 réponses"
    assert data["series"]["trend"][0]["label"] == "16 nov."
