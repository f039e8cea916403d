"""End to end: the scheduled KPI digest and the KPI report, on data the real engine wrote.

The whole product runs as ``supportbot run`` builds it (real engine, SQLite file, the
shipped knowledge base, python-telegram-bot and slack_sdk over HTTP) against the local
Telegram and Slack servers. Telegram customers live through a week of conversations; then
the digest's APScheduler job fires at the Monday 09:00 slot (the clock is a FakeClock, the
job is woken by hand, so no test waits for a real Monday) and the tests check what both
platforms received: the text with the period's KPIs and the chart as a PNG upload. The
same data feeds ``supportbot kpi``. Waits are on conditions, never on sleeps.

The week (Tuesday 17 Nov 2026, Europe/Paris), four Telegram customers:

* Ana asks a question the knowledge base answers, accepts it, rates NPS 10 and 😍;
* Bob asks for a person; Paul answers two minutes later and resolves with the tag
  « livraison »; Bob rates NPS 3 and 🙁 and leaves a comment;
* Dan (in English) accepts the bot's answer and never answers the survey;
* Cleo asks for a person and nobody comes: abandoned after ``abandon_after`` (15 min).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from bot import cli
from bot.app import SupportApp
from bot.config import Secrets, Settings, settings_from_mapping
from bot.insights.digest_service import JOB_ID, DigestOutcome, DigestService
from bot.knowledge import KnowledgeBase
from handlers.telegram import RateLimits
from storage.database import Database
from tests.fakes.clock import FakeClock
from tests.fakes.slack_server import BOT_TOKEN, SIGNING_SECRET, FakeSlack
from tests.fakes.telegram_server import FakeChat, FakeUser, TelegramServer, running_server
from tests.kpi_seed import seed_week
from tests.waiting import eventually

JSON = dict[str, Any]
PARIS = ZoneInfo("Europe/Paris")
ROOT = Path(__file__).resolve().parent.parent
KNOWLEDGE = ROOT / "knowledge.yaml"
WAIT = 10.0  # generous: the first chart render imports matplotlib

SLACK_DIGEST = "C0DIGEST"
TELEGRAM_DIGEST = -100777
TARGETS = [f"slack:{SLACK_DIGEST}", f"telegram:{TELEGRAM_DIGEST}"]
PNG = b"\x89PNG\r\n\x1a\n"

QUESTION_FR = "Quel est le délai de livraison ?"
QUESTION_EN = "How long does delivery take?"
NPS_QUESTION = "Sur une échelle de 0 à 10"
NPS_QUESTION_EN = "On a scale from 0 to 10"
CSAT_QUESTION = "Comment évaluez-vous l'aide que vous avez reçue ?"
COMMENT_QUESTION = "Souhaitez-vous ajouter un commentaire"
THANKS = "Merci pour votre réponse"
HANDOFF = "Je vous mets en relation avec un conseiller"
ABANDONED = "Nous n'avons pas pu vous répondre à temps"
FACES = ["😡", "🙁", "😐", "🙂", "😍"]  # CSAT 1..5

# The week, as numbers the expectations below are computed from.
WEEK_DAY = datetime(2026, 11, 17, 10, 0, tzinfo=PARIS)  # a Tuesday
SLOT = datetime(2026, 11, 23, 9, 0, tzinfo=PARIS)  # the next Monday 09:00
PERIOD_FROM, PERIOD_TO = "2026-11-16", "2026-11-23"  # the digest's week, [from, to)
WEEK_MS = tuple(  # the same week as stored: Monday 00:00 → Monday 00:00, Paris time, in ms
    int(datetime.fromisoformat(day).replace(tzinfo=PARIS).timestamp() * 1000)
    for day in (PERIOD_FROM, PERIOD_TO)
)
ANA = (10, 5)  # (NPS, CSAT) answers
BOB = (3, 2)
BOB_COMMENT = "Colis arrivé abîmé et personne ne m'a prévenu"
AGENT_DELAY = timedelta(minutes=2)  # Bob's handoff → Paul's first message
ABANDON_AFTER = timedelta(minutes=15)  # the default conversation.abandon_after
TAG = "livraison"


# ---------------------------------------------------------------------- the world


_LOADED: dict[tuple[Any, ...], KnowledgeBase] = {}
_REAL_LOAD = KnowledgeBase.load.__func__  # type: ignore[attr-defined]


def _load_once(
    cls: type[KnowledgeBase], path: Path, threshold: float | None = None, *rest: Any
) -> Any:
    """The shipped knowledge base, parsed for real once per run: parsing it costs most of
    an app start, and a loaded KnowledgeBase is read-only (as in test_e2e_telegram)."""
    key = (Path(path).resolve(), threshold, *map(str, rest))
    if key not in _LOADED:
        _LOADED[key] = _REAL_LOAD(cls, path, threshold, *rest)
    return _LOADED[key]


def buttons(message: JSON) -> list[tuple[str, str]]:
    """(label, callback data) of every inline button of a Telegram message."""
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


def button(message: JSON, label: str) -> str:
    found = [data for text, data in buttons(message) if text == label]
    assert found, f"no button {label!r} in {buttons(message)}"
    return found[0]


@dataclass
class World:
    """Both fake platforms, their people, the database file and the running apps."""

    tg: TelegramServer
    slack: FakeSlack
    tmp: Path
    clock: FakeClock
    paul: FakeUser  # an agent, administrator of the agents' forum
    desk: FakeChat  # the agents' forum group (the desk is on Telegram)
    apps: list[SupportApp] = field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.tmp / "supportbot.db"

    def settings(self) -> Settings:
        return settings_from_mapping(
            {
                "language": "fr",
                "timezone": "Europe/Paris",
                "storage": {"path": str(self.db_path)},
                "knowledge": {"path": str(KNOWLEDGE)},
                "web": {"enabled": False},  # this test is about the other channels
                "desk": "telegram",
                "telegram": {
                    "enabled": True,
                    "api_url": self.tg.url,
                    "agents_chat_id": self.desk.id,
                    "agent_ids": [self.paul.id],
                    "mode": "polling",
                    "poll_timeout": 1,
                },
                "slack": {
                    "enabled": True,
                    "api_url": self.slack.api_url,
                    "mode": "http",
                    "http_port": 0,
                },
                # Timers fire only when a test sweeps (after moving the clock).
                "conversation": {"sweep_every": "1h"},
                "digest": {"schedule": "0 9 * * mon", "targets": TARGETS},
            }
        )

    async def start(self) -> SupportApp:
        """Start the product and wait until its start-up catch-up check has run."""
        secrets = Secrets(
            telegram_bot_token=self.tg.token,
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
        )
        app = SupportApp(
            self.settings(),
            secrets,
            clock=self.clock,
            transport_options={
                "slack": {"pace": 0.0},
                "telegram": {"limits": RateLimits.unlimited()},
            },
        )
        self.apps.append(app)
        await app.start()
        digest = self.digest(app)
        assert digest.catch_up_task is not None
        await asyncio.wait_for(asyncio.shield(digest.catch_up_task), WAIT)
        return app

    async def stop(self, app: SupportApp) -> None:
        self.apps.remove(app)
        await app.stop()

    @staticmethod
    def digest(app: SupportApp) -> DigestService:
        """The app's digest service (started because digest.targets is set)."""
        service = app.digest
        assert isinstance(service, DigestService), "the app did not start its digest"
        return service

    async def settle(self) -> None:
        """Until every decided action was delivered (or given up) and recorded."""
        for app in self.apps:
            assert app.components is not None
            async with asyncio.timeout(WAIT):
                await app.components.dispatcher.drain()

    def rows(self, sql: str, *params: object) -> list[sqlite3.Row]:
        """Read the database as another process would (WAL: committed data only)."""
        with closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as conn:
            conn.row_factory = sqlite3.Row
            return conn.execute(sql, params).fetchall()

    # ------------------------------------------------------------------ Telegram people

    async def to_customer(self, user: FakeUser, contains: str, *, since: int) -> JSON:
        """The message the bot sent ``user`` with ``contains`` in it (waits for it)."""
        call = await self.tg.wait_for(
            "sendMessage",
            lambda c: c.params["chat_id"] == user.id and contains in c.params["text"],
            since=since,
        )
        result: JSON = call.result
        return result

    async def topic_opened(self, *, since: int) -> int:
        created = await self.tg.wait_for("createForumTopic", since=since)
        return int(created.result["message_thread_id"])

    # ------------------------------------------------------------------ what the digest did

    def digest_calls(self) -> dict[str, int]:
        """How many calls of each kind carried a digest to its targets."""
        s, tg = self.slack, self.tg

        def to_tg(method: str) -> int:
            calls = tg.calls_to(method, ok=True)
            return sum(str(c.params["chat_id"]) == str(TELEGRAM_DIGEST) for c in calls)

        return {
            "chat.postMessage": sum(
                c.params.get("channel") == SLACK_DIGEST
                for c in s.calls_to("chat.postMessage", ok=True)
            ),
            "files.getUploadURLExternal": len(s.calls_to("files.getUploadURLExternal", ok=True)),
            "upload": len(s.calls_to("upload", ok=True)),
            "files.completeUploadExternal": sum(
                c.params.get("channel_id") == SLACK_DIGEST
                for c in s.calls_to("files.completeUploadExternal", ok=True)
            ),
            "sendMessage": to_tg("sendMessage"),
            "sendPhoto": to_tg("sendPhoto"),
        }


