"""The KPI digest: composed from one period's KPIs, posted on a cron schedule, never twice.

Which period: for a period of whole days (the default, 7) a digest covers the local
days before the slot's day — a Monday 09:00 slot covers Monday 00:00 a week before up
to Monday 00:00. For shorter periods it ends at the slot itself.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel.dates import format_date

from bot.chart import Spread, TrendPoint, render_chart
from bot.clock import Clock, from_ms, to_ms
from bot.config import Settings
from bot.errors import ConfigError, DeliveryError, PermanentDeliveryError, StorageError
from bot.kpi import NONE_KEY, Figures, Group, KpiReport, Period
from bot.kpi_texts import KpiTexts
from bot.ports import DigestPublisher

if TYPE_CHECKING:
    from storage.database import Database
    from storage.digest_store import DigestRun
    from storage.kpi_queries import DetractorComment

log = logging.getLogger(__name__)

TREND_PERIODS = 8
MAX_AGENT_LINES = 10
MAX_TOPIC_LINES = 3
MIN_TOPIC_ANSWERS = 3
MAX_COMMENTS = 3
COMMENT_CHARS = 200
JOB_ID = "kpi-digest"


# --- periods -----------------------------------------------------------------------------


def period_ending(settings: Settings, end: datetime) -> Period:
    """The digest period that ends at ``end`` (whole local days when the period is)."""
    tz = settings.tz
    length = settings.digest.period
    end = end.astimezone(tz)
    days, rest = divmod(length, timedelta(days=1))
    if not rest and days and end.time() == time(0):
        return Period.of_days(end.date() - timedelta(days=days), end.date(), tz)
    return Period((end.astimezone(UTC) - length).astimezone(tz), end)


def digest_period(settings: Settings, at: datetime) -> Period:
    """The last full period before ``at``: for whole-day periods, up to ``at``'s day 00:00."""
    tz = settings.tz
    local = at.astimezone(tz)
    if settings.digest.period % timedelta(days=1) == timedelta(0):
        return period_ending(settings, datetime.combine(local.date(), time(0), tz))
    return period_ending(settings, local)


# --- content -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigestContent:
    period: Period
    text: str
    chart: bytes | None


