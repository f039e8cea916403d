"""Waiting out a database that another process keeps locked.

An engine step is one SQLite transaction: when it fails with ``DatabaseLockedError``
nothing of it was written, so running it again is safe. Giving up instead would lose the
update (Telegram's offset and Slack's ack have already moved on), so a step is retried
with backoff for as long as ``give_up_after`` allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.errors import DatabaseLockedError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_WAIT_S = 0.05
LONGEST_WAIT_S = 2.0
GIVE_UP_AFTER_S = 600.0  # an operator holding the database this long has a bigger problem


async def patiently(
    step: Callable[[], Awaitable[T]],
    what: str,
    *,
    give_up_after: float = GIVE_UP_AFTER_S,
) -> T:
    """Run ``step``; while the database is locked, wait (doubling up to 2 s) and run it again."""
    started = time.monotonic()
    wait = FIRST_WAIT_S
    attempts = 0
    while True:
        try:
            result = await step()
        except DatabaseLockedError as exc:
            attempts += 1
            waited = time.monotonic() - started
            if waited + wait > give_up_after:
                log.error("%s: database still locked after %.0fs; giving up", what, waited)
                raise
            if attempts == 1:
                log.warning("%s: %s; waiting for the lock to be released", what, exc)
            await asyncio.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT_S)
            continue
        if attempts:
            log.info(
                "%s: done after the database was locked for %.1fs", what, time.monotonic() - started
            )
        return result
