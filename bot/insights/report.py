"""``supportbot kpi``: one period's KPIs as a table, JSON or CSV; and the weekly summary.

Dates are local days of the configured time zone; ``--to`` is exclusive. Without
dates the report covers the last 7 days, today included (``default_days``, which the web
dashboard uses too), so that what just happened shows. "Today" is the app clock's.
The JSON and CSV field names are a public interface (see ``bot.insights.kpi.KpiReport.to_json``).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from rich import box
from rich.console import Console
from rich.table import Table

from bot.clock import Clock
from bot.config import Settings
from bot.conversation.routing_types import presence_of
from bot.errors import StorageError, SupportbotError
from bot.insights.followup_kpi import followups_value
from bot.insights.kpi import NONE_KEY, Durations, Figures, Group, KpiReport, Period, flatten
from bot.insights.kpi_texts import CATALOG, KpiTexts

if TYPE_CHECKING:
    from storage.database import Database

log = logging.getLogger(__name__)

FORMATS = ("table", "json", "csv")
DEFAULT_DAYS = 7


def local_today(settings: Settings, clock: Clock) -> date:
    """Today in the configured time zone, by the app's clock (never the wall clock)."""
    return clock.now().astimezone(settings.tz).date()


def default_days(date_from: date | None, date_to: date | None, today: date) -> tuple[date, date]:
    """The local days [first, end) a report covers when dates are left out.

    Shared by ``supportbot kpi`` and the dashboard so that both show the same figures:
    without ``date_to`` the period ends after today (today included); without
    ``date_from`` it is ``DEFAULT_DAYS`` days long.
    """
    end = date_to or today + timedelta(days=1)
    return date_from or end - timedelta(days=DEFAULT_DAYS), end


def report_period(
    settings: Settings, date_from: date | None, date_to: date | None, today: date
) -> Period:
    """The local days [date_from, date_to); by default the last 7 days, today included."""
    start, end = default_days(date_from, date_to, today)
    if start >= end:
        raise SupportbotError(
            f"--from {start.isoformat()} must be before --to {end.isoformat()} (--to is exclusive)"
        )
    return Period.of_days(start, end, settings.tz)


async def kpi_command(
    settings: Settings,
    *,
    date_from: date | None,
    date_to: date | None,
    by: str | None,
    fmt: str,
    today: date,
    db_path: Path | None = None,
) -> str:
    """The text ``supportbot kpi`` prints."""
    from storage.database import Database
    from storage.kpi_queries import KpiQueries

    if fmt not in FORMATS:
        raise SupportbotError(f"unknown format {fmt!r} (expected table, json or csv)")
    period = report_period(settings, date_from, date_to, today)
    path = db_path or settings.storage.target()
    if not await asyncio.to_thread(_exists, path):
        raise StorageError(f"no database at {path} (start the bot once, or pass --config)")
    from storage.routing import presence_words

    db = await Database.open(path, settings.storage.busy_timeout)
    try:
        report = await KpiQueries(db).report(period, calendar=settings.calendar(), by=by)
        presence = await presence_words(db) if by == "agent" and fmt == "table" else None
    finally:
        await db.close()
    if presence is not None:
        return render_table(report, settings.language, today=today, presence=presence)
    return render(report, fmt, settings.language, today)


def _exists(path: Path | str) -> bool:
    """A SQLite file is there (a PostgreSQL database is checked when opened)."""
    return isinstance(path, str) or str(path) == ":memory:" or path.exists()


def render(report: KpiReport, fmt: str, language: str = "en", today: date | None = None) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt == "csv":
        return render_csv(report)
    return render_table(report, language, today=today)


def group_name(t: KpiTexts, by: str | None, group: Group) -> str:
    """A group's name for people: the stored "(none)" key said in the report's language."""
    if group.key != NONE_KEY:
        return group.name
    key = f"none_{by}"
    return t(key) if key in CATALOG["en"] else t("none_group")


def _presence_cell(t: KpiTexts, presence: Mapping[str, str], key: str) -> str:
    """An agent's presence now, as a mark after their name; none for the conversations no
    agent held, nor for an agent who never said."""
    if key == NONE_KEY:
        return ""
    return t(f"presence_{presence_of(dict(presence), key)}")


