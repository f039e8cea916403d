"""Follow-up KPIs (SPEC KPI table, "Follow-ups"): pure arithmetic over stored rows.

Period semantics: the follow-ups *opened* in [start, end) (``opened_at``), with their
outcome as stored when the report runs. ``contacted``: those with a first contact
(``contacted_at`` set: a Contacted/Resolved press or an agent's message to the
customer). ``contacted_in_time_pct``: contacted at or before ``due_at``, ÷ opened, × 100.
``median_contact_s``: median of ``contacted_at − opened_at`` in calendar seconds over
the contacted ones (same interpolation as every percentile here). None = no data.
Breakdowns: ``agent`` → the follow-up's owner, ``channel`` → the conversation's channel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.insights.kpi_texts import KpiTexts


def _median(values: list[float]) -> float | None:
    """The middle value, or the mean of the two middle ones (what type-7 interpolation
    gives at p = 0.5, computed without its rounding)."""
    if not values:
        return None
    ordered = sorted(values)
    half = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[half]
    return (ordered[half - 1] + ordered[half]) / 2


def _pct(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else 100.0 * numerator / denominator


@dataclass(frozen=True, slots=True)
class FollowupFigures:
    opened: int = 0
    contacted: int = 0
    contacted_in_time: int = 0
    median_contact_s: float | None = None

    @property
    def contacted_in_time_pct(self) -> float | None:
        return _pct(self.contacted_in_time, self.opened)

    def to_json(self) -> dict[str, Any]:
        """The pinned fields of SPEC "Interfaces"."""
        pct = self.contacted_in_time_pct
        median = self.median_contact_s
        return {
            "opened": self.opened,
            "contacted": self.contacted,
            "contacted_in_time_pct": None if pct is None else round(pct, 2),
            "median_contact_s": None if median is None else round(median, 3),
        }


def followup_figures(rows: Iterable[tuple[int, int, int | None]]) -> FollowupFigures:
    """Figures of (opened_at, due_at, contacted_at) rows, in ms."""
    opened = in_time = 0
    waits: list[float] = []
    for opened_at, due_at, contacted_at in rows:
        opened += 1
        if contacted_at is not None:
            waits.append(max(0, contacted_at - opened_at) / 1000)
            in_time += contacted_at <= due_at
    return FollowupFigures(opened, len(waits), in_time, _median(waits))


def followups_value(t: KpiTexts, fu: FollowupFigures) -> str:
    """ "3 opened · 2 contacted · 66.7 % in time · median 2 h" (a dash with none): the
    report's row, the digest's line and the dashboard's figure."""
    if not fu.opened:
        return t.dash
    return t(
        "row_followups_value",
        opened=t.integer(fu.opened),
        contacted=t.integer(fu.contacted),
        pct=t.pct(fu.contacted_in_time_pct),
        median=t.duration(fu.median_contact_s),
    )
