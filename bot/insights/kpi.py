"""KPI arithmetic and result types: pure functions over counts and durations, no SQL.

``storage/kpi_queries.py`` fills these types from the database; the reference
implementation in ``tests/test_kpi_queries.py`` recomputes them from raw rows. Both
follow these period semantics, for a period [start, end) given in the configured
time zone and compared as UTC epoch milliseconds:

- ``conversations.*`` count the *cohort* of conversations whose ``started_at`` is in
  the period; their outcome (resolved, handed off, abandoned) is the one stored when
  the report runs, whenever it happened. So resolved ≤ started, abandoned ≤ started
  and the abandonment rate (CAR) never exceeds 100 %. ``resolved_by_bot`` counts the
  cohort's conversations resolved and never handed off (SPEC: "resolved without
  handoff"); the bot resolution rate is resolved_by_bot ÷ resolved.
- ``first_response_s``: the same cohort, ``first_response_at − started_at`` for the
  conversations that got a response. ``agent_first_response_s``: the cohort's
  conversations handed off and answered by an agent, ``first_agent_response_at −
  handed_off_at``. Negative differences (clock skew) count as 0.
  ``*_business_s`` measure the same pairs in working seconds of the business calendar
  (split shifts, holidays; always open when no business hours are configured).
- ``nps``: survey answers whose ``nps_at`` is in the period. ``csat``: ratings whose
  ``csat_at`` is in the period. ``survey_response_rate_pct``: surveys whose ``sent_at``
  is in the period, answered = they have an NPS answer (when the report runs).
- ``retention``: a customer is reachable at instant t when ``first_seen_at < t`` and
  their latest ``customer_reachability`` row with ``at < t``, if any, says reachable
  (two changes in the same millisecond: "reachable" wins). S = reachable at start,
  E = reachable at end, N = customers whose ``first_seen_at`` is in [start, end). The
  strict "<" keeps both ends half-open like the period: a customer first seen exactly
  at ``start`` is new (in N), not in S. CRR = (E − N) ÷ S × 100, None when S = 0.
  The queries rely on one invariant of the engine's data: a customer's reachability
  never changes before their first conversation (``at >= first_seen_at``).
- Percentiles (median, p90) interpolate linearly between the closest ranks
  (Hyndman & Fan type 7 = numpy's default = Excel's PERCENTILE.INC): for n sorted
  values and fraction p, h = (n − 1)·p and the result is x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋]).
- Every rate or score whose denominator is empty is None ("no data"), never 0.
- Breakdowns: ``channel`` groups by the conversation's / survey's / customer's channel;
  ``agent`` by the agent holding the conversation last (``conversations.agent_key``,
  ``surveys.agent_key``); ``topic`` by ``COALESCE(tag, topic)`` (surveys store it
  already coalesced). A missing key is the group ``"(none)"``. The groups are the keys
  with a conversation started, or a survey sent or answered, in the period. Retention
  is split by channel only: agent and topic groups report it as null.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from bot.calendar import BusinessCalendar

NONE_KEY = "(none)"
BREAKDOWNS = ("channel", "agent", "topic")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


# --- periods ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end) as aware datetimes in the configured time zone."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("period bounds must be timezone-aware")
        if self.end.timestamp() <= self.start.timestamp():  # not wall-clock: DST folds
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")

    @classmethod
    def of_days(cls, first: date, end: date, tz: ZoneInfo) -> Period:
        """Local days ``first`` … ``end`` (exclusive), midnight to midnight in ``tz``."""
        return cls(datetime.combine(first, time(0), tz), datetime.combine(end, time(0), tz))

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(self.end.timestamp() * 1000)

    def _whole_days(self) -> int | None:
        """Number of local days when both bounds are local midnights, else None."""
        end = self.end.astimezone(self.start.tzinfo)
        if self.start.time() != time(0) or end.time() != time(0):
            return None
        return (end.date() - self.start.date()).days

    def previous(self) -> Period:
        """The period of the same length just before (same number of local days)."""
        days = self._whole_days()
        tz = self.start.tzinfo
        if days is not None and isinstance(tz, ZoneInfo):
            first = self.start.date() - timedelta(days=days)
            return Period.of_days(first, self.start.date(), tz)
        length = self.end.astimezone(UTC) - self.start.astimezone(UTC)
        start = (self.start.astimezone(UTC) - length).astimezone(self.start.tzinfo)
        return Period(start, self.start)


# --- arithmetic ------------------------------------------------------------------------


def rate_pct(numerator: int, denominator: int) -> float | None:
    """numerator ÷ denominator × 100; None when the denominator is 0 (no data, not 0 %)."""
    if denominator <= 0:
        return None
    return 100.0 * numerator / denominator


def nps_score(promoters: int, passives: int, detractors: int) -> float | None:
    """% promoters − % detractors, −100…100; None when nobody answered."""
    total = promoters + passives + detractors
    if total == 0:
        return None
    return 100.0 * (promoters - detractors) / total


def retention_rate(start: int, end: int, new: int) -> float | None:
    """CRR = ((E − N) ÷ S) × 100; None when S = 0."""
    if start <= 0:
        return None
    return 100.0 * (end - new) / start


def percentile(sorted_values: Sequence[float] | FloatArray, fraction: float) -> float | None:
    """Type-7 percentile of already sorted values (see the module docstring)."""
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be within 0…1")
    h = (n - 1) * fraction
    low = math.floor(h)
    if low + 1 >= n:
        return float(sorted_values[n - 1])
    a, b = float(sorted_values[low]), float(sorted_values[low + 1])
    return a + (h - low) * (b - a)


# --- result types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Volumes:
    started: int = 0
    resolved: int = 0
    resolved_by_bot: int = 0
    handed_off: int = 0
    abandoned: int = 0

    def __add__(self, other: Volumes) -> Volumes:
        return Volumes(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class Nps:
    promoters: int = 0
    passives: int = 0
    detractors: int = 0

    @property
    def responses(self) -> int:
        return self.promoters + self.passives + self.detractors

    @property
    def score(self) -> float | None:
        return nps_score(self.promoters, self.passives, self.detractors)

    def __add__(self, other: Nps) -> Nps:
        return Nps(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class Csat:
    responses: int = 0
    satisfied: int = 0  # ratings of 4 or 5
    total: int = 0  # sum of the ratings, for the mean

    @property
    def score_pct(self) -> float | None:
        return rate_pct(self.satisfied, self.responses)

    @property
    def average(self) -> float | None:
        return self.total / self.responses if self.responses else None

    def __add__(self, other: Csat) -> Csat:
        return Csat(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds: how many, and their median, mean and p90 (None when there are none)."""

    count: int = 0
    median: float | None = None
    mean: float | None = None
    p90: float | None = None


