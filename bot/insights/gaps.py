"""The knowledge author's to-do list: ``supportbot kb gaps`` and ``supportbot kb picks``.

Gaps are the customer messages the bot declined (a miss, or "something else" in a
"did you mean") and the questions whose answer the customer said did not help, grouped
by meaning (``bot.knowledge.gaps``), largest group first; beside them, per entry, how
often its answer did not help. Picks are the messages where the customer chose an entry
among the candidates: labelled phrasings, printed as eval.yaml cases.

The period defaults to ``supportbot kpi``'s (``bot.insights.report.report_period``). The
JSON shape is a public interface (SPEC "Interfaces").
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table

from bot.config import Settings
from bot.errors import StorageError, SupportbotError
from bot.insights.kpi import Period
from bot.insights.kpi_texts import KpiTexts
from bot.insights.report import _console, _exists, report_period
from bot.knowledge.gaps import QuestionGroup, group_questions

if TYPE_CHECKING:
    from storage.database import Database
    from storage.kb_questions import GapMessage, WeakAnswer

FORMATS = ("table", "json")
DASHBOARD_GAPS = 20


@dataclass(frozen=True, slots=True)
class Gap:
    group: QuestionGroup
    reasons: dict[str, int]  # missed | other | not_helpful → count


@dataclass(frozen=True, slots=True)
class GapsReport:
    period: Period
    gaps: list[Gap]
    weak_answers: list[WeakAnswer]

    def to_json(self, limit: int | None = None) -> dict[str, Any]:
        return {
            "period": {
                "from": self.period.start.isoformat(),
                "to": self.period.end.isoformat(),
                "timezone": str(self.period.start.tzinfo),
            },
            "gaps": [
                {
                    "question": g.group.question,
                    "count": g.group.count,
                    "examples": list(g.group.examples),
                    "reasons": g.reasons,
                }
                for g in self.gaps[:limit]
            ],
            "weak_answers": [
                {"entry": w.entry, "not_helpful": w.not_helpful, "answered": w.answered}
                for w in self.weak_answers
            ],
        }


def _group(settings: Settings, messages: list[GapMessage]) -> list[Gap]:
    """Group by meaning with the configured encoder (loaded once per process)."""
    from bot.knowledge.encoder import load_encoder

    encoder = load_encoder(settings.knowledge.encoder)
    groups = group_questions([m.text for m in messages], encoder)
    return [Gap(g, dict(Counter(messages[i].reason for i in g.members))) for g in groups]


async def gaps_report(settings: Settings, db: Database, period: Period) -> GapsReport:
    """The period's gaps, grouped (encoding runs in a thread), and its weak answers."""
    from storage.kb_questions import KbQuestions

    queries = KbQuestions(db)
    messages = await queries.gaps(period)
    gaps = await asyncio.to_thread(_group, settings, messages) if messages else []
    return GapsReport(period, gaps, await queries.weak_answers(period))


async def dashboard_gaps(
    settings: Settings, db: Database, period: Period, limit: int = DASHBOARD_GAPS
) -> dict[str, Any]:
    """The dashboard's table: the largest gaps, with its headings in the configured language."""
    report = await gaps_report(settings, db, period)
    t = KpiTexts(settings.language)
    data = report.to_json(limit)
    data["labels"] = {
        "title": t("gaps_title", period=t.period(period.start, period.end), tz=period.start.tzinfo),
        "none": t("no_gaps"),
        **{key: t(key) for key in ("col_question", "col_count", "col_examples")},
    }
    return data


async def _open(settings: Settings, db_path: Path | None) -> Database:
    from storage.database import Database

    path = db_path or settings.storage.target()
    if not await asyncio.to_thread(_exists, path):
        raise StorageError(f"no database at {path} (start the bot once, or pass --config)")
    return await Database.open(path, settings.storage.busy_timeout)


async def gaps_command(
    settings: Settings,
    *,
    date_from: date | None,
    date_to: date | None,
    fmt: str,
    today: date,
    db_path: Path | None = None,
) -> str:
    """The text ``supportbot kb gaps`` prints."""
    if fmt not in FORMATS:
        raise SupportbotError(f"unknown format {fmt!r} (expected table or json)")
    period = report_period(settings, date_from, date_to, today)
    db = await _open(settings, db_path)
    try:
        report = await gaps_report(settings, db, period)
    finally:
        await db.close()
    if fmt == "json":
        return json.dumps(report.to_json(), ensure_ascii=False, indent=2)
    return render_table(report, settings.language)


def render_table(report: GapsReport, language: str, width: int = 100) -> str:
    """Both lists: the gaps, largest first, then the answers that did not help."""
    t = KpiTexts(language)
    console, buffer = _console(width)
    start, end = report.period.start, report.period.end
    title = t("gaps_title", period=t.period(start, end), tz=start.tzinfo)
    if not report.gaps:
        console.print(title)
        console.print(t("no_gaps"))
    else:
        table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
        table.add_column(t("col_count"), justify="right", no_wrap=True)
        table.add_column(t("col_question"), overflow="fold", ratio=2)
        table.add_column(t("col_examples"), overflow="fold", ratio=3)
        for gap in report.gaps:
            others = " · ".join(gap.group.examples[1:])
            table.add_row(t.integer(gap.group.count), gap.group.question, others)
        console.print(table)
    if report.weak_answers:
        weak = Table(title=t("weak_title"), box=box.SIMPLE_HEAD, title_justify="left")
        weak.add_column(t("col_entry"), overflow="fold")
        weak.add_column(t("col_not_helpful"), justify="right", no_wrap=True)
        weak.add_column(t("col_answered"), justify="right", no_wrap=True)
        for w in report.weak_answers:
            weak.add_row(w.entry, t.integer(w.not_helpful), t.integer(w.answered))
        console.print(weak)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip().splitlines()) + "\n"


async def picks_command(
    settings: Settings,
    *,
    date_from: date | None,
    date_to: date | None,
    today: date,
    db_path: Path | None = None,
) -> str:
    """``supportbot kb picks``: the period's picks as eval.yaml cases (paste under ``cases:``)."""
    from storage.kb_questions import KbQuestions

    period = report_period(settings, date_from, date_to, today)
    db = await _open(settings, db_path)
    try:
        picks = await KbQuestions(db).picks(period)
    finally:
        await db.close()
    lines = [
        f"# Picked by customers in 'did you mean', {period.start.date()} – {period.end.date()}"
        " (exclusive): append under cases: of an eval.yaml",
        "cases:",
    ]
    for pick in picks:
        case = {"lang": pick.language, "expected": pick.entry, "text": pick.text}
        lines.append(f"  - {json.dumps(case, ensure_ascii=False)}")
    return "\n".join(lines)
