"""Knowledge-base matcher benchmark: start-up, match latency and memory, 200 entries.

The knowledge base is every shipped evaluation set's entries put together (and
some again under other ids) up to 200 entries; the messages are the sets'
labelled phrasings. Each figure is measured in a fresh process. Rerun:

    .venv/bin/python bench/kb_bench.py [--encoder use-multilingual|none]

Targets (issue 15): one match warm p99 ≤ 5 ms; start-up ≤ 3 s with the
embedding cache; resident memory ≤ +150 MB over ``--encoder none`` (memory is
printed as the growth of the process's resident set over its start: run both).
Latency is wall time; the CPU time of each match (its thread's) is printed too:
on a busy machine the wall time's tail is mostly waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENTRIES = 200


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build_knowledge(path: Path) -> list[str]:
    """A 200-entry knowledge.yaml from the shipped sets; returns their messages."""
    import yaml

    from bot.knowledge.evaluation import load_dataset, shipped_sets

    entries: list[dict[str, object]] = []
    messages: list[str] = []
    sets = shipped_sets()
    for item in sets:
        messages += [case.text for case in load_dataset(item.dataset)]
    round_ = 0
    while len(entries) < ENTRIES:
        for item in sorted({s.knowledge for s in sets}):
            data = yaml.safe_load(item.read_text(encoding="utf-8"))
            for raw in data["entries"]:
                if len(entries) < ENTRIES:
                    copy = dict(raw)
                    copy["id"] = f"{item.parent.name}-{raw['id']}-{round_}"
                    entries.append(copy)
        round_ += 1
    path.write_text(yaml.safe_dump({"entries": entries}, allow_unicode=True), encoding="utf-8")
    return messages


def child(knowledge: Path, cache: Path, encoder: str, messages: Path) -> None:
    """One fresh process: start-up time, then latency of every message, then memory."""
    started = time.perf_counter()
    baseline = _rss_mb()
    from bot.knowledge import KnowledgeBase

    kb = KnowledgeBase.load(knowledge, None, encoder, cache)
    startup = time.perf_counter() - started
    texts = json.loads(messages.read_text(encoding="utf-8"))
    for number in range(20):  # warm-up messages unlike the measured ones (no cache hit)
        kb.match(f"warm-up message number {number}")
    timings, cpu = [], []
    for text in texts:
        begin, begin_cpu = time.perf_counter(), time.thread_time()
        kb.match(text)
        timings.append(time.perf_counter() - begin)
        cpu.append(time.thread_time() - begin_cpu)
    timings.sort()
    cpu.sort()
    result = {
        "startup_s": startup,
        "p50_ms": 1000 * timings[len(timings) // 2],
        "p99_ms": 1000 * timings[int(len(timings) * 0.99)],
        "cpu_p50_ms": 1000 * cpu[len(cpu) // 2],
        "cpu_p99_ms": 1000 * cpu[int(len(cpu) * 0.99)],
        "rss_mb": _rss_mb() - baseline,
        "matches": len(timings),
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="use-multilingual")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]), args.encoder, Path(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as folder:
        knowledge, cache = Path(folder) / "knowledge.yaml", Path(folder) / "kb.npz"
        messages = Path(folder) / "messages.json"
        messages.write_text(json.dumps(build_knowledge(knowledge)), encoding="utf-8")
        runs = {}
        for label in ("cold (no cache)", "warm (cached embeddings)"):
            command = [sys.executable, __file__, "--encoder", args.encoder, "--child"]
            output = subprocess.run(
                [*command, str(knowledge), str(cache), str(messages)],
                check=False, capture_output=True, text=True,
            )  # fmt: skip
            if output.returncode != 0:
                raise SystemExit(output.stderr)
            runs[label] = json.loads(output.stdout.strip().splitlines()[-1])
    print(f"knowledge base: {ENTRIES} entries, encoder {args.encoder}")
    for label, run in runs.items():
        print(
            f"  {label:<25} start-up {run['startup_s']:.2f} s   match p50 {run['p50_ms']:.2f} ms"
            f"   p99 {run['p99_ms']:.2f} ms   memory +{run['rss_mb']:.0f} MB"
            f"   ({run['matches']} messages)"
        )
        print(
            f"  {'':<25} CPU time of one match: p50 {run['cpu_p50_ms']:.2f} ms"
            f"   p99 {run['cpu_p99_ms']:.2f} ms   (wall time minus waiting for a core)"
        )
    print("targets: start-up ≤ 3 s (warm), p99 ≤ 5 ms, memory ≤ +150 MB")
    print(f"rerun: .venv/bin/python bench/kb_bench.py --encoder {args.encoder}")


if __name__ == "__main__":
    main()
