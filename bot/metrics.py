"""Plain in-process measurements of the engine: step latency, knowledge-base confidence.

``bot/`` does not import ``prometheus_client`` (tests/test_architecture.py): the engine
fills these plain histograms and ``handlers/web/ops.py`` exports them at each scrape. They
are per process and start empty, as Prometheus expects of a histogram (each process is
scraped; a query sums them), unlike the counters of ``/metrics`` that are counted from the
database and survive restarts.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Sequence

# Seconds: an engine step is a few milliseconds, a locked database makes it seconds.
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The knowledge base's confidence (0..1) of its best entry for a customer's question.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
KB_OUTCOMES = ("answered", "ambiguous", "declined")


class Histogram:
    """Counts of observations per bucket (upper bounds, inclusive), with their sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be strictly increasing")
        self.bounds = tuple(bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations ≤ it) per bucket, ending with (inf, count)."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += n
            out.append((bound, running))
        return out


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def event_kind(event: object) -> str:
    """``CustomerMessage`` → ``customer_message``: the label of a step's latency."""
    return _CAMEL.sub("_", type(event).__name__).lower()


class EngineMetrics:
    """What the engine measures as it works; read by the metrics endpoint."""

    def __init__(self) -> None:
        self.steps: dict[str, Histogram] = {}
        self.confidence: dict[str, Histogram] = {o: Histogram(CONFIDENCE_BUCKETS)
                                                 for o in KB_OUTCOMES}  # fmt: skip

    def step(self, kind: str, seconds: float) -> None:
        """One engine step (``handle``) of this kind of event took ``seconds``."""
        histogram = self.steps.get(kind)
        if histogram is None:
            histogram = self.steps[kind] = Histogram(STEP_BUCKETS)
        histogram.observe(seconds)

    def kb_match(self, outcome: str, score: float) -> None:
        """A customer's question was answered, ambiguous or declined at this confidence."""
        self.confidence[outcome].observe(score)
