"""Dashboard benchmark: ``GET /api/kpi`` latency over HTTP on a synthetic database.

Builds (once, then reuses) the database of ``bench/kpi_bench.py`` with 100,000
conversations over two years, serves ``dashboard_routes`` on a real aiohttp server
(port 0) and times whole requests (the report, three breakdowns, series, JSON) for
periods ending on the benchmark's "today".

    .venv/bin/python bench/dashboard_bench.py                 # /tmp/supportbot-dash-bench.db
    .venv/bin/python bench/dashboard_bench.py --runs 7 --conversations 1000000 --db /tmp/x.db
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.kpi_bench import END_DAY, TZ, generate  # noqa: E402
from bot.config import settings_from_mapping  # noqa: E402
from handlers.web.dashboard import dashboard_routes  # noqa: E402
from storage.database import Database  # noqa: E402

DEFAULT_DB = Path("/tmp/supportbot-dash-bench.db")
PERIODS = (7, 30, 90, 365, 730)


class _Today:
    """The clock of the benchmark: noon on its last day."""

    def now(self) -> datetime:
        return datetime.combine(END_DAY, datetime.min.time(), TZ).replace(hour=12).astimezone(UTC)


async def bench(path: Path, runs: int) -> dict[str, list[float]]:
    settings = settings_from_mapping(
        {
            "storage": {"path": str(path)},
            "timezone": str(TZ),
            "language": "fr",
            "business_hours": {
                **dict.fromkeys(("mon", "tue", "wed", "thu", "fri"), "09:00-12:30,14:00-18:00"),
                "sat": "10:00-13:00",
            },
        }
    )
    db = await Database.open(path)
    app = web.Application()
    app.add_routes(dashboard_routes(db, settings, _Today()))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    results: dict[str, list[float]] = {}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            for days in PERIODS:
                first = (END_DAY - timedelta(days=days)).isoformat()
                params = {"from": first, "to": END_DAY.isoformat()}
                for name, path_ in (("json", "/api/kpi"), ("csv by topic", "/api/kpi.csv")):
                    if name.startswith("csv"):
                        params = {**params, "by": "topic"}
                    times: list[float] = []
                    size = 0
                    for _ in range(runs):
                        began = time.perf_counter()
                        async with session.get(path_, params=params) as response:
                            body = await response.read()
                            assert response.status == 200, body[:200]
                        times.append((time.perf_counter() - began) * 1000)
                        size = len(body)
                    label = f"{days:>3} days {name}"
                    results[label] = times
                    print(
                        f"{label:<22} first {times[0]:8.1f} ms   p50 "
                        f"{statistics.median(times):8.1f} ms   max {max(times):8.1f} ms"
                        f"   ({runs} runs, {size / 1024:.0f} KiB)",
                        flush=True,
                    )
    finally:
        await runner.cleanup()
        await db.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=DEFAULT_DB)
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--regenerate", action="store_true", help="rebuild the database")
    args = parser.parse_args(argv)
    if args.regenerate or not args.db.exists():
        generate(args.db, args.conversations)
    else:
        print(f"reusing {args.db} (--regenerate to rebuild)")
    asyncio.run(bench(args.db, args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
