"""Group commit in the SQLite write path, before against after, on the Slack closed loop
(and, with ``--engine``, the engine alone).

"before" is the bot with ``SqliteDatabase.write`` put back to the port's one write per
lock turn and hop (``Database.write``, what every write did until group commit), in its
own process only; "after" is the bot as it is. Each round runs the bare slack-bolt app
too, so the ratio compares runs made under the same machine load; rounds alternate the
order. Prints each run and the medians.

    .venv/bin/python bench/group_commit_bench.py --customers 200 --seconds 10 --rounds 3
    .venv/bin/python bench/group_commit_bench.py --engine --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import re
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_write_per_hop() -> None:
    """Put the SQLite write path back as it was before group commit (this process)."""
    from storage.database import Database
    from storage.sqlite import SqliteDatabase

    SqliteDatabase.write = Database.write  # type: ignore[method-assign]


class LockTimings:
    """Where a write's time goes: the write lock held, the SQL run on the thread."""

    def __init__(self) -> None:
        self.writes = 0
        self.hops = 0
        self.held = 0.0  # seconds the write lock was held for writes
        self.sql = 0.0  # seconds the database thread spent in write transactions

    def report(self) -> None:
        if self.writes:
            turns = self.writes / self.hops
            print(f"writes {self.writes}, {turns:.1f} per turn of the write lock; per write: "
                  f"lock held {self.held / self.writes * 1000:.3f} ms, SQL "
                  f"{self.sql / self.writes * 1000:.3f} ms")  # fmt: skip


def time_the_write_lock() -> LockTimings:
    """Measure the write path (this process): works per hop, lock time, SQL time."""
    from storage.database import Database
    from storage.sqlite import SqliteDatabase

    timings = LockTimings()
    for cls, name in ((Database, "_write_now"), (SqliteDatabase, "_commit_group")):
        plain_sql = getattr(cls, name)

        def sql(self: Any, work: Any, _plain: Any = plain_sql) -> Any:
            start = time.perf_counter()
            try:
                return _plain(self, work)
            finally:
                timings.sql += time.perf_counter() - start
                timings.writes += len(work) if isinstance(work, list) else 1

        setattr(cls, name, sql)
    plain_lock = asyncio.Lock

    class TimedLock(plain_lock):  # type: ignore[misc,valid-type]
        taken = 0.0

        async def acquire(self) -> bool:
            await super().acquire()
            self.taken = time.perf_counter()
            return True

        def release(self) -> None:
            timings.held += time.perf_counter() - self.taken
            timings.hops += 1
            super().release()

    plain_init = Database.__init__

    def init(self: Database, path: str) -> None:
        plain_init(self, path)
        self._write_lock = TimedLock()

    Database.__init__ = init  # type: ignore[method-assign]
    return timings


async def slack(customers: int, seconds: float, rounds: int) -> None:
    from bench import load_bench, loadkit, telegram_load
    from bot.knowledge import KnowledgeBase

    def before(config: Path, env: dict[str, str], log: Path) -> loadkit.Child:
        argv = [loadkit.PYTHON, __file__, "--serve-before", "run", "--config", str(config)]
        return loadkit.Child(argv, env, log)

    plan = load_bench.Plan(customers=customers, seconds=seconds, open_conversations=0)
    questions = telegram_load.kb_questions(KnowledgeBase.load(load_bench.KNOWLEDGE))
    found: dict[str, list[tuple[float, float, float]]] = {"before": [], "after": [], "bolt": []}
    with tempfile.TemporaryDirectory(prefix="supportbot-group-") as name:
        for r in range(rounds):
            order = ["before", "after", "bolt"] if r % 2 == 0 else ["bolt", "after", "before"]
            for which in order:
                load_bench.supportbot = before if which == "before" else loadkit.supportbot
                tmp = Path(name) / f"{r}-{which}"
                tmp.mkdir()
                tally = await load_bench.slack_run(plan, tmp, questions, ours=which != "bolt")
                cpu_ms = tally.cpu_per_msg * 1000
                found[which].append((tally.rate, cpu_ms, float(tally.errors)))
                print(f"round {r} {which:>6}: {tally.rate:6.0f} messages/s, "
                      f"{cpu_ms:.2f} ms CPU each, {tally.errors} errors", flush=True)  # fmt: skip
    bolt = statistics.median(rate for rate, _, _ in found["bolt"])
    for which, runs in found.items():
        rate = statistics.median(r for r, _, _ in runs)
        cpu = statistics.median(c for _, c, _ in runs)
        ratios = [
            ours / theirs for (ours, _, _), (theirs, _, _) in zip(runs, found["bolt"], strict=True)
        ]
        print(f"median {which:>6}: {rate:6.0f} messages/s, {cpu:.2f} ms CPU each, "
              f"{statistics.median(ratios):.0%} of bare bolt (same rounds; bolt median "
              f"{bolt:.0f}/s)")  # fmt: skip
    print(f"rerun: .venv/bin/python bench/group_commit_bench.py --customers {customers} "
          f"--seconds {seconds:g} --rounds {rounds}")  # fmt: skip


def engine(customers: int, messages: int, rounds: int) -> None:
    """engine_bench.py before and after, interleaved, each in its own process."""
    found: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for r in range(rounds):
        for which in ("before", "after") if r % 2 == 0 else ("after", "before"):
            flag = ["--engine-before"] if which == "before" else ["--engine-after"]
            argv = [sys.executable, __file__, *flag, "--customers", str(customers)]
            argv += ["--messages", str(messages)]
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            rate = float(re.search(r"throughput\s+(\S+)", out)[1])  # type: ignore[index]
            cpu = float(re.search(r"CPU per message\s+(\S+)", out)[1])  # type: ignore[index]
            found[which].append((rate, cpu))
            lock = out.strip().splitlines()[-1]
            print(f"round {r} {which:>6}: {rate:6.0f} messages/s, {cpu:.3f} ms CPU each; {lock}")
    for which, runs in found.items():
        print(f"median {which:>6}: {statistics.median(r for r, _ in runs):6.0f} messages/s, "
              f"{statistics.median(c for _, c in runs):.3f} ms CPU each")  # fmt: skip
    print(f"rerun: .venv/bin/python bench/group_commit_bench.py --engine --customers "
          f"{customers} --messages {messages} --rounds {rounds}")  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--serve-before"]:  # the bot under test, as before
        one_write_per_hop()
        from bot.cli import main as supportbot_main

        sys.argv = ["supportbot", *sys.argv[2:]]
        supportbot_main()
        return
    if sys.argv[1:2] in (["--engine-before"], ["--engine-after"]):
        if sys.argv[1] == "--engine-before":
            one_write_per_hop()
        timings = time_the_write_lock()
        sys.argv = ["engine_bench.py", *sys.argv[2:]]
        runpy.run_path(str(ROOT / "bench" / "engine_bench.py"), run_name="__main__")
        timings.report()
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engine", action="store_true", help="engine_bench.py, not Slack")
    parser.add_argument("--customers", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.engine:
        engine(args.customers or 50, args.messages, args.rounds)
    else:
        asyncio.run(slack(args.customers or 200, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