ONE_DIGEST = {
    "chat.postMessage": 1,
    "files.getUploadURLExternal": 1,
    "upload": 1,
    "files.completeUploadExternal": 1,
    "sendMessage": 1,
    "sendPhoto": 1,
}
NO_DIGEST = dict.fromkeys(ONE_DIGEST, 0)


@pytest.fixture
async def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setattr(KnowledgeBase, "load", classmethod(_load_once))
    slack = FakeSlack()
    slack.add_channel(SLACK_DIGEST, "kpi-digest", [])
    async with slack, running_server() as tg:
        paul = tg.add_user("Paul", "Martin", username="paul_agent")
        desk = tg.add_group("Service client", admins=[paul])
        # The managers' group the digest goes to, with the id the config names.
        managers = FakeChat(TELEGRAM_DIGEST, "supergroup", title="Direction")
        managers.members[tg.bot.id] = "administrator"
        tg.chats[managers.id] = managers
        w = World(tg, slack, tmp_path, FakeClock(WEEK_DAY), paul, desk)
        try:
            yield w
        finally:
            for app in reversed(w.apps):
                await app.stop()


# ---------------------------------------------------------------------- the week


async def bot_resolved(w: World, user: FakeUser, question: str, yes: str) -> JSON:
    """``user`` asks, the knowledge base answers, the user accepts: the survey starts.
    Returns the NPS question."""
    tg = w.tg
    mark = tg.mark()
    await tg.customer_sends(user, question)
    answer = await tg.wait_for(
        "sendMessage",
        lambda c: c.params["chat_id"] == user.id and "reply_markup" in c.params,
        since=mark,
    )
    mark = tg.mark()
    await tg.press_button(user, answer.result, button(answer.result, yes))
    nps_word = NPS_QUESTION_EN if user.language_code == "en" else NPS_QUESTION
    return await w.to_customer(user, nps_word, since=mark)


