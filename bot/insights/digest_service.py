"""The KPI digest service: posted on a cron schedule, never twice.

What is posted, and for which period, is ``bot.insights.digest``.

Never twice: the period is claimed in ``digest_runs`` (storage/digest_store.py) in
one write transaction before anything is posted, so a second job firing (DST change,
a double start, a second process) finds it taken. Each target is recorded as it is
delivered; a run left unfinished (crash, platform down) keeps a lease, and after the
lease whoever looks next — the periodic resume job, or the next start-up — sends only
the missing targets, from the text and chart saved at the first attempt. A target
that fails permanently (bad chat id, bot removed) is recorded as failed, not retried.
A platform that accepted a message just before a crash may get it again: delivery is
at-least-once per target, exactly-once per period claim.

Catch-up: at start-up, and then every minute, the latest slot that has passed is
sent if its period was never claimed and the database holds conversations from before
its end (a fresh install does not post an empty digest for last week). So a digest
missed while the bot was down (or asleep past APScheduler's grace time) goes out once
it is back. Older missed slots are not replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.clock import Clock, from_ms, to_ms
from bot.config import Settings
from bot.conversation.ports import DigestPublisher
from bot.errors import ConfigError, DeliveryError, PermanentDeliveryError, StorageError
from bot.insights.digest import DigestContent, compose, digest_period, period_ending
from bot.insights.kpi import Period
from bot.insights.kpi_texts import KpiTexts

if TYPE_CHECKING:
    from storage.database import Database
    from storage.digest_store import DigestRun

log = logging.getLogger(__name__)

JOB_ID = "kpi-digest"


# --- sending -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestOutcome:
    """What one ``send`` did: ``status`` is sent, skipped (done or held by another
    sender), retry (some target failed for now; resumed later) or lost (another sender
    took over mid-way)."""

    period: Period
    status: str
    sent: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    text: str | None = None


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class DigestService:
    """Posts the digest on the configured cron schedule, once per period."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        publishers: Mapping[str, DigestPublisher],
        clock: Clock,
        *,
        owner: str | None = None,
        lease: timedelta = timedelta(minutes=2),
        retry_after: timedelta = timedelta(minutes=5),
        max_attempts: int = 6,
        check_every: timedelta = timedelta(minutes=1),
        stop_grace: timedelta = timedelta(seconds=5),
        chart: bool = True,
    ) -> None:
        from apscheduler.triggers.cron import CronTrigger

        from storage.digest_store import DigestRuns

        self.settings = settings
        self.db = db
        self.publishers = publishers
        self.clock = clock
        self.owner = owner or _owner()
        self.lease = lease
        self.retry_after = retry_after
        self.max_attempts = max_attempts
        self.check_every = check_every
        self.stop_grace = stop_grace
        self.chart = chart
        self.runs = DigestRuns(db)
        try:
            self.trigger = CronTrigger.from_crontab(settings.digest.schedule, timezone=settings.tz)
        except ValueError as exc:
            raise ConfigError("digest.schedule", str(exc)) from None
        self.scheduler: Any = None
        self.catch_up_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._jobs: set[asyncio.Task[Any]] = set()

    # -- schedule --

    async def start(self) -> None:
        """Schedule the digest and a check every minute; catch up at once, in the background."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.interval import IntervalTrigger

        scheduler = AsyncIOScheduler(
            event_loop=asyncio.get_running_loop(), timezone=self.settings.tz
        )
        scheduler.add_job(
            self._on_schedule,
            self.trigger,
            id=JOB_ID,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
        scheduler.add_job(
            self._on_check,
            IntervalTrigger(seconds=self.check_every.total_seconds()),
            id=f"{JOB_ID}-check",
            coalesce=True,
            max_instances=1,
        )
        scheduler.start()
        self.scheduler = scheduler
        job = scheduler.get_job(JOB_ID)
        log.info(
            "KPI digest scheduled '%s' (%s) → %s; next %s",
            self.settings.digest.schedule,
            self.settings.timezone,
            ", ".join(self.settings.digest.targets) or "no targets",
            job.next_run_time if job else "never",
        )
        self.catch_up_task = asyncio.create_task(self._startup(), name="digest-catch-up")

    async def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.scheduler = None
        pending = {t for t in (self.catch_up_task, *self._jobs) if t is not None and not t.done()}
        if pending:  # let a digest being posted finish; a cancelled one is resumed later
            await asyncio.wait(pending, timeout=self.stop_grace.total_seconds())
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _guarded(self, name: str, action: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._jobs.add(task)
        try:
            await action
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("KPI digest: %s failed", name)
        finally:
            if task is not None:
                self._jobs.discard(task)

    async def _on_schedule(self) -> None:
        # A second of slack: a job woken a hair before its slot still finds that slot.
        await self._guarded("scheduled run", self.run_due(self.clock.now() + timedelta(seconds=1)))

    async def _on_check(self) -> None:
        await self._check()

    async def _startup(self) -> None:
        await self._check()

    async def _check(self) -> None:
        """Finish interrupted runs, and send a slot's digest that was missed (down, asleep)."""
        now = self.clock.now()
        await self._guarded("resume", self.resume(now))
        await self._guarded("catch-up", self.catch_up(now))

    def latest_slot(self, now: datetime) -> datetime | None:
        """The last time the cron schedule fired at or before ``now`` (None: not in 800 days).

        Instants are compared and stepped in UTC: wall-clock arithmetic on local times
        would loop on the hour that happens twice when clocks go back.
        """
        tz = self.settings.tz
        now_utc = now.astimezone(UTC)
        window = timedelta(hours=1)
        while window <= timedelta(days=800):
            slot: datetime | None = None
            probe = now_utc - window
            while True:
                fire = self.trigger.get_next_fire_time(None, probe.astimezone(tz))
                if fire is None or fire.astimezone(UTC) > now_utc:
                    break
                slot = fire.astimezone(UTC)
                probe = slot + timedelta(seconds=1)
            if slot is not None:
                return slot.astimezone(tz)
            window *= 4
        return None

    # -- actions --

    async def run_due(self, now: datetime) -> DigestOutcome | None:
        """Send the digest of the latest slot at or before ``now`` unless already claimed."""
        slot = self.latest_slot(now)
        if slot is None:
            return None
        return await self.send(digest_period(self.settings, slot).end)

    async def catch_up(self, now: datetime) -> DigestOutcome | None:
        """At start-up: send the latest missed digest once (see the module docstring)."""
        slot = self.latest_slot(now)
        if slot is None:
            return None
        period = digest_period(self.settings, slot)
        if await self.runs.status(period.start_ms, period.end_ms) is not None:
            return None  # done, or unfinished and left to resume()
        from storage.kpi_queries import KpiQueries

        first = await KpiQueries(self.db).first_activity()
        if first is None or first >= period.end_ms:
            log.info("KPI digest: no activity before %s; nothing to catch up", period.end)
            return None
        log.info("KPI digest: the %s digest was missed; sending it now", slot)
        return await self.send(period.end)

    async def resume(self, now: datetime) -> list[DigestOutcome]:
        """Finish runs left unfinished whose lease has expired (crash, platform down)."""
        outcomes = []
        for start, end in await self.runs.pending(to_ms(now)):
            period = period_ending(self.settings, from_ms(end))
            if period.start_ms != start:  # the period length changed in config since
                period = Period(from_ms(start).astimezone(self.settings.tz), period.end)
            outcomes.append(await self._send(period, force=False))
        return outcomes

    async def compose(self, period: Period) -> DigestContent:
        return await compose(self.settings, self.db, period, chart=self.chart)

    async def send(self, period_end: datetime, force: bool = False) -> DigestOutcome:
        """Post the digest of the period ending at ``period_end`` to every target, once."""
        return await self._send(period_ending(self.settings, period_end), force=force)

    async def _send(self, period: Period, *, force: bool) -> DigestOutcome:
        async with self._lock:
            lease = int(self.lease.total_seconds() * 1000)
            run = await self.runs.claim(
                period.start_ms,
                period.end_ms,
                owner=self.owner,
                now=self._now_ms(),
                lease_ms=lease,
                force=force,
            )
            if run is None:
                log.info("KPI digest %s: already sent or being sent; skipped", period.start.date())
                return DigestOutcome(period, "skipped")
            if run.text is None:
                content = await self.compose(period)
                await self.runs.save_content(run, content.text, content.chart)
            return await self._deliver(period, run, lease)

    async def _deliver(self, period: Period, run: DigestRun, lease: int) -> DigestOutcome:
        assert run.text is not None
        sent: list[str] = []
        failed: dict[str, str] = {}
        retry: dict[str, str] = {}
        filename = f"kpi-digest-{period.start.date().isoformat()}.png"
        for target in self.settings.digest.targets:
            if target in run.done:
                continue
            if not await self.runs.renew(run, self._now_ms(), lease):
                log.warning("KPI digest %s: another sender took over", period.start.date())
                return DigestOutcome(period, "lost", tuple(sent), failed, run.text)
            platform, _, chat = target.partition(":")
            publisher = self.publishers.get(platform)
            if publisher is None:
                failed[target] = f"no {platform} connection is running"
            else:
                try:
                    receipt = await publisher.publish(chat, run.text, run.chart, filename)
                except PermanentDeliveryError as exc:
                    failed[target] = str(exc) or type(exc).__name__
                except Exception as exc:  # transient, or a bug: retried a few times
                    if not isinstance(exc, DeliveryError):
                        log.exception("KPI digest: publishing to %s failed", target)
                    if run.attempts >= self.max_attempts:
                        failed[target] = f"gave up after {run.attempts} attempts: {exc}"
                    else:
                        retry[target] = str(exc) or type(exc).__name__
                        continue
                else:
                    await self.runs.delivered(
                        run, target, now=self._now_ms(), ok=True, message_id=receipt.message_id
                    )
                    sent.append(target)
                    continue
            log.warning("KPI digest: not posted to %s: %s", target, failed[target])
            await self.runs.delivered(
                run, target, now=self._now_ms(), ok=False, error=failed[target][:500]
            )
        if retry:
            until = self._now_ms() + int(self.retry_after.total_seconds() * 1000) * run.attempts
            await self.runs.postpone(run, until, "; ".join(f"{k}: {v}" for k, v in retry.items()))
            log.warning(
                "KPI digest %s: will retry %s at %s",
                period.start.date(),
                ", ".join(retry),
                from_ms(until),
            )
            return DigestOutcome(period, "retry", tuple(sent), {**failed, **retry}, run.text)
        await self.runs.finish(run, self._now_ms())
        log.info("KPI digest %s: posted to %s", period.start.date(), ", ".join(sent) or "nobody")
        return DigestOutcome(period, "sent", tuple(sent), failed, run.text)

    def _now_ms(self) -> int:
        return to_ms(self.clock.now())