def render_json(report: KpiReport) -> str:
    return json.dumps(report.to_json(), ensure_ascii=False, indent=2)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """A name typed by a person (agent name, topic tag) that a spreadsheet must not run:
    a leading = + - @ would make it a formula, so it gets a quote (OWASP CSV injection)."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


def render_csv(report: KpiReport) -> str:
    """One header line, then one row per group (with --by) or one row for everything."""
    data = report.to_json()
    base = {"period.start": data["period"]["start"], "period.end": data["period"]["end"]}
    for part in (data, *data.get("groups", [])):  # one column, whatever the causes
        part["complaints"]["by_cause"] = json.dumps(part["complaints"]["by_cause"],
                                                    ensure_ascii=False)  # fmt: skip
    if report.by is None:
        figures = {k: v for k, v in data.items() if k not in ("period", "by", "groups")}
        rows = [{**base, **flatten(figures)}]
    else:
        rows = [
            {
                **base,
                "by": report.by,
                "key": _cell(g["key"]),
                "label": _cell(g.get("label", "")),
                **flatten({k: v for k, v in g.items() if k not in ("key", "label")}),
            }
            for g in data["groups"]
        ]
        if not rows:  # still one header line, so that scripts can rely on the columns
            empty = Figures().to_json()
            empty["complaints"]["by_cause"] = "{}"
            header = [*base, "by", "key", "label", *flatten(empty)]
            return ",".join(header) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def _console(width: int = 80) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        no_color=True,
        highlight=False,
        force_terminal=False,
        color_system=None,
        emoji=False,
    )
    return console, buffer


def _times(t: KpiTexts, d: Durations) -> str:
    if not d.count:
        return t.dash
    return t(
        "row_frt_value",
        median=t.duration(d.median),
        mean=t.duration(d.mean),
        p90=t.duration(d.p90),
        count=t.integer(d.count),
    )


def _rate(t: KpiTexts, pct: float | None, num: int, den: int) -> str:
    if pct is None:
        return t.dash
    return t("row_rate_value", pct=t.pct(pct), num=t.integer(num), den=t.integer(den))


def figure_rows(t: KpiTexts, f: Figures) -> list[tuple[str, str]]:
    """(label, value) lines describing one set of figures, for people."""
    c, n, s, r = f.conversations, f.nps, f.csat, f.retention
    rows = [
        (
            t("row_conversations"),
            t(
                "row_conversations_value",
                started=t.integer(c.started),
                resolved=t.integer(c.resolved),
                by_bot=t.integer(c.resolved_by_bot),
                handed_off=t.integer(c.handed_off),
                abandoned=t.integer(c.abandoned),
            ),
        ),
        (
            t("row_nps"),
            t.dash
            if n.score is None
            else t(
                "row_nps_value",
                score=t.score(n.score),
                promoters=t.integer(n.promoters),
                passives=t.integer(n.passives),
                detractors=t.integer(n.detractors),
            ),
        ),
        (
            t("row_csat"),
            t.dash
            if s.score_pct is None
            else t(
                "row_csat_value",
                pct=t.pct(s.score_pct),
                average=t.number(s.average, 2),
                responses=t.integer(s.responses),
            ),
        ),
        (t("row_frt"), _times(t, f.times.first)),
        (t("row_frt_business"), _times(t, f.times.first_business)),
        (t("row_agent_frt"), _times(t, f.times.agent_first)),
        (t("row_agent_frt_business"), _times(t, f.times.agent_first_business)),
        (t("row_car"), _rate(t, f.abandonment_rate_pct, c.abandoned, c.started)),
    ]
    if r is not None:
        rows.append(
            (
                t("row_crr"),
                t.dash
                if r.rate_pct is None
                else t(
                    "row_crr_value",
                    pct=t.pct(r.rate_pct),
                    start=t.integer(r.start_customers),
                    end=t.integer(r.end_customers),
                    new=t.integer(r.new_customers),
                ),
            )
        )
    rows += [
        (t("row_bot"), _rate(t, f.bot_resolution_rate_pct, c.resolved_by_bot, c.resolved)),
        (
            t("row_survey"),
            _rate(t, f.survey_response_rate_pct, f.surveys.answered, f.surveys.sent),
        ),
        (t("row_followups"), followups_value(t, f.followups)),
        *closing_rows(t, f),
    ]
    return rows


def closing_rows(t: KpiTexts, f: Figures) -> list[tuple[str, str]]:
    """Resolution time, complaints by root cause and re-contacts, for people."""
    k = f.closing
    causes = ", ".join(f"{cause} {t.integer(n)}" for cause, n in k.complaints)
    return [
        (t("row_resolution"), _times(t, k.resolution)),
        (t("row_resolution_business"), _times(t, k.resolution_business)),
        (
            t("row_complaints"),
            t(
                "row_complaints_value",
                count=t.integer(k.complaint_count),
                causes=f" ({causes})" if causes else "",
            ),
        ),  # fmt: skip
        (t("row_recontact"), _rate(t, k.recontact_rate_pct, k.returned, k.resolved)),
    ]


def cause_table(t: KpiTexts, report: KpiReport) -> Table:
    """--by cause: each root cause's complaints, share, previous period and resolution."""
    table = Table(box=box.SIMPLE_HEAD, title_justify="left")
    table.add_column(t("group_cause"), overflow="fold", max_width=28)
    for key in ("col_complaints", "col_share", "col_previous", "col_resolution"):
        table.add_column(t(key), justify="right", no_wrap=True)
    for g in report.groups:
        if g.key == NONE_KEY:
            continue
        extra = dict(g.extra)
        count = g.figures.closing.complaint_count
        table.add_row(
            g.name,
            t.integer(count),
            t.pct(extra.get("share_pct"), 0),
            t.integer(int(extra.get("previous_count") or 0))
            + t.change_count(count, int(extra.get("previous_count") or 0)),
            t.duration(g.figures.closing.resolution.median),
        )
    return table