@dataclass(frozen=True, slots=True)
class Retention:
    start_customers: int = 0
    end_customers: int = 0
    new_customers: int = 0

    @property
    def rate_pct(self) -> float | None:
        return retention_rate(self.start_customers, self.end_customers, self.new_customers)

    def __add__(self, other: Retention) -> Retention:
        return Retention(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))


@dataclass(frozen=True, slots=True)
class SurveyCounts:
    sent: int = 0
    answered: int = 0  # with an NPS answer

    def __add__(self, other: SurveyCounts) -> SurveyCounts:
        return SurveyCounts(self.sent + other.sent, self.answered + other.answered)


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    """First response and agent first response, in calendar and in business seconds."""

    first: Durations = Durations()
    agent_first: Durations = Durations()
    first_business: Durations = Durations()
    agent_first_business: Durations = Durations()


@dataclass(frozen=True, slots=True)
class Figures:
    """Every KPI of one period, for everything or for one group of a breakdown."""

    conversations: Volumes = Volumes()
    nps: Nps = Nps()
    csat: Csat = Csat()
    times: ResponseTimes = ResponseTimes()
    surveys: SurveyCounts = SurveyCounts()
    retention: Retention | None = None

    @property
    def abandonment_rate_pct(self) -> float | None:
        return rate_pct(self.conversations.abandoned, self.conversations.started)

    @property
    def bot_resolution_rate_pct(self) -> float | None:
        return rate_pct(self.conversations.resolved_by_bot, self.conversations.resolved)

    @property
    def survey_response_rate_pct(self) -> float | None:
        return rate_pct(self.surveys.answered, self.surveys.sent)

    @property
    def is_empty(self) -> bool:
        return not (self.conversations.started or self.nps.responses or self.csat.responses)

    def to_json(self) -> dict[str, Any]:
        """The stable field names of SPEC's script interface (see ``KpiReport.to_json``)."""
        c, n, s, r = self.conversations, self.nps, self.csat, self.retention
        return {
            "conversations": {
                "started": c.started,
                "resolved": c.resolved,
                "resolved_by_bot": c.resolved_by_bot,
                "handed_off": c.handed_off,
                "abandoned": c.abandoned,
            },
            "nps": {
                "score": _round(n.score, 2),
                "promoters": n.promoters,
                "passives": n.passives,
                "detractors": n.detractors,
                "responses": n.responses,
            },
            "csat": {
                "score_pct": _round(s.score_pct, 2),
                "average": _round(s.average, 3),
                "responses": s.responses,
            },
            "first_response_s": _durations(self.times.first),
            "agent_first_response_s": _durations(self.times.agent_first),
            "first_response_business_s": _durations(self.times.first_business),
            "agent_first_response_business_s": _durations(self.times.agent_first_business),
            "abandonment_rate_pct": _round(self.abandonment_rate_pct, 2),
            "retention": {
                "start_customers": r.start_customers if r else None,
                "end_customers": r.end_customers if r else None,
                "new_customers": r.new_customers if r else None,
                "rate_pct": _round(r.rate_pct, 2) if r else None,
            },
            "bot_resolution_rate_pct": _round(self.bot_resolution_rate_pct, 2),
            "survey_response_rate_pct": _round(self.survey_response_rate_pct, 2),
            "surveys": {"sent": self.surveys.sent, "answered": self.surveys.answered},
        }


