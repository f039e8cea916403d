"""Customers' rights over their data: export, erasure, and the retention limit.

The SQL lives in ``storage.privacy``; this module decides when it runs and what follows:
an erasure (from ``supportbot customer erase``, or ``/forget`` confirmed by the customer,
which storage erases inside the engine's own step) is *finished* by the running bot —
each agents' thread header of that customer is rewritten through the outbox to say the
customer was erased, and the WAL is truncated so no old page keeps the text. The command
line cannot reach the agents' desk, so it leaves that part to the bot (within one sweep,
or at its next start).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bot.clock import Clock, to_ms
from bot.config import Settings
from bot.conversation import payloads as P
from bot.conversation.desk_view import thread_header
from bot.conversation.store import NewOutbox, OutboxItem, Store, Unit
from bot.errors import UnknownCustomerError
from bot.texts import Texts

if TYPE_CHECKING:
    from storage.database import Database
    from storage.privacy import Erased, Expired

log = logging.getLogger(__name__)

RETENTION_EVERY = timedelta(days=1)
EXPORT_FORMAT = "supportbot-customer-export/1"


class OutboxSink(Protocol):
    def submit(self, items: list[OutboxItem] | tuple[OutboxItem, ...]) -> None: ...


@dataclass(frozen=True, slots=True)
class Finished:
    erasures: int
    headers: int


class PrivacyService:
    """Export, erase and expire, on one open database."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        clock: Clock,
        *,
        store: Store | None = None,
        outbox: OutboxSink | None = None,
        desk: str | None = None,
    ) -> None:
        from storage.privacy import PrivacyStore

        self.data = PrivacyStore(db)
        self.settings = settings
        self.clock = clock
        self.store = store
        self.outbox = outbox
        self.desk = desk
        self.texts = Texts(settings.language, dict(settings.messages.items()))
        self._last_retention: float | None = None
        self._finishing = asyncio.Lock()
        self._announced: dict[int, int] = {}  # erasure event id → headers queued

    def _now(self) -> int:
        return to_ms(self.clock.now())

    async def export(self, key: str) -> dict[str, Any]:
        """One JSON-ready document with everything stored about the customer ``key``."""
        found = await self.data.export(key)
        if found is None:
            raise UnknownCustomerError(f"no customer {key!r} is stored (keys look like "
                                       "telegram:4242, slack:U0123, web:…)")  # fmt: skip
        return {"format": EXPORT_FORMAT, "key": key,
                "exported_at": self.clock.now().isoformat(), **found}  # fmt: skip

    async def erase(self, key: str, actor: str) -> Erased:
        """Erase one customer now; KPIs keep their figures. ``actor`` goes to the audit."""
        erased = await self.data.erase(key, self._now(), actor)
        if erased is None:
            raise UnknownCustomerError(f"no customer {key!r} is stored")
        log.info("customer #%d erased by %s: %d conversation(s), %d message text(s), "
                 "%d comment(s), %d web line(s)", erased.customer_id, actor,
                 erased.conversations, erased.messages, erased.comments,
                 erased.web_lines)  # fmt: skip
        await self.finish()
        return erased

    async def finish(self) -> Finished:
        """Rewrite erased customers' thread headers (when this process has the desk's
        outbox), then truncate the WAL so the erased text is gone from both files.

        An erasure is recorded as finished only once the WAL was really truncated: when
        readers keep it busy, the next tick tries again (headers are queued only once).
        """
        async with self._finishing:
            pending = await self.data.pending_erasures()
            if not pending:
                return Finished(0, 0)
            headers = 0
            if self.outbox is not None and self.store is not None:
                for erasure in pending:
                    if erasure.event_id not in self._announced:
                        self._announced[erasure.event_id] = await self._headers(erasure.customer_id)
                    headers += self._announced[erasure.event_id]
            if not await self.data.truncate_wal():
                log.warning("the WAL is busy: erased text may stay in it until the next try")
                return Finished(0, 0)
            if self.outbox is None or self.store is None:
                return Finished(0, 0)  # the bot with the agents' desk finishes them
            for erasure in pending:
                count = self._announced.pop(erasure.event_id, 0)
                await self.data.finished(erasure, self._now(), count)
            return Finished(len(pending), headers)

    async def _headers(self, customer_id: int) -> int:
        assert self.store is not None
        assert self.outbox is not None
        if self.desk is None:
            return 0
        label = self.texts.get(self.settings.language, "erased_customer")

        def t(key: str, **values: object) -> str:
            return self.texts.get(self.settings.language, key, **values)

        count = 0
        for conversation_id in await self.data.desk_threads(customer_id, self.desk):
            conv = await self.store.load(conversation_id)
            if conv is None:
                continue
            conv.customer_name = label
            header = thread_header(conv, t)  # no transcript: it quoted the customer
            unit = Unit(self._now(), conversation=conv)
            unit.outbox.append(NewOutbox(P.desk_lane(conv.id), P.UPDATE_HEADER,
                                         {"header": P.header_json(header)}))  # fmt: skip
            applied = await self.store.apply(unit)
            self.outbox.submit(applied.outbox)
            count += 1
        return count

    async def expire(self) -> Expired | None:
        """Clear texts older than ``privacy.retain_messages`` (None when it is off)."""
        keep = self.settings.privacy.retain_messages
        if keep is None:
            return None
        cutoff = self.clock.now() - keep
        expired = await self.data.expire(to_ms(cutoff))
        if expired.total:
            log.info("retention: cleared %d message text(s), %d comment(s), %d web line(s), "
                     "%d payload(s) older than %s", expired.messages, expired.comments,
                     expired.web_lines, expired.outbox, cutoff.isoformat())  # fmt: skip
            if not await self.data.truncate_wal():
                log.warning("the WAL is busy: expired text may stay in it until the next "
                            "checkpoint")  # fmt: skip
        return expired

    async def tick(self) -> None:
        """The bot's periodic job: finish erasures; once a day, apply the retention limit."""
        await self.finish()
        now = self.clock.now().timestamp()
        due = RETENTION_EVERY.total_seconds()
        if self._last_retention is None or now - self._last_retention >= due:
            self._last_retention = now
            await self.expire()


# ---------------------------------------------------------------------- command line


async def customer_command(
    settings: Settings, action: str, key: str, clock: Clock | None = None
) -> str:
    """``supportbot customer export|erase KEY``: the JSON document, or what was erased."""
    import getpass
    import json

    from bot.clock import SystemClock
    from storage.database import Database

    db = await Database.open(settings.storage.target(), settings.storage.busy_timeout)
    try:
        service = PrivacyService(db, settings, clock or SystemClock())
        if action == "export":
            return json.dumps(await service.export(key), ensure_ascii=False, indent=2)
        erased = await service.erase(key, actor=f"cli:{getpass.getuser()}")
        return (
            f"erased {key}: {erased.conversations} conversation(s), {erased.messages} message "
            f"text(s), {erased.comments} comment(s), {erased.web_lines} web line(s); agents' "
            "thread headers are updated by the running bot"
        )
    finally:
        await db.close()


async def backup_command(settings: Settings, target: Path, clock: Clock | None = None) -> str:
    """``supportbot backup PATH``: works beside a running bot (no instance lock taken)."""
    from bot.clock import SystemClock
    from storage.backup import backup_database

    now = (clock or SystemClock()).now().astimezone(settings.tz)
    done = await backup_database(settings.storage.path, target, now, settings.storage.busy_timeout)
    return f"backup: {done.path} ({done.pages} pages, {done.size} bytes)"
