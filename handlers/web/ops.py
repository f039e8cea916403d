"""Operations endpoints on the web server: ``/healthz``, ``/readyz``, ``/metrics``.

For probes and scrapers, not people: no login (``Console.guard`` does not cover these
paths) and no rate limit (only the widget's and the login's handlers ask the limiter).
``/metrics`` is counted from the database at each scrape (``storage.ops_queries``) into a
registry of our own, so that nothing else in the process shows up there; the engine's step
latency and the knowledge base's confidence are this process's own histograms
(``bot.metrics``, measured in plain Python since ``bot/`` does not import Prometheus).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bot.clock import Clock, to_ms
from bot.errors import StorageError
from bot.metrics import EngineMetrics, Histogram
from storage.database import Database
from storage.ops_queries import OpsFigures, ops_figures

__all__ = ["Readiness", "engine_families", "metric_families", "ops_routes"]

log = logging.getLogger(__name__)

# Check name -> "ok" or why not (the app's database and started channels).
Readiness = Callable[[], Awaitable[dict[str, str]]]
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metric_families(figures: OpsFigures) -> list[Metric]:
    """The figures as Prometheus metric families (names as documented in the README)."""
    messages_in = CounterMetricFamily(
        "supportbot_messages_in", "Customer messages received", labels=["channel"]
    )
    messages_out = CounterMetricFamily(
        "supportbot_messages_out", "Messages delivered to customers", labels=["channel"]
    )
    for channel, n in sorted(figures.messages_in.items()):
        messages_in.add_metric([channel], n)
    for channel, n in sorted(figures.messages_out.items()):
        messages_out.add_metric([channel], n)
    open_now = GaugeMetricFamily(
        "supportbot_open_conversations", "Conversations not closed", labels=["state"]
    )
    for state, n in sorted(figures.open_conversations.items()):
        open_now.add_metric([state], n)
    handoffs = CounterMetricFamily(
        "supportbot_handoffs", "Conversations handed to agents", labels=["reason"]
    )
    for reason, n in sorted(figures.handoffs.items()):
        handoffs.add_metric([reason], n)
    backlog = GaugeMetricFamily(
        "supportbot_outbox_backlog", "Deliveries waiting in the outbox", figures.outbox_backlog
    )
    oldest = GaugeMetricFamily(
        "supportbot_outbox_oldest_age_seconds",
        "Age of the oldest delivery waiting in the outbox (0 when none)",
        figures.outbox_oldest_age_s,
    )
    return [messages_in, messages_out, open_now, handoffs, backlog, oldest]


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if bound == float("inf") else f"{bound:g}", n)
            for bound, n in histogram.cumulative()]  # fmt: skip


def engine_families(metrics: EngineMetrics) -> list[Metric]:
    """The engine's histograms (this process's, since it started)."""
    steps = HistogramMetricFamily(
        "supportbot_engine_step_seconds",
        "Time the engine took to handle one event (storage included), by kind of event",
        labels=["event"],
    )
    for kind, histogram in sorted(metrics.steps.items()):
        steps.add_metric([kind], _buckets(histogram), histogram.sum)
    confidence = HistogramMetricFamily(
        "supportbot_kb_confidence",
        "Knowledge-base confidence of the best entry for customers' questions, by outcome",
        labels=["outcome"],
    )
    for outcome, histogram in metrics.confidence.items():
        confidence.add_metric([outcome], _buckets(histogram), histogram.sum)
    return [steps, confidence]


class _Snapshot(Collector):
    """Hands a registry the families computed for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def ops_routes(
    db: Database,
    clock: Clock,
    readiness: Readiness | None,
    engine_metrics: EngineMetrics | None = None,
) -> list[web.RouteDef]:
    """The three routes, over the app's database, its readiness checks and what its engine
    measured."""

    async def healthz(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.StreamResponse:
        if readiness is not None:
            checks = await readiness()
        else:
            try:
                await db.ping()
                checks = {"database": "ok"}
            except StorageError as exc:
                checks = {"database": str(exc)}
        reasons = [f"{name}: {why}" for name, why in checks.items() if why != "ok"]
        if reasons:
            log.warning("not ready: %s", "; ".join(reasons))
            body = {"status": "not ready", "reasons": reasons, "checks": checks}
            return web.json_response(body, status=503)
        return web.json_response({"status": "ready", "checks": checks})

    async def metrics(_request: web.Request) -> web.StreamResponse:
        try:
            figures = await ops_figures(db, to_ms(clock.now()))
        except StorageError as exc:
            log.warning("metrics unavailable: %s", exc)
            raise web.HTTPServiceUnavailable(text="database unavailable") from None
        registry = CollectorRegistry(auto_describe=False)
        families = metric_families(figures)
        if engine_metrics is not None:
            families += engine_families(engine_metrics)
        registry.register(_Snapshot(families))
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
    ]
