"""The SQL of the KPIs: aggregates over index ranges, following the period
semantics of bot/insights/kpi.py.

Each source is read once per report through a covering index of migration 0002:
conversations by ``started_at``, surveys by ``nps_at``, ``csat_at`` and ``sent_at``,
customers by ``first_seen_at``, reachability changes by customer. Counts are computed
by SQLite. Response-time percentiles need every value of the cohort, and SQLite's
sorter is slow on a million rows, so the cohort's timestamps are fetched as plain
integer tuples and summarized with numpy, which also measures business-hours
durations without a per-row Python loop (see ``bot.insights.durations.BusinessTime``).

Fetching a million rows through Python still costs seconds, so long periods (from
``cache_days`` whole UTC days on) read their whole days from ``kpi_cohort_days``: one
row per UTC day holding that day's cohort columns as packed arrays, rebuilt on demand
inside a write transaction and dropped by triggers whenever one of its conversations
changes (migration 0002). Partial days at the period's edges are always read live.
The cohort and its day cache are ``storage/kpi_cohort.py``; the other sources are here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.calendar import BusinessCalendar
from bot.insights.durations import BusinessTime
from bot.insights.followup_kpi import FollowupFigures, followup_figures
from bot.insights.kpi import (
    BREAKDOWNS,
    NONE_KEY,
    Closing,
    Csat,
    Figures,
    Group,
    KpiReport,
    Nps,
    Period,
    ResponseTimes,
    Retention,
    SurveyCounts,
    Volumes,
)
from storage.followups import followup_kpi_rows
from storage.kpi_closing import closing_figures, survey_key
from storage.kpi_cohort import COHORT, CohortQueries

# The group key of each breakdown of survey rows.
_SURVEY_KEY = {
    "channel": "channel",
    "agent": "agent_key",
    "topic": "topic",
    **{by: survey_key(by) for by in ("touchpoint", "stage", "cause")},
}

# Buckets of the response-time distribution (upper bounds, seconds) for the digest chart.
HISTOGRAM_EDGES = (10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

# Aggregates filling ``Nps`` and ``Csat`` (in field order) from survey rows.
NPS_COUNTS = """count(CASE WHEN nps >= 9 THEN 1 END),
               count(CASE WHEN nps BETWEEN 7 AND 8 THEN 1 END),
               count(CASE WHEN nps <= 6 THEN 1 END)"""
CSAT_COUNTS = "count(csat), count(CASE WHEN csat >= 4 THEN 1 END), COALESCE(sum(csat), 0)"


@dataclass(frozen=True, slots=True)
class DetractorComment:
    nps: int
    comment: str
    topic: str | None
    channel: str
    agent_key: str | None
    at: int  # nps_at, UTC ms


@dataclass(frozen=True, slots=True)
class Satisfaction:
    """NPS and CSAT of one period, for trends."""

    period: Period
    nps: Nps
    csat: Csat


def _key(value: Any) -> str:
    return NONE_KEY if value is None else str(value)


def _order(key: str) -> tuple[bool, str]:
    """Groups in key order, "(none)" last."""
    return (key == NONE_KEY, key)


class KpiQueries(CohortQueries):
    """KPI reads on an open database.

    Only long reports write, to fill the day cache (see the module docstring); a
    read-only or busy database just makes them read live.
    """

    async def _grouped(
        self, select: str, source: str, params: Sequence[Any], key: str | None
    ) -> list[tuple[Any, ...]]:
        """``SELECT key, <select> <source>``, grouped by ``key`` when given.

        Without a key there is no GROUP BY at all: SQLite would sort every row to group
        them by a constant.
        """
        if key is None:
            return await self._tuples(f"SELECT NULL, {select} {source}", params)
        return await self._tuples(f"SELECT {key}, {select} {source} GROUP BY 1", params)

    # --- the report ----------------------------------------------------------------

    async def report(
        self, period: Period, *, calendar: BusinessCalendar, by: str | None = None
    ) -> KpiReport:
        """Every KPI of ``period``, with a breakdown by channel, agent or topic if asked."""
        if by is not None and by not in BREAKDOWNS:
            raise ValueError(f"unknown breakdown {by!r} (expected one of {', '.join(BREAKDOWNS)})")
        lo, hi = period.start_ms, period.end_ms
        cohort, cohort_keys = await self._cohort(lo, hi, by, BusinessTime(calendar))
        nps = await self._nps(lo, hi, by)
        csat = await self._csat(lo, hi, by)
        surveys = await self._surveys(lo, hi, by)
        retention = await self._retention(lo, hi, by_channel=by == "channel")
        followups = await followup_kpi_rows(self.db, lo, hi, by)
        business = BusinessTime(calendar)
        closing_total = await closing_figures(self._tuples, lo, hi, None, business)
        total = Figures(
            conversations=sum(cohort.volumes(), Volumes()),
            nps=sum(nps.values(), Nps()),
            csat=sum(csat.values(), Csat()),
            times=cohort.total_times(),
            surveys=sum(surveys.values(), SurveyCounts()),
            retention=sum(retention.values(), Retention()),
            followups=followup_figures(row[1:] for row in followups),
            closing=closing_total.get(NONE_KEY, Closing()),
        )
        if by is None:
            return KpiReport(period=period, figures=total)
        closing = await closing_figures(self._tuples, lo, hi, by, business)
        volumes = dict(zip(cohort_keys, cohort.volumes(), strict=True))
        times = dict(zip(cohort_keys, cohort.times(), strict=True))
        labels = await self._agent_names(lo, hi, cohort_keys) if by == "agent" else {}
        by_key = _followups_by_key(followups)
        keys = sorted(set(cohort_keys) | set(nps) | set(csat) | set(surveys) | set(by_key),
                      key=_order)  # fmt: skip
        extras: dict[str, tuple[tuple[str, Any], ...]] = {}
        if by == "cause":
            extras, gone = await self._cause_trend(period, business, closing, total)
            keys = sorted(set(keys) | gone, key=_order)
        groups = tuple(
            Group(
                key=key,
                label=labels.get(key, ""),
                extra=extras.get(key, ()),
                figures=Figures(
                    conversations=volumes.get(key, Volumes()),
                    nps=nps.get(key, Nps()),
                    csat=csat.get(key, Csat()),
                    times=times.get(key, ResponseTimes()),
                    surveys=surveys.get(key, SurveyCounts()),
                    retention=retention.get(key, Retention()) if by == "channel" else None,
                    followups=by_key.get(key, FollowupFigures()),
                    closing=closing.get(key, Closing()),
                ),
            )
            for key in keys
        )
        return KpiReport(period=period, figures=total, by=by, groups=groups)

    async def _cause_trend(
        self, period: Period, business: BusinessTime, now: dict[str, Closing], total: Figures
    ) -> tuple[dict[str, tuple[tuple[str, Any], ...]], set[str]]:
        """Per root cause: share of the period's complaints, count in the previous period
        and the change; plus the causes seen only in the previous period (now at 0)."""
        before = period.previous()
        previous = await closing_figures(
            self._tuples, before.start_ms, before.end_ms, "cause", business
        )
        all_complaints = total.closing.complaint_count
        extras: dict[str, tuple[tuple[str, Any], ...]] = {
            NONE_KEY: (("share_pct", None), ("previous_count", None), ("change", None))
        }
        for key in set(now) | set(previous):
            if key == NONE_KEY:
                continue
            count = now[key].complaint_count if key in now else 0
            was = previous[key].complaint_count if key in previous else 0
            share = round(100.0 * count / all_complaints, 2) if all_complaints else None
            extras[key] = (("share_pct", share), ("previous_count", was), ("change", count - was))
        return extras, set(extras) - set(now) - {NONE_KEY}

    async def _agent_names(self, lo: int, hi: int, agents: Sequence[str]) -> dict[str, str]:
        """Each agent's name on their latest conversation of the period."""
        names = {}
        for agent in agents:
            if agent == NONE_KEY:
                continue
            rows = await self._tuples(
                f"""SELECT agent_name {COHORT} AND agent_key = ?
                    AND agent_name IS NOT NULL AND agent_name <> ''
                    ORDER BY started_at DESC LIMIT 1""",
                (lo, hi, agent),
            )
            if rows:
                names[agent] = str(rows[0][0])
        return names

    async def _nps(self, lo: int, hi: int, by: str | None) -> dict[str, Nps]:
        rows = await self._grouped(
            NPS_COUNTS,
            "FROM surveys INDEXED BY surveys_kpi_nps WHERE nps_at >= ? AND nps_at < ?",
            (lo, hi),
            _SURVEY_KEY[by] if by else None,
        )
        return {_key(r[0]): Nps(*r[1:]) for r in rows}

    async def _csat(self, lo: int, hi: int, by: str | None) -> dict[str, Csat]:
        rows = await self._grouped(
            CSAT_COUNTS,
            "FROM surveys INDEXED BY surveys_kpi_csat WHERE csat_at >= ? AND csat_at < ?",
            (lo, hi),
            _SURVEY_KEY[by] if by else None,
        )
        return {_key(r[0]): Csat(*r[1:]) for r in rows}

    async def _surveys(self, lo: int, hi: int, by: str | None) -> dict[str, SurveyCounts]:
        rows = await self._grouped(
            "count(*), count(nps)",
            "FROM surveys INDEXED BY surveys_kpi_sent WHERE sent_at >= ? AND sent_at < ?",
            (lo, hi),
            _SURVEY_KEY[by] if by else None,
        )
        return {_key(r[0]): SurveyCounts(*r[1:]) for r in rows}

    async def _retention(self, lo: int, hi: int, *, by_channel: bool) -> dict[str, Retention]:
        """S, E and N per customer channel (a single NONE_KEY group when not split).

        Known at end = known at start + new. Unsplit, known at start = all customers −
        those first seen from ``lo`` on: SQLite counts a whole table from its page
        headers, so a recent period never steps through the whole history.
        """
        source = "FROM customers INDEXED BY customers_first_seen WHERE first_seen_at >= ? AND "
        key = "channel" if by_channel else None
        new_rows = await self._grouped("count(*)", source + "first_seen_at < ?", (lo, hi), key)
        new = {_key(k): int(n) for k, n in new_rows}
        if by_channel:
            known_rows = await self._grouped(
                "count(*)",
                "FROM customers INDEXED BY customers_first_seen WHERE first_seen_at < ?",
                (lo,),
                key,
            )
            known = {_key(k): int(n) for k, n in known_rows}
        else:
            everyone = await self._tuples("SELECT count(*) FROM customers")
            later = await self._tuples(
                "SELECT count(*) FROM customers INDEXED BY customers_first_seen "
                "WHERE first_seen_at >= ?",
                (lo,),
            )
            known = {NONE_KEY: int(everyone[0][0]) - int(later[0][0])}
        gone_start = await self._unreachable_at(lo, by_channel)
        gone_end = await self._unreachable_at(hi, by_channel)
        return {
            k: Retention(
                start_customers=known.get(k, 0) - gone_start.get(k, 0),
                end_customers=known.get(k, 0) + new.get(k, 0) - gone_end.get(k, 0),
                new_customers=new.get(k, 0),
            )
            for k in sorted(set(known) | set(new), key=_order)
        }

    async def _unreachable_at(self, at: int, by_channel: bool) -> dict[str, int]:
        """Customers whose latest reachability change before ``at`` made them unreachable.

        One pass over the covering index: the latest change is the greatest ``at`` (on
        a tie, "reachable" wins), found as max(at × 2 + reachable). Changes never
        precede a customer's first conversation, so these customers are all known
        before ``at``; only the split by channel needs the customers table.
        """
        latest = """SELECT customer_id, max(at * 2 + reachable) AS latest
                    FROM customer_reachability INDEXED BY customer_reachability_kpi
                    WHERE at < ? GROUP BY customer_id"""
        if by_channel:
            rows = await self._grouped(
                "count(*)",
                f"FROM ({latest}) AS r JOIN customers AS c ON c.id = r.customer_id "
                "WHERE r.latest % 2 = 0",
                (at,),
                "c.channel",
            )
        else:
            rows = await self._tuples(
                f"SELECT NULL, count(*) FROM ({latest}) AS r WHERE latest % 2 = 0", (at,)
            )
        return {_key(k): int(n) for k, n in rows}

    # --- for the digest ------------------------------------------------------------

    async def satisfaction(self, periods: Sequence[Period]) -> list[Satisfaction]:
        """NPS and CSAT of each period (the trend lines of the digest chart)."""
        series = []
        for period in periods:
            lo, hi = period.start_ms, period.end_ms
            nps = sum((await self._nps(lo, hi, None)).values(), Nps())
            csat = sum((await self._csat(lo, hi, None)).values(), Csat())
            series.append(Satisfaction(period, nps, csat))
        return series

    async def detractor_comments(self, period: Period, limit: int = 3) -> list[DetractorComment]:
        """The latest commented NPS answers of 0–6 in the period, newest first."""
        rows = await self._tuples(
            """SELECT nps, comment, topic, channel, agent_key, nps_at
               FROM surveys INDEXED BY surveys_detractor_comments
               WHERE nps_at >= ? AND nps_at < ?
                 AND nps <= 6 AND comment IS NOT NULL AND comment <> ''
               ORDER BY nps_at DESC, id DESC LIMIT ?""",
            (period.start_ms, period.end_ms, limit),
        )
        return [
            DetractorComment(int(r[0]), str(r[1]), r[2], str(r[3]), r[4], int(r[5])) for r in rows
        ]

    async def response_histogram(
        self, period: Period, edges: Sequence[int] = HISTOGRAM_EDGES
    ) -> tuple[list[int], list[int]]:
        """How many first / agent first responses fall in each bucket below ``edges`` (s)."""
        cases = " ".join(f"WHEN d < {int(e) * 1000} THEN {i}" for i, e in enumerate(edges))
        buckets = len(edges) + 1
        result = []
        for start, end in (
            ("started_at", "first_response_at"),
            ("handed_off_at", "first_agent_response_at"),
        ):
            rows = await self._tuples(
                f"""SELECT CASE {cases} ELSE {buckets - 1} END, count(*)
                    FROM (SELECT CASE WHEN {end} > {start} THEN {end} - {start} ELSE 0 END
                            AS d {COHORT} AND {start} IS NOT NULL AND {end} IS NOT NULL) AS t
                    GROUP BY 1""",
                (period.start_ms, period.end_ms),
            )
            counts = [0] * buckets
            for bucket, n in rows:
                counts[int(bucket)] = int(n)
            result.append(counts)
        return result[0], result[1]

    async def first_activity(self) -> int | None:
        """When the first conversation started (UTC ms), None on an empty database."""
        rows = await self._tuples("SELECT min(started_at) FROM conversations")
        return int(rows[0][0]) if rows and rows[0][0] is not None else None


def _followups_by_key(
    rows: Sequence[tuple[str | None, int, int, int | None]],
) -> dict[str, FollowupFigures]:
    """Follow-up figures per group key; none when the breakdown has no follow-up key."""
    grouped: dict[str, list[tuple[int, int, int | None]]] = {}
    for key, opened_at, due_at, contacted_at in rows:
        if key is not None:
            grouped.setdefault(key, []).append((opened_at, due_at, contacted_at))
    return {key: followup_figures(values) for key, values in grouped.items()}
