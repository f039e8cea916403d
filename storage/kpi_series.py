"""The dashboard's trend series: NPS, CSAT and abandonment per bucket of a period.

One query per source for all the buckets at once: the buckets travel as a
``VALUES`` table joined on the same covering index ranges as ``storage.kpi_queries``
(one index range scan per bucket), so a year of weekly points costs three queries,
not 150. Semantics are those of the report (``bot/insights/kpi.py``): NPS by ``nps_at``, CSAT
by ``csat_at``, abandonment over the cohort of conversations started in the bucket.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.insights.kpi import Csat, Nps, Period
from bot.insights.kpi_series import TrendPoint
from storage.database import Database
from storage.kpi_queries import CSAT_COUNTS, NPS_COUNTS


class KpiSeries:
    """Read-only trend queries on an open database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _per_bucket(
        self, buckets: Sequence[Period], select: str, source: str, on: str
    ) -> dict[int, tuple[Any, ...]]:
        """``select`` aggregated per bucket index; ``on`` compares a column to b.lo / b.hi."""
        values = ", ".join("(?, ?, ?)" for _ in buckets)
        params = [v for i, p in enumerate(buckets) for v in (i, p.start_ms, p.end_ms)]
        sql = (
            f"WITH b(i, lo, hi) AS (VALUES {values}) "
            f"SELECT b.i, {select} FROM b JOIN {source} ON {on} GROUP BY b.i"
        )
        rows = await self.db.tuples(sql, params)
        return {int(r[0]): tuple(r[1:]) for r in rows}

    async def trend(self, buckets: Sequence[Period]) -> list[TrendPoint]:
        """One point per bucket, in order; buckets without data hold zero counts."""
        if not buckets:
            return []
        nps = await self._per_bucket(
            buckets,
            NPS_COUNTS,
            "surveys INDEXED BY surveys_kpi_nps",
            "nps_at >= b.lo AND nps_at < b.hi",
        )
        csat = await self._per_bucket(
            buckets,
            CSAT_COUNTS,
            "surveys INDEXED BY surveys_kpi_csat",
            "csat_at >= b.lo AND csat_at < b.hi",
        )
        cohort = await self._per_bucket(
            buckets,
            "count(*), count(abandoned_at)",
            "conversations INDEXED BY conversations_kpi",
            "started_at >= b.lo AND started_at < b.hi",
        )
        return [
            TrendPoint(
                period=period,
                nps=Nps(*nps.get(i, ())),
                csat=Csat(*csat.get(i, ())),
                started=int(cohort.get(i, (0, 0))[0]),
                abandoned=int(cohort.get(i, (0, 0))[1]),
            )
            for i, period in enumerate(buckets)
        ]
