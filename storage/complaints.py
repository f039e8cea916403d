"""Complaint records (migration 0007): written inside an engine step's transaction, read
by the engine and the console. Export and erasure handle the table as one of
``storage.customer_export.OPTIONAL_TEXT``'s (the note is cleared with the customer's data)."""

from __future__ import annotations

from typing import Any

from bot.conversation.store import ComplaintRecord
from storage.database import Conn, Database

_COLUMNS = ("category", "cause", "solution", "note")


def write_complaint(conn: Conn, conversation_id: int, values: dict[str, Any], now: int) -> None:
    """Create the record if missing (``opened_by`` says who made it a complaint), then set
    the given columns. A column absent from ``values`` keeps its value."""
    opened_by = str(values.get("opened_by") or "agent")
    conn.execute(
        "INSERT INTO complaints (conversation_id, opened_at, opened_by, updated_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (conversation_id, now, opened_by, now),
    )
    names = [n for n in _COLUMNS if n in values]
    if names:
        sets = ", ".join(f"{n} = ?" for n in names)
        conn.execute(
            f"UPDATE complaints SET {sets}, updated_at = ?, updated_by = ? "
            "WHERE conversation_id = ?",
            [*(values[n] for n in names), now, values.get("updated_by"), conversation_id],
        )


async def load_complaint(db: Database, conversation_id: int) -> ComplaintRecord | None:
    row = await db.fetchone(
        "SELECT conversation_id, opened_at, opened_by, category, cause, solution, note "
        "FROM complaints WHERE conversation_id = ?",
        (conversation_id,),
    )
    return ComplaintRecord(*row) if row else None
