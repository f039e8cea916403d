"""The SQL of issue 16's KPIs: resolution time, complaints by root cause, re-contacts,
and the group keys of the touchpoint, stage and cause breakdowns.

Same period semantics as ``bot/insights/kpi.py`` (the cohort of conversations started
in [start, end)). Resolution times need every value, so (key, started_at, resolved_at)
come from the covering index ``conversations_kpi`` and are summarized with numpy, in
calendar and business seconds, like the response times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from bot.insights.durations import BusinessTime, elapsed_seconds, summarize
from bot.insights.kpi import NONE_KEY, RECONTACT_DAYS, UNSET_CAUSE, Closing

Tuples = Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]]

_DAY_MS = 86_400_000


def conversation_key(by: str, alias: str) -> str:
    """The SQL group key of breakdown ``by`` for the conversation row named ``alias``."""
    keys = {
        "channel": f"{alias}.channel",
        "agent": f"{alias}.agent_key",
        "topic": f"COALESCE({alias}.tag, {alias}.topic)",
        "touchpoint": f"{alias}.touchpoint",
        "stage": f"{alias}.stage",
        "cause": f"(SELECT COALESCE(cm.cause, '{UNSET_CAUSE}') FROM complaints AS cm "
        f"WHERE cm.conversation_id = {alias}.id)",
    }
    return keys[by]


def survey_key(by: str) -> str:
    """The group key of a survey row for the breakdowns surveys do not store."""
    return (
        f"(SELECT {conversation_key(by, 'sk')} FROM conversations AS sk "
        "WHERE sk.id = surveys.conversation_id)"
    )


def _name(value: Any) -> str:
    return NONE_KEY if value is None else str(value)


async def closing_figures(
    tuples: Tuples, lo: int, hi: int, by: str | None, business: BusinessTime
) -> dict[str, Closing]:
    """Resolution times, complaints and re-contacts of the cohort, per group (one
    ``NONE_KEY`` group without a breakdown)."""
    key = conversation_key(by, "c") if by else "NULL"
    cohort = "FROM conversations AS c WHERE c.started_at >= ? AND c.started_at < ?"
    resolved = await tuples(
        f"SELECT {key}, c.started_at, c.resolved_at {cohort} AND c.resolved_at IS NOT NULL",
        (lo, hi),
    )
    window = RECONTACT_DAYS * _DAY_MS
    returns = await tuples(
        f"""SELECT {key}, count(*), sum(CASE WHEN EXISTS (
                SELECT 1 FROM conversations AS n INDEXED BY conversations_customer
                WHERE n.customer_id = c.customer_id
                  AND n.started_at > c.resolved_at AND n.started_at <= c.resolved_at + ?)
                THEN 1 ELSE 0 END)
            {cohort} AND c.resolved_at IS NOT NULL GROUP BY 1""",
        (window, lo, hi),
    )
    causes = await tuples(
        f"""SELECT {key}, COALESCE(cm.cause, '{UNSET_CAUSE}'), count(*)
            FROM conversations AS c JOIN complaints AS cm ON cm.conversation_id = c.id
            WHERE c.started_at >= ? AND c.started_at < ? GROUP BY 1, 2""",
        (lo, hi),
    )
    times: dict[str, tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for k, started, done in resolved:
        pair = times[_name(k)]
        pair[0].append(int(started))
        pair[1].append(int(done))
    counts: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for k, cause, n in causes:
        counts[_name(k)].append((str(cause), int(n)))
    recontacts = {_name(k): (int(n), int(back or 0)) for k, n, back in returns}
    result = {}
    for name in set(times) | set(counts) | set(recontacts):
        starts, ends = (np.asarray(v, dtype=np.int64) for v in times.get(name, ([], [])))
        n, back = recontacts.get(name, (0, 0))
        result[name] = Closing(
            resolution=summarize(elapsed_seconds(starts, ends)),
            resolution_business=summarize(business.seconds(starts, ends)),
            complaints=tuple(sorted(counts.get(name, []), key=lambda c: (-c[1], c[0]))),
            resolved=n,
            returned=back,
        )
    return result
