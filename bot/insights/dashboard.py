"""What the web KPI dashboard shows: the period asked for, and everything drawn for it.

The figures are the ``supportbot kpi --format json`` report itself (same queries,
same names), so the page and the scripts never disagree; the dashboard adds the
three breakdowns, the chart series, the values already formatted for people
("—" when there is no data) and its labels, all in the configured language.
Dates follow the CLI: local days of the configured time zone, ``to`` exclusive.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from babel.dates import format_date

from bot.config import Settings
from bot.errors import InvalidParameterError
from bot.insights.followup_kpi import followups_value
from bot.insights.kpi import BREAKDOWNS, NONE_KEY, Figures, Group, KpiReport, Period
from bot.insights.kpi_series import FRT_EDGES_S, Histogram, trend_buckets
from bot.insights.kpi_texts import CATALOG, KpiTexts
from bot.insights.report import default_days, group_name, render_csv

if TYPE_CHECKING:
    from storage.database import Database

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
# Ten years: long reports fill the KPI day cache, one row per day, even for empty days.
MAX_DAYS = 3660
# Catalog entries without placeholders that the page shows as they are.
_PLAIN_LABELS = tuple(
    key
    for key, text in CATALOG["en"].items()
    if "{" not in text
    and key.startswith(("dash_", "row_", "col_", "group_", "chart_", "nps", "no_data"))
)


def _day(name: str, value: str | None) -> date | None:
    if value is None or value == "":
        return None
    if not _DAY.fullmatch(value):
        raise InvalidParameterError(name, f"expected a date as YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidParameterError(name, f"{value!r} is not a calendar date") from None


def requested_period(settings: Settings, params: Mapping[str, str], today: date) -> Period:
    """``from``/``to`` of a request as local days (``to`` exclusive), like ``supportbot kpi``.

    Without them: the last ``DEFAULT_DAYS`` days, today included, the same default as the
    CLI (``bot.insights.report.default_days``): a survey answered a minute ago must show.
    """
    given_end = _day("to", params.get("to"))
    first, end = default_days(_day("from", params.get("from")), given_end, today)
    if first >= end:
        if given_end is None:
            raise InvalidParameterError(
                "from", f"{first.isoformat()} must not be after today {today.isoformat()}"
            )
        raise InvalidParameterError(
            "to", f"{end.isoformat()} must be after from {first.isoformat()} (to is exclusive)"
        )
    if (end - first).days > MAX_DAYS:
        raise InvalidParameterError(
            "from", f"the period is limited to {MAX_DAYS} days, got {(end - first).days}"
        )
    return Period.of_days(first, end, settings.tz)


def requested_breakdown(params: Mapping[str, str]) -> str | None:
    by = params.get("by") or None
    if by is not None and by not in BREAKDOWNS:
        raise InvalidParameterError("by", f"expected one of {', '.join(BREAKDOWNS)}, got {by!r}")
    return by


# --- for people --------------------------------------------------------------------------


Format = Callable[[KpiTexts, Figures], str]

# Every value a card or a table cell shows, formatted for people; "—" means no data.
_FORMATS: dict[str, Format] = {
    "nps": lambda t, f: t.score(f.nps.score),
    "promoters": lambda t, f: t.integer(f.nps.promoters),
    "passives": lambda t, f: t.integer(f.nps.passives),
    "detractors": lambda t, f: t.integer(f.nps.detractors),
    "nps_responses": lambda t, f: t.integer(f.nps.responses),
    "csat": lambda t, f: t.pct(f.csat.score_pct),
    "csat_average": lambda t, f: t.number(f.csat.average, 2),
    "csat_responses": lambda t, f: t.integer(f.csat.responses),
    "csat_detail": lambda t, f: (
        t("dash_csat_detail", average=t.mean(f.csat.average), answers=t.answers(f.csat.responses))
        if f.csat.responses
        else t.answers(0)
    ),
    "frt_median": lambda t, f: t.duration(f.times.first.median),
    "frt_p90": lambda t, f: t.duration(f.times.first.p90),
    "agent_frt_median": lambda t, f: t.duration(f.times.agent_first.median),
    "agent_frt_p90": lambda t, f: t.duration(f.times.agent_first.p90),
    "abandonment": lambda t, f: t.pct(f.abandonment_rate_pct),
    "retention": lambda t, f: t.pct(f.retention.rate_pct if f.retention else None),
    "bot_resolution": lambda t, f: t.pct(f.bot_resolution_rate_pct),
    "survey_response": lambda t, f: t.pct(f.survey_response_rate_pct),
    "started": lambda t, f: t.integer(f.conversations.started),
    "resolved": lambda t, f: t.integer(f.conversations.resolved),
    "resolved_by_bot": lambda t, f: t.integer(f.conversations.resolved_by_bot),
    "handed_off": lambda t, f: t.integer(f.conversations.handed_off),
    "abandoned": lambda t, f: t.integer(f.conversations.abandoned),
    "followups": lambda t, f: followups_value(t, f.followups),
    "resolution_median": lambda t, f: t.duration(f.closing.resolution.median),
    "resolution_p90": lambda t, f: t.duration(f.closing.resolution.p90),
    "recontact": lambda t, f: t.pct(f.closing.recontact_rate_pct),
    "complaints": lambda t, f: t.integer(f.closing.complaint_count),
}
# The columns of the breakdown tables (value, header label), as `supportbot kpi --by` shows.
# Only these are formatted per group: Babel formatting dominates a long breakdown.
COLUMNS = (
    ("started", "col_started"),
    ("nps", "col_nps"),
    ("csat", "col_csat"),
    ("frt_median", "col_frt"),
    ("agent_frt_median", "col_agent_frt"),
    ("abandonment", "col_car"),
    ("bot_resolution", "col_bot"),
    ("resolution_median", "col_resolution"),
    ("complaints", "col_complaints"),
)


def display(t: KpiTexts, f: Figures, keys: Iterable[str] = tuple(_FORMATS)) -> dict[str, str]:
    return {key: _FORMATS[key](t, f) for key in keys}


def _group_name(t: KpiTexts, by: str, g: Group) -> str:
    return group_name(t, by, g)


def bucket_labels(t: KpiTexts, edges: tuple[int, ...]) -> list[str]:
    """Bucket names from the edges: "< 1 min", "1 min – 5 min", …, "> 4 h"."""
    inner = [f"{t.duration(a)} – {t.duration(b)}" for a, b in zip(edges, edges[1:], strict=False)]
    return [f"< {t.duration(edges[0])}", *inner, f"> {t.duration(edges[-1])}"]


def labels(t: KpiTexts) -> dict[str, str]:
    out = {key: t(key) for key in _PLAIN_LABELS}
    out["none_topic"] = t("none_topic")
    out.update({f"preset_{d}": t("dash_preset", days=d) for d in (7, 30, 90)})
    return out


def _breakdown(t: KpiTexts, report: KpiReport) -> dict[str, Any]:
    by = report.by or ""
    return {
        "groups": report.to_json()["groups"],
        "display": [
            {
                "key": g.key,
                "name": _group_name(t, by, g),
                **display(t, g.figures, (key for key, _ in COLUMNS)),
            }
            for g in report.groups
        ],
    }


def cause_series(t: KpiTexts, report: KpiReport) -> list[dict[str, Any]]:
    """The complaints-by-cause chart: each cause's count this period and the previous one
    (``--by cause``'s extras), the most frequent first. An unset cause is a bar of its own;
    the conversations that are not complaints (``NONE_KEY``) are no bar."""
    out = []
    for g in report.groups:
        if g.key == NONE_KEY:
            continue
        extra = dict(g.extra)
        out.append(
            {
                "key": g.key,
                "name": _group_name(t, "cause", g),
                "count": g.figures.closing.complaint_count,
                "previous_count": int(extra.get("previous_count") or 0),
                "share_pct": extra.get("share_pct"),
            }
        )
    return sorted(out, key=lambda c: (-c["count"], -c["previous_count"], c["name"]))


# --- the two answers ---------------------------------------------------------------------


async def dashboard_data(
    settings: Settings, db: Database, period: Period, today: date
) -> dict[str, Any]:
    """The ``/api/kpi`` document: the CLI's JSON report plus ``by``, ``series``, ``display``…

    ``today`` (local) lets the page's presets end with today, as the default period does.
    """
    from storage.kpi_queries import KpiQueries
    from storage.kpi_series import KpiSeries

    queries = KpiQueries(db)
    calendar = settings.calendar()
    t = KpiTexts(settings.language)
    reports = {by: await queries.report(period, calendar=calendar, by=by) for by in BREAKDOWNS}
    # A breakdown's totals are the plain report's: the same queries, summed over the
    # groups, and agent or topic groups leave retention unsplit. One query round fewer.
    report = KpiReport(period=period, figures=reports["topic"].figures)
    breakdowns = {by: _breakdown(t, r) for by, r in reports.items()}
    first = period.start.date()
    end = period.end.astimezone(settings.tz).date()
    granularity, buckets = trend_buckets(first, end, settings.tz)
    points = await KpiSeries(db).trend(buckets)
    first_counts, agent_counts = await queries.response_histogram(period, FRT_EDGES_S)
    histogram = Histogram(FRT_EDGES_S, first_counts, agent_counts)
    return {
        **report.to_json(),
        "by": {by: b["groups"] for by, b in breakdowns.items()},
        "series": {
            "granularity": granularity,
            "trend": [
                p.to_json(format_date(p.period.start.date(), "d MMM", locale=t.locale))
                for p in points
            ],
            "frt_histogram": histogram.to_json(bucket_labels(t, FRT_EDGES_S)),
            "causes": cause_series(t, reports["cause"]),
        },
        "dates": {"from": first.isoformat(), "to": end.isoformat(), "today": today.isoformat()},
        "language": t.language,
        "display": {
            "period": t.period(period.start, period.end),
            "figures": display(t, report.figures),
            "by": {by: b["display"] for by, b in breakdowns.items()},
            "columns": [{"key": key, "label": t(label)} for key, label in COLUMNS],
        },
        "labels": labels(t),
    }


async def dashboard_csv(settings: Settings, db: Database, period: Period, by: str | None) -> str:
    """The same CSV as ``supportbot kpi --format csv [--by …]``."""
    from storage.kpi_queries import KpiQueries

    report = await KpiQueries(db).report(period, calendar=settings.calendar(), by=by)
    return render_csv(report)


def csv_filename(period: Period, by: str | None) -> str:
    end = period.end.astimezone(period.start.tzinfo).date()
    suffix = f"-by-{by}" if by else ""
    return f"supportbot-kpi-{period.start.date().isoformat()}-{end.isoformat()}{suffix}.csv"
