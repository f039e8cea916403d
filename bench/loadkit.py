"""Pieces the load benchmark shares: child processes, their memory, reply waiters, stats.

The bot (and the echo bots) run as separate processes, as in production, so that the
benchmark's own work (the fake platforms, the simulated customers) does not share their
event loop; their memory is read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
STOP_TIMEOUT_S = 15.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port nobody listens on right now (for a child's HTTP endpoint)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """A process under test: started with its own environment, output kept in a log file."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        full_env = {**os.environ, **env, "NO_PROXY": "127.0.0.1,localhost"}
        full_env["no_proxy"] = full_env["NO_PROXY"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
                list(argv), env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _status(self, key: str) -> int:
        """A ``VmRSS``/``VmHWM`` line of /proc/<pid>/status, in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise LookupError(key)

    def rss(self) -> int:
        return self._status("VmRSS")

    def peak_rss(self) -> int:
        return self._status("VmHWM")

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (all its threads)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.log.name} exited with {self.proc.returncode}:\n{tail}")

    async def stop(self) -> None:
        """SIGTERM (a clean stop, as an operator would), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def supportbot(config: Path, env: Mapping[str, str], log: Path) -> Child:
    """The real product: ``supportbot run --config <config>``."""
    exe = Path(PYTHON).with_name("supportbot")
    return Child([str(exe), "run", "--config", str(config)], env, log)


def files_size(folder: Path, prefix: str) -> int:
    """A SQLite database's bytes on disk, its -wal and -shm files included."""
    return sum(p.stat().st_size for p in folder.glob(prefix + "*"))


def script(name: str, args: Sequence[str], env: Mapping[str, str], log: Path) -> Child:
    """One of the bare comparison bots of this folder."""
    return Child([PYTHON, str(ROOT / "bench" / name), *args], env, log)


Predicate = Callable[[Any], bool]


class Waiters:
    """Who waits for which reply: per key (a chat), the first waiter whose predicate
    matches a message gets it, with the time it reached the server."""

    def __init__(self) -> None:
        self._waiting: dict[object, deque[tuple[Predicate, asyncio.Future[tuple[float, Any]]]]] = {}

    def expect(self, key: object, predicate: Predicate) -> asyncio.Future[tuple[float, Any]]:
        """Register before sending what provokes the reply, so that it cannot be missed."""
        future: asyncio.Future[tuple[float, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append((predicate, future))
        return future

    def arrived(self, key: object, message: Any) -> None:
        queue = self._waiting.get(key)
        if not queue:
            return
        for i, (predicate, future) in enumerate(queue):
            if future.done():  # its customer gave up waiting
                continue
            if predicate(message):
                del queue[i]
                future.set_result((time.perf_counter(), message))
                break
        while queue and queue[0][1].done():
            queue.popleft()
        if not queue:
            del self._waiting[key]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; NaN when there is nothing."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Tally:
    """What one phase measured."""

    name: str
    answered: int = 0  # customer inputs whose reply arrived
    latencies: list[float] = field(default_factory=list)  # seconds, update queued → reply
    other: list[float] = field(default_factory=list)  # agent → customer relays, Slack acks
    elapsed: float = 0.0
    errors: int = 0
    cpu: float = 0.0  # CPU seconds the process under test used during the phase
    peak_rss: int = 0  # bytes, the process under test's high-water mark after the phase

    @contextlib.contextmanager
    def cpu_of(self, child: Child) -> Iterator[None]:
        """Charge the CPU time ``child`` uses inside the block to this phase."""
        before = child.cpu_seconds()
        try:
            yield
        finally:
            self.cpu += child.cpu_seconds() - before

    @property
    def cpu_per_msg(self) -> float:
        """CPU seconds of the process under test per answered customer message."""
        return self.cpu / self.answered if self.answered else math.nan

    def note(self, sent_at: float, arrived_at: float) -> None:
        self.answered += 1
        self.latencies.append(arrived_at - sent_at)

    @property
    def rate(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0

    def ms(self, q: float, *, other: bool = False) -> float:
        return percentile(self.other if other else self.latencies, q) * 1000


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:  # noqa: ASYNC109
    """Poll a condition of another process (its log, its port) until true or timeout."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
