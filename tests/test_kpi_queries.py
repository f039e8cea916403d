"""The SQL KPIs equal a plain-Python reference computed from the same rows.

Random customers, conversations, surveys and reachability changes are written into a
real SQLite file through the schema (migrations included); ``KpiQueries.report`` must
then agree, field by field and group by group, with ``reference`` below — written
from the period semantics of ``bot/insights/kpi.py``'s docstring, without the production code.
Periods are local days in Europe/Paris, many of them across a daylight-saving change.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.calendar import BusinessCalendar, parse_shifts
from bot.conversation.model import AgentActionKind
from bot.insights.kpi import (
    NONE_KEY,
    UNSET_CAUSE,
    Figures,
    KpiReport,
    Period,
    Retention,
    SurveyCounts,
)
from storage.database import Database
from storage.kpi_queries import KpiQueries
from tests.fakes.clock import FakeClock
from tests.harness import Harness

PARIS = ZoneInfo("Europe/Paris")
DAY_MS = 86_400_000
CHANNELS = ("telegram", "slack", "web")
AGENTS = {"slack:UA": "Alice", "slack:UB": "Bruno", "telegram:7": "Chloé"}
TOPICS = (None, "livraison", "facture", "remboursement")
TAGS = (None, None, "litige", "livraison")
TOUCHPOINTS = (None, "livraison", "site web", "facturation")
STAGES = (None, "before", "during", "after")
CAUSES = (None, "retard de livraison", "colis endommagé")  # None: a complaint without cause
RECONTACT_MS = 7 * DAY_MS

# Windows of generated activity, each around a daylight-saving change in Paris.
WINDOWS = (date(2026, 3, 22), date(2026, 10, 18))
WINDOW_DAYS = 14


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def calendar() -> BusinessCalendar:
    week = dict.fromkeys(
        ("mon", "tue", "wed", "thu", "fri"), parse_shifts("09:00-12:30,14:00-18:00")
    )
    week["sat"] = parse_shifts("10:00-12:00")
    return BusinessCalendar(PARIS, week, [date(2026, 3, 27), date(2026, 10, 23)])


# --- the data ----------------------------------------------------------------------------


@dataclass
class Conversation:
    id: int
    customer_id: int
    channel: str
    started_at: int
    first_response_at: int | None = None
    handed_off_at: int | None = None
    first_agent_response_at: int | None = None
    agent_key: str | None = None
    resolved_at: int | None = None
    resolved_by: str | None = None
    abandoned_at: int | None = None
    topic: str | None = None
    tag: str | None = None
    touchpoint: str | None = None
    stage: str | None = None
    complaint: bool = False
    cause: str | None = None


@dataclass
class Survey:
    conversation_id: int
    customer_id: int
    channel: str
    agent_key: str | None
    topic: str | None
    sent_at: int
    nps: int | None = None
    nps_at: int | None = None
    csat: int | None = None
    csat_at: int | None = None
    comment: str | None = None


@dataclass
class Customer:
    id: int
    channel: str
    first_seen_at: int
    changes: list[tuple[int, int]] = field(default_factory=list)  # (at, reachable)


@dataclass
class Data:
    customers: list[Customer] = field(default_factory=list)
    conversations: list[Conversation] = field(default_factory=list)
    surveys: list[Survey] = field(default_factory=list)


@st.composite
def datasets(draw: st.DrawFn) -> Data:
    first_day = draw(st.sampled_from(WINDOWS))
    t0 = ms(datetime.combine(first_day, datetime.min.time(), PARIS))
    hour = 3_600_000
    # Instants spread over the days and the working/closed hours of the calendar, and
    # delays from a bot's seconds to an agent's next morning (plain integer draws would
    # cluster near 0, i.e. on the window's first night).
    instant = st.builds(
        lambda day, at, jitter: t0 + day * DAY_MS + at * hour + jitter,
        st.sampled_from(range(WINDOW_DAYS)),
        st.sampled_from([1, 3, 8, 9, 11, 12, 13, 14, 16, 17, 18, 21, 23]),
        st.integers(0, hour - 1),
    )
    delay = st.builds(
        lambda base, jitter: base + jitter,
        st.sampled_from([0, 0, 2_000, 20 * 60_000, 3 * hour, 9 * hour, 20 * hour, 2 * DAY_MS]),
        st.integers(0, hour),
    )
    data = Data()
    next_conversation = 1
    for customer_id in range(1, draw(st.integers(0, 9)) + 1):
        channel = draw(st.sampled_from(CHANNELS))
        starts = sorted(draw(st.lists(instant, min_size=1, max_size=5)))
        customer = Customer(customer_id, channel, starts[0])
        at = starts[0]
        for _ in range(draw(st.integers(0, 3))):
            # Changes never precede the first conversation; equal instants happen (ties).
            at += draw(st.sampled_from([0, 1, 3_600_000])) + draw(st.integers(0, 5 * DAY_MS))
            customer.changes.append((at, draw(st.sampled_from([0, 1]))))
        data.customers.append(customer)
        for started in starts:
            c = Conversation(next_conversation, customer_id, channel, started)
            next_conversation += 1
            c.topic = draw(st.sampled_from(TOPICS))
            c.touchpoint = draw(st.sampled_from(TOUCHPOINTS))
            c.stage = draw(st.sampled_from(STAGES))
            if draw(st.integers(0, 3)) == 0:
                c.complaint, c.cause = True, draw(st.sampled_from(CAUSES))
            if draw(st.booleans()):
                skew = draw(st.booleans()) and draw(st.booleans()) and draw(st.booleans())
                c.first_response_at = started + (
                    -draw(st.integers(1, 5000)) if skew else draw(delay)
                )
            if draw(st.booleans()):
                c.handed_off_at = started + draw(delay)
                c.tag = draw(st.sampled_from(TAGS))
                if draw(st.booleans()):
                    c.agent_key = draw(st.sampled_from(sorted(AGENTS)))
                    if draw(st.booleans()):
                        c.first_agent_response_at = c.handed_off_at + draw(delay)
                        if c.first_response_at is None:
                            c.first_response_at = c.first_agent_response_at
            last = max(
                v
                for v in (started, c.first_response_at, c.handed_off_at, c.first_agent_response_at)
                if v is not None
            )
            if draw(st.booleans()):
                c.resolved_at = last + draw(delay)
                c.resolved_by = "agent" if c.handed_off_at is not None else "bot"
            elif c.handed_off_at is not None and draw(st.booleans()):
                c.abandoned_at = c.handed_off_at + draw(st.integers(0, 3_600_000))
            data.conversations.append(c)
            if c.resolved_at is not None and draw(st.booleans()):
                s = Survey(
                    c.id,
                    customer_id,
                    channel,
                    c.agent_key,
                    c.tag or c.topic,
                    c.resolved_at + draw(delay),
                )
                if draw(st.booleans()):
                    s.nps = draw(st.integers(0, 10))
                    s.nps_at = s.sent_at + draw(delay)
                    if draw(st.booleans()):
                        s.csat = draw(st.integers(1, 5))
                        s.csat_at = s.nps_at + draw(delay)
                    s.comment = draw(st.sampled_from([None, "", "trop long"]))
                data.surveys.append(s)
    return data


@st.composite
def periods(draw: st.DrawFn) -> Period:
    """Local days around the windows, from before the data to after it (empty periods too)."""
    window = draw(st.sampled_from(WINDOWS))
    first = window + timedelta(days=draw(st.integers(-4, WINDOW_DAYS + 3)))
    return Period.of_days(first, first + timedelta(days=draw(st.integers(1, 12))), PARIS)


async def insert(db: Database, data: Data) -> None:
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO customers (id, key, channel, user_id, language, first_seen_at, reachable) "
            "VALUES (?, ?, ?, ?, 'fr', ?, ?)",
            [
                (
                    c.id,
                    f"{c.channel}:{c.id}",
                    c.channel,
                    str(c.id),
                    c.first_seen_at,
                    max(c.changes, default=(0, 1))[1],
                )
                for c in data.customers
            ],
        )
        await conn.executemany(
            "INSERT INTO customer_reachability (customer_id, at, reachable, reason) "
            "VALUES (?, ?, ?, 'test')",
            [(c.id, at, r) for c in data.customers for at, r in c.changes],
        )
        await conn.executemany(
            """INSERT INTO conversations (id, customer_id, channel, address_key, chat_id,
                   language, state, topic, tag, started_at, updated_at, first_response_at,
                   handed_off_at, agent_key, agent_name, first_agent_response_at, resolved_at,
                   resolved_by, abandoned_at, touchpoint, stage)
               VALUES (?, ?, ?, ?, ?, 'fr', 'closed', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    c.id,
                    c.customer_id,
                    c.channel,
                    f"{c.channel}:{c.id}",
                    str(c.customer_id),
                    c.topic,
                    c.tag,
                    c.started_at,
                    c.started_at,
                    c.first_response_at,
                    c.handed_off_at,
                    c.agent_key,
                    AGENTS.get(c.agent_key or ""),
                    c.first_agent_response_at,
                    c.resolved_at,
                    c.resolved_by,
                    c.abandoned_at,
                    c.touchpoint,
                    c.stage,
                )
                for c in data.conversations
            ],
        )
        await conn.executemany(
            "INSERT INTO complaints (conversation_id, opened_at, opened_by, cause, updated_at) "
            "VALUES (?, ?, 'customer', ?, ?)",
            [
                (c.id, c.started_at, c.cause, c.started_at)
                for c in data.conversations
                if c.complaint
            ],
        )
        await conn.executemany(
            """INSERT INTO surveys (conversation_id, customer_id, channel, agent_key, topic,
                   sent_at, nps, nps_at, csat, csat_at, comment)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    s.conversation_id,
                    s.customer_id,
                    s.channel,
                    s.agent_key,
                    s.topic,
                    s.sent_at,
                    s.nps,
                    s.nps_at,
                    s.csat,
                    s.csat_at,
                    s.comment,
                )
                for s in data.surveys
            ],
        )


# --- the reference -----------------------------------------------------------------------


def pct(num: int, den: int) -> float | None:
    return None if den == 0 else num * 100 / den


def type7(values: list[float], p: float) -> float | None:
    if not values:
        return None
    xs = sorted(values)
    h = (len(xs) - 1) * p
    lo = math.floor(h)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def spread(name: str, values: list[float]) -> dict[str, Any]:
    return {
        f"{name}.count": len(values),
        f"{name}.median": type7(values, 0.5),
        f"{name}.mean": sum(values) / len(values) if values else None,
        f"{name}.p90": type7(values, 0.9),
    }


def reachable(c: Customer, t: int) -> bool:
    if c.first_seen_at >= t:
        return False
    before = [(at, r) for at, r in c.changes if at < t]
    return max(before)[1] == 1 if before else True  # latest; on a tie "reachable" wins


def reference_figures(
    convs: list[Conversation],
    surveys: list[Survey],
    customers: list[Customer] | None,
    lo: int,
    hi: int,
    cal: BusinessCalendar,
    everyone: list[Conversation] | None = None,
) -> dict[str, Any]:
    """Every KPI, from the rows of one group (or of everything); ``everyone``: all the
    conversations, where a customer's return is looked for."""
    cohort = [c for c in convs if lo <= c.started_at < hi]
    started = len(cohort)
    resolved = [c for c in cohort if c.resolved_at is not None]
    by_bot = [c for c in resolved if c.handed_off_at is None]
    abandoned = [c for c in cohort if c.abandoned_at is not None]
    answers = [s.nps for s in surveys if s.nps_at is not None and lo <= s.nps_at < hi]
    ratings = [s.csat for s in surveys if s.csat_at is not None and lo <= s.csat_at < hi]
    sent = [s for s in surveys if lo <= s.sent_at < hi]
    promoters = sum(1 for a in answers if a is not None and a >= 9)
    passives = sum(1 for a in answers if a is not None and 7 <= a <= 8)
    detractors = sum(1 for a in answers if a is not None and a <= 6)
    n_answers = promoters + passives + detractors
    rated = [r for r in ratings if r is not None]

    def secs(a: int, b: int) -> float:
        return max(b - a, 0) / 1000

    def business(a: int, b: int) -> float:
        return cal.business_seconds(
            datetime.fromtimestamp(a / 1000, UTC), datetime.fromtimestamp(b / 1000, UTC)
        )

    first = [(c.started_at, c.first_response_at) for c in cohort if c.first_response_at is not None]
    agent = [
        (c.handed_off_at, c.first_agent_response_at)
        for c in cohort
        if c.handed_off_at is not None and c.first_agent_response_at is not None
    ]
    out: dict[str, Any] = {
        "conversations.started": started,
        "conversations.resolved": len(resolved),
        "conversations.resolved_by_bot": len(by_bot),
        "conversations.handed_off": sum(1 for c in cohort if c.handed_off_at is not None),
        "conversations.abandoned": len(abandoned),
        "nps.promoters": promoters,
        "nps.passives": passives,
        "nps.detractors": detractors,
        "nps.responses": n_answers,
        "nps.score": None if n_answers == 0 else (promoters - detractors) * 100 / n_answers,
        "csat.responses": len(rated),
        "csat.score_pct": pct(sum(1 for r in rated if r >= 4), len(rated)),
        "csat.average": sum(rated) / len(rated) if rated else None,
        **spread("first_response_s", [secs(a, b) for a, b in first]),
        **spread("agent_first_response_s", [secs(a, b) for a, b in agent]),
        **spread("first_response_business_s", [business(a, b) for a, b in first]),
        **spread("agent_first_response_business_s", [business(a, b) for a, b in agent]),
        "abandonment_rate_pct": pct(len(abandoned), started),
        "bot_resolution_rate_pct": pct(len(by_bot), len(resolved)),
        "surveys.sent": len(sent),
        "surveys.answered": sum(1 for s in sent if s.nps is not None),
        "survey_response_rate_pct": pct(sum(1 for s in sent if s.nps is not None), len(sent)),
        **spread("resolution_s", [secs(c.started_at, c.resolved_at) for c in resolved]),
        **spread(
            "resolution_business_s", [business(c.started_at, c.resolved_at) for c in resolved]
        ),
    }
    causes: dict[str, int] = {}
    for c in cohort:
        if c.complaint:
            causes[c.cause or UNSET_CAUSE] = causes.get(c.cause or UNSET_CAUSE, 0) + 1
    out["complaints.count"] = sum(causes.values())
    out["complaints.by_cause"] = causes

    def came_back(c: Conversation) -> bool:
        assert c.resolved_at is not None
        return any(
            n.customer_id == c.customer_id
            and c.resolved_at < n.started_at <= c.resolved_at + RECONTACT_MS
            for n in everyone or convs
        )

    returned = sum(1 for c in resolved if came_back(c))
    out["recontacts.resolved"] = len(resolved)
    out["recontacts.returned"] = returned
    out["recontact_rate_pct"] = pct(returned, len(resolved))
    if customers is None:
        out.update(
            dict.fromkeys(
                (
                    "retention.start_customers",
                    "retention.end_customers",
                    "retention.new_customers",
                    "retention.rate_pct",
                )
            )
        )
    else:
        s = sum(1 for c in customers if reachable(c, lo))
        e = sum(1 for c in customers if reachable(c, hi))
        n = sum(1 for c in customers if lo <= c.first_seen_at < hi)
        out.update(
            {
                "retention.start_customers": s,
                "retention.end_customers": e,
                "retention.new_customers": n,
                "retention.rate_pct": None if s == 0 else (e - n) * 100 / s,
            }
        )
    return out


def conversation_key(c: Conversation, by: str) -> str | None:
    return {
        "channel": c.channel,
        "agent": c.agent_key,
        "topic": c.tag or c.topic,
        "touchpoint": c.touchpoint,
        "stage": c.stage,
        "cause": (c.cause or UNSET_CAUSE) if c.complaint else None,
    }[by]


def survey_key(s: Survey, by: str, data: Data) -> str | None:
    if by in ("touchpoint", "stage", "cause"):  # the survey's conversation's
        conv = next(c for c in data.conversations if c.id == s.conversation_id)
        return conversation_key(conv, by)
    return {"channel": s.channel, "agent": s.agent_key, "topic": s.topic}[by]


def reference(data: Data, period: Period, by: str | None) -> dict[str, dict[str, Any]]:
    """{"(total)": figures, key: figures…}; groups are the keys active in the period."""
    cal = calendar()
    lo, hi = ms(period.start), ms(period.end)
    out = {
        "(total)": reference_figures(data.conversations, data.surveys, data.customers, lo, hi, cal)
    }
    everyone = data.conversations
    if by is None:
        return out
    active: set[str | None] = set()
    active |= {conversation_key(c, by) for c in data.conversations if lo <= c.started_at < hi}
    for s in data.surveys:
        if any(t is not None and lo <= t < hi for t in (s.nps_at, s.csat_at, s.sent_at)):
            active.add(survey_key(s, by, data))
    if by == "cause":  # causes of the previous period only are listed too (at 0 now)
        before = period.previous()
        was_lo, was_hi = ms(before.start), ms(before.end)
        active |= {
            conversation_key(c, by)
            for c in data.conversations
            if c.complaint and was_lo <= c.started_at < was_hi
        }
    for key in active:
        convs = [c for c in data.conversations if conversation_key(c, by) == key]
        surveys = [s for s in data.surveys if survey_key(s, by, data) == key]
        customers = [c for c in data.customers if c.channel == key] if by == "channel" else None
        out[NONE_KEY if key is None else key] = reference_figures(
            convs, surveys, customers, lo, hi, cal, everyone
        )
    return out


# --- the production side, flattened the same way ----------------------------------------


def flat(f: Figures) -> dict[str, Any]:
    c, n, s, r, t = f.conversations, f.nps, f.csat, f.retention, f.times
    out: dict[str, Any] = {
        "conversations.started": c.started,
        "conversations.resolved": c.resolved,
        "conversations.resolved_by_bot": c.resolved_by_bot,
        "conversations.handed_off": c.handed_off,
        "conversations.abandoned": c.abandoned,
        "nps.promoters": n.promoters,
        "nps.passives": n.passives,
        "nps.detractors": n.detractors,
        "nps.responses": n.responses,
        "nps.score": n.score,
        "csat.responses": s.responses,
        "csat.score_pct": s.score_pct,
        "csat.average": s.average,
        "abandonment_rate_pct": f.abandonment_rate_pct,
        "bot_resolution_rate_pct": f.bot_resolution_rate_pct,
        "surveys.sent": f.surveys.sent,
        "surveys.answered": f.surveys.answered,
        "survey_response_rate_pct": f.survey_response_rate_pct,
        "retention.start_customers": r.start_customers if r else None,
        "retention.end_customers": r.end_customers if r else None,
        "retention.new_customers": r.new_customers if r else None,
        "retention.rate_pct": r.rate_pct if r else None,
        "complaints.count": f.closing.complaint_count,
        "complaints.by_cause": dict(f.closing.complaints),
        "recontacts.resolved": f.closing.resolved,
        "recontacts.returned": f.closing.returned,
        "recontact_rate_pct": f.closing.recontact_rate_pct,
    }
    for name, d in (
        ("first_response_s", t.first),
        ("agent_first_response_s", t.agent_first),
        ("first_response_business_s", t.first_business),
        ("agent_first_response_business_s", t.agent_first_business),
        ("resolution_s", f.closing.resolution),
        ("resolution_business_s", f.closing.resolution_business),
    ):
        out.update(
            {
                f"{name}.count": d.count,
                f"{name}.median": d.median,
                f"{name}.mean": d.mean,
                f"{name}.p90": d.p90,
            }
        )
    return out


def actual(report: KpiReport) -> dict[str, dict[str, Any]]:
    out = {"(total)": flat(report.figures)}
    out.update({g.key: flat(g.figures) for g in report.groups})
    return out


def assert_same(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    assert sorted(got) == sorted(want), "the groups differ"
    for group, fields in want.items():
        assert sorted(got[group]) == sorted(fields)
        for name, value in fields.items():
            found = got[group][name]
            if value is None:
                assert found is None, f"{group} {name}: expected None, got {found}"
            elif isinstance(value, dict):
                assert found == value, f"{group} {name}"
            else:
                assert found == pytest.approx(value, rel=1e-9, abs=1e-6), f"{group} {name}"


LIVE, CACHED = 100_000, 1  # KpiQueries.cache_days: never / whenever a whole UTC day fits


async def run_report(
    data: Data, period: Period, by: str | None, *, cache_days: int = LIVE
) -> KpiReport:
    with tempfile.TemporaryDirectory() as folder:
        db = await Database.open(Path(folder) / "kpi.db")
        try:
            await insert(db, data)
            queries = KpiQueries(db, cache_days=cache_days)
            return await queries.report(period, calendar=calendar(), by=by)
        finally:
            await db.close()


# --- the properties ----------------------------------------------------------------------


BREAKDOWN = st.sampled_from([None, "channel", "agent", "topic", "touchpoint", "stage", "cause"])


@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(), period=periods(), by=BREAKDOWN, cached=st.booleans())
def test_sql_kpis_equal_the_reference(
    data: Data, period: Period, by: str | None, cached: bool
) -> None:
    report = asyncio.run(run_report(data, period, by, cache_days=CACHED if cached else LIVE))
    assert report.by == by
    assert_same(actual(report), reference(data, period, by))
    if by == "cause":
        assert_cause_trend(report, data, period)
    if by == "agent":
        for g in report.groups:
            assert g.label == (
                AGENTS[g.key] if g.key in AGENTS and g.figures.conversations.started else ""
            )


def assert_cause_trend(report: KpiReport, data: Data, period: Period) -> None:
    """Each cause's share of the period's complaints, and its count the period before."""

    def counts(p: Period) -> dict[str, int]:
        lo, hi = ms(p.start), ms(p.end)
        found: dict[str, int] = {}
        for c in data.conversations:
            if c.complaint and lo <= c.started_at < hi:
                found[c.cause or UNSET_CAUSE] = found.get(c.cause or UNSET_CAUSE, 0) + 1
        return found

    now, before = counts(period), counts(period.previous())
    total = sum(now.values())
    want = {
        k: {
            "share_pct": round(now.get(k, 0) * 100 / total, 2) if total else None,
            "previous_count": before.get(k, 0),
            "change": now.get(k, 0) - before.get(k, 0),
        }
        for k in set(now) | set(before)
    }
    got = {g.key: dict(g.extra) for g in report.groups if g.key != NONE_KEY}
    assert got == want


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets())
def test_a_period_without_activity_has_counts_of_zero_and_no_scores(data: Data) -> None:
    period = Period.of_days(date(2025, 1, 6), date(2025, 1, 13), PARIS)  # before any data
    report = asyncio.run(run_report(data, period, "channel"))
    assert report.groups == ()
    f = report.figures
    assert f.conversations.started == 0
    assert f.nps.score is None
    assert f.csat.score_pct is None
    assert f.times.first.median is None
    assert f.abandonment_rate_pct is None
    assert f.retention is not None
    assert f.retention.start_customers == 0
    assert f.retention.rate_pct is None
    assert f.closing.resolution.median is None
    assert f.closing.resolution.count == 0
    assert f.closing.complaint_count == 0
    assert f.closing.recontact_rate_pct is None
    assert report.to_json()["resolution_s"] == {
        "median": None,
        "mean": None,
        "p90": None,
        "count": 0,
    }
    assert report.to_json()["complaints"] == {"count": 0, "by_cause": {}}


