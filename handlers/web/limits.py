"""Per-client rate limits for the web channel (token buckets, injected clock)."""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_CLIENTS = 10_000  # buckets kept; the oldest are forgotten beyond this


class RateLimiter:
    """``capacity`` messages, refilled at ``capacity / period`` per second, per client key."""

    def __init__(
        self, capacity: int, period: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period
        self._now = now
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, *keys: str) -> bool:
        """Take one token from every key's bucket, only if all of them have one."""
        now = self._now()
        levels = {}
        for key in keys:
            level, at = self._buckets.get(key, (self.capacity, now))
            levels[key] = min(self.capacity, level + (now - at) * self.rate)
        if any(level < 1 for level in levels.values()):
            for key, level in levels.items():
                self._buckets[key] = (level, now)
            return False
        for key, level in levels.items():
            self._buckets.pop(key, None)
            self._buckets[key] = (level - 1, now)
        while len(self._buckets) > MAX_CLIENTS:
            del self._buckets[next(iter(self._buckets))]
        return True