@dataclass(frozen=True, slots=True)
class Group:
    """One line of a breakdown: ``key`` as stored, ``label`` for people (agent names)."""

    key: str
    figures: Figures
    label: str = ""

    @property
    def name(self) -> str:
        return self.label or self.key


@dataclass(frozen=True, slots=True)
class KpiReport:
    period: Period
    figures: Figures
    by: str | None = None
    groups: tuple[Group, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """One JSON object with the stable names scripts rely on (SPEC "Interfaces").

        ``period.start``/``period.end`` are ISO 8601 with the offset of the configured
        time zone; durations are seconds; rates are percentages; no data is null.
        """
        out: dict[str, Any] = {
            "period": {
                "start": self.period.start.isoformat(),
                "end": self.period.end.isoformat(),
                "timezone": str(self.period.start.tzinfo),
            },
            **self.figures.to_json(),
        }
        if self.by is not None:
            out["by"] = self.by
            out["groups"] = [
                {"key": g.key, **({"label": g.label} if g.label else {}), **g.figures.to_json()}
                for g in self.groups
            ]
        return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"nps": {"score": 30}} → {"nps.score": 30}: the CSV column names."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _values(obj: Any) -> Iterator[int]:
    for name in obj.__slots__:
        yield getattr(obj, name)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _durations(d: Durations) -> dict[str, Any]:
    return {
        "median": _round(d.median, 3),
        "mean": _round(d.mean, 3),
        "p90": _round(d.p90, 3),
        "count": d.count,
    }


# --- durations from timestamps ---------------------------------------------------------


def summarize(seconds: FloatArray | Sequence[float]) -> Durations:
    """Count, median, mean and p90 of durations in seconds (any order).

    Only the ranks the two percentiles need are put in place (``np.partition``),
    which is linear instead of a full sort.
    """
    values = np.asarray(seconds, dtype=np.float64)
    n = int(values.size)
    if n == 0:
        return Durations()
    ranks = sorted({min(r, n - 1) for p in (0.5, 0.9) for r in _ranks(n, p)})
    placed = np.partition(values, ranks)

    def pick(p: float) -> float:
        low, high = _ranks(n, p)
        h = (n - 1) * p
        a, b = float(placed[low]), float(placed[min(high, n - 1)])
        return a + (h - low) * (b - a)

    return Durations(count=n, median=pick(0.5), mean=float(values.mean()), p90=pick(0.9))


def _ranks(n: int, fraction: float) -> tuple[int, int]:
    low = math.floor((n - 1) * fraction)
    return low, low + 1


def elapsed_seconds(starts_ms: IntArray, ends_ms: IntArray) -> FloatArray:
    """Calendar seconds from each start to its end, negatives counted as 0."""
    seconds: FloatArray = np.maximum(ends_ms - starts_ms, 0).astype(np.float64) / 1000.0
    return seconds


