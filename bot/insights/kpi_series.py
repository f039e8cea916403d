"""The dashboard's chart series: how a period is cut into points, and their JSON.

A trend needs enough points to show a shape and few enough to stay readable: one
point per local day up to ``DAILY_MAX_DAYS`` days, beyond that one per ISO week
(Monday to Monday), the first and last weeks clipped to the period so that the
points add up to the period's own figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from bot.insights.kpi import Csat, Figures, Nps, Period, Volumes

DAILY_MAX_DAYS = 31
# Upper bounds (seconds) of the first-response-time buckets; the last bucket is open.
FRT_EDGES_S = (60, 300, 900, 3600, 4 * 3600)

Granularity = Literal["day", "week"]


def trend_buckets(first: date, end: date, tz: ZoneInfo) -> tuple[Granularity, list[Period]]:
    """The local days ``first`` … ``end`` (exclusive) as days, or as ISO weeks when long."""
    if end <= first:
        raise ValueError(f"empty period {first} … {end}")
    if (end - first).days <= DAILY_MAX_DAYS:
        days = [first + timedelta(days=i) for i in range((end - first).days)]
        return "day", [Period.of_days(d, d + timedelta(days=1), tz) for d in days]
    bounds = [first]
    monday = first + timedelta(days=7 - first.weekday())
    while monday < end:
        bounds.append(monday)
        monday += timedelta(days=7)
    bounds.append(end)
    return "week", [Period.of_days(a, b, tz) for a, b in zip(bounds, bounds[1:], strict=False)]


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One bucket of the trend charts: satisfaction answers and the conversation cohort."""

    period: Period
    nps: Nps
    csat: Csat
    started: int
    abandoned: int

    def to_json(self, label: str) -> dict[str, Any]:
        figures = Figures(
            conversations=Volumes(started=self.started, abandoned=self.abandoned),
            nps=self.nps,
            csat=self.csat,
        ).to_json()
        return {
            "start": self.period.start.date().isoformat(),
            "end": self.period.end.astimezone(self.period.start.tzinfo).date().isoformat(),
            "label": label,
            "nps": figures["nps"],
            "csat": figures["csat"],
            "conversations": {"started": self.started, "abandoned": self.abandoned},
            "abandonment_rate_pct": figures["abandonment_rate_pct"],
        }


@dataclass(frozen=True, slots=True)
class Histogram:
    """How many first responses (and agent first responses) fall in each bucket."""

    edges_s: Sequence[int]
    first: Sequence[int]
    agent_first: Sequence[int]

    def to_json(self, labels: Sequence[str]) -> dict[str, Any]:
        return {
            "edges_s": list(self.edges_s),
            "labels": list(labels),
            "first": list(self.first),
            "agent_first": list(self.agent_first),
        }
