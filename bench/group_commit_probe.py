"""What group commit in ``Database.write`` would give the Slack path (a measurement, not a
change: storage is not modified).

Today every write transaction takes the database's write lock and one hop to aiosqlite's
thread, two per Slack message; the lock is held about four times as long as the SQL runs
(the hop, then a busy event loop resuming the writer). Here the bot runs with
``Database.write`` replaced, in its own process only, by a version that commits every
write queued meanwhile in one transaction per hop, each in its own savepoint (one failing
work rolls back alone). The Slack closed loop of ``load_bench.py`` then runs against the
bot as it is and against the patched one, interleaved, and prints both.

    .venv/bin/python bench/group_commit_probe.py --customers 50 --seconds 5 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

Work = Callable[[sqlite3.Connection], Any]


def patch_group_commit() -> None:
    """Replace ``Database.write`` in this process (the bot's, with ``--serve``)."""
    from storage.database import Database

    def run_batch(db: Database, batch: list[Work]) -> list[tuple[bool, Any]]:
        raw = db.conn._conn
        db._begin()
        out: list[tuple[bool, Any]] = []
        try:
            for i, work in enumerate(batch):
                raw.execute(f"SAVEPOINT w{i}")
                try:
                    result = work(raw)
                except Exception as exc:  # this work alone is undone
                    raw.execute(f"ROLLBACK TO w{i}")
                    raw.execute(f"RELEASE w{i}")
                    out.append((False, exc))
                    continue
                raw.execute(f"RELEASE w{i}")
                out.append((True, result))
        except BaseException:
            raw.execute("ROLLBACK")
            raise
        db._commit()
        return out

    async def write(self: Database, work: Work) -> Any:
        loop = asyncio.get_running_loop()
        pending: list[tuple[Work, asyncio.Future[Any]]] = self.__dict__.setdefault("_pending", [])
        future: asyncio.Future[Any] = loop.create_future()
        pending.append((work, future))
        if self.__dict__.get("_flusher") is None:

            async def flush() -> None:
                try:
                    while self.__dict__["_pending"]:
                        batch = self.__dict__["_pending"]
                        self.__dict__["_pending"] = []
                        async with self._write_lock:
                            try:
                                results = await self._on_thread(
                                    run_batch, self, [w for w, _ in batch]
                                )
                            except BaseException as exc:
                                for _, f in batch:
                                    f.set_exception(exc)
                                continue
                        for (ok, value), (_, f) in zip(results, batch, strict=True):
                            if ok:
                                f.set_result(value)
                            else:
                                f.set_exception(value)
                finally:
                    self.__dict__["_flusher"] = None

            self.__dict__["_flusher"] = loop.create_task(flush())
        return await future

    Database.write = write  # type: ignore[method-assign]


async def compare(customers: int, seconds: float, rounds: int) -> None:
    from bench import load_bench, loadkit, telegram_load
    from bot.knowledge import KnowledgeBase

    def grouped(config: Path, env: dict[str, str], log: Path) -> loadkit.Child:
        argv = [loadkit.PYTHON, __file__, "--serve", "run", "--config", str(config)]
        return loadkit.Child(argv, env, log)

    plan = load_bench.Plan(customers=customers, seconds=seconds, open_conversations=0)
    questions = telegram_load.kb_questions(KnowledgeBase.load(load_bench.KNOWLEDGE))
    found: dict[str, list[tuple[float, float]]] = {"as is": [], "group commit": []}
    with tempfile.TemporaryDirectory(prefix="supportbot-probe-") as name:
        for r in range(rounds):
            order = ("as is", "group commit") if r % 2 == 0 else ("group commit", "as is")
            for which in order:
                load_bench.supportbot = grouped if which == "group commit" else loadkit.supportbot
                tmp = Path(name) / f"{r}-{which.replace(' ', '-')}"
                tmp.mkdir()
                tally = await load_bench.slack_run(plan, tmp, questions, ours=True)
                cpu_ms = tally.cpu_per_msg * 1000
                found[which].append((tally.rate, cpu_ms))
                print(f"round {r} {which:>12}: {tally.rate:6.0f} messages/s, "
                      f"{cpu_ms:.2f} ms CPU each, {tally.errors} errors")  # fmt: skip
    for which, runs in found.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"median {which:>12}: {rate:6.0f} messages/s, {cpu:.2f} ms CPU each")
    print(f"rerun: .venv/bin/python bench/group_commit_probe.py --customers {customers} "
          f"--seconds {seconds:g} --rounds {rounds}")  # fmt: skip


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:  # the bot under test, patched
        patch_group_commit()
        from bot.cli import main as supportbot_main

        sys.argv = ["supportbot", *sys.argv[2:]]
        supportbot_main()
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(compare(args.customers, args.seconds, args.rounds))


if __name__ == "__main__":
    main()
