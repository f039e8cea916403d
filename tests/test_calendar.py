"""Business hours with split shifts, weekends and holidays, across a DST change."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.calendar import WEEKDAYS, BusinessCalendar, parse_shifts

PARIS = ZoneInfo("Europe/Paris")
WEEK = {d: parse_shifts("09:00-12:30,14:00-18:00") for d in WEEKDAYS[:5]}
CAL = BusinessCalendar(PARIS, WEEK, [date(2026, 12, 25)])


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


def test_open_and_closed() -> None:
    assert CAL.is_open(paris(2026, 11, 23, 9, 0))
    assert not CAL.is_open(paris(2026, 11, 23, 13, 0))  # lunch break
    assert not CAL.is_open(paris(2026, 11, 28, 10, 0))  # Saturday
    assert not CAL.is_open(paris(2026, 12, 25, 10, 0))  # holiday


def test_next_open_skips_lunch_weekend_and_holiday() -> None:
    assert CAL.next_open(paris(2026, 11, 23, 12, 45)) == paris(2026, 11, 23, 14, 0)
    assert CAL.next_open(paris(2026, 11, 27, 18, 30)) == paris(2026, 11, 30, 9, 0)
    assert CAL.next_open(paris(2026, 12, 24, 19, 0)) == paris(2026, 12, 28, 9, 0)  # via Xmas
    assert CAL.next_open(paris(2026, 11, 23, 10, 0)) == paris(2026, 11, 23, 10, 0)


def test_business_seconds_and_deadlines() -> None:
    start, end = paris(2026, 11, 23, 12, 20), paris(2026, 11, 23, 14, 10)
    assert CAL.business_seconds(start, end) == 20 * 60
    fri = paris(2026, 11, 27, 17, 55)
    assert CAL.add_business_time(fri, timedelta(minutes=15)) == paris(2026, 11, 30, 9, 10)
    assert CAL.business_seconds(fri, paris(2026, 11, 30, 9, 10)) == 15 * 60


def test_dst_change_counts_real_hours() -> None:
    always = BusinessCalendar(PARIS)
    # 2027-03-28 02:00 Paris jumps to 03:00: that local day lasts 23 hours.
    start = datetime(2027, 3, 27, 23, 0, tzinfo=UTC)
    assert always.business_seconds(start, start + timedelta(hours=24)) == 24 * 3600
    assert always.is_open(start)


@pytest.mark.parametrize("bad", ["9-12", "12:00-09:00", "09:00-12:00,11:00-13:00", "x"])
def test_bad_shift_specs(bad: str) -> None:
    with pytest.raises(ValueError, match="."):
        parse_shifts(bad)


def test_closed_words_and_midnight() -> None:
    assert parse_shifts("") == () == parse_shifts("closed")
    (shift,) = parse_shifts("20:00-24:00")
    cal = BusinessCalendar(PARIS, {d: (shift,) for d in WEEKDAYS})
    assert cal.business_seconds(paris(2026, 11, 23, 23, 0), paris(2026, 11, 24, 1, 0)) == 3600
