"""``kb_questions``: what the knowledge base made of each customer question (written with
each engine step), and the queries on it: what it could not answer, the answers customers
said did not help, and the candidates customers picked.

The texts come from ``messages`` (joined here, never copied): a message erased for
privacy (blank text) drops out of every list.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from bot.clock import to_ms
from bot.conversation.store import KbQuestionRecord, Unit
from bot.insights.kpi import Period
from storage.database import Database
from storage.statements import ReturnedId, Statement

GAP = "(q.outcome IN ('missed', 'other') OR q.helped = 0)"


def kb_writes(
    unit: Unit, conversation_id: int, message_ids: Sequence[int | ReturnedId]
) -> list[Statement]:
    """A step's kb_questions writes (run by ``apply_step`` with its others): a new
    question, and the verdict on an earlier one (another row)."""
    writes: list[Statement] = []
    question, verdict = unit.kb_question, unit.kb_verdict
    if question is not None:
        candidates = json.dumps(list(question.candidates)) if question.candidates else None
        writes.append((
            "INSERT INTO kb_questions (conversation_id, message_id, language, outcome, entry,"
            " candidates, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, message_ids[question.message], question.language,
             question.outcome, question.entry, candidates, unit.now),
        ))  # fmt: skip
    if verdict is not None:
        helped = None if verdict.helped is None else int(verdict.helped)
        writes.append((
            "UPDATE kb_questions SET outcome = COALESCE(?, outcome), entry = COALESCE(?, entry),"
            " helped = COALESCE(?, helped), decided_at = ? WHERE id = ? AND conversation_id = ?",
            (verdict.outcome, verdict.entry, helped, unit.now, verdict.question, conversation_id),
        ))  # fmt: skip
    return writes


async def latest_kb_question(db: Database, conversation_id: int) -> KbQuestionRecord | None:
    row = await db.fetchone(
        "SELECT id, message_id, outcome, entry, candidates, at FROM kb_questions "
        "WHERE conversation_id = ? ORDER BY id DESC LIMIT 1",
        (conversation_id,),
    )
    if row is None:
        return None
    candidates = tuple(json.loads(row["candidates"])) if row["candidates"] else ()
    return KbQuestionRecord(row["id"], row["message_id"], row["outcome"], row["entry"],
                            candidates, row["at"])  # fmt: skip


@dataclass(frozen=True, slots=True)
class GapMessage:
    """A customer message the bot declined ("missed", "other") or whose answer did not help."""

    text: str
    language: str
    reason: str  # missed | other | not_helpful
    entry: str | None  # the entry that did not help
    at: int


@dataclass(frozen=True, slots=True)
class WeakAnswer:
    """An entry customers said did not help, ``not_helpful`` times out of ``answered``."""

    entry: str
    not_helpful: int
    answered: int


@dataclass(frozen=True, slots=True)
class Pick:
    """A customer message and the entry the customer picked among the candidates."""

    text: str
    language: str
    entry: str
    at: int


class KbQuestions:
    """Queries over one period ([start, end) of ``Period``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _bounds(period: Period) -> tuple[int, int]:
        return to_ms(period.start), to_ms(period.end)

    async def gaps(self, period: Period) -> list[GapMessage]:
        rows = await self.db.fetchall(
            "SELECT m.text, q.language, q.outcome, q.helped, q.entry, q.at FROM kb_questions q"
            " JOIN messages m ON m.id = q.message_id"
            f" WHERE q.at >= ? AND q.at < ? AND {GAP} AND m.text <> '' ORDER BY q.at, q.id",
            self._bounds(period),
        )
        return [
            GapMessage(
                r["text"],
                r["language"],
                "not_helpful" if r["helped"] == 0 else r["outcome"],
                r["entry"] if r["helped"] == 0 else None,
                r["at"],
            )
            for r in rows
        ]

    async def weak_answers(self, period: Period) -> list[WeakAnswer]:
        rows = await self.db.fetchall(
            "SELECT entry, SUM(CASE WHEN helped = 0 THEN 1 ELSE 0 END) AS bad, COUNT(*) AS answered"
            " FROM kb_questions WHERE at >= ? AND at < ? AND outcome IN ('answered', 'picked')"
            " GROUP BY entry HAVING SUM(CASE WHEN helped = 0 THEN 1 ELSE 0 END) > 0"
            " ORDER BY bad DESC, answered DESC, entry",
            self._bounds(period),
        )
        return [WeakAnswer(r["entry"], r["bad"], r["answered"]) for r in rows]

    async def picks(self, period: Period) -> list[Pick]:
        rows = await self.db.fetchall(
            "SELECT m.text, q.language, q.entry, q.at FROM kb_questions q"
            " JOIN messages m ON m.id = q.message_id"
            " WHERE q.at >= ? AND q.at < ? AND q.outcome = 'picked' AND m.text <> ''"
            " ORDER BY q.at, q.id",
            self._bounds(period),
        )
        return [Pick(r["text"], r["language"], r["entry"], r["at"]) for r in rows]
