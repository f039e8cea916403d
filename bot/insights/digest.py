"""The KPI digest's content: one period's KPIs composed into a text and a chart.

Which period: for a period of whole days (the default, 7) a digest covers the local
days before the slot's day — a Monday 09:00 slot covers Monday 00:00 a week before up
to Monday 00:00. For shorter periods it ends at the slot itself.

Posting it on schedule, never twice, is ``bot.insights.digest_service``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING

from babel.dates import format_date

from bot.config import Settings
from bot.insights.chart import Spread, TrendPoint, render_chart
from bot.insights.followup_kpi import followups_value
from bot.insights.kpi import NONE_KEY, Figures, Group, KpiReport, Period
from bot.insights.kpi_texts import KpiTexts

if TYPE_CHECKING:
    from storage.database import Database
    from storage.kpi_queries import DetractorComment

TREND_PERIODS = 8
MAX_AGENT_LINES = 10
MAX_TOPIC_LINES = 3
MIN_TOPIC_ANSWERS = 3
MAX_COMMENTS = 3
MAX_GAP_LINES = 3
MAX_CAUSE_LINES = 5
COMMENT_CHARS = 200


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
    gaps: Sequence[tuple[str, int]] = (),
    causes: Sequence[Group] = (),
) -> str:
    """The digest message. ``current`` is broken down by agent; ``topics`` by topic;
    ``gaps`` are the largest groups of unanswered questions (representative, count);
    ``causes`` the complaint root causes (a report ``by="cause"``)."""
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
    lines.append(t("followups_line", value=followups_value(t, f.followups)))
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
    lines += closing_lines(t, f, p, causes)
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
    top = recurring_causes(causes)
    if top:
        lines += ["", t("causes_title")]
        total = f.closing.complaint_count
        for g in top:
            count = g.figures.closing.complaint_count
            before = int(dict(g.extra).get("previous_count") or 0)
            share = t.pct(100.0 * count / total if total else None, 0)
            change = t.change_count(count, before)
            lines.append(t("cause_line", cause=g.key, count=t.integer(count), share=share,
                           change=change))  # fmt: skip
    if comments:
        lines += ["", t("comments_title")]
        for comment in comments[:MAX_COMMENTS]:
            topic = f" · {_topic_name(t, comment.topic)}" if comment.topic else ""
            lines.append(
                t("comment_line", comment=_clip(comment.comment), nps=comment.nps, topic=topic)
            )
    if gaps:
        lines += ["", t("gaps_digest_title")]
        for question, count in gaps[:MAX_GAP_LINES]:
            lines.append(t("gap_line", question=_clip(question), count=t.integer(count)))
    return "\n".join(lines)


def closing_lines(t: KpiTexts, f: Figures, p: Figures, causes: Sequence[Group]) -> list[str]:
    """Resolution time and re-contacts, when anything was resolved."""
    k = f.closing
    if not k.resolution.count:
        return []
    median = t.duration(k.resolution.median)
    median += t.change_duration(k.resolution.median, p.closing.resolution.median)
    recontact = t.pct(k.recontact_rate_pct)
    return [t("digest_resolution", median=median, p90=t.duration(k.resolution.p90),
              recontact=recontact)]  # fmt: skip


def recurring_causes(groups: Sequence[Group], limit: int = MAX_CAUSE_LINES) -> list[Group]:
    """The root causes with complaints in the period, most frequent first."""
    found = [g for g in groups if g.key != NONE_KEY and g.figures.closing.complaint_count]
    found.sort(key=lambda g: (-g.figures.closing.complaint_count, g.key))
    return found[:limit]


async def compose(
    settings: Settings, db: Database, period: Period, *, chart: bool = True
) -> DigestContent:
    """Query everything the digest shows and render its text and chart."""
    from bot.insights.gaps import gaps_report
    from storage.kpi_queries import HISTOGRAM_EDGES, KpiQueries

    queries = KpiQueries(db)
    calendar = settings.calendar()
    current = await queries.report(period, calendar=calendar, by="agent")
    previous = await queries.report(period.previous(), calendar=calendar)
    topics = await queries.report(period, calendar=calendar, by="topic")
    causes = await queries.report(period, calendar=calendar, by="cause")
    comments = await queries.detractor_comments(period, MAX_COMMENTS)
    unanswered = (await gaps_report(settings, db, period)).gaps[:MAX_GAP_LINES]
    gaps = [(g.group.question, g.group.count) for g in unanswered]
    text = digest_text(settings.language, current, previous.figures, topics.groups, comments, gaps,
                       causes.groups)  # fmt: skip
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