def render_table(
    report: KpiReport,
    language: str = "en",
    width: int = 80,
    *,
    today: date | None = None,
    presence: Mapping[str, str] | None = None,
) -> str:
    """Human-readable tables that fit an 80-column terminal, under a line naming the period
    (and saying so when it includes ``today``, a day not over yet). With ``presence``
    (agent key → available/away, ``--by agent``) a column says who is at the desk now."""
    t = KpiTexts(language)
    console, buffer = _console(width)
    start, end = report.period.start, report.period.end
    last_day = (end.astimezone(start.tzinfo) - timedelta(microseconds=1)).date()
    title = t("report_title", period=t.period(start, end), tz=start.tzinfo)
    if today is not None and last_day == today:
        title += "\n" + t("report_today")
    table = Table(title=title, box=box.SIMPLE_HEAD, show_lines=False, title_justify="left")
    table.add_column(t("col_kpi"), no_wrap=True)
    table.add_column(t("col_value"), overflow="fold")
    for label, value in figure_rows(t, report.figures):
        table.add_row(label, value)
    console.print(table)
    if report.by is not None:
        groups = Table(box=box.SIMPLE_HEAD, title_justify="left")
        groups.add_column(t(f"group_{report.by}"), overflow="fold", max_width=18)
        for key in (
            "col_started",
            "col_nps",
            "col_csat",
            "col_frt",
            "col_agent_frt",
            "col_car",
            "col_bot",
        ):
            groups.add_column(t(key), justify="right", no_wrap=True)
        with_presence = presence is not None and report.by == "agent"
        for g in report.groups:
            f = g.figures
            marker = _presence_cell(t, presence or {}, g.key) if with_presence else ""
            groups.add_row(
                group_name(t, report.by, g) + marker,
                t.integer(f.conversations.started),
                t.score(f.nps.score),
                t.pct(f.csat.score_pct, 0),
                t.duration(f.times.first.median),
                t.duration(f.times.agent_first.median),
                t.pct(f.abandonment_rate_pct, 0),
                t.pct(f.bot_resolution_rate_pct, 0),
            )
        console.print(groups)
        if with_presence:
            console.print(t("presence_legend"))
        if report.by == "cause":
            console.print(cause_table(t, report))
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip().splitlines()) + "\n"


async def week_summary(settings: Settings, db: Database, *, now: datetime) -> str:
    """A few lines on the current week (Monday 00:00 local → ``now``, the app clock's), for
    /support-kpi."""
    from storage.kpi_queries import KpiQueries

    tz = settings.tz
    moment = now.astimezone(tz)
    monday = datetime.combine(moment.date() - timedelta(days=moment.weekday()), time(0), tz)
    # Up to and including this instant: what happened "now" counts (periods end exclusive).
    period = Period(monday, moment + timedelta(milliseconds=1))
    report = await KpiQueries(db).report(period, calendar=settings.calendar())
    t = KpiTexts(settings.language)
    f = report.figures
    return "\n".join(
        [
            t("week_title", since=t.day(monday)),
            t(
                "week_line",
                started=t.integer(f.conversations.started),
                nps=t.score(f.nps.score),
                csat=t.pct(f.csat.score_pct),
                frt=t.duration(f.times.first.median),
                car=t.pct(f.abandonment_rate_pct),
                bot=t.pct(f.bot_resolution_rate_pct),
            ),
        ]
    )