async def answer_survey(
    w: World, user: FakeUser, nps_question: JSON, nps: int, csat: int, comment: str | None
) -> None:
    tg = w.tg
    mark = tg.mark()
    await tg.press_button(user, nps_question, button(nps_question, str(nps)))
    csat_question = await w.to_customer(user, CSAT_QUESTION, since=mark)
    mark = tg.mark()
    await tg.press_button(user, csat_question, button(csat_question, FACES[csat - 1]))
    comment_question = await w.to_customer(user, COMMENT_QUESTION, since=mark)
    mark = tg.mark()
    if comment is None:
        await tg.press_button(user, comment_question, button(comment_question, "Passer"))
    else:
        await tg.customer_sends(user, comment)
    await w.to_customer(user, THANKS, since=mark)


async def live_the_week(w: World, app: SupportApp) -> None:
    """The four conversations of the module docstring, stored by the real engine."""
    tg, paul = w.tg, w.paul
    ana = tg.add_user("Ana", "Lopez", language_code="fr")
    bob = tg.add_user("Bob", "Durand", language_code="fr")
    dan = tg.add_user("Dan", "Smith", language_code="en")
    cleo = tg.add_user("Cléo", "Petit", language_code="fr")

    # Ana: solved by the bot, a promoter.
    nps = await bot_resolved(w, ana, QUESTION_FR, "Oui, merci")
    await answer_survey(w, ana, nps, *ANA, comment=None)

    # Bob: a person, then a detractor with a comment.
    w.clock.advance(timedelta(minutes=1))
    mark = tg.mark()
    await tg.customer_sends(bob, "/agent")
    thread = await w.topic_opened(since=mark)
    await w.to_customer(bob, HANDOFF, since=mark)
    await w.settle()
    w.clock.advance(AGENT_DELAY)
    mark = tg.mark()
    await tg.agent_writes(paul, thread, "Bonjour Bob, je regarde votre commande.")
    await w.to_customer(bob, "je regarde votre commande", since=mark)
    await w.settle()
    w.clock.advance(timedelta(minutes=1))
    mark = tg.mark()
    await tg.agent_writes(paul, thread, f"/resolve {TAG}")
    nps = await w.to_customer(bob, NPS_QUESTION, since=mark)
    await answer_survey(w, bob, nps, *BOB, comment=BOB_COMMENT)

    # Dan: solved by the bot; the survey is sent and never answered.
    w.clock.advance(timedelta(minutes=1))
    await bot_resolved(w, dan, QUESTION_EN, "Yes, thanks")

    # Cléo: asks for a person, nobody comes in time.
    w.clock.advance(timedelta(minutes=1))
    mark = tg.mark()
    await tg.customer_sends(cleo, "/agent")
    await w.topic_opened(since=mark)
    await w.to_customer(cleo, HANDOFF, since=mark)
    await w.settle()
    w.clock.advance(ABANDON_AFTER + timedelta(minutes=1))
    mark = tg.mark()
    await app.engine.sweep()
    await w.to_customer(cleo, ABANDONED, since=mark)
    await w.settle()

    # What the engine stored is what the expectations below assume.
    states = {
        r["user_id"]: (r["state"], r["resolved_by"], r["abandon_reason"])
        for r in w.rows(
            "SELECT c.user_id, v.state, v.resolved_by, v.abandon_reason"
            " FROM conversations v JOIN customers c ON c.id = v.customer_id"
        )
    }
    assert states == {
        str(ana.id): ("closed", "bot", None),
        str(bob.id): ("closed", "agent", None),
        str(dan.id): ("surveying", "bot", None),
        str(cleo.id): ("closed", None, "timeout"),
    }


