"""Durations from timestamps: percentiles, summaries and the cohort's response times.

Vectorised (numpy) so that a report over many conversations needs no per-row Python
loop; the period semantics and the percentile definition are those of
``bot.insights.kpi``'s docstring, and the results are its types.
"""

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from bot.calendar import BusinessCalendar
from bot.insights.kpi import Durations, ResponseTimes, Volumes

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


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
