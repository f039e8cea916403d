"""Engine throughput and latency: customers asking knowledge-base questions, no network.

Measures the core alone (engine + SQLite + outbox, channels replaced by no-op ports):
messages/s, per-message latency percentiles from `handle` to the reply being delivered,
the CPU time per message (the engine's own cost, no platform client) and peak memory.
The channel benchmarks of issue #6 build on this.

    .venv/bin/python bench/engine_bench.py --customers 200 --messages 10
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.clock import SystemClock  # noqa: E402
from bot.config import settings_from_mapping  # noqa: E402
from bot.conversation.engine import ConversationService  # noqa: E402
from bot.conversation.model import Address, Choice, Customer, CustomerMessage, Media, Sent  # noqa: E402
from bot.conversation.outbox import Dispatcher  # noqa: E402
from bot.knowledge import KnowledgeBase  # noqa: E402
from storage.conversations import SqliteStore  # noqa: E402
from storage.database import Database  # noqa: E402

QUESTIONS = [
    "Quel est le délai de livraison ?",
    "comment suivre ma commande",
    "je voudrais retourner un article",
    "où est ma facture ?",
    "How do I reset my password?",
    "quels moyens de paiement acceptez-vous",
]


class TimingChannel:
    """A customer channel that notes when each reply is delivered."""

    channel = "telegram"

    def __init__(self) -> None:
        self.delivered: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Event] = {}

    async def send(self, to: Address, text: str, choices: Sequence[Sequence[Choice]] = ()) -> Sent:
        self.delivered[to.chat_id] = time.perf_counter()
        if (event := self.waiting.get(to.chat_id)) is not None:
            event.set()
        return Sent("1")

    async def send_media(self, to: Address, media: Media, caption: str) -> Sent:
        return Sent("1")


async def customer(
    engine: ConversationService, channel: TimingChannel, n: int, messages: int, lat: list[float]
) -> None:
    who = Customer("telegram", str(n), f"C{n}", "fr")
    where = Address("telegram", str(n))
    for i in range(messages):
        replied = channel.waiting[where.chat_id] = asyncio.Event()
        start = time.perf_counter()
        text = QUESTIONS[(n + i) % len(QUESTIONS)]
        await engine.handle(CustomerMessage(who, where, text, f"b:{n}:{i}"))
        await replied.wait()
        lat.append(channel.delivered[where.chat_id] - start)


async def main(customers: int, messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_from_mapping({"storage": {"path": f"{tmp}/bench.db"}})
        db = await Database.open(settings.storage.path)
        store = SqliteStore(db)
        channel = TimingChannel()
        dispatcher = Dispatcher(store, SystemClock(), customers={"telegram": channel}, desk=None)
        kb = KnowledgeBase.load(ROOT / "knowledge.yaml")
        engine = ConversationService(store, kb, settings, SystemClock(), dispatcher, desk=None)
        latencies: list[float] = []
        start = time.perf_counter()
        cpu_start, loop_start = time.process_time(), time.thread_time()
        await asyncio.gather(
            *(customer(engine, channel, n, messages, latencies) for n in range(customers))
        )
        elapsed = time.perf_counter() - start
        cpu, loop_cpu = time.process_time() - cpu_start, time.thread_time() - loop_start
        await dispatcher.stop()
        await db.close()
        size = Path(settings.storage.path).stat().st_size  # noqa: ASYNC240 - after the run
    total = customers * messages
    q = statistics.quantiles(latencies, n=100)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"customers {customers}, messages each {messages}, total {total}")
    print(f"throughput      {total / elapsed:8.0f} messages/s")
    print(f"latency p50     {q[49] * 1000:8.2f} ms   p99 {q[98] * 1000:.2f} ms")
    loop_ms = loop_cpu / total * 1000
    print(f"CPU per message {cpu / total * 1000:8.3f} ms   (event loop {loop_ms:.3f} ms, "
          "the rest on the database thread)")  # fmt: skip
    print(f"peak RSS        {peak_mb:8.0f} MB   database {size / 1e6:.1f} MB")
    print(f"rerun: .venv/bin/python bench/engine_bench.py --customers {customers} "
          f"--messages {messages}")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.customers, args.messages))