# ------------------------------------------------------------- the expectations, by hand


@dataclass(frozen=True)
class Expected:
    """The week's KPIs computed from the scenario, independently of the product."""

    started: int = 4  # Ana, Bob, Dan, Cléo
    resolved: int = 3  # Ana, Dan (bot), Bob (Paul)
    resolved_by_bot: int = 2  # Ana, Dan
    handed_off: int = 2  # Bob, Cléo
    abandoned: int = 1  # Cléo
    surveys_sent: int = 3  # Ana, Bob, Dan
    nps_answers: tuple[int, ...] = (ANA[0], BOB[0])
    csat_answers: tuple[int, ...] = (ANA[1], BOB[1])

    @property
    def promoters(self) -> int:
        return sum(n >= 9 for n in self.nps_answers)

    @property
    def passives(self) -> int:
        return sum(7 <= n <= 8 for n in self.nps_answers)

    @property
    def detractors(self) -> int:
        return sum(n <= 6 for n in self.nps_answers)

    @property
    def nps(self) -> float:
        return 100 * (self.promoters - self.detractors) / len(self.nps_answers)

    @property
    def csat_pct(self) -> float:
        return 100 * sum(c >= 4 for c in self.csat_answers) / len(self.csat_answers)

    @property
    def csat_average(self) -> float:
        return sum(self.csat_answers) / len(self.csat_answers)


