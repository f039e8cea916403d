"""The digest's chart: its axes stay readable when the period has no data."""

from __future__ import annotations

from bot.insights.chart import Spread, TrendPoint, chart_figure
from bot.insights.kpi_series import FRT_EDGES_S

TREND = (TrendPoint("16/11", None, None), TrendPoint("23/11", None, None))
BUCKETS = len(FRT_EDGES_S) + 1


def test_empty_period_has_a_share_axis_from_zero_to_a_hundred() -> None:
    empty = Spread(FRT_EDGES_S, [0] * BUCKETS, [0] * BUCKETS)
    satisfaction, spread, *_ = chart_figure(TREND, empty, "fr").axes
    assert spread.get_ylim() == (0.0, 100.0)  # not matplotlib's −0.04…0.04 around flat bars
    assert satisfaction.get_ylim() == (-100.0, 100.0)
    assert [text.get_text() for text in spread.texts] == ["—"]


def test_response_shares_start_at_zero() -> None:
    first = [3, 1, 0, 0, 0, 0]
    spread = Spread(FRT_EDGES_S, first, [0, 2, 2, 0, 0, 0])
    _satisfaction, bars, *_ = chart_figure(TREND, spread, "en").axes
    low, high = bars.get_ylim()
    assert low == 0.0
    assert 75.0 <= high <= 100.0  # the largest share is 75 %
    assert list(bars.texts) == []
