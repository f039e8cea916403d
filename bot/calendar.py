"""Business hours: when the team works, so that waits and deadlines count only working time.

Weekdays carry split shifts ("09:00-12:30,14:00-18:00"); holidays are closed all day.
With no business hours configured the team is treated as always open.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Shift:
    start: time
    end: time  # time(0) after start means midnight at the end of the day


def parse_shifts(spec: str) -> tuple[Shift, ...]:
    """Parse "09:00-12:30,14:00-18:00" (empty or "closed" = no shift). Raises ValueError."""
    spec = spec.strip().lower()
    if spec in ("", "closed", "ferme", "fermé", "-"):
        return ()
    shifts: list[Shift] = []
    for part in spec.split(","):
        try:
            a, b = (p.strip() for p in part.split("-"))
            start = time.fromisoformat(a)
            end = time(0) if b in ("24:00", "00:00") else time.fromisoformat(b)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a range like 09:00-12:30") from None
        if end != time(0) and end <= start:
            raise ValueError(f"{part.strip()!r} ends before it starts")
        if shifts and start < _end_of(shifts[-1]):
            raise ValueError(f"{part.strip()!r} overlaps or precedes the previous range")
        shifts.append(Shift(start, end))
    return tuple(shifts)


def _end_of(shift: Shift) -> time:
    return time.max if shift.end == time(0) else shift.end


class BusinessCalendar:
    """Answers "is the team at work?" and measures working time between two instants."""

    def __init__(
        self,
        tz: ZoneInfo,
        week: Mapping[str, Sequence[Shift]] | None = None,
        holidays: Sequence[date] = (),
    ) -> None:
        self.tz = tz
        self.always_open = week is None
        self._week = [tuple(week.get(d, ())) if week else () for d in WEEKDAYS]
        self._holidays = frozenset(holidays)

    def intervals(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """Working intervals of one local day, as aware UTC datetimes."""
        if self.always_open:
            start = datetime.combine(day, time(0), self.tz)
            yield start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)
            return
        if day in self._holidays:
            return
        for shift in self._week[day.weekday()]:
            a = datetime.combine(day, shift.start, self.tz)
            if shift.end == time(0):
                b = datetime.combine(day + timedelta(days=1), time(0), self.tz)
            else:
                b = datetime.combine(day, shift.end, self.tz)
            yield a.astimezone(UTC), b.astimezone(UTC)

    def _has_any_shift(self) -> bool:
        return self.always_open or any(self._week)

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.tz)
        return any(a <= at < b for a, b in self.intervals(local.date()))

    def next_open(self, at: datetime) -> datetime | None:
        """The first instant at or after ``at`` when the team is at work (None if never)."""
        if not self._has_any_shift():
            return None
        day = at.astimezone(self.tz).date()
        for offset in range(0, 400):
            for a, b in self.intervals(day + timedelta(days=offset)):
                if b > at:
                    return max(a, at)
        return None

    def business_seconds(self, start: datetime, end: datetime) -> float:
        """Working seconds in [start, end)."""
        if end <= start:
            return 0.0
        if self.always_open:
            return (end - start).total_seconds()
        total = 0.0
        day = start.astimezone(self.tz).date() - timedelta(days=1)
        last = end.astimezone(self.tz).date()
        while day <= last:
            for a, b in self.intervals(day):
                lo, hi = max(a, start), min(b, end)
                if hi > lo:
                    total += (hi - lo).total_seconds()
            day += timedelta(days=1)
        return total

    def add_business_time(self, start: datetime, delta: timedelta) -> datetime:
        """The instant when ``delta`` of working time has passed since ``start``."""
        if self.always_open or not self._has_any_shift():
            return start + delta
        remaining = delta
        day = start.astimezone(self.tz).date() - timedelta(days=1)
        for _ in range(800):
            for a, b in self.intervals(day):
                lo = max(a, start)
                if b <= lo:
                    continue
                if lo + remaining <= b:
                    return lo + remaining
                remaining -= b - lo
            day += timedelta(days=1)
        return start + delta

    def add_business_days(self, start: datetime, days: int) -> datetime:
        """The same local time ``days`` working days after ``start`` (counted from the
        next opening when ``start`` is outside working time), moved to the next opening if
        the team is not at work then: Monday 10:00 + 2 → Wednesday 10:00; Saturday + 2 →
        Wednesday at opening time. Always open: ``days`` calendar days, wall-clock."""
        if self.always_open:
            return (start.astimezone(self.tz) + timedelta(days=days)).astimezone(UTC)
        begin = self.next_open(start)
        if begin is None:
            return start + timedelta(days=days)
        local = begin.astimezone(self.tz)
        day, counted = local.date(), 0
        for _ in range(800):
            if counted >= days:
                break
            day += timedelta(days=1)
            if any(True for _ in self.intervals(day)):
                counted += 1
        target = datetime.combine(day, local.time(), self.tz).astimezone(UTC)
        return self.next_open(target) or target
