"""The digest's chart: NPS and CSAT over the last periods, and the first-response-time spread.

Headless: a bare ``matplotlib.figure.Figure`` on the Agg canvas, never pyplot, so no
GUI backend, no global figure state, and it may run in a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.insights.kpi_texts import KpiTexts

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True, slots=True)
class TrendPoint:
    label: str  # the period, short ("16/11")
    nps: float | None
    csat_pct: float | None


@dataclass(frozen=True, slots=True)
class Spread:
    """Response counts per bucket; ``edges`` are the buckets' upper bounds in seconds."""

    edges: Sequence[int]
    first: Sequence[int]
    agent: Sequence[int]


def _edge_label(t: KpiTexts, low: int | None, high: int | None) -> str:
    if low is None and high is not None:
        return f"< {t.duration(high)}"
    if high is None and low is not None:
        return f"≥ {t.duration(low)}"
    return f"{t.duration(low)}–{t.duration(high)}"


def render_chart(trend: Sequence[TrendPoint], spread: Spread, language: str) -> bytes:
    """A PNG: satisfaction lines on the left, response-time bars on the right."""
    figure = chart_figure(trend, spread, language)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def chart_figure(trend: Sequence[TrendPoint], spread: Spread, language: str) -> Figure:
    """The chart's figure (``render_chart`` saves it); its axes are what tests read."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t = KpiTexts(language)
    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, width_ratios=(1, 1.15))

    labels = [p.label for p in trend]
    x = list(range(len(trend)))
    nps = [float("nan") if p.nps is None else p.nps for p in trend]
    csat = [float("nan") if p.csat_pct is None else p.csat_pct for p in trend]
    left.set_title(t("chart_satisfaction"))
    left.plot(x, nps, marker="o", color="#1f77b4", label="NPS")
    left.set_ylim(-100, 100)
    left.set_ylabel("NPS")
    left.axhline(0, color="#999999", linewidth=0.8)
    left.set_xticks(x, labels, rotation=45, fontsize=8)
    twin = left.twinx()
    twin.plot(x, csat, marker="s", color="#2ca02c", label="CSAT %")
    twin.set_ylim(0, 100)
    twin.set_ylabel("CSAT %")
    handles = left.get_lines()[:1] + twin.get_lines()[:1]
    left.legend(handles, ["NPS", "CSAT %"], loc="lower left", fontsize=8)

    bounds: list[int | None] = [None, *spread.edges, None]
    names = [_edge_label(t, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    first_total = sum(spread.first) or 1
    agent_total = sum(spread.agent) or 1
    positions = list(range(len(names)))
    width = 0.4
    right.set_title(t("chart_frt"))
    right.bar(
        [p - width / 2 for p in positions],
        [100 * n / first_total for n in spread.first],
        width,
        label=t("chart_first"),
        color="#1f77b4",
    )
    right.bar(
        [p + width / 2 for p in positions],
        [100 * n / agent_total for n in spread.agent],
        width,
        label=t("chart_agent"),
        color="#ff7f0e",
    )
    right.set_xticks(positions, names, rotation=45, fontsize=7, ha="right")
    right.set_ylabel(t("chart_share"))
    if sum(spread.first) + sum(spread.agent) == 0:
        # No response in the period: a share axis 0-100 % and a dash, not matplotlib's
        # ±0.04 around flat zero bars.
        right.set_ylim(0, 100)
        right.text(0.5, 0.5, t.dash, transform=right.transAxes, ha="center", va="center",
                   fontsize=16, color="#999999")  # fmt: skip
    else:
        right.set_ylim(bottom=0)
    right.legend(fontsize=8)
    return figure