def _clip(text: str, limit: int = COMMENT_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _topic_name(t: KpiTexts, key: str | None) -> str:
    return t("none_topic") if key in (None, NONE_KEY) else str(key)


def lowest_topics(groups: Sequence[Group], limit: int = MAX_TOPIC_LINES) -> list[Group]:
    """Topics with survey answers, worst first: by NPS, then CSAT (no NPS sorts last).

    Topics with at least ``MIN_TOPIC_ANSWERS`` answers come first, so that one unhappy
    customer on a rare topic does not hide a topic that many rate badly.
    """
    rated = [g for g in groups if g.figures.nps.responses or g.figures.csat.responses]
    solid = [
        g for g in rated if g.figures.nps.responses + g.figures.csat.responses >= MIN_TOPIC_ANSWERS
    ]

    def order(g: Group) -> tuple[float, float, str]:
        nps, csat = g.figures.nps.score, g.figures.csat.score_pct
        return (1e9 if nps is None else nps, 1e9 if csat is None else csat, g.key)

    rest = [g for g in rated if g not in solid]
    return (sorted(solid, key=order) + sorted(rest, key=order))[:limit]


def digest_text(
    language: str,
    current: KpiReport,
    previous: Figures,
    topics: Sequence[Group],
    comments: Sequence[DetractorComment],
) -> str:
    """The digest message. ``current`` is broken down by agent; ``topics`` by topic."""
    t = KpiTexts(language)
    f, p = current.figures, previous
    lines = [t("digest_title", period=t.period(current.period.start, current.period.end))]
    if f.is_empty:
        lines.append(t("no_activity"))
    n, s, c = f.nps, f.csat, f.conversations
    lines.append(
        t(
            "nps_line",
            score=t.score(n.score),
            change=t.change_points(n.score, p.nps.score),
            promoters=t.integer(n.promoters),
            passives=t.integer(n.passives),
            detractors=t.integer(n.detractors),
        )
    )
    lines.append(
        t(
            "csat_line",
            pct=t.pct(s.score_pct),
            change=t.change_points(s.score_pct, p.csat.score_pct),
            average=t.number(s.average, 2),
            responses=t.integer(s.responses),
        )
    )
    first, agent = f.times.first, f.times.agent_first
    lines.append(
        t(
            "frt_line",
            median=t.duration(first.median),
            change=t.change_duration(first.median, p.times.first.median),
            p90=t.duration(first.p90),
        )
    )
    business = f.times.first_business
    if business.count and business.median != first.median:
        lines.append(
            t("frt_business_line", median=t.duration(business.median), p90=t.duration(business.p90))
        )
    lines.append(
        t(
            "agent_frt_line",
            median=t.duration(agent.median),
            change=t.change_duration(agent.median, p.times.agent_first.median),
            p90=t.duration(agent.p90),
        )
    )
    lines.append(
        t(
            "car_line",
            pct=t.pct(f.abandonment_rate_pct),
            change=t.change_points(f.abandonment_rate_pct, p.abandonment_rate_pct),
            abandoned=t.integer(c.abandoned),
            started=t.integer(c.started),
        )
    )
    retention = f.retention.rate_pct if f.retention else None
    before = p.retention.rate_pct if p.retention else None
    lines.append(t("crr_line", pct=t.pct(retention), change=t.change_points(retention, before)))
    lines.append(
        t(
            "bot_line",
            pct=t.pct(f.bot_resolution_rate_pct),
            change=t.change_points(f.bot_resolution_rate_pct, p.bot_resolution_rate_pct),
        )
    )
    lines.append(
        t(
            "survey_line",
            pct=t.pct(f.survey_response_rate_pct),
            change=t.change_points(f.survey_response_rate_pct, p.survey_response_rate_pct),
        )
    )
    lines.append(
        t(
            "volumes_line",
            started=t.integer(c.started),
            change=t.change_count(c.started, p.conversations.started),
            resolved=t.integer(c.resolved),
            by_bot=t.integer(c.resolved_by_bot),
            handed_off=t.integer(c.handed_off),
            abandoned=t.integer(c.abandoned),
        )
    )
    agents = sorted(
        (g for g in current.groups if g.key != NONE_KEY),
        key=lambda g: (-g.figures.conversations.started, g.name),
    )[:MAX_AGENT_LINES]
    if agents:
        lines += ["", t("agents_title")]
        for g in agents:
            a = g.figures
            lines.append(
                t(
                    "agent_line",
                    name=g.name,
                    handled=t.integer(a.conversations.started),
                    resolved=t.integer(a.conversations.resolved),
                    nps=t.score(a.nps.score),
                    csat=t.pct(a.csat.score_pct, 0),
                    frt=t.duration(a.times.agent_first.median),
                )
            )
    worst = lowest_topics(topics)
    if worst:
        lines += ["", t("topics_title")]
        for g in worst:
            lines.append(
                t(
                    "topic_line",
                    topic=_topic_name(t, g.key),
                    nps=t.score(g.figures.nps.score),
                    responses=t.integer(g.figures.nps.responses),
                    csat=t.pct(g.figures.csat.score_pct, 0),
                )
            )
    if comments:
        lines += ["", t("comments_title")]
        for comment in comments[:MAX_COMMENTS]:
            topic = f" · {_topic_name(t, comment.topic)}" if comment.topic else ""
            lines.append(
                t("comment_line", comment=_clip(comment.comment), nps=comment.nps, topic=topic)
            )
    return "\n".join(lines)


async def compose(
    settings: Settings, db: Database, period: Period, *, chart: bool = True
) -> DigestContent:
    """Query everything the digest shows and render its text and chart."""
    from storage.kpi_queries import HISTOGRAM_EDGES, KpiQueries

    queries = KpiQueries(db)
    calendar = settings.calendar()
    current = await queries.report(period, calendar=calendar, by="agent")
    previous = await queries.report(period.previous(), calendar=calendar)
    topics = await queries.report(period, calendar=calendar, by="topic")
    comments = await queries.detractor_comments(period, MAX_COMMENTS)
    text = digest_text(settings.language, current, previous.figures, topics.groups, comments)
    image = None
    if chart:
        periods = [period]
        while len(periods) < TREND_PERIODS:
            periods.insert(0, periods[0].previous())
        series = await queries.satisfaction(periods)
        locale = KpiTexts(settings.language).locale
        trend = [
            TrendPoint(
                format_date(point.period.start.date(), "d MMM", locale=locale),
                point.nps.score,
                point.csat.score_pct,
            )
            for point in series
        ]
        first, agent = await queries.response_histogram(period)
        spread = Spread(HISTOGRAM_EDGES, first, agent)
        image = await asyncio.to_thread(render_chart, trend, spread, settings.language)
    return DigestContent(period, text, image)


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


def _exists(path: Path) -> bool:
    return str(path) == ":memory:" or path.exists()


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

    path = settings.storage.path
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