WEEK = Expected()


def signed(score: float) -> str:
    """An NPS as the digest writes it: a sign unless zero, a real minus sign."""
    return "0" if round(score) == 0 else f"{score:+.0f}".replace("-", "−")


def count(n: int, label: str) -> str:
    """A pattern for "<label> <n>": labels first, so no plural agreement is needed."""
    return rf"{re.escape(label)} {n}"


def assert_line(lines: list[str], pattern: str) -> None:
    """Exactly one line of the digest matches ``pattern`` as a whole."""
    matching = [line for line in lines if re.fullmatch(pattern, line)]
    assert len(matching) == 1, f"{pattern!r} matches {matching} in:\n" + "\n".join(lines)


# ---------------------------------------------------------------------- 1. the slot


async def test_the_monday_job_posts_the_weeks_digest_to_slack_and_telegram(
    world: World,
) -> None:
    w = world
    app = await w.start()
    digest = w.digest(app)
    assert w.digest_calls() == NO_DIGEST  # nothing before the week: no catch-up at start
    await live_the_week(w, app)

    job = digest.scheduler.get_job(JOB_ID)
    slot = job.next_run_time.astimezone(PARIS)
    assert (slot.strftime("%a %H:%M"), slot.second) == ("Mon 09:00", 0)

    # Monday 09:00 comes: APScheduler runs the job (woken now instead of at the real slot).
    w.clock.set(SLOT)
    digest.scheduler.modify_job(JOB_ID, next_run_time=datetime.now(UTC))
    completed = await w.slack.wait_for("files.completeUploadExternal", timeout=WAIT)
    photo = await w.tg.wait_for("sendPhoto", timeout=WAIT)
    await eventually(lambda: bool(w.rows("SELECT 1 FROM digest_runs WHERE status = 'done'")))
    (run,) = w.rows("SELECT * FROM digest_runs")
    assert (run["period_start"], run["period_end"]) == WEEK_MS  # Monday to Monday, local
    deliveries = w.rows("SELECT target, status FROM digest_deliveries ORDER BY target")
    assert [tuple(d) for d in deliveries] == [(t, "sent") for t in sorted(TARGETS)]
    assert w.digest_calls() == ONE_DIGEST
    text: str = run["text"]

    # Slack: the text in the channel, then the chart (files upload v2) as a PNG.
    (posted,) = [m for m in w.slack.posted(SLACK_DIGEST) if m.subtype is None]
    assert "\n".join(posted.plain_texts()) == text
    (file_id,) = [f["id"] for f in completed.params["files"]]
    uploaded = w.slack.files[file_id]
    assert uploaded["content"].startswith(PNG)
    assert uploaded["content"][12:16] == b"IHDR"
    assert uploaded["name"] == "kpi-digest-2026-11-16.png"
    assert uploaded["shared_in"] == SLACK_DIGEST
    assert uploaded["length"] == len(uploaded["content"])

    # Telegram: the same text, then the chart as a photo.
    (message,) = [m for m in w.tg.sent_by_bot(TELEGRAM_DIGEST) if "text" in m]
    assert message["text"] == text
    assert str(photo.params["chat_id"]) == str(TELEGRAM_DIGEST)
    assert photo.params["photo"].data.startswith(PNG)
    assert photo.params["photo"].data == uploaded["content"]  # one chart, both places

    # The text: the week's figures as computed by hand from the answers.
    lines = text.splitlines()
    assert lines[0] == "📊 Indicateurs du support — du 16 nov. 2026 au 22 nov. 2026"
    assert_line(
        lines,
        rf"NPS : {signed(WEEK.nps)}.* — {count(WEEK.promoters, 'promoteurs')}, "
        rf"{count(WEEK.passives, 'passifs')}, {count(WEEK.detractors, 'détracteurs')}",
    )
    average = f"{WEEK.csat_average:g}".replace(".", ",")  # French decimal comma
    assert_line(
        lines,
        rf"CSAT : {WEEK.csat_pct:.0f}\W*% satisfaits.*, note moyenne {average}/5 "
        rf"\(notes : {len(WEEK.csat_answers)}\)",
    )
    assert_line(
        lines,
        rf"Conversations : {WEEK.started}.* · "
        rf"{count(WEEK.resolved, 'résolues')} \(par le bot {WEEK.resolved_by_bot}\) · "
        rf"{count(WEEK.handed_off, 'transmises')} · {count(WEEK.abandoned, 'abandonnées')}",
    )
    assert_line(lines, rf"Abandon : .*\({WEEK.abandoned} sur {WEEK.started}\)")
    comments = lines[lines.index("Commentaires de détracteurs :") + 1 :]
    assert comments == [f"• « {BOB_COMMENT} » — NPS {BOB[0]} · {TAG}"]
    agents = lines[lines.index("Par conseiller :") + 1 :]
    assert re.match(  # Paul handled Bob only
        rf"• Paul Martin — {count(1, 'conversations')} · {count(1, 'résolues')} · "
        rf"NPS {signed(Expected(nps_answers=(BOB[0],)).nps)} · ",
        agents[0],
    ), agents[0]

    # The job firing again for the same slot (a double start, a DST change): nothing more.
    await job.func()
    await digest.run_due(w.clock.now())
    assert w.digest_calls() == ONE_DIGEST
    assert len(w.rows("SELECT * FROM digest_runs")) == 1