# --- the CLI -----------------------------------------------------------------------------


def _exists(path: Path | str) -> bool:
    """A SQLite file is there (a PostgreSQL database is checked when opened)."""
    return isinstance(path, str) or str(path) == ":memory:" or path.exists()


def _temporary_chart() -> Path:
    """A new file in the system's temporary folder, for a preview's chart."""
    fd, name = tempfile.mkstemp(prefix="supportbot-digest-", suffix=".png")
    os.close(fd)
    return Path(name)


def describe(outcome: DigestOutcome | None, language: str = "en") -> str:
    if outcome is None:
        return "No digest is due."
    t = KpiTexts(language)
    span = t.period(outcome.period.start, outcome.period.end)
    if outcome.status == "skipped":
        return f"Digest {span}: already sent (or being sent by another process); nothing posted."
    lines = [f"Digest {span}: posted to {', '.join(outcome.sent) or 'no target'}."]
    for target, error in outcome.failed.items():
        lines.append(f"  not posted to {target}: {error}")
    if outcome.status == "retry":
        lines.append("  the missing targets will be retried by the running bot.")
    return "\n".join(lines)


async def digest_command(
    settings: Settings,
    *,
    now: bool,
    dry_run: bool,
    out: Path | None,
    clock: Clock,
    publishers: Mapping[str, DigestPublisher] | None = None,
) -> str:
    """``supportbot digest``: --dry-run prints it and writes the chart to ``out`` (default:
    a new temporary file, never the working tree); --now posts it.

    --now posts the last full period even if it was already posted; without either
    flag the latest scheduled digest is posted if it has not been yet. "Now" is ``clock``'s.
    """
    from storage.database import Database

    path = settings.storage.target()
    if not await asyncio.to_thread(_exists, path):
        raise StorageError(f"no database at {path} (start the bot once, or pass --config)")
    if not dry_run and not settings.digest.targets:
        raise ConfigError("digest.targets", "no target to post to: add e.g. slack:C0123ABC")
    db = await Database.open(path, settings.storage.busy_timeout)
    try:
        service = DigestService(settings, db, publishers or {}, clock)
        if dry_run:
            content = await service.compose(digest_period(settings, clock.now()))
            if content.chart is None:
                return content.text
            target: Path = out if out is not None else await asyncio.to_thread(_temporary_chart)
            await asyncio.to_thread(target.write_bytes, content.chart)
            return f"{content.text}\n\n[chart: {target}]"
        if now:
            outcome: DigestOutcome | None = await service.send(
                digest_period(settings, clock.now()).end, force=True
            )
        else:
            outcome = await service.run_due(clock.now())
        return describe(outcome, settings.language)
    finally:
        await db.close()
