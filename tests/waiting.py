"""Waiting on a condition with a deadline — the only way tests synchronize with tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Return once ``predicate()`` holds; fail with TimeoutError after ``within`` seconds."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - state owned by other tasks, bounded above
            await asyncio.sleep(0.005)