# ---------------------------------------------------------------------- 2. missed slot


async def test_a_digest_missed_while_down_is_posted_once_at_start(world: World) -> None:
    w = world
    app = await w.start()
    ana = w.tg.add_user("Ana", "Lopez", language_code="fr")
    await bot_resolved(w, ana, QUESTION_FR, "Oui, merci")
    await w.settle()
    await w.stop(app)
    assert w.digest_calls() == NO_DIGEST

    # Down over the weekend and at Monday 09:00; back at 11:00: the digest goes out once.
    w.clock.set(SLOT + timedelta(hours=2))
    again = await w.start()
    assert w.digest_calls() == ONE_DIGEST
    (run,) = w.rows("SELECT period_start, period_end, status FROM digest_runs")
    assert tuple(run) == (*WEEK_MS, "done")
    (posted,) = [m for m in w.slack.posted(SLACK_DIGEST) if m.subtype is None]
    assert_line(posted.plain_texts()[0].splitlines(), r"Conversations : 1.*")
    assert w.slack.posted(SLACK_DIGEST)[-1].files  # the chart followed the text
    # The minute check and the job, once the start-up post is done: nothing more.
    digest = w.digest(again)
    await digest.scheduler.get_job(f"{JOB_ID}-check").func()
    await digest.scheduler.get_job(JOB_ID).func()
    await w.stop(again)

    # Restarted an hour later: already posted, nothing again.
    w.clock.advance(timedelta(hours=1))
    third = await w.start()
    await w.digest(third).scheduler.get_job(f"{JOB_ID}-check").func()
    await w.stop(third)
    assert w.digest_calls() == ONE_DIGEST
    assert len(w.rows("SELECT * FROM digest_runs")) == 1


# ---------------------------------------------------------------------- 3. concurrent sends


async def test_concurrent_sends_of_one_period_post_once_per_target(world: World) -> None:
    w = world
    app = await w.start()
    ana = w.tg.add_user("Ana", "Lopez", language_code="fr")
    await bot_resolved(w, ana, QUESTION_FR, "Oui, merci")
    await w.settle()
    w.clock.set(SLOT)
    digest = w.digest(app)
    job = digest.scheduler.get_job(JOB_ID)
    period_end = datetime.fromtimestamp(WEEK_MS[1] / 1000, PARIS)

    # A second process on the same file, posting through the same platforms.
    other_db = await Database.open(w.db_path)
    try:
        assert app.components is not None
        other = DigestService(w.settings(), other_db, app.components.publishers, w.clock)
        results = await asyncio.wait_for(
            asyncio.gather(
                job.func(),
                job.func(),
                digest.send(period_end),
                other.send(period_end),
            ),
            WAIT,
        )
    finally:
        await other_db.close()
    outcomes = [r for r in results if isinstance(r, DigestOutcome)]
    assert len(outcomes) == 2
    assert {o.status for o in outcomes} <= {"sent", "skipped"}
    assert w.digest_calls() == ONE_DIGEST
    (run,) = w.rows("SELECT status FROM digest_runs")
    assert run["status"] == "done"
    sent = w.rows("SELECT target FROM digest_deliveries WHERE status = 'sent' ORDER BY target")
    assert [r["target"] for r in sent] == sorted(TARGETS)


