"""The engine's plain histograms (``bot.metrics``), exported by ``/metrics``."""

from __future__ import annotations

import math

import pytest

from bot.conversation.model import CustomerChoice, CustomerMessage
from bot.metrics import EngineMetrics, Histogram, event_kind


def test_histogram_buckets_are_inclusive_upper_bounds() -> None:
    h = Histogram((0.1, 0.5, 1.0))
    for value in (0.05, 0.1, 0.3, 1.0, 7.0):
        h.observe(value)
    assert h.cumulative() == [(0.1, 2), (0.5, 3), (1.0, 4), (math.inf, 5)]
    assert h.count == 5
    assert h.sum == pytest.approx(8.45)


def test_histogram_refuses_unordered_bounds() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram((0.5, 0.1))
    with pytest.raises(ValueError, match="increasing"):
        Histogram((0.1, 0.1))


def test_engine_metrics_by_event_kind_and_outcome() -> None:
    m = EngineMetrics()
    m.step(event_kind(CustomerMessage.__new__(CustomerMessage)), 0.003)
    m.step("customer_message", 0.2)
    m.step(event_kind(CustomerChoice.__new__(CustomerChoice)), 0.001)
    assert sorted(m.steps) == ["customer_choice", "customer_message"]
    assert m.steps["customer_message"].count == 2
    m.kb_match("declined", 0.12)
    assert m.confidence["declined"].cumulative()[1] == (0.2, 1)
    assert m.confidence["answered"].count == 0
    with pytest.raises(KeyError):
        m.kb_match("guessed", 0.5)
