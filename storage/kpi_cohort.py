"""The conversation cohort of a KPI report: one row per conversation started in the
period, read live from the covering index or, for whole UTC days of long periods, from
the ``kpi_cohort_days`` cache (see ``storage.kpi_queries``' docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bot.errors import StorageError
from bot.insights.durations import (
    FLAG_ABANDONED,
    FLAG_HANDED_OFF,
    FLAG_RESOLVED,
    BusinessTime,
    Cohort,
    IntArray,
)
from bot.insights.kpi import NONE_KEY
from storage.database import DB_ERRORS, AsyncConn, Database
from storage.kpi_closing import conversation_key

log = logging.getLogger(__name__)


# The group key of each breakdown of conversation rows (journey and cause keys: not cached).
_CONVERSATION_KEY = {
    "channel": "channel",
    "agent": "agent_key",
    "topic": "COALESCE(tag, topic)",
    **{by: conversation_key(by, "conversations") for by in ("touchpoint", "stage", "cause")},
}

# The conversation flags travel in the bits of started_at above 2^42 ms (year 2109).
_FLAG_SHIFT = 42
_PACKED_START = (
    f"started_at + ((CASE WHEN resolved_at IS NOT NULL THEN {FLAG_RESOLVED} ELSE 0 END)"
    f" + (CASE WHEN abandoned_at IS NOT NULL THEN {FLAG_ABANDONED} ELSE 0 END)"
    f" + (CASE WHEN handed_off_at IS NOT NULL THEN {FLAG_HANDED_OFF} ELSE 0 END))"
    f" * {1 << _FLAG_SHIFT}"
)
# The FROM … WHERE of the cohort: conversations started in [?, ?).
COHORT = "FROM conversations INDEXED BY conversations_kpi WHERE started_at >= ? AND started_at < ?"

DAY_MS = 86_400_000
CACHE_VERSION = 1  # bump when _CACHE_ROW changes: older rows are ignored and rebuilt
_CACHE_ROW = np.dtype(
    [
        ("packed", "<i8"),  # started_at with the flags above bit 42
        ("first", "<i8"),  # first_response_at, −1 for NULL
        ("handed", "<i8"),  # handed_off_at
        ("agent", "<i8"),  # first_agent_response_at
        ("channel", "<i4"),  # kpi_keys ids of the three group keys, −1 for NULL
        ("agent_key", "<i4"),
        ("topic", "<i4"),
    ]
)
_CACHE_FIELD = {"channel": "channel", "agent": "agent_key", "topic": "topic"}
_CACHE_CHUNK_DAYS = 31  # days rebuilt per write transaction: keeps the write lock short


class CohortQueries:
    """The cohort reads; ``KpiQueries`` adds the other sources and the report."""

    def __init__(self, db: Database, *, cache_days: int = 28) -> None:
        self.db = db
        self.cache_days = cache_days

    async def _tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples: much cheaper than ``Row`` for big fetches."""
        return await self.db.tuples(sql, params)

    async def _cohort(
        self, lo: int, hi: int, by: str | None, business: BusinessTime
    ) -> tuple[Cohort, list[str]]:
        """The conversations started in [lo, hi), one row each, and the group keys."""
        first_day, end_day = -(-lo // DAY_MS), hi // DAY_MS
        parts: list[_Rows] = []
        live = [(lo, hi)]
        keys = _Keys()
        if end_day - first_day >= max(self.cache_days, 1) and (by is None or by in _CACHE_FIELD):
            await self._fill_cache(first_day, end_day)
            cached, missing = await self._cached(first_day, end_day, by)
            keys = _Keys(await self._known_keys())  # after the read: ids are never removed
            parts.append(cached)
            live = [(lo, first_day * DAY_MS), *missing, (end_day * DAY_MS, hi)]
        for start, end in live:
            if start < end:
                parts.append(await self._live(start, end, by, keys))
        rows = _Rows.concat(parts)
        if by:
            codes, dense = np.unique(rows.codes, return_inverse=True)
            names = [keys.name(int(c)) for c in codes]
        else:
            dense, names = np.zeros(len(rows.codes), dtype=np.int64), [NONE_KEY]
        cohort = Cohort(
            codes=dense.astype(np.int64),
            flags=rows.packed >> _FLAG_SHIFT,
            started=rows.packed & ((1 << _FLAG_SHIFT) - 1),
            first_response=rows.first,
            handed_off=rows.handed,
            first_agent=rows.agent,
            groups=len(names),
            business=business,
        )
        return cohort, names

    async def _live(self, lo: int, hi: int, by: str | None, keys: _Keys) -> _Rows:
        """Cohort rows straight from the covering index.

        Python pays per fetched value, so they come in two shapes: conversations never
        handed off need only (flags + start, first response); the others add the
        handoff and the first agent reply (−1 stands for NULL).
        """
        key = f"{_CONVERSATION_KEY[by]}, " if by else ""
        bot_only = await self._tuples(
            f"SELECT {key}{_PACKED_START}, COALESCE(first_response_at, -1) {COHORT} "
            "AND handed_off_at IS NULL",
            (lo, hi),
        )
        handed = await self._tuples(
            f"SELECT {key}{_PACKED_START}, COALESCE(first_response_at, -1), handed_off_at, "
            f"COALESCE(first_agent_response_at, -1) {COHORT} AND handed_off_at IS NOT NULL",
            (lo, hi),
        )
        parts = []
        for rows, width in ((bot_only, 2), (handed, 4)):
            fields = ([("k", "O")] if by else []) + [(f"v{i}", "i8") for i in range(width)]
            table = np.fromiter(rows, dtype=np.dtype(fields), count=len(rows))
            if by:
                ids = (keys.id(k) for k in table["k"])
                codes = np.fromiter(ids, dtype=np.int64, count=len(table))
            else:
                codes = np.zeros(len(table), dtype=np.int64)
            missing = np.full(len(table), -1, dtype=np.int64)
            parts.append(
                _Rows(
                    table["v0"],
                    table["v1"],
                    table["v2"] if width == 4 else missing,
                    table["v3"] if width == 4 else missing,
                    codes,
                )
            )
        return _Rows.concat(parts)

    async def _known_keys(self) -> dict[str, int]:
        return {str(k): int(i) for i, k in await self._tuples("SELECT id, key FROM kpi_keys")}

    async def _cached(
        self, first_day: int, end_day: int, by: str | None
    ) -> tuple[_Rows, list[tuple[int, int]]]:
        """The cached days' rows, and the [start, end) ranges of days not in the cache."""
        rows = await self._tuples(
            "SELECT day, data FROM kpi_cohort_days WHERE day >= ? AND day < ? AND version = ?",
            (first_day, end_day, CACHE_VERSION),
        )
        table = np.frombuffer(b"".join(r[1] for r in rows), dtype=_CACHE_ROW)
        codes = table[_CACHE_FIELD[by]].astype(np.int64) if by else np.zeros(len(table), np.int64)
        cached = _Rows(
            table["packed"].astype(np.int64),
            table["first"].astype(np.int64),
            table["handed"].astype(np.int64),
            table["agent"].astype(np.int64),
            codes,
        )
        present = {int(r[0]) for r in rows}
        missing = [
            (start * DAY_MS, end * DAY_MS)
            for start, end in _runs([d for d in range(first_day, end_day) if d not in present])
        ]
        return cached, missing

    async def _fill_cache(self, first_day: int, end_day: int) -> None:
        """Build the missing days of [first_day, end_day), a few weeks per transaction.

        Reading the rows and storing them in the same write transaction means no
        conversation can change in between: a stored day is exact until a trigger drops it.
        """
        rows = await self._tuples(
            "SELECT day FROM kpi_cohort_days WHERE day >= ? AND day < ? AND version = ?",
            (first_day, end_day, CACHE_VERSION),
        )
        present = {int(r[0]) for r in rows}
        missing = [d for d in range(first_day, end_day) if d not in present]
        for start, end in _runs(missing, _CACHE_CHUNK_DAYS):
            try:
                async with self.db.transaction() as conn:
                    await self._store_days(conn, start, end)
            except (StorageError, *DB_ERRORS) as exc:
                log.info("KPI day cache not updated (%s); reading conversations live", exc)
                return

    async def _store_days(self, conn: AsyncConn, start: int, end: int) -> None:
        found = await conn.execute_fetchall(
            f"""SELECT started_at / {DAY_MS}, {_PACKED_START}, COALESCE(first_response_at, -1),
                       COALESCE(handed_off_at, -1), COALESCE(first_agent_response_at, -1),
                       channel, agent_key, COALESCE(tag, topic) {COHORT}
                ORDER BY started_at""",
            (start * DAY_MS, end * DAY_MS),
        )
        rows = [tuple(r) for r in found]
        fields = [(f"v{i}", "i8") for i in range(5)] + [("c", "O"), ("a", "O"), ("t", "O")]
        table = np.fromiter(rows, dtype=np.dtype(fields), count=len(rows))
        names = {str(k) for column in ("c", "a", "t") for k in table[column] if k is not None}
        await conn.executemany(
            "INSERT INTO kpi_keys (key) VALUES (?) ON CONFLICT DO NOTHING",
            [(k,) for k in sorted(names)],
        )
        keys = await conn.execute_fetchall("SELECT id, key FROM kpi_keys")
        ids: dict[Any, int] = {str(k): int(i) for i, k in keys}
        ids[None] = -1
        packed = np.empty(len(table), dtype=_CACHE_ROW)
        for column, source in (
            ("packed", "v1"),
            ("first", "v2"),
            ("handed", "v3"),
            ("agent", "v4"),
        ):
            packed[column] = table[source]
        for column, source in (("channel", "c"), ("agent_key", "a"), ("topic", "t")):
            packed[column] = np.fromiter(
                (ids[k] for k in table[source]), dtype=np.int32, count=len(table)
            )
        days = table["v0"]
        bounds = np.searchsorted(days, np.arange(start, end + 1))
        await conn.executemany(
            "INSERT INTO kpi_cohort_days (day, version, rows, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (day) DO UPDATE SET version = excluded.version, rows = excluded.rows, "
            "data = excluded.data",
            [
                (
                    day,
                    CACHE_VERSION,
                    int(bounds[i + 1] - bounds[i]),
                    packed[bounds[i] : bounds[i + 1]].tobytes(),
                )
                for i, day in enumerate(range(start, end))
            ],
        )


@dataclass(slots=True)
class _Rows:
    """Cohort columns from one source (−1 = NULL); ``codes`` are kpi_keys ids."""

    packed: IntArray
    first: IntArray
    handed: IntArray
    agent: IntArray
    codes: IntArray

    @staticmethod
    def concat(parts: Sequence[_Rows]) -> _Rows:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return _Rows(empty, empty, empty, empty, empty)
        return _Rows(
            *(np.concatenate([getattr(p, name) for p in parts]) for name in _Rows.__slots__)
        )


class _Keys:
    """Group keys ⇄ integer codes: kpi_keys ids, −1 for NULL, negatives for keys not stored."""

    def __init__(self, known: dict[str, int] | None = None) -> None:
        self._ids: dict[str, int] = dict(known or {})
        self._names = {v: k for k, v in self._ids.items()}
        self._next = -2

    def id(self, key: Any) -> int:
        if key is None:
            return -1
        text = str(key)
        found = self._ids.get(text)
        if found is None:
            found, self._next = self._next, self._next - 1
            self._ids[text] = found
            self._names[found] = text
        return found

    def name(self, code: int) -> str:
        return NONE_KEY if code == -1 else self._names[code]


def _runs(days: Sequence[int], longest: int | None = None) -> list[tuple[int, int]]:
    """Consecutive days as [start, end) ranges, each at most ``longest`` days."""
    runs: list[tuple[int, int]] = []
    for day in days:
        if runs and runs[-1][1] == day and (longest is None or day - runs[-1][0] < longest):
            runs[-1] = (runs[-1][0], day + 1)
        else:
            runs.append((day, day + 1))
    return runs