# ---------------------------------------------------------------------- 4. supportbot kpi


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``cli.main`` installs the product's log handler on the root logger: undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = ("httpx", "httpcore", "apscheduler.executors.default")
    noisy = {name: logging.getLogger(name).level for name in names}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, value in noisy.items():
            logging.getLogger(name).setLevel(value)


async def kpi(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``supportbot kpi ...`` as a user runs it (in a thread: it runs its own event loop)."""
    capsys.readouterr()
    argv = ["kpi", "--config", str(config), "--from", PERIOD_FROM, "--to", PERIOD_TO, *args]
    code = await asyncio.to_thread(cli.main, argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


@pytest.mark.usefixtures("restore_logging")
async def test_kpi_command_reports_the_week(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world
    app = await w.start()
    await live_the_week(w, app)
    await w.stop(app)
    config = tmp_path / "report.yaml"
    config.write_text(
        yaml.safe_dump({"timezone": "Europe/Paris", "storage": {"path": str(w.db_path)}}),
        encoding="utf-8",
    )

    report = json.loads(await kpi(config, capsys, "--format", "json"))
    assert report["period"]["start"] == "2026-11-16T00:00:00+01:00"
    assert report["period"]["end"] == "2026-11-23T00:00:00+01:00"
    assert report["conversations"] == {
        "started": WEEK.started,
        "resolved": WEEK.resolved,
        "resolved_by_bot": WEEK.resolved_by_bot,
        "handed_off": WEEK.handed_off,
        "abandoned": WEEK.abandoned,
    }
    assert report["nps"] == {
        "score": pytest.approx(WEEK.nps),
        "promoters": WEEK.promoters,
        "passives": WEEK.passives,
        "detractors": WEEK.detractors,
        "responses": len(WEEK.nps_answers),
    }
    assert report["csat"] == {
        "score_pct": pytest.approx(WEEK.csat_pct),
        "average": pytest.approx(WEEK.csat_average),
        "responses": len(WEEK.csat_answers),
    }
    assert report["abandonment_rate_pct"] == pytest.approx(
        100 * WEEK.abandoned / WEEK.started, abs=0.005
    )
    assert report["bot_resolution_rate_pct"] == pytest.approx(
        100 * WEEK.resolved_by_bot / WEEK.resolved, abs=0.005
    )
    assert report["survey_response_rate_pct"] == pytest.approx(
        100 * len(WEEK.nps_answers) / WEEK.surveys_sent, abs=0.005
    )
    assert report["surveys"] == {"sent": WEEK.surveys_sent, "answered": len(WEEK.nps_answers)}
    # Only Bob got a person's answer, AGENT_DELAY after his handoff.
    agent_first = report["agent_first_response_s"]
    assert (agent_first["count"], agent_first["median"]) == (
        1,
        pytest.approx(AGENT_DELAY.total_seconds()),
    )

    by_channel = json.loads(await kpi(config, capsys, "--format", "json", "--by", "channel"))
    assert by_channel["by"] == "channel"
    assert [g["key"] for g in by_channel["groups"]] == ["telegram"]
    (group,) = by_channel["groups"]
    assert group["conversations"] == report["conversations"]
    assert group["nps"] == report["nps"]

    table = list(csv.reader(io.StringIO(await kpi(config, capsys, "--format", "csv"))))
    header, *rows = [row for row in table if row]
    assert header[:3] == ["period.start", "period.end", "conversations.started"]
    for column in ("nps.score", "csat.score_pct", "abandonment_rate_pct"):
        assert column in header
    (row,) = rows
    values = dict(zip(header, row, strict=True))
    assert int(values["conversations.started"]) == WEEK.started
    assert float(values["nps.score"]) == pytest.approx(WEEK.nps)
    assert int(values["conversations.abandoned"]) == WEEK.abandoned


# ---------------------------------------------------------------------- 5. supportbot digest


def digest_config(w: World, tmp_path: Path) -> Path:
    """The shipped config.yaml (web channel on by default), pointed at the fake platforms."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    data["storage"]["path"] = str(w.db_path)
    data["knowledge"]["path"] = str(KNOWLEDGE)
    data["telegram"]["api_url"] = w.tg.url
    data["slack"]["api_url"] = w.slack.api_url
    data["digest"]["targets"] = TARGETS
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return config


def is_png(path: Path) -> bool:
    return path.read_bytes().startswith(PNG)


async def digest_cli(
    capsys: pytest.CaptureFixture[str], clock: FakeClock, *args: str
) -> tuple[int, str]:
    """``supportbot digest ...`` as a user runs it (in a thread: it runs its own loop)."""
    capsys.readouterr()
    code = await asyncio.to_thread(cli.main, ["digest", *args], clock)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.usefixtures("restore_logging")
async def test_digest_command_posts_through_outbound_connections_only(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Plain ``digest`` posts the due digest once; ``--now`` posts again. Neither polls
    Telegram, opens a Socket Mode connection nor starts the web server (it used to start
    every channel, and crashed on the web one)."""
    w = world
    db = await Database.open(w.db_path)
    try:
        await seed_week(db)
    finally:
        await db.close()
    config = digest_config(w, tmp_path)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", w.tg.token)
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    for name in ("SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):  # posting needs neither
        monkeypatch.delenv(name, raising=False)
    clock = FakeClock(SLOT + timedelta(hours=1))
    caplog.set_level(logging.INFO)

    code, out = await digest_cli(capsys, clock, "--config", str(config))
    assert code == 0, out
    assert f"posted to {', '.join(TARGETS)}" in out
    assert w.digest_calls() == ONE_DIGEST
    code, out = await digest_cli(capsys, clock, "--config", str(config))
    assert (code, "already sent" in out) == (0, True), out
    assert w.digest_calls() == ONE_DIGEST
    code, out = await digest_cli(capsys, clock, "--now", "--config", str(config))
    assert code == 0, out
    assert f"posted to {', '.join(TARGETS)}" in out  # --now: even a period already posted
    assert w.digest_calls() == {k: 2 * v for k, v in ONE_DIGEST.items()}

    assert w.tg.calls_to("getUpdates") == []
    assert w.tg.calls_to("deleteWebhook") == []  # what starting to poll does first
    assert w.slack.calls_to("apps.connections.open") == []
    assert not [r for r in caplog.records if r.name.startswith("handlers.web")]
    posted = w.rows("SELECT target, status FROM digest_deliveries")
    assert sorted((r["target"], r["status"]) for r in posted) == [(t, "sent") for t in TARGETS]


@pytest.mark.usefixtures("restore_logging")
async def test_digest_dry_run_writes_its_chart_outside_the_working_tree(
    world: World,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = world
    db = await Database.open(w.db_path)
    try:
        await seed_week(db)
    finally:
        await db.close()
    config = digest_config(w, tmp_path)
    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    clock = FakeClock(SLOT + timedelta(hours=1))

    code, out = await digest_cli(capsys, clock, "--dry-run", "--config", str(config))
    assert code == 0, out
    assert out.startswith("📊 Indicateurs du support — du 16 nov. 2026 au 22 nov. 2026")
    chart = Path(out.rstrip().rsplit("[chart: ", 1)[1].removesuffix("]"))
    try:
        assert is_png(chart)
        assert work not in chart.parents
        assert list(work.iterdir()) == []  # no digest.png in the working tree
    finally:
        chart.unlink()  # noqa: ASYNC240  # a local temporary file

    given = tmp_path / "preview.png"
    code, out = await digest_cli(
        capsys, clock, "--dry-run", "--out", str(given), "--config", str(config)
    )
    assert code == 0, out
    assert out.rstrip().endswith(f"[chart: {given}]")
    assert is_png(given)
    assert list(work.iterdir()) == []
    assert w.digest_calls() == NO_DIGEST  # a preview posts nothing