def test_period_bounds_are_half_open_across_the_autumn_change() -> None:
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; this local day lasts 25 hours.
    period = Period.of_days(date(2026, 10, 25), date(2026, 10, 26), PARIS)
    lo, hi = ms(period.start), ms(period.end)
    assert hi - lo == 25 * 3_600_000
    data = Data(customers=[Customer(1, "telegram", lo - 1)])
    for i, started in enumerate((lo - 1, lo, hi - 1, hi), start=1):
        data.conversations.append(
            Conversation(
                i,
                1,
                "telegram",
                started,
                first_response_at=started + 1000,
                resolved_at=started + 3_600_000,  # across the fold: one hour of real time
                complaint=i % 2 == 0,
            )
        )
    report = asyncio.run(run_report(data, period, None))
    assert report.figures.closing.resolution.median == 3600.0
    assert report.figures.conversations.started == 2  # lo and hi − 1, not lo − 1 nor hi
    assert report.figures.times.first.median == 1.0
    assert_same(actual(report), reference(data, period, None))


def test_retention_follows_reachability_history() -> None:
    period = Period.of_days(date(2026, 3, 23), date(2026, 3, 30), PARIS)
    lo = ms(period.start)
    data = Data(
        customers=[
            Customer(1, "telegram", lo - DAY_MS),  # stays
            Customer(2, "telegram", lo - DAY_MS, [(lo - 10, 0)]),  # gone before the start
            Customer(3, "slack", lo - DAY_MS, [(lo + 10, 0)]),  # leaves during the period
            Customer(4, "slack", lo - DAY_MS, [(lo - 10, 0), (lo + 10, 1)]),  # comes back
            Customer(5, "web", lo + DAY_MS),  # new
            Customer(6, "web", lo - DAY_MS, [(lo - 10, 0), (lo - 10, 1)]),  # tie: reachable
        ]
    )
    report = asyncio.run(run_report(data, period, "channel"))
    r = report.figures.retention
    assert r is not None
    assert (r.start_customers, r.end_customers, r.new_customers) == (3, 4, 1)
    assert r.rate_pct == pytest.approx((4 - 1) * 100 / 3)
    assert report.groups == ()  # no conversation or survey: no activity to break down


