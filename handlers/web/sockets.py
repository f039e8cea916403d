"""One open WebSocket with its own send queue, so that a push never waits for the peer.

Why: the outbox delivers every channel's messages from a bounded pool of tasks. If a
push awaited the socket, a browser that stops reading (a frozen tab, a hostile script)
would hold its task forever once its TCP buffers are full, and a few dozen of them
would stop every reply on every channel. Here a push only appends to the socket's own
queue; one writer task per socket sends in order, and a peer that does not take a
frame within ``send_timeout`` (or lets ``MAX_BACKLOG`` bytes pile up) is dropped with
``abort()``: nothing it left unread is lost, the transcript is stored and replayed
when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MAX_BACKLOG = 8 * 1024 * 1024  # characters queued for one socket (a full replay fits)
CLOSE_WAIT_S = 1.0  # how long a polite close may take before the socket is aborted


def dumps(frame: Any) -> str:
    """Compact JSON that keeps non-ASCII as is (an emoji is 4 bytes, not a 12-byte escape)."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


class Outlet:
    """The sending side of one WebSocket: ``push`` never blocks; ``run`` does the sending."""

    def __init__(
        self, ws: web.WebSocketResponse, request: web.BaseRequest, *, send_timeout: float, who: str
    ) -> None:
        self.ws = ws
        self.who = who  # for log lines: never a token, never a message
        self.send_timeout = send_timeout
        self._transport = request.transport
        self._queue: deque[str] = deque()
        self._backlog = 0
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing waits to be sent
        self._drained.set()
        self._task: asyncio.Task[None] | None = None
        self.dropped = False
        self.seq = 0  # a widget's: the last transcript line queued (each once, in order)

    def push(self, frame: dict[str, Any]) -> None:
        """Queue a frame for this socket; drop the socket if it lets too much pile up."""
        if self.dropped:
            return
        data = dumps(frame)
        if self._backlog + len(data) > MAX_BACKLOG:
            self.drop(f"more than {MAX_BACKLOG} characters waiting")
            return
        self._queue.append(data)
        self._backlog += len(data)
        self._drained.clear()
        self._ready.set()

    def start(self) -> None:
        """Start the writer (the socket handler stops it with ``stop`` when it returns)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ws:{self.who}")

    async def stop(self) -> None:
        self.dropped = True
        self._ready.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Send queued frames in order until the socket closes or is dropped."""
        unread = 0
        while not self.dropped:
            if not self._queue:
                self._drained.set()
                self._ready.clear()
                try:
                    async with asyncio.timeout(self.send_timeout):
                        await self._ready.wait()
                except TimeoutError:
                    unread = self._check_reading(unread)
                continue
            data = self._queue.popleft()
            self._backlog -= len(data)
            try:
                async with asyncio.timeout(self.send_timeout):
                    await self.ws.send_str(data)
                unread = 0
            except TimeoutError:
                self.drop(f"took no data for {self.send_timeout:g}s")
            except (ConnectionError, RuntimeError):
                self.dropped = True  # closed under us: the reader side ends the handler

    def _check_reading(self, unread_before: int) -> int:
        """Between sends: bytes still unsent and not fewer than a while ago mean the peer
        stopped reading (a send that fits the buffers returns at once, and aiohttp's
        heartbeat ``close()`` would wait for them forever)."""
        unread = self._transport.get_write_buffer_size() if self._transport is not None else 0
        if unread and unread_before and unread >= unread_before:
            self.drop(f"read nothing of {unread} bytes for {self.send_timeout:g}s")
        return unread

    def drop(self, reason: str) -> None:
        """Cut the connection at once: ``close()`` would wait for the peer to read."""
        if self.dropped:
            return
        self.dropped = True
        self._queue.clear()
        self._backlog = 0
        self._ready.set()
        log.warning("web socket of %s dropped: %s", self.who, reason)
        if self._transport is not None:
            self._transport.abort()

    async def close(self, code: int = 1001, reason: str = "", *, flush: bool = False) -> None:
        """A polite close if the peer takes it quickly, else an abort; with ``flush``, what
        was pushed is sent first (a last word such as the goodbye after /forget)."""
        if flush and self._task is not None and not self.dropped:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT_S):
                    await self._drained.wait()
        await self.stop()
        try:
            async with asyncio.timeout(CLOSE_WAIT_S):
                await self.ws.close(code=code, message=reason.encode())
        except (TimeoutError, ConnectionError, RuntimeError):
            if self._transport is not None:
                self._transport.abort()
