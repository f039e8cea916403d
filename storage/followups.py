"""``followups``: the tracked work a detractor's survey opens (migration 0006).

Written with each engine step (``write_followup_changes`` inside ``SqliteStore.apply``,
so a follow-up changes in the same transaction as its events and alerts); read by the
engine (``SqliteFollowups``), ``supportbot followups``, the console and the KPIs.
"""

from __future__ import annotations

from bot.conversation.followup_types import (
    FollowupOpen,
    FollowupRecord,
    FollowupStatus,
)
from bot.conversation.store import Unit
from bot.insights.kpi import NONE_KEY
from storage.database import Conn, Database, Row

# Only these columns may be set by a change (the names go into the SQL text).
CHANGEABLE = ("owner_key", "owner_name", "status", "contacted_at", "closed_at", "note",
              "remind_at", "nps", "csat")  # fmt: skip

_SELECT = """
SELECT f.*, cu.key AS customer_key, cu.name AS customer_name
FROM followups f JOIN customers cu ON cu.id = f.customer_id
"""


def write_followup_changes(
    conn: Conn, unit: Unit, conversation_id: int, customer_id: int | None
) -> None:
    """A step's follow-up writes (on the database thread, inside ``SqliteStore.apply``)."""
    for change in unit.followups:
        if isinstance(change, FollowupOpen):
            conn.execute(
                "INSERT INTO followups (id, conversation_id, customer_id, nps, csat, owner_key,"
                " owner_name, status, opened_at, due_at, remind_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (conversation_id, conversation_id, customer_id, change.nps, change.csat,
                 change.owner_key,
                 change.owner_name, unit.now, change.due_at, change.due_at),
            )  # fmt: skip
            continue
        names = [name for name in change.values if name in CHANGEABLE]
        if len(names) != len(change.values):
            raise ValueError(f"not follow-up columns: {sorted(set(change.values) - set(names))}")
        if names:
            conn.execute(
                f"UPDATE followups SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
                [*(change.values[n] for n in names), change.id],
            )


def close_erased(conn: Conn, customer_id: int, now: int) -> None:
    """An erased customer can no longer be contacted: their follow-ups still waiting
    close as unreachable, and are never reminded (inside the erasure's transaction)."""
    conn.execute(
        "UPDATE followups SET status = 'unreachable', closed_at = ?, remind_at = NULL"
        " WHERE customer_id = ? AND status IN ('open', 'contacted')",
        (now, customer_id),
    )


def _record(row: Row) -> FollowupRecord:
    return FollowupRecord(
        id=row["id"],
        customer_id=row["customer_id"],
        customer_key=row["customer_key"],
        customer_name=row["customer_name"] or "",
        nps=row["nps"],
        csat=row["csat"],
        owner_key=row["owner_key"],
        owner_name=row["owner_name"],
        status=FollowupStatus(row["status"]),
        opened_at=row["opened_at"],
        due_at=row["due_at"],
        contacted_at=row["contacted_at"],
        closed_at=row["closed_at"],
        note=row["note"],
        remind_at=row["remind_at"],
    )


class SqliteFollowups:
    """``bot.conversation.followup_types.FollowupStore`` on SQLite."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, followup_id: int) -> FollowupRecord | None:
        row = await self.db.fetchone(_SELECT + "WHERE f.id = ?", (followup_id,))
        return _record(row) if row else None

    async def uncontacted(self, customer_id: int) -> list[FollowupRecord]:
        rows = await self.db.fetchall(
            _SELECT + "WHERE f.customer_id = ? AND f.status = 'open' ORDER BY f.id",
            (customer_id,),
        )
        return [_record(r) for r in rows]

    async def due_reminders(self, now: int, limit: int) -> list[FollowupRecord]:
        rows = await self.db.fetchall(
            _SELECT + "WHERE f.remind_at IS NOT NULL AND f.remind_at <= ? AND f.status = 'open'"
            " ORDER BY f.remind_at LIMIT ?",
            (now, limit),
        )
        return [_record(r) for r in rows]

    async def listing(self, *, open_only: bool, limit: int = 1000) -> list[FollowupRecord]:
        where = "WHERE f.status IN ('open', 'contacted') " if open_only else ""
        rows = await self.db.fetchall(_SELECT + where + "ORDER BY f.id DESC LIMIT ?", (limit,))
        return [_record(r) for r in rows]


# ---------------------------------------------------------------------- KPIs


async def followup_kpi_rows(
    db: Database, lo: int, hi: int, by: str | None = None
) -> list[tuple[str | None, int, int, int | None]]:
    """(group key, opened_at, due_at, contacted_at) of the follow-ups opened in [lo, hi).

    Groups: ``agent`` → the owner (``(none)`` when unassigned), ``channel`` → the
    conversation's channel; any other breakdown has no follow-up key (None)."""
    key = {"agent": f"COALESCE(f.owner_key, '{NONE_KEY}')", "channel": "c.channel"}.get(
        by or "", "NULL"
    )
    rows = await db.fetchall(
        f"""SELECT {key} AS k, f.opened_at, f.due_at, f.contacted_at
            FROM followups f JOIN conversations c ON c.id = f.id
            WHERE f.opened_at >= ? AND f.opened_at < ?""",
        (lo, hi),
    )
    return [(r["k"], r["opened_at"], r["due_at"], r["contacted_at"]) for r in rows]