# --- the day cache -----------------------------------------------------------------------

CHANGES = st.sampled_from(
    ["resolve", "retag", "unanswer", "move", "hand_off", "abandon", "rechannel", "add"]
)


async def change(db: Database, data: Data, kind: str, index: int, delta: int) -> None:
    """One engine-like write (through SQL, so the triggers fire), mirrored in ``data``."""
    if kind == "add" or not data.conversations:
        if not data.customers:
            return
        customer = data.customers[index % len(data.customers)]
        c = Conversation(
            max((c.id for c in data.conversations), default=0) + 1,
            customer.id,
            customer.channel,
            customer.first_seen_at + abs(delta),
            first_response_at=customer.first_seen_at + abs(delta) + 1500,
            topic="facture",
        )
        data.conversations.append(c)
        async with db.transaction() as conn:
            await conn.execute(
                "INSERT INTO conversations (id, customer_id, channel, address_key, chat_id, "
                "language, state, topic, started_at, updated_at, first_response_at) "
                "VALUES (?, ?, ?, ?, '1', 'fr', 'closed', ?, ?, ?, ?)",
                (
                    c.id,
                    c.customer_id,
                    c.channel,
                    f"new:{c.id}",
                    c.topic,
                    c.started_at,
                    c.started_at,
                    c.first_response_at,
                ),
            )
        return
    c = data.conversations[index % len(data.conversations)]
    updates: dict[str, Any]
    if kind == "resolve":
        updates = {"resolved_at": c.started_at + abs(delta), "resolved_by": "bot"}
    elif kind == "retag":
        updates = {"tag": "litige" if c.tag != "litige" else None}
    elif kind == "unanswer":
        updates = {"first_response_at": None}
    elif kind == "move":  # to another UTC day: both days' cache rows must go
        updates = {"started_at": c.started_at + delta}
    elif kind == "abandon":
        updates = {"abandoned_at": c.started_at + abs(delta)}
    elif kind == "rechannel":
        updates = {"channel": "web" if c.channel != "web" else "slack"}
    else:
        updates = {
            "handed_off_at": c.started_at + abs(delta),
            "agent_key": "slack:UA",
            "first_agent_response_at": c.started_at + 2 * abs(delta),
        }
    for name, value in updates.items():
        setattr(c, name, value)
    async with db.transaction() as conn:
        await conn.execute(
            f"UPDATE conversations SET {', '.join(f'{n} = ?' for n in updates)} WHERE id = ?",
            [*updates.values(), c.id],
        )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=datasets(), script=st.data())
