"""The KPI digest: its content in French and English, its chart, and "once per period".

Time is a FakeClock; the scheduler's job is invoked directly (what APScheduler calls at
the slot), so no test waits for a real Monday 09:00.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.config import Settings
from bot.conversation.model import Sent
from bot.errors import ConfigError, PermanentDeliveryError, StorageError, TransientDeliveryError
from bot.insights.digest import compose, digest_period, lowest_topics
from bot.insights.digest_service import JOB_ID, DigestService, digest_command
from bot.insights.kpi import Period
from storage.database import Database
from tests.fakes.clock import FakeClock
from tests.harness import make_settings
from tests.kpi_seed import Seeder

PARIS = ZoneInfo("Europe/Paris")
TARGETS = ["slack:C0DIGEST", "telegram:-100123"]
WEEK = Period(datetime(2026, 11, 16, tzinfo=PARIS), datetime(2026, 11, 23, tzinfo=PARIS))
PNG = b"\x89PNG\r\n\x1a\n"


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS)  # type: ignore[misc]


class Crash(BaseException):
    """The process dies here (not an Exception: nothing may swallow it)."""


@dataclass
class RecordingPublisher:
    """A DigestPublisher that keeps what it posted; can fail, or wait at a gate."""

    name: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def platform(self) -> str:
        return self.name

    async def publish(self, chat: str, text: str, image: bytes | None, filename: str) -> Sent:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.posts.append({"chat": chat, "text": text, "image": image, "filename": filename})
        return Sent(f"m{len(self.posts)}")


def publishers() -> dict[str, RecordingPublisher]:
    return {"slack": RecordingPublisher("slack"), "telegram": RecordingPublisher("telegram")}


def posted(pubs: dict[str, RecordingPublisher]) -> list[str]:
    return sorted(f"{name}:{p['chat']}" for name, pub in pubs.items() for p in pub.posts)


async def seed_week(db: Database, *, previous: bool = True) -> None:
    """16–22 Nov: 10 promoters, 6 passives, 4 commented detractors → NPS +30; two agents,
    two topics. With ``previous``, 9–15 Nov has NPS +50 (3 promoters, 1 detractor)."""
    seed = Seeder(db)
    alice, bruno = ("slack:UA", "Alice"), ("slack:UB", "Bruno")
    answers = [(10, 5, "facture")] * 5 + [(9, 4, "facture")] * 5 + [(8, 3, "livraison")] * 6
    for i, (nps, csat, topic) in enumerate(answers):
        await seed.survey(
            paris(2026, 11, 17, 10, i),
            nps=nps,
            csat=csat,
            topic=topic,
            agent=alice if i % 2 else bruno,
        )
    comments = ["D'abord trop lent", "Colis jamais arrivé", "Personne ne répond", "Très déçu"]
    for day, text in enumerate(comments):
        await seed.survey(
            paris(2026, 11, 18 + day, 15, 0),
            nps=2 + day,
            csat=1,
            comment=text,
            topic="livraison",
        )
    await seed.conversation(
        paris(2026, 11, 19, 9, 0),
        handed_off_s=30,
        agent=alice,
        agent_response_s=330,
        resolved_s=900,
    )
    if previous:
        for i, nps in enumerate([10, 9, 9, 2]):
            await seed.survey(paris(2026, 11, 10, 10, i), nps=nps, csat=4)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "digest.db")
    yield database
    await database.close()


def digest_settings(db: Database, language: str = "fr", **digest: Any) -> Settings:
    options: dict[str, Any] = {"targets": TARGETS, **digest}
    return make_settings(Path(db.path), language=language, digest=options)


def service(
    settings: Settings,
    db: Database,
    pubs: dict[str, RecordingPublisher],
    clock: FakeClock,
    **options: Any,
) -> DigestService:
    options.setdefault("chart", False)  # the chart has its own test; rendering is slow
    return DigestService(settings, db, pubs, clock, **options)


# --- periods ---------------------------------------------------------------------------


def test_digest_period_is_the_last_full_week_in_local_time(db: Database) -> None:
    settings = digest_settings(db)
    assert digest_period(settings, paris(2026, 11, 23, 9, 0)) == WEEK
    spring = digest_period(settings, paris(2026, 3, 30, 9, 0))  # Paris changed on 29 Mar
    assert spring.start.isoformat() == "2026-03-23T00:00:00+01:00"
    assert spring.end.isoformat() == "2026-03-30T00:00:00+02:00"
    hourly = digest_settings(db, schedule="0 * * * *", period="1h")
    assert digest_period(hourly, paris(2026, 11, 23, 9, 0)) == Period(
        paris(2026, 11, 23, 8, 0), paris(2026, 11, 23, 9, 0)
    )


# --- content ---------------------------------------------------------------------------


async def test_content_in_french(db: Database) -> None:
    await seed_week(db)
    content = await compose(digest_settings(db, "fr"), db, WEEK, chart=False)
    text = content.text
    assert text.startswith("📊 Indicateurs du support — du 16 nov. 2026 au 22 nov. 2026")
    assert "NPS : +30 (▼ 20 pts) — promoteurs 10, passifs 6, détracteurs 4" in text
    assert "Par conseiller :" in text
    assert "• Alice — " in text
    assert "• Bruno — " in text
    assert "Thèmes les moins bien notés :" in text
    assert text.index("• livraison") < text.index("• facture")
    lines = text.splitlines()
    comments = lines[lines.index("Commentaires de détracteurs :") + 1 :]
    assert comments == [
        "• « Très déçu » — NPS 5 · livraison",
        "• « Personne ne répond » — NPS 4 · livraison",
        "• « Colis jamais arrivé » — NPS 3 · livraison",
    ]
    assert "Conversations : 21" in text
    assert content.chart is None


async def test_content_in_english(db: Database) -> None:
    await seed_week(db)
    text = (await compose(digest_settings(db, "en"), db, WEEK, chart=False)).text
    assert text.startswith("📊 Support KPIs — 16 Nov 2026 to 22 Nov 2026")
    assert "NPS: +30 (▼ 20 pts) — promoters 10, passives 6, detractors 4" in text
    assert "Agent first response: median 0.3 s" in text
    assert "Per agent:" in text
    assert "Lowest-scoring topics:" in text
    assert "• “Très déçu” — NPS 5 · livraison" in text
    assert "Conversations: 21" in text


async def test_content_of_an_empty_period(db: Database) -> None:
    text = (await compose(digest_settings(db, "en"), db, WEEK, chart=False)).text
    assert "No conversation or survey answer in this period." in text
    assert "NPS: — — promoters 0" in text
    assert "Per agent:" not in text


async def test_chart_is_a_png(db: Database) -> None:
    await seed_week(db)
    content = await compose(digest_settings(db, "fr"), db, WEEK)
    chart = content.chart
    assert chart is not None
    assert chart.startswith(PNG)
    width, height = struct.unpack(">II", chart[16:24])  # the IHDR chunk
    assert (width, height) == (1000, 400)


def test_lowest_topics_put_well_answered_topics_first() -> None:
    from bot.insights.kpi import Figures, Group, Nps

    groups = [
        Group("a", Figures(nps=Nps(1, 0, 0))),
        Group("b", Figures(nps=Nps(0, 0, 1))),
        Group("c", Figures()),
        Group("d", Figures(nps=Nps(1, 0, 1))),
        Group("e", Figures(nps=Nps(1, 1, 2))),  # enough answers to count first
    ]
    assert [g.key for g in lowest_topics(groups)] == ["e", "b", "d"]
    assert [g.key for g in lowest_topics(groups, limit=5)] == ["e", "b", "d", "a"]


# --- once per period -------------------------------------------------------------------


async def test_scheduled_job_posts_once(db: Database) -> None:
    await seed_week(db, previous=False)  # nothing before 16 Nov: no catch-up
    clock = FakeClock(paris(2026, 11, 23, 8, 0))
    pubs = publishers()
    digest = service(digest_settings(db), db, pubs, clock)
    await digest.start()
    try:
        assert digest.catch_up_task is not None
        await asyncio.wait_for(digest.catch_up_task, 10)
        assert posted(pubs) == []
        job = digest.scheduler.get_job(JOB_ID)
        assert job.next_run_time.astimezone(PARIS).strftime("%a %H:%M") == "Mon 09:00"
        clock.set(paris(2026, 11, 23, 9, 0, 1))
        await job.func()  # what APScheduler runs at the slot
        await job.func()  # fired again (DST, a double start): nothing more
        assert posted(pubs) == ["slack:C0DIGEST", "telegram:-100123"]
        assert pubs["slack"].posts[0]["text"] == pubs["telegram"].posts[0]["text"]
        assert pubs["slack"].posts[0]["filename"] == "kpi-digest-2026-11-16.png"
    finally:
        await digest.stop()


async def test_the_minute_check_sends_a_slot_the_scheduler_missed(db: Database) -> None:
    await seed_week(db, previous=False)
    clock = FakeClock(paris(2026, 11, 23, 8, 0))
    pubs = publishers()
    digest = service(digest_settings(db), db, pubs, clock)
    await digest.start()
    try:
        assert digest.catch_up_task is not None
        await asyncio.wait_for(digest.catch_up_task, 10)
        check = digest.scheduler.get_job(f"{JOB_ID}-check")
        await check.func()
        assert posted(pubs) == []  # 09:00 has not come yet
        clock.set(paris(2026, 11, 23, 10, 30))  # asleep at 09:00: the cron job never ran
        await check.func()
        await check.func()
        assert posted(pubs) == ["slack:C0DIGEST", "telegram:-100123"]
    finally:
        await digest.stop()


async def test_restart_after_a_missed_slot_posts_once(db: Database, tmp_path: Path) -> None:
    await seed_week(db)
    clock = FakeClock(paris(2026, 11, 23, 11, 0))  # the bot was down at 09:00
    pubs = publishers()
    first = service(digest_settings(db), db, pubs, clock)
    await first.start()
    assert first.catch_up_task is not None
    await asyncio.wait_for(first.catch_up_task, 10)
    await first.stop()
    assert posted(pubs) == ["slack:C0DIGEST", "telegram:-100123"]
    # Restarted again, by another process on the same file, an hour later: nothing.
    other_db = await Database.open(db.path)
    try:
        clock.advance(timedelta(hours=1))
        again = service(digest_settings(db), other_db, pubs, clock)
        await again.start()
        assert again.catch_up_task is not None
        await asyncio.wait_for(again.catch_up_task, 10)
        await again.stop()
        assert await again.run_due(clock.now()) is not None
    finally:
        await other_db.close()
    assert posted(pubs) == ["slack:C0DIGEST", "telegram:-100123"]


async def test_a_fresh_install_does_not_post_last_weeks_empty_digest(db: Database) -> None:
    clock = FakeClock(paris(2026, 11, 23, 11, 0))
    pubs = publishers()
    digest = service(digest_settings(db), db, pubs, clock)
    assert await digest.catch_up(clock.now()) is None
    assert posted(pubs) == []


async def test_two_processes_sending_the_same_period_post_once(db: Database) -> None:
    await seed_week(db)
    clock = FakeClock(paris(2026, 11, 23, 9, 0))
    gate = asyncio.Event()
    pubs_a, pubs_b = publishers(), publishers()
    pubs_a["slack"].gate = gate
    other_db = await Database.open(db.path)
    try:
        a = service(digest_settings(db), db, pubs_a, clock)
        b = service(digest_settings(db), other_db, pubs_b, clock)
        sending = asyncio.create_task(a.send(WEEK.end))
        await asyncio.wait_for(pubs_a["slack"].entered.wait(), 10)  # A holds the period
        outcome_b = await b.send(WEEK.end)
        gate.set()
        outcome_a = await asyncio.wait_for(sending, 10)
    finally:
        await other_db.close()
    assert outcome_b.status == "skipped"
    assert outcome_a.status == "sent"
    assert posted(pubs_a) == ["slack:C0DIGEST", "telegram:-100123"]
    assert posted(pubs_b) == []


async def test_concurrent_sends_in_one_process_post_once(db: Database) -> None:
    await seed_week(db)
    pubs = publishers()
    digest = service(digest_settings(db), db, pubs, FakeClock(paris(2026, 11, 23, 9, 0)))
    outcomes = await asyncio.gather(digest.send(WEEK.end), digest.send(WEEK.end))
    assert sorted(o.status for o in outcomes) == ["sent", "skipped"]
    assert posted(pubs) == ["slack:C0DIGEST", "telegram:-100123"]


async def test_a_crash_between_targets_resumes_the_missing_one_only(db: Database) -> None:
    await seed_week(db)
    clock = FakeClock(paris(2026, 11, 23, 9, 0))
    pubs_a = publishers()
    pubs_a["telegram"].failures.append(Crash())
    a = service(digest_settings(db), db, pubs_a, clock, lease=timedelta(minutes=2))
    with pytest.raises(Crash):
        await a.send(WEEK.end)
    assert posted(pubs_a) == ["slack:C0DIGEST"]
    # The next process, while the dead one's lease still runs: leaves it alone.
    pubs_b = publishers()
    b = service(digest_settings(db), db, pubs_b, clock, lease=timedelta(minutes=2))
    assert await b.resume(clock.now()) == []
    assert (await b.send(WEEK.end)).status == "skipped"
    # Once the lease has expired: only the missing target, with the same text.
    clock.advance(timedelta(minutes=2, seconds=1))
    [outcome] = await b.resume(clock.now())
    assert outcome.status == "sent"
    assert posted(pubs_b) == ["telegram:-100123"]
    assert pubs_b["telegram"].posts[0]["text"] == pubs_a["slack"].posts[0]["text"]
    assert await b.resume(clock.now()) == []
    assert (await b.send(WEEK.end)).status == "skipped"


async def test_a_platform_down_is_retried_later_and_a_bad_chat_is_not(db: Database) -> None:
    await seed_week(db)
    clock = FakeClock(paris(2026, 11, 23, 9, 0))
    pubs = publishers()
    pubs["telegram"].failures.append(TransientDeliveryError("502 Bad Gateway"))
    digest = service(digest_settings(db), db, pubs, clock, retry_after=timedelta(minutes=5))
    first = await digest.send(WEEK.end)
    assert first.status == "retry"
    assert posted(pubs) == ["slack:C0DIGEST"]
    assert await digest.resume(clock.now()) == []  # not before its retry time
    clock.advance(timedelta(minutes=5, seconds=1))
    [second] = await digest.resume(clock.now())
    assert second.status == "sent"
    assert posted(pubs) == ["slack:C0DIGEST", "telegram:-100123"]

    pubs_bad = publishers()
    pubs_bad["slack"].failures.append(PermanentDeliveryError("channel_not_found"))
    later = WEEK.end + timedelta(days=7)
    bad = service(digest_settings(db), db, pubs_bad, clock)
    outcome = await bad.send(later)
    assert outcome.status == "sent"
    assert outcome.failed == {"slack:C0DIGEST": "channel_not_found"}
    assert posted(pubs_bad) == ["telegram:-100123"]
    clock.advance(timedelta(hours=1))
    assert await bad.resume(clock.now()) == []


async def test_a_target_without_a_running_platform_is_reported(db: Database) -> None:
    pubs = {"slack": RecordingPublisher("slack")}
    digest = service(digest_settings(db), db, pubs, FakeClock(paris(2026, 11, 23, 9, 0)))
    outcome = await digest.send(WEEK.end)
    assert outcome.sent == ("slack:C0DIGEST",)
    assert outcome.failed == {"telegram:-100123": "no telegram connection is running"}


async def test_a_slot_fired_twice_on_the_autumn_change_posts_once(db: Database) -> None:
    settings = digest_settings(db, schedule="30 2 * * *", period="1d")
    pubs = publishers()
    clock = FakeClock(datetime(2026, 10, 25, 0, 31, tzinfo=UTC))  # 02:31 CEST
    digest = service(settings, db, pubs, clock)
    first_slot = digest.latest_slot(clock.now())
    assert first_slot is not None
    first = await digest.run_due(clock.now())
    clock.set(datetime(2026, 10, 25, 1, 31, tzinfo=UTC))  # 02:31 CET: 02:30 came twice
    second = await digest.run_due(clock.now())
    assert first is not None
    assert second is not None
    assert first.status == "sent"
    assert second.status == "skipped"
    assert first.period == Period(paris(2026, 10, 24), paris(2026, 10, 25))
    assert posted(pubs) == ["slack:C0DIGEST", "telegram:-100123"]


# --- the command -----------------------------------------------------------------------


async def test_dry_run_prints_the_text_and_writes_the_chart(db: Database, tmp_path: Path) -> None:
    await seed_week(db)
    out = tmp_path / "preview.png"
    clock = FakeClock(paris(2026, 11, 23, 11, 0))
    text = await digest_command(digest_settings(db), now=False, dry_run=True, out=out, clock=clock)
    assert text.startswith("📊 Indicateurs du support — du 16 nov. 2026 au 22 nov. 2026")
    assert text.endswith(f"[chart: {out}]")
    assert out.read_bytes().startswith(PNG)


async def test_now_posts_even_a_period_already_posted(db: Database) -> None:
    await seed_week(db)
    settings = digest_settings(db)
    clock = FakeClock(paris(2026, 11, 23, 11, 0))
    pubs = publishers()
    for _ in range(2):
        report = await digest_command(
            settings, now=True, dry_run=False, out=None, publishers=pubs, clock=clock
        )
        assert "posted to slack:C0DIGEST, telegram:-100123" in report
    assert len(posted(pubs)) == 4
    due = await digest_command(
        settings, now=False, dry_run=False, out=None, publishers=pubs, clock=clock
    )
    assert "already sent" in due
    assert len(posted(pubs)) == 4


async def test_command_errors(db: Database, tmp_path: Path) -> None:
    no_targets = make_settings(Path(db.path), digest={"targets": []})
    with pytest.raises(ConfigError, match="digest.targets"):
        await digest_command(no_targets, now=True, dry_run=False, out=None, clock=FakeClock())
    missing = make_settings(tmp_path / "nowhere.db", digest={"targets": TARGETS})
    with pytest.raises(StorageError, match="no database"):
        await digest_command(
            missing, now=False, dry_run=True, out=tmp_path / "x.png", clock=FakeClock()
        )


async def test_recurring_causes_section_with_change_against_the_previous_week(
    db: Database,
) -> None:
    await seed_week(db)
    seed = Seeder(db)
    rows = []
    for i, (when, cause) in enumerate(
        [
            (paris(2026, 11, 17, 10, 0), "retard de livraison"),
            (paris(2026, 11, 18, 10, 0), "retard de livraison"),
            (paris(2026, 11, 18, 11, 0), None),
            (paris(2026, 11, 10, 10, 0), "retard de livraison"),  # the week before
            (paris(2026, 11, 11, 10, 0), "colis endommagé"),  # the week before only
        ]
    ):
        cid = await seed.conversation(
            when, customer=f"telegram:angry{i}", handed_off_s=5, resolved_s=7200
        )
        rows.append((cid, cause))
    async with db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO complaints (conversation_id, opened_at, opened_by, cause, updated_at) "
            "VALUES (?, 0, 'customer', ?, 0)",
            rows,
        )
    text = (await compose(digest_settings(db, "fr"), db, WEEK, chart=False)).text
    lines = text.splitlines()
    start = lines.index("Causes récurrentes des réclamations :")
    section = lines[start + 1 : start + 3]
    assert section == [
        "• retard de livraison — 2 (67\u00a0%) (▲ 1)",
        "• (non renseignée) — 1 (33\u00a0%) (▲ 1)",
    ]
    assert "colis endommagé" not in text  # no complaint this week: not a recurring cause
    assert any(line.startswith("Délai de résolution : médiane") for line in lines)
    english = (await compose(digest_settings(db, "en"), db, WEEK, chart=False)).text
    assert "Recurring complaint causes:" in english


async def test_no_causes_section_without_complaints(db: Database) -> None:
    await seed_week(db)
    text = (await compose(digest_settings(db, "fr"), db, WEEK, chart=False)).text
    assert "Causes récurrentes" not in text
