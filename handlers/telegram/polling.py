"""Long polling that confirms an update to Telegram only once it was processed.

PTB's ``Updater`` asks for the next batch (whose offset confirms the previous one) as
soon as it has queued a batch, so a process killed while that batch is still being
handled loses it: Telegram will never send it again. Here a batch is confirmed only
after every update of it went through the handler (stored, or refused and logged);
a process killed before that gets the batch again on restart, and the engine's inbound
keys make the second pass a no-op for what was already stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application

from bot.conversation.busy import GIVE_UP_AFTER_S

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_LONGEST_S = 30.0
# Longer than any legitimate wait (a locked database is waited out for GIVE_UP_AFTER_S):
# an update whose handler never reported back must not stop polling for good.
HANDLING_LIMIT_S = GIVE_UP_AFTER_S + 300.0


class ConfirmingPoller:
    """getUpdates in a loop; the next offset moves past a batch once it is all handled."""

    def __init__(
        self,
        application: Application[Any, Any, Any, Any, Any, Any],
        *,
        timeout: int,
        allowed_updates: Sequence[str],
        on_error: Callable[[TelegramError], None],
    ) -> None:
        self.application = application
        self.timeout = timeout
        self.allowed_updates = list(allowed_updates)
        self.on_error = on_error
        self._in_flight: set[int] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Poll (again, after a ``stop``: leadership comes and goes) from the offset Telegram
        keeps: what the last poller did not confirm comes again."""
        # Polling and a webhook exclude each other; keep what is pending (not dropped).
        await self.application.bot.delete_webhook(drop_pending_updates=False)
        self._stopping.clear()
        self._in_flight.clear()
        self._idle.set()
        self._task = asyncio.create_task(self._poll(), name="telegram-polling")

    @property
    def running(self) -> bool:
        """Asking Telegram for updates (started, not stopped, not crashed)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Stop asking; updates already queued are still handled by the application."""
        if self._task is None:
            return
        self._stopping.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def handled(self, update: object) -> None:
        """Called by the handler when it is done with an update, whatever the outcome."""
        if isinstance(update, Update):
            self._in_flight.discard(update.update_id)
        if not self._in_flight:
            self._idle.set()

    async def _fetch(self, offset: int | None) -> tuple[Update, ...]:
        """One getUpdates, abandoned as soon as ``stop`` is called.

        Cancelling a long poll is not enough on its own: httpcore reads under an anyio
        cancel scope that can swallow an outside cancellation, and the poll then runs on
        to its read timeout (and the loop after it). Racing it against the stop event
        makes stopping immediate whatever the HTTP stack does with the cancellation.
        """
        fetch: asyncio.Future[tuple[Update, ...]] = asyncio.ensure_future(
            self.application.bot.get_updates(
                offset=offset, timeout=self.timeout, allowed_updates=self.allowed_updates
            )
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((fetch, stopping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not fetch.done():
                fetch.cancel()
                fetch.add_done_callback(_retrieve)
        if not fetch.done():
            raise _Stopped
        return fetch.result()

    async def _poll(self) -> None:
        offset: int | None = None
        wait = RETRY_FIRST_S
        while True:
            try:
                updates = await self._fetch(offset)
            except _Stopped:
                return
            except Exception as exc:
                if isinstance(exc, TelegramError):
                    self.on_error(exc)
                else:  # a batch PTB cannot read: Telegram itself never sends one
                    log.exception("telegram: getUpdates answer unreadable; retrying")
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_LONGEST_S)
                continue
            wait = RETRY_FIRST_S
            if not updates:
                continue
            self._in_flight = {u.update_id for u in updates}
            self._idle.clear()
            for update in updates:
                await self.application.update_queue.put(update)
            try:
                await asyncio.wait_for(self._idle.wait(), HANDLING_LIMIT_S)
            except TimeoutError:
                log.warning(
                    "telegram: updates %s still not handled after %.0fs; confirming them",
                    sorted(self._in_flight),
                    HANDLING_LIMIT_S,
                )
            offset = updates[-1].update_id + 1


class _Stopped(Exception):
    """The poller was asked to stop while a getUpdates was in flight."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    """An abandoned getUpdates ends however it ends; nobody waits for its outcome."""
    if not task.cancelled():
        task.exception()
