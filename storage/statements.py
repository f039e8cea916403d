"""Writes that go out together: one statement on PostgreSQL (data-modifying ``WITH``
parts), one after the other on SQLite, where a statement costs no round trip. A step's
writes and a delivery's record are sent this way (storage/step_writes.py,
storage/outbox_rows.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.database import Conn, Cursor, is_sqlite


@dataclass(frozen=True, slots=True)
class ReturnedId:
    """A parameter of ``execute_all``: the ``k``-th smallest id (from 0) that an earlier
    write of the same call, ``part``, returns (``RETURNING id``). A step's messages and the
    rows that point at them go out together: on PostgreSQL in one statement (no round
    trip inside the group commit for the ids), on SQLite one after the other."""

    part: int
    k: int


Statement = tuple[str, Sequence[Any]]
_PLACEHOLDER = re.compile(r"'(?:[^']|'')*'|\?")


def execute_all(
    conn: Conn, writes: Sequence[Statement], final: Statement | None = None
) -> Cursor | None:
    """Writes that read nothing back, each to another table (or other rows), then
    ``final``, whose cursor is returned: on PostgreSQL one statement (the writes as
    data-modifying ``WITH`` parts: one command, not one a write), on SQLite one after the
    other (it has no such parts; its statements cost no trip). A write ending in
    ``RETURNING id`` gives its ids to the later ones' ``ReturnedId`` parameters."""
    if is_sqlite(conn):
        returned: list[list[int]] = []
        for sql, params in writes:
            cursor = conn.execute(sql, _resolved(params, returned))
            ids = sorted(int(row[0]) for row in cursor) if sql.endswith("RETURNING id") else []
            returned.append(ids)
        return None if final is None else conn.execute(final[0], _resolved(final[1], returned))
    statements = [_inline_returned(sql, params) for sql, params in writes]
    if final is not None:
        statements.append(_inline_returned(*final))
    if not statements:
        return None
    if len(statements) == 1:
        cursor = conn.execute(*statements[0])
        return cursor if final is not None else None
    *parts, (last, last_params) = statements
    head = ", ".join(f"w{n} AS ({sql})" for n, (sql, _params) in enumerate(parts))
    cursor = conn.execute(
        f"WITH {head} {last}", [p for _s, ps in parts for p in ps] + [*last_params]
    )
    return cursor if final is not None else None


def _resolved(params: Sequence[Any], returned: list[list[int]]) -> Sequence[Any]:
    """On SQLite, each ``ReturnedId`` parameter becomes the id its write returned."""
    if not any(isinstance(p, ReturnedId) for p in params):
        return params
    return [returned[p.part][p.k] if isinstance(p, ReturnedId) else p for p in params]


def _inline_returned(sql: str, params: Sequence[Any]) -> Statement:
    """On PostgreSQL, each ``ReturnedId`` parameter becomes a subquery on its ``WITH``
    part (``w<part>``)."""
    if not any(isinstance(p, ReturnedId) for p in params):
        return sql, params
    values = iter(params)
    kept: list[Any] = []

    def swap(match: re.Match[str]) -> str:
        if match.group(0) != "?":
            return match.group(0)
        value = next(values)
        if isinstance(value, ReturnedId):
            return f"(SELECT id FROM w{value.part} ORDER BY id OFFSET {value.k} LIMIT 1)"
        kept.append(value)
        return "?"

    return _PLACEHOLDER.sub(swap, sql), kept