def test_the_day_cache_follows_every_change(data: Data, script: st.DataObject) -> None:
    # The whole window and a little more: most rows come from the cache.
    first = data.conversations[0].started_at if data.conversations else 0
    window = max(
        (w for w in WINDOWS if ms(datetime.combine(w, datetime.min.time(), PARIS)) <= first),
        default=WINDOWS[0],
    )
    period = Period.of_days(window - timedelta(days=1), window + timedelta(days=16), PARIS)
    jump = st.builds(
        lambda days, jitter: days * DAY_MS + jitter,
        st.sampled_from([-2, -1, 0, 1, 2]),
        st.integers(-3_600_000, 3_600_000),
    )
    steps = script.draw(
        st.lists(st.tuples(CHANGES, st.sampled_from(range(40)), jump), min_size=1, max_size=6)
    )

    async def scenario() -> None:
        with tempfile.TemporaryDirectory() as folder:
            db = await Database.open(Path(folder) / "kpi.db")
            try:
                await insert(db, data)
                queries = KpiQueries(db, cache_days=CACHED)
                before = await queries.report(period, calendar=calendar())  # fills the cache
                assert_same(actual(before), reference(data, period, None))
                for kind, index, delta in steps:
                    await change(db, data, kind, index, delta)
                for by in (None, "channel", "agent", "topic"):
                    after = await queries.report(period, calendar=calendar(), by=by)
                    assert_same(actual(after), reference(data, period, by))
            finally:
                await db.close()

    asyncio.run(scenario())


