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
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite
import numpy as np

from bot.calendar import BusinessCalendar
from bot.errors import StorageError
from bot.insights.durations import (
    FLAG_ABANDONED,
    FLAG_HANDED_OFF,
    FLAG_RESOLVED,
    BusinessTime,
    Cohort,
    IntArray,
)
from bot.insights.kpi import (
    BREAKDOWNS,
    NONE_KEY,
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
from storage.database import Database

log = logging.getLogger(__name__)

# The group key of each breakdown, per table.
_CONVERSATION_KEY = {"channel": "channel", "agent": "agent_key", "topic": "COALESCE(tag, topic)"}
_SURVEY_KEY = {"channel": "channel", "agent": "agent_key", "topic": "topic"}

# The conversation flags travel in the bits of started_at above 2^42 ms (year 2109).
_FLAG_SHIFT = 42
_PACKED_START = (
    f"started_at + ((resolved_at IS NOT NULL) * {FLAG_RESOLVED}"
    f" + (abandoned_at IS NOT NULL) * {FLAG_ABANDONED}"
    f" + (handed_off_at IS NOT NULL) * {FLAG_HANDED_OFF}) * {1 << _FLAG_SHIFT}"
)
_COHORT = "FROM conversations INDEXED BY conversations_kpi WHERE started_at >= ? AND started_at < ?"

DAY_MS = 86_400_000
CACHE_VERSION = 1  # bump when _CACHE_ROW changes: older rows are ignored and rebuilt
_CACHE_ROW = np.dtype(
    [
        ("packed", "<i8"),  # started_at with the flags above bit 42
        ("first", "<i8"),  # first_response_at, −1 for NULL
        ("handed", "<i8"),  # handed_off_at
        ("agent", "<i8"),  # first_agent_response_at
        ("channel", "<i4"),  # kpi_keys ids of the three group keys, −1 for NULL
        ("agent_key", "<i4"),
        ("topic", "<i4"),
    ]
)
_CACHE_FIELD = {"channel": "channel", "agent": "agent_key", "topic": "topic"}
_CACHE_CHUNK_DAYS = 31  # days rebuilt per write transaction: keeps the write lock short

# Buckets of the response-time distribution (upper bounds, seconds) for the digest chart.
HISTOGRAM_EDGES = (10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

# Aggregates filling ``Nps`` and ``Csat`` (in field order) from survey rows.
NPS_COUNTS = """count(CASE WHEN nps >= 9 THEN 1 END),
               count(CASE WHEN nps BETWEEN 7 AND 8 THEN 1 END),
               count(CASE WHEN nps <= 6 THEN 1 END)"""
CSAT_COUNTS = "count(csat), count(CASE WHEN csat >= 4 THEN 1 END), ifnull(sum(csat), 0)"


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


class KpiQueries:
    """KPI reads on an open database.

    Only long reports write, to fill the day cache (see the module docstring); a
    read-only or busy database just makes them read live.
    """

    def __init__(self, db: Database, *, cache_days: int = 28) -> None:
        self.db = db
        self.cache_days = cache_days

    async def _tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: much cheaper than ``sqlite3.Row`` for big fetches."""
        async with self.db.conn.execute(sql, params) as cur:
            cur.row_factory = None
            rows: list[tuple[Any, ...]] = list(await cur.fetchall())  # type: ignore[arg-type]
            return rows

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
        total = Figures(
            conversations=sum(cohort.volumes(), Volumes()),
            nps=sum(nps.values(), Nps()),
            csat=sum(csat.values(), Csat()),
            times=cohort.total_times(),
            surveys=sum(surveys.values(), SurveyCounts()),
            retention=sum(retention.values(), Retention()),
        )
        if by is None:
            return KpiReport(period=period, figures=total)
        volumes = dict(zip(cohort_keys, cohort.volumes(), strict=True))
        times = dict(zip(cohort_keys, cohort.times(), strict=True))
        labels = await self._agent_names(lo, hi, cohort_keys) if by == "agent" else {}
        keys = sorted(set(cohort_keys) | set(nps) | set(csat) | set(surveys), key=_order)
        groups = tuple(
            Group(
                key=key,
                label=labels.get(key, ""),
                figures=Figures(
                    conversations=volumes.get(key, Volumes()),
                    nps=nps.get(key, Nps()),
                    csat=csat.get(key, Csat()),
                    times=times.get(key, ResponseTimes()),
                    surveys=surveys.get(key, SurveyCounts()),
                    retention=retention.get(key, Retention()) if by == "channel" else None,
                ),
            )
            for key in keys
        )
        return KpiReport(period=period, figures=total, by=by, groups=groups)

    async def _cohort(
        self, lo: int, hi: int, by: str | None, business: BusinessTime
    ) -> tuple[Cohort, list[str]]:
        """The conversations started in [lo, hi), one row each, and the group keys."""
        first_day, end_day = -(-lo // DAY_MS), hi // DAY_MS
        parts: list[_Rows] = []
        live = [(lo, hi)]
        keys = _Keys()
        if end_day - first_day >= max(self.cache_days, 1):
            await self._fill_cache(first_day, end_day)
            cached, missing = await self._cached(first_day, end_day, by)
            keys = _Keys(await self._known_keys())  # after the read: ids are never removed
            parts.append(cached)
            live = [(lo, first_day * DAY_MS), *missing, (end_day * DAY_MS, hi)]
        for start, end in live:
            if start < end:
                parts.append(await self._live(start, end, by, keys))
        rows = _Rows.concat(parts)
        if by:
            codes, dense = np.unique(rows.codes, return_inverse=True)
            names = [keys.name(int(c)) for c in codes]
        else:
            dense, names = np.zeros(len(rows.codes), dtype=np.int64), [NONE_KEY]
        cohort = Cohort(
            codes=dense.astype(np.int64),
            flags=rows.packed >> _FLAG_SHIFT,
            started=rows.packed & ((1 << _FLAG_SHIFT) - 1),
            first_response=rows.first,
            handed_off=rows.handed,
            first_agent=rows.agent,
            groups=len(names),
            business=business,
        )
        return cohort, names

    async def _live(self, lo: int, hi: int, by: str | None, keys: _Keys) -> _Rows:
        """Cohort rows straight from the covering index.

        Python pays per fetched value, so they come in two shapes: conversations never
        handed off need only (flags + start, first response); the others add the
        handoff and the first agent reply (−1 stands for NULL).
        """
        key = f"{_CONVERSATION_KEY[by]}, " if by else ""
        bot_only = await self._tuples(
            f"SELECT {key}{_PACKED_START}, ifnull(first_response_at, -1) {_COHORT} "
            "AND handed_off_at IS NULL",
            (lo, hi),
        )
        handed = await self._tuples(
            f"SELECT {key}{_PACKED_START}, ifnull(first_response_at, -1), handed_off_at, "
            f"ifnull(first_agent_response_at, -1) {_COHORT} AND handed_off_at IS NOT NULL",
            (lo, hi),
        )
        parts = []
        for rows, width in ((bot_only, 2), (handed, 4)):
            fields = ([("k", "O")] if by else []) + [(f"v{i}", "i8") for i in range(width)]
            table = np.fromiter(rows, dtype=np.dtype(fields), count=len(rows))
            if by:
                ids = (keys.id(k) for k in table["k"])
                codes = np.fromiter(ids, dtype=np.int64, count=len(table))
            else:
                codes = np.zeros(len(table), dtype=np.int64)
            missing = np.full(len(table), -1, dtype=np.int64)
            parts.append(
                _Rows(
                    table["v0"],
                    table["v1"],
                    table["v2"] if width == 4 else missing,
                    table["v3"] if width == 4 else missing,
                    codes,
                )
            )
        return _Rows.concat(parts)

    async def _known_keys(self) -> dict[str, int]:
        return {str(k): int(i) for i, k in await self._tuples("SELECT id, key FROM kpi_keys")}

    async def _cached(
        self, first_day: int, end_day: int, by: str | None
    ) -> tuple[_Rows, list[tuple[int, int]]]:
        """The cached days' rows, and the [start, end) ranges of days not in the cache."""
        rows = await self._tuples(
            "SELECT day, data FROM kpi_cohort_days WHERE day >= ? AND day < ? AND version = ?",
            (first_day, end_day, CACHE_VERSION),
        )
        table = np.frombuffer(b"".join(r[1] for r in rows), dtype=_CACHE_ROW)
        codes = table[_CACHE_FIELD[by]].astype(np.int64) if by else np.zeros(len(table), np.int64)
        cached = _Rows(
            table["packed"].astype(np.int64),
            table["first"].astype(np.int64),
            table["handed"].astype(np.int64),
            table["agent"].astype(np.int64),
            codes,
        )
        present = {int(r[0]) for r in rows}
        missing = [
            (start * DAY_MS, end * DAY_MS)
            for start, end in _runs([d for d in range(first_day, end_day) if d not in present])
        ]
        return cached, missing

    async def _fill_cache(self, first_day: int, end_day: int) -> None:
        """Build the missing days of [first_day, end_day), a few weeks per transaction.

        Reading the rows and storing them in the same write transaction means no
        conversation can change in between: a stored day is exact until a trigger drops it.
        """
        rows = await self._tuples(
            "SELECT day FROM kpi_cohort_days WHERE day >= ? AND day < ? AND version = ?",
            (first_day, end_day, CACHE_VERSION),
        )
        present = {int(r[0]) for r in rows}
        missing = [d for d in range(first_day, end_day) if d not in present]
        for start, end in _runs(missing, _CACHE_CHUNK_DAYS):
            try:
                async with self.db.transaction() as conn:
                    await self._store_days(conn, start, end)
            except (StorageError, sqlite3.OperationalError) as exc:
                log.info("KPI day cache not updated (%s); reading conversations live", exc)
                return

    async def _store_days(self, conn: aiosqlite.Connection, start: int, end: int) -> None:
        async with conn.execute(
            f"""SELECT started_at / {DAY_MS}, {_PACKED_START}, ifnull(first_response_at, -1),
                       ifnull(handed_off_at, -1), ifnull(first_agent_response_at, -1),
                       channel, agent_key, COALESCE(tag, topic) {_COHORT}
                ORDER BY started_at""",
            (start * DAY_MS, end * DAY_MS),
        ) as cur:
            cur.row_factory = None
            rows = list(await cur.fetchall())
        fields = [(f"v{i}", "i8") for i in range(5)] + [("c", "O"), ("a", "O"), ("t", "O")]
        table = np.fromiter(rows, dtype=np.dtype(fields), count=len(rows))
        names = {str(k) for column in ("c", "a", "t") for k in table[column] if k is not None}
        await conn.executemany(
            "INSERT OR IGNORE INTO kpi_keys (key) VALUES (?)", [(k,) for k in sorted(names)]
        )
        async with conn.execute("SELECT id, key FROM kpi_keys") as cur:
            ids: dict[Any, int] = {str(k): int(i) for i, k in await cur.fetchall()}
        ids[None] = -1
        packed = np.empty(len(table), dtype=_CACHE_ROW)
        for column, source in (
            ("packed", "v1"),
            ("first", "v2"),
            ("handed", "v3"),
            ("agent", "v4"),
        ):
            packed[column] = table[source]
        for column, source in (("channel", "c"), ("agent_key", "a"), ("topic", "t")):
            packed[column] = np.fromiter(
                (ids[k] for k in table[source]), dtype=np.int32, count=len(table)
            )
        days = table["v0"]
        bounds = np.searchsorted(days, np.arange(start, end + 1))
        await conn.executemany(
            "INSERT OR REPLACE INTO kpi_cohort_days (day, version, rows, data) VALUES (?, ?, ?, ?)",
            [
                (
                    day,
                    CACHE_VERSION,
                    int(bounds[i + 1] - bounds[i]),
                    packed[bounds[i] : bounds[i + 1]].tobytes(),
                )
                for i, day in enumerate(range(start, end))
            ],
        )

    async def _agent_names(self, lo: int, hi: int, agents: Sequence[str]) -> dict[str, str]:
        """Each agent's name on their latest conversation of the period."""
        names = {}
        for agent in agents:
            if agent == NONE_KEY:
                continue
            rows = await self._tuples(
                f"""SELECT agent_name {_COHORT} AND agent_key = ?
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
                f"SELECT NULL, count(*) FROM ({latest}) WHERE latest % 2 = 0", (at,)
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
                    FROM (SELECT max({end} - {start}, 0) AS d {_COHORT}
                          AND {start} IS NOT NULL AND {end} IS NOT NULL)
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


@dataclass(slots=True)
class _Rows:
    """Cohort columns from one source (−1 = NULL); ``codes`` are kpi_keys ids."""

    packed: IntArray
    first: IntArray
    handed: IntArray
    agent: IntArray
    codes: IntArray

    @staticmethod
    def concat(parts: Sequence[_Rows]) -> _Rows:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return _Rows(empty, empty, empty, empty, empty)
        return _Rows(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _Rows.__slots__)
        )


class _Keys:
    """Group keys ⇄ integer codes: kpi_keys ids, −1 for NULL, negatives for keys not stored."""

    def __init__(self, known: dict[str, int] | None = None) -> None:
        self._ids: dict[str, int] = dict(known or {})
        self._names = {v: k for k, v in self._ids.items()}
        self._next = -2

    def id(self, key: Any) -> int:
        if key is None:
            return -1
        text = str(key)
        found = self._ids.get(text)
        if found is None:
            found, self._next = self._next, self._next - 1
            self._ids[text] = found
            self._names[found] = text
        return found

    def name(self, code: int) -> str:
        return NONE_KEY if code == -1 else self._names[code]


def _runs(days: Sequence[int], longest: int | None = None) -> list[tuple[int, int]]:
    """Consecutive days as [start, end) ranges, each at most ``longest`` days."""
    runs: list[tuple[int, int]] = []
    for day in days:
        if runs and runs[-1][1] == day and (longest is None or day - runs[-1][0] < longest):
            runs[-1] = (runs[-1][0], day + 1)
        else:
            runs.append((day, day + 1))
    return runs