class BusinessTime:
    """Working seconds between many pairs of instants at once.

    ``BusinessCalendar.business_seconds`` walks the days of each pair: fine for one
    deadline, far too slow for a year of conversations. Here the calendar's working
    intervals over the whole span are laid out once with their cumulative length, so
    the working time before any instant is one binary search (vectorized by numpy):
    business_seconds(a, b) = W(b) − W(a). Same result as ``business_seconds``.
    """

    def __init__(self, calendar: BusinessCalendar) -> None:
        self.calendar = calendar
        self._span: tuple[date, date] | None = None
        self._layout: tuple[IntArray, IntArray, IntArray] | None = None

    def _intervals(self, low_ms: int, high_ms: int) -> tuple[IntArray, IntArray, IntArray]:
        """Working intervals (starts, ends) covering [low, high] and the time before each."""
        tz = self.calendar.tz
        first = datetime.fromtimestamp(low_ms / 1000, UTC).astimezone(tz).date()
        last = datetime.fromtimestamp(high_ms / 1000, UTC).astimezone(tz).date()
        first, last = first - timedelta(days=1), last + timedelta(days=1)
        if self._span is not None and self._layout is not None:
            if self._span[0] <= first and last <= self._span[1]:
                return self._layout
            first, last = min(first, self._span[0]), max(last, self._span[1])
        starts: list[int] = []
        ends: list[int] = []
        day = first
        while day <= last:
            # The calendar's own per-day intervals, so holidays and DST agree exactly.
            for a, b in self.calendar.intervals(day):
                starts.append(round(a.timestamp() * 1000))
                ends.append(round(b.timestamp() * 1000))
            day += timedelta(days=1)
        a_arr = np.asarray(starts, dtype=np.int64)
        b_arr = np.asarray(ends, dtype=np.int64)
        before = np.zeros(a_arr.size, dtype=np.int64)
        if a_arr.size > 1:
            before[1:] = np.cumsum(b_arr - a_arr)[:-1]
        self._span, self._layout = (first, last), (a_arr, b_arr, before)
        return self._layout

    def seconds(self, starts_ms: IntArray, ends_ms: IntArray) -> FloatArray:
        """Business seconds of each [start, end), negatives counted as 0."""
        if starts_ms.size == 0:
            return np.zeros(0, dtype=np.float64)
        if self.calendar.always_open:
            return elapsed_seconds(starts_ms, ends_ms)
        low = int(min(starts_ms.min(), ends_ms.min()))
        high = int(max(starts_ms.max(), ends_ms.max()))
        a, b, before = self._intervals(low, high)
        if a.size == 0:
            return np.zeros(starts_ms.size, dtype=np.float64)

        def worked(t: IntArray) -> IntArray:
            i = np.searchsorted(a, t, side="right") - 1
            j = np.maximum(i, 0)
            inside = np.clip(t - a[j], 0, b[j] - a[j])
            result: IntArray = np.where(i >= 0, before[j] + inside, 0)
            return result

        spans = np.maximum(worked(ends_ms) - worked(starts_ms), 0)
        seconds: FloatArray = spans.astype(np.float64) / 1000.0
        return seconds


# Bits of the per-conversation flags column fetched with the cohort.
FLAG_RESOLVED = 1
FLAG_ABANDONED = 2
FLAG_HANDED_OFF = 4


class Cohort:
    """The conversations started in a period, as parallel arrays (−1 = NULL).

    ``codes`` gives each row's group (0 … groups − 1; all 0 without a breakdown). Every
    duration is computed once for the whole cohort; groups are then contiguous slices
    of one stable sort by group, so a breakdown costs one sort, not one pass per group.
    """

    def __init__(
        self,
        *,
        codes: IntArray,
        flags: IntArray,
        started: IntArray,
        first_response: IntArray,
        handed_off: IntArray,
        first_agent: IntArray,
        groups: int,
        business: BusinessTime,
    ) -> None:
        self.groups = groups
        self.codes = codes
        self.flags = flags
        has_first = first_response >= 0
        has_agent = (handed_off >= 0) & (first_agent >= 0)
        s, f = started[has_first], first_response[has_first]
        h, g = handed_off[has_agent], first_agent[has_agent]
        self._first = (codes[has_first], elapsed_seconds(s, f), business.seconds(s, f))
        self._agent = (codes[has_agent], elapsed_seconds(h, g), business.seconds(h, g))

    def _count(self, rows: npt.NDArray[np.bool_] | None = None) -> list[int]:
        codes = self.codes if rows is None else self.codes[rows]
        return [int(n) for n in np.bincount(codes, minlength=self.groups)]

    def volumes(self) -> list[Volumes]:
        """Volumes of each group, by group code."""
        resolved = (self.flags & FLAG_RESOLVED) > 0
        handed = (self.flags & FLAG_HANDED_OFF) > 0
        columns = (
            self._count(),
            self._count(resolved),
            self._count(resolved & ~handed),
            self._count(handed),
            self._count((self.flags & FLAG_ABANDONED) > 0),
        )
        return [Volumes(*values) for values in zip(*columns, strict=True)]

    def _split(self, codes: IntArray, *values: FloatArray) -> list[tuple[FloatArray, ...]]:
        """Each array cut into one slice per group (stable sort by group code)."""
        order = np.argsort(codes, kind="stable")
        bounds = np.concatenate(([0], np.cumsum(np.bincount(codes, minlength=self.groups))))
        ordered = [v[order] for v in values]
        return [tuple(v[bounds[i] : bounds[i + 1]] for v in ordered) for i in range(self.groups)]

    def times(self) -> list[ResponseTimes]:
        """The four response-time summaries of each group, by group code."""
        first = self._split(*self._first)
        agent = self._split(*self._agent)
        return [
            ResponseTimes(summarize(f[0]), summarize(a[0]), summarize(f[1]), summarize(a[1]))
            for f, a in zip(first, agent, strict=True)
        ]

    def total_times(self) -> ResponseTimes:
        """The four summaries over the whole cohort."""
        return ResponseTimes(
            summarize(self._first[1]),
            summarize(self._agent[1]),
            summarize(self._first[2]),
            summarize(self._agent[2]),
        )