async def test_the_cache_stores_whole_utc_days_and_is_dropped_by_writes(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "kpi.db")
    try:
        t0 = ms(datetime(2026, 3, 23, tzinfo=UTC))
        data = Data(customers=[Customer(1, "web", t0)])
        for i in range(6):
            data.conversations.append(
                Conversation(i + 1, 1, "web", t0 + i * DAY_MS // 2, first_response_at=t0 + i)
            )
        await insert(db, data)
        period = Period.of_days(date(2026, 3, 22), date(2026, 3, 29), PARIS)
        queries = KpiQueries(db, cache_days=CACHED)
        report = await queries.report(period, calendar=calendar())
        assert report.figures.conversations.started == 6
        days = await db.fetchall("SELECT day, rows FROM kpi_cohort_days ORDER BY day")
        first = t0 // DAY_MS
        stored = {r["day"]: r["rows"] for r in days}
        # Paris 22 Mar 00:00 is 21 Mar 23:00 UTC: UTC days 22…27 Mar are whole, 28 Mar is not.
        assert stored == {
            first - 1: 0,
            first: 2,
            first + 1: 2,
            first + 2: 2,
            first + 3: 0,
            first + 4: 0,
        }
        async with db.transaction() as conn:
            await conn.execute("UPDATE conversations SET resolved_at = ? WHERE id = 3", (t0,))
        left = await db.fetchall("SELECT day FROM kpi_cohort_days ORDER BY day")
        assert first + 1 not in [r["day"] for r in left]
        assert first in [r["day"] for r in left]
        report = await queries.report(period, calendar=calendar())
        assert report.figures.conversations.resolved == 1
    finally:
        await db.close()


# --- what the engine stores ------------------------------------------------------------


async def test_kpis_of_conversations_run_through_the_engine(
    harness: Harness, clock: FakeClock
) -> None:
    """The contract with bot/conversation/engine.py: its rows give the KPIs a manager expects."""
    assert harness.db is not None
    start = clock.now()
    await harness.say("Quel est le délai de livraison ?")  # the bot answers from the KB
    clock.advance(timedelta(seconds=5))
    await harness.press("Oui, merci")  # resolved by the bot
    await harness.press("9")  # a promoter
    await harness.say("Je veux parler à un conseiller", user="43")
    clock.advance(timedelta(minutes=3))
    await harness.agent_says("Bonjour, je regarde")  # agent's first reply: 3 minutes
    await harness.agent_does(AgentActionKind.RESOLVE, tag="litige")
    clock.advance(timedelta(seconds=10))
    await harness.press("3", user="43")  # a detractor…
    await harness.leaves(user="43")  # …who then blocks the bot
    period = Period(start - timedelta(hours=1), clock.now() + timedelta(hours=1))
    report = await KpiQueries(harness.db).report(period, calendar=calendar(), by="topic")
    f = report.figures
    assert (f.conversations.started, f.conversations.resolved) == (2, 2)
    assert (f.conversations.resolved_by_bot, f.conversations.handed_off) == (1, 1)
    assert (f.nps.promoters, f.nps.detractors, f.nps.score) == (1, 1, 0.0)
    assert f.times.agent_first.median == 180.0
    assert f.times.first.count == 2
    assert f.surveys == SurveyCounts(sent=2, answered=2)
    assert f.retention == Retention(start_customers=0, end_customers=1, new_customers=2)
    assert [g.key for g in report.groups] == ["litige", "livraison"]
    assert report.groups[0].figures.nps.detractors == 1


def test_recontacts_count_returns_within_seven_days_after_the_resolution() -> None:
    period = Period.of_days(date(2026, 3, 23), date(2026, 3, 30), PARIS)
    t = ms(period.start) + 10 * 3_600_000
    data = Data(customers=[Customer(i, "telegram", t - DAY_MS) for i in (1, 2, 3, 4)])
    convs = data.conversations
    convs.append(Conversation(1, 1, "telegram", t, resolved_at=t + 1000))
    convs.append(Conversation(2, 1, "telegram", t + 1000 + RECONTACT_MS))  # at the limit: back
    convs.append(Conversation(3, 2, "telegram", t, resolved_at=t + 1000))
    convs.append(Conversation(4, 2, "telegram", t + 1001 + RECONTACT_MS))  # 1 ms too late
    convs.append(Conversation(5, 3, "telegram", t, resolved_at=t + 5000))
    convs.append(Conversation(6, 3, "telegram", t + 10))  # started before the resolution
    convs.append(Conversation(7, 4, "telegram", t + 20))  # someone else's return
    report = asyncio.run(run_report(data, period, None))
    closing = report.figures.closing
    assert (closing.resolved, closing.returned) == (3, 1)
    assert closing.recontact_rate_pct == pytest.approx(100 / 3)
    assert_same(actual(report), reference(data, period, None))
