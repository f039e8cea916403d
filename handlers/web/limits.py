"""Per-client limits for the web channel: token buckets, open-socket caps, client groups.

A client is its IP address, except that IPv6 clients are grouped by their /64: one
home or one server gets a whole /64, so counting single IPv6 addresses would give an
attacker billions of fresh buckets.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable

MAX_CLIENTS = 10_000  # buckets kept; the oldest are forgotten beyond this


def client_group(address: str) -> str:
    """The rate-limit key of an address: IPv4 as is, IPv6 by its /64 network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class RateLimiter:
    """``capacity`` messages, refilled at ``capacity / period`` per second, per client key."""

    def __init__(
        self, capacity: int, period: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = float(capacity)
        self.rate = capacity / period
        self._now = now
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        level, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, level + (now - at) * self.rate)

    def exhausted(self, key: str) -> bool:
        """Whether ``key`` has no token left, without taking one (refuse before trying)."""
        return self._level(key, self._now()) < 1

    def allow(self, *keys: str) -> bool:
        """Take one token from every key's bucket, only if all of them have one."""
        now = self._now()
        levels = {key: self._level(key, now) for key in keys}
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


class SocketCounts:
    """Open sockets per key, so that one visitor or one address cannot hold thousands."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def reserve(self, caps: dict[str, int]) -> bool:
        """Count one more socket under every key, only if none is at its cap."""
        if any(self._open[key] >= cap for key, cap in caps.items()):
            return False
        for key in caps:
            self._open[key] += 1
        return True

    def release(self, keys: dict[str, int]) -> None:
        for key in keys:
            self._open[key] -= 1
            if self._open[key] <= 0:
                del self._open[key]

    def count(self, key: str) -> int:
        return self._open[key]
