"""Web load: widget visitors over WebSocket, timed from the frame sent to the bot's line.

Each visitor does what the widget does: ``POST /api/web/session`` for a token, opens
``/ws/widget?token=…&since=0&lang=fr``, sends ``{"type": "message", "id", "text"}`` frames
and reads the pushed frames (``line`` frames with a ``seq`` that only grows: a visitor
that sees it go back counts an error, as the widget would replay wrongly). The clock of a
question stops when the bot's ``line`` containing the expected text arrives at the client.
The web channel has no platform in between: the client's own WebSocket is the only peer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from bench.loadkit import Tally, Waiters

REPLY_TIMEOUT_S = 30.0
_ids = itertools.count(1)


class Visitor:
    """One widget: its token, its socket, the highest ``seq`` it has seen."""

    def __init__(self, http: aiohttp.ClientSession, base: str, waiters: Waiters) -> None:
        self.http = http
        self.base = base
        self.waiters = waiters
        self.key = object()  # the waiters' key for this visitor
        self.seq = 0
        self.seq_errors = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        async with self.http.post(f"{self.base}/api/web/session") as resp:
            resp.raise_for_status()
            token = (await resp.json())["token"]
        url = f"{self.base}/ws/widget?token={token}&since={self.seq}&lang=fr"
        self.ws = await self.http.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame.get("type") == "line":
                if frame["seq"] <= self.seq:
                    self.seq_errors += 1
                self.seq = max(self.seq, frame["seq"])
                self.waiters.arrived(self.key, frame)

    async def say(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"type": "message", "id": f"m{next(_ids)}",
                                           "text": text}, ensure_ascii=False))  # fmt: skip

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader


def bot_line(text: str) -> Any:
    """A predicate: a line written by the bot whose text contains ``text``."""
    return lambda f: f.get("author") == "bot" and text in f.get("text", "")


async def open_visitors(
    http: aiohttp.ClientSession, base: str, waiters: Waiters, n: int
) -> list[Visitor]:
    visitors = [Visitor(http, base, waiters) for _ in range(n)]
    for chunk in range(0, n, 50):  # not all handshakes at once
        await asyncio.gather(*(v.open() for v in visitors[chunk : chunk + 50]))
    return visitors


async def run_visitors(
    visitors: Sequence[Visitor],
    questions: Sequence[str],
    tally: Tally,
    duration: float,
    *,
    expect: str | None,
    rate: float | None = None,
) -> None:
    """Closed loop (each visitor asks, waits for the answer, asks again) or, with ``rate``
    (messages/s overall), each visitor keeps to a schedule. ``expect=None``: an echo."""
    start = time.perf_counter()
    deadline = start + duration
    interval = len(visitors) / rate if rate else 0.0
    seq_errors = sum(v.seq_errors for v in visitors)

    async def one(i: int, visitor: Visitor) -> None:
        turn = 0
        due = start + (interval * i / len(visitors))
        while time.perf_counter() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                due += interval
            turn += 1
            text = questions[(i + turn) % len(questions)]
            waiter = visitor.waiters.expect(
                visitor.key, bot_line(text if expect is None else expect)
            )
            sent = time.perf_counter()
            try:
                await visitor.say(text)
                arrived, _ = await asyncio.wait_for(waiter, REPLY_TIMEOUT_S)
                tally.note(sent, arrived)
            except (TimeoutError, ConnectionError):
                waiter.cancel()
                tally.errors += 1

    await asyncio.gather(*(one(i, v) for i, v in enumerate(visitors)))
    tally.elapsed = time.perf_counter() - start
    tally.errors += sum(v.seq_errors for v in visitors) - seq_errors
