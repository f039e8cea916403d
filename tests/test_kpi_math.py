"""KPI arithmetic: hand-made cases from the seed articles, edge cases, and the exact JSON names."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.calendar import BusinessCalendar, parse_shifts
from bot.insights.durations import BusinessTime, percentile, summarize
from bot.insights.kpi import (
    UNSET_CAUSE,
    Closing,
    Csat,
    Durations,
    Figures,
    Group,
    KpiReport,
    Nps,
    Period,
    Retention,
    SurveyCounts,
    Volumes,
    flatten,
    nps_score,
    rate_pct,
    retention_rate,
)

PARIS = ZoneInfo("Europe/Paris")


# --- NPS -------------------------------------------------------------------------------


def test_nps_of_five_promoters_three_passives_two_detractors_is_30() -> None:
    # 50 % promoters − 20 % detractors (the seed articles' formula).
    assert nps_score(5, 3, 2) == pytest.approx(30.0)
    nps = Nps(promoters=5, passives=3, detractors=2)
    assert nps.responses == 10
    assert nps.score == pytest.approx(30.0)


def test_nps_without_answers_is_none_not_zero() -> None:
    assert nps_score(0, 0, 0) is None
    assert Nps().score is None


def test_nps_bounds_and_a_real_zero() -> None:
    assert nps_score(0, 0, 7) == -100
    assert nps_score(4, 0, 0) == 100
    assert nps_score(3, 0, 3) == 0  # a genuine 0, distinct from "no answers"
    assert nps_score(0, 5, 0) == 0


def test_nps_adds_up() -> None:
    assert Nps(1, 2, 3) + Nps(4, 5, 6) == Nps(5, 7, 9)


# --- CSAT ------------------------------------------------------------------------------


def test_csat_is_share_of_4_and_5_and_the_mean() -> None:
    ratings = [5, 4, 3, 2, 1, 5]
    csat = Csat(responses=len(ratings), satisfied=sum(r >= 4 for r in ratings), total=sum(ratings))
    assert csat.score_pct == pytest.approx(50.0)
    assert csat.average == pytest.approx(20 / 6)


def test_csat_without_ratings_is_none() -> None:
    assert Csat().score_pct is None
    assert Csat().average is None


# --- CRR and rates ---------------------------------------------------------------------


def test_retention_of_the_seed_formula() -> None:
    # S = 200 customers at the start, E = 190 at the end, N = 30 new: (190 − 30) / 200.
    assert retention_rate(200, 190, 30) == pytest.approx(80.0)
    assert Retention(200, 190, 30).rate_pct == pytest.approx(80.0)


def test_retention_without_customers_at_start_is_none() -> None:
    assert retention_rate(0, 12, 12) is None
    assert Retention(0, 5, 5).rate_pct is None


def test_rates_with_an_empty_denominator_are_none() -> None:
    assert rate_pct(0, 0) is None
    assert rate_pct(3, 4) == pytest.approx(75.0)
    assert rate_pct(0, 9) == 0.0


def test_figures_rates() -> None:
    f = Figures(
        conversations=Volumes(
            started=40, resolved=20, resolved_by_bot=15, handed_off=10, abandoned=2
        ),
        surveys=SurveyCounts(sent=8, answered=6),
    )
    assert f.abandonment_rate_pct == pytest.approx(5.0)
    assert f.bot_resolution_rate_pct == pytest.approx(75.0)
    assert f.survey_response_rate_pct == pytest.approx(75.0)
    empty = Figures()
    assert empty.abandonment_rate_pct is None
    assert empty.bot_resolution_rate_pct is None
    assert empty.survey_response_rate_pct is None
    assert empty.is_empty


# --- percentiles -----------------------------------------------------------------------


def test_percentiles_by_hand() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == pytest.approx(2.5)
    # type 7: h = (10 − 1) × 0.9 = 8.1 → 9 + 0.1 × (10 − 9)
    assert percentile([float(v) for v in range(1, 11)], 0.9) == pytest.approx(9.1)
    assert percentile([7.0], 0.9) == 7.0
    assert percentile([], 0.5) is None
    with pytest.raises(ValueError, match="fraction"):
        percentile([1.0], 1.5)


def test_summarize_by_hand() -> None:
    d = summarize([30.0, 10.0, 20.0, 40.0])
    assert d == Durations(count=4, median=25.0, mean=25.0, p90=pytest.approx(37.0))
    assert summarize([]) == Durations()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=80))
def test_summarize_agrees_with_numpy_and_with_sorted_percentile(values: list[float]) -> None:
    d = summarize(values)
    ordered = sorted(values)
    assert d.count == len(values)
    for fraction, got in ((0.5, d.median), (0.9, d.p90)):
        assert got == pytest.approx(float(np.percentile(values, fraction * 100)), abs=1e-6)
        assert got == pytest.approx(percentile(ordered, fraction), abs=1e-6)
    assert d.mean == pytest.approx(math.fsum(values) / len(values), abs=1e-6)


# --- periods ---------------------------------------------------------------------------


def test_period_of_local_days_across_daylight_saving() -> None:
    # 2026-03-29: Paris goes from UTC+1 to UTC+2; that week has 167 hours.
    week = Period.of_days(date(2026, 3, 23), date(2026, 3, 30), PARIS)
    assert week.start.isoformat() == "2026-03-23T00:00:00+01:00"
    assert week.end.isoformat() == "2026-03-30T00:00:00+02:00"
    assert (week.end_ms - week.start_ms) == 167 * 3600 * 1000
    before = week.previous()
    assert before == Period.of_days(date(2026, 3, 16), date(2026, 3, 23), PARIS)
    after = Period.of_days(date(2026, 3, 30), date(2026, 4, 6), PARIS).previous()
    assert after == week


def test_period_previous_of_a_partial_span_has_the_same_length() -> None:
    p = Period(datetime(2026, 11, 23, 0, tzinfo=PARIS), datetime(2026, 11, 25, 15, tzinfo=PARIS))
    before = p.previous()
    assert before.end == p.start
    assert before.end_ms - before.start_ms == p.end_ms - p.start_ms


def test_period_rejects_naive_or_empty_bounds() -> None:
    with pytest.raises(ValueError, match="aware"):
        Period(datetime(2026, 1, 1), datetime(2026, 1, 2, tzinfo=UTC))
    with pytest.raises(ValueError, match="before"):
        Period(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))


# --- business hours, vectorized --------------------------------------------------------


def _calendar() -> BusinessCalendar:
    week = dict.fromkeys(
        ("mon", "tue", "wed", "thu", "fri"), parse_shifts("09:00-12:30,14:00-18:00")
    )
    week["sat"] = parse_shifts("22:00-24:00")  # a shift ending at midnight
    return BusinessCalendar(PARIS, week, [date(2026, 3, 30), date(2026, 10, 26)])


_BASE = datetime(2026, 3, 20, tzinfo=UTC)  # spans the spring DST change and a holiday
_instants = st.integers(0, 20 * 86400 * 1000).map(lambda ms: _BASE + timedelta(milliseconds=ms))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(_instants, _instants), min_size=1, max_size=15))
def test_vectorized_business_seconds_equal_the_calendar(
    pairs: list[tuple[datetime, datetime]],
) -> None:
    calendar = _calendar()
    starts = np.array([int(a.timestamp() * 1000) for a, _ in pairs], dtype=np.int64)
    ends = np.array([int(b.timestamp() * 1000) for _, b in pairs], dtype=np.int64)
    got = BusinessTime(calendar).seconds(starts, ends)
    expected = [calendar.business_seconds(a, b) for a, b in pairs]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)


def test_business_seconds_by_hand() -> None:
    calendar = _calendar()
    friday_noon = datetime(2026, 3, 27, 12, 0, tzinfo=PARIS)
    monday_ten = datetime(2026, 3, 30, 10, 0, tzinfo=PARIS)  # a holiday: closed
    tuesday_ten = datetime(2026, 3, 31, 10, 0, tzinfo=PARIS)
    ms = np.array([int(friday_noon.timestamp() * 1000)] * 2, dtype=np.int64)
    ends = np.array(
        [int(monday_ten.timestamp() * 1000), int(tuesday_ten.timestamp() * 1000)], dtype=np.int64
    )
    # Friday 12:00–12:30 and 14:00–18:00 = 4.5 h; Saturday 22:00–24:00 = 2 h; Tuesday 1 h.
    assert BusinessTime(calendar).seconds(ms, ends).tolist() == [6.5 * 3600, 7.5 * 3600]


def test_business_seconds_always_open_is_calendar_time_and_negatives_are_zero() -> None:
    calendar = BusinessCalendar(PARIS)
    starts = np.array([1_000, 10_000], dtype=np.int64)
    ends = np.array([61_000, 5_000], dtype=np.int64)
    assert BusinessTime(calendar).seconds(starts, ends).tolist() == [60.0, 0.0]


# --- the JSON interface ----------------------------------------------------------------

SPEC_NAMES = {
    "period.start",
    "period.end",
    "conversations.started",
    "conversations.resolved",
    "conversations.resolved_by_bot",
    "conversations.handed_off",
    "conversations.abandoned",
    "nps.score",
    "nps.promoters",
    "nps.passives",
    "nps.detractors",
    "nps.responses",
    "csat.score_pct",
    "csat.average",
    "csat.responses",
    *(
        f"{k}.{f}"
        for k in ("first_response_s", "agent_first_response_s", "resolution_s")
        for f in ("median", "mean", "p90", "count")
    ),
    "complaints.count",
    "recontact_rate_pct",
    "abandonment_rate_pct",
    "retention.start_customers",
    "retention.end_customers",
    "retention.new_customers",
    "retention.rate_pct",
    "bot_resolution_rate_pct",
    "survey_response_rate_pct",
}


def _report(groups: tuple[Group, ...] = (), by: str | None = None) -> KpiReport:
    period = Period.of_days(date(2026, 11, 16), date(2026, 11, 23), PARIS)
    figures = Figures(
        conversations=Volumes(10, 6, 4, 5, 1),
        nps=Nps(5, 3, 2),
        csat=Csat(4, 3, 17),
        retention=Retention(200, 190, 30),
    )
    return KpiReport(period=period, figures=figures, by=by, groups=groups)


def test_json_has_every_name_of_the_interface() -> None:
    data = _report().to_json()
    names = set(flatten(data))
    assert names >= SPEC_NAMES
    assert "groups" not in data
    assert data["period"]["start"] == "2026-11-16T00:00:00+01:00"
    assert data["period"]["end"] == "2026-11-23T00:00:00+01:00"
    assert data["nps"]["score"] == 30.0
    assert data["retention"]["rate_pct"] == 80.0
    assert data["first_response_s"] == {"median": None, "mean": None, "p90": None, "count": 0}
    assert data["abandonment_rate_pct"] == 10.0


def test_json_groups_carry_key_and_the_same_fields() -> None:
    group = Group("telegram", Figures(nps=Nps(1, 0, 0)))
    data = _report((group,), by="channel").to_json()
    assert data["by"] == "channel"
    [g] = data["groups"]
    assert g["key"] == "telegram"
    assert set(flatten(g)) - {"key"} >= SPEC_NAMES - {"period.start", "period.end"}
    assert g["nps"]["score"] == 100.0
    assert g["retention"]["rate_pct"] is None  # no retention figures for this group


def test_closing_figures_json_is_the_pinned_shape() -> None:
    closing = Closing(
        resolution=summarize([60.0, 120.0, 3600.0]),
        complaints=(("retard de livraison", 3), (UNSET_CAUSE, 1)),
        resolved=4,
        returned=1,
    )
    data = Figures(closing=closing).to_json()
    assert data["resolution_s"] == {"median": 120.0, "mean": 1260.0, "p90": 2904.0, "count": 3}
    assert data["resolution_business_s"]["median"] is None
    assert data["complaints"] == {
        "count": 4,
        "by_cause": {"retard de livraison": 3, "(non renseignée)": 1},
    }
    assert data["recontact_rate_pct"] == 25.0
    empty = Figures().to_json()
    assert empty["complaints"] == {"count": 0, "by_cause": {}}
    assert empty["recontact_rate_pct"] is None  # nothing resolved: no data, not 0 %


def test_cause_groups_carry_their_trend() -> None:
    group = Group("colis endommagé", Figures(), extra=(("share_pct", 50.0), ("change", -2)))
    [g] = _report((group,), by="cause").to_json()["groups"]
    assert (g["key"], g["share_pct"], g["change"]) == ("colis endommagé", 50.0, -2)
