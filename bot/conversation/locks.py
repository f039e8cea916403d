"""One asyncio lock per key, created on demand and dropped when nobody holds or waits on it.

Work on one conversation is serialized while other conversations run in parallel;
idle conversations cost no memory. With ``across`` (a database other processes share),
the key is then held against those processes too, for as long as this process holds it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol


class Across(Protocol):
    """Holds a key against the other processes (``Store.hold`` on a shared database);
    ``load_open`` / ``load_id``: the step's first read (see ``KeyedLocks.hold``)."""

    def __call__(
        self, key: str, *, load_open: bool = ..., load_id: int | None = ...
    ) -> AbstractAsyncContextManager[None]: ...


class KeyedLocks:
    def __init__(self, across: Across | None = None) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._across = across

    @asynccontextmanager
    async def hold(
        self, key: str, *, load_open: bool = False, load_id: int | None = None
    ) -> AsyncIterator[None]:
        """The holder's first read, if it is ``Store.load_open(key)`` (``load_open``) or
        ``Store.load(load_id)``: a store that holds the key on its database reads it on
        the same trip."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                if self._across is None:
                    yield
                else:
                    async with self._across(key, load_open=load_open, load_id=load_id):
                        yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
