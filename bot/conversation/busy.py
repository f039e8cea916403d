"""Waiting out a database that another process keeps locked, or a PostgreSQL server
that is restarting or failing over.

An engine step is one transaction: when it fails with ``DatabaseLockedError`` nothing of
it was written, so running it again is safe; after ``DatabaseUnavailableError`` it may
have been (a connection cut during its COMMIT), and running it again is still safe (its
inbound key, a delivery's record written twice alike). Giving up instead would lose the
update (Telegram's offset and Slack's ack have already moved on) or, for a delivery's
record, send the message again once its claim runs out; so the work is retried with
backoff for as long as ``give_up_after`` allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.errors import DatabaseLockedError, DatabaseUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_WAIT_S = 0.05
LONGEST_WAIT_S = 2.0
GIVE_UP_AFTER_S = 600.0  # an operator holding the database this long has a bigger problem
# What is waited out: it passes by itself (a lock released, a server back).
WAIT_OUT = (DatabaseLockedError, DatabaseUnavailableError)


async def patiently(
    step: Callable[[], Awaitable[T]],
    what: str,
    *,
    give_up_after: float = GIVE_UP_AFTER_S,
) -> T:
    """Run ``step``; while the database is locked or out of reach, wait (doubling up to
    2 s) and run it again."""
    started = time.monotonic()
    wait = FIRST_WAIT_S
    attempts = 0
    while True:
        try:
            result = await step()
        except WAIT_OUT as exc:
            attempts += 1
            waited = time.monotonic() - started
            if waited + wait > give_up_after:
                log.error("%s: database still unusable after %.0fs; giving up", what, waited)
                raise
            if attempts == 1:
                locked = isinstance(exc, DatabaseLockedError)
                until = "the lock is released" if locked else "it is back"
                log.warning("%s: %s; waiting until %s", what, exc, until)
            await asyncio.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT_S)
            continue
        if attempts:
            log.info(
                "%s: done after waiting %.1fs for the database", what, time.monotonic() - started
            )
        return result
