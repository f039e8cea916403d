"""What ``GET /metrics`` reports, counted from the database at scrape time.

Counted rather than kept in process counters: the figures survive restarts and agree
with the KPIs, and nothing on the hot path pays for them. Each query is one pass over
an index or a table the size of the history (messages); scrapes come every few seconds
at most, which SQLite answers in milliseconds for years of a support desk's traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.errors import StorageError
from storage.database import DB_ERRORS, Conn, Database

__all__ = ["OpsFigures", "ops_figures"]


@dataclass(frozen=True)
class OpsFigures:
    """One scrape's figures (ages in seconds, counts since the database began)."""

    messages_in: dict[str, int] = field(default_factory=dict)  # customer messages by channel
    messages_out: dict[str, int] = field(default_factory=dict)  # delivered, by channel
    open_conversations: dict[str, int] = field(default_factory=dict)  # by state
    handoffs: dict[str, int] = field(default_factory=dict)  # by reason
    outbox_backlog: int = 0
    outbox_oldest_age_s: float = 0.0


# Customer messages in, and outbound messages the platform accepted, by customer channel.
_MESSAGES = """
SELECT c.channel AS channel,
       SUM(CASE WHEN m.direction = 'in' AND m.author = 'customer' THEN 1 ELSE 0 END) AS n_in,
       SUM(CASE WHEN m.direction = 'out' AND m.delivered_at IS NOT NULL THEN 1 ELSE 0 END)
         AS n_out
FROM messages m JOIN conversations c ON c.id = m.conversation_id
GROUP BY c.channel
"""
# Not closed (the partial index conversations_open holds exactly these rows).
_OPEN = "SELECT state, COUNT(*) AS n FROM conversations WHERE state <> 'closed' GROUP BY state"
# A handoff is a move to the queue (events_kind_at); an agent's transfer is not one.
_HANDOFFS = """
SELECT COALESCE(json_extract(data, '$.reason'), 'unknown') AS reason, COUNT(*) AS n
FROM events
WHERE kind = 'state' AND json_extract(data, '$.target') = 'queued'
  AND COALESCE(json_extract(data, '$.reason'), '') <> 'transfer'
GROUP BY reason
"""
# Pending deliveries (the partial index outbox_pending holds exactly these rows).
_OUTBOX = """
SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox
WHERE sent_at IS NULL AND failed_at IS NULL
"""


async def ops_figures(db: Database, now_ms: int) -> OpsFigures:
    """Everything ``/metrics`` shows, in one hop to the database thread."""

    def work(conn: Conn) -> OpsFigures:
        messages = conn.execute(_MESSAGES).fetchall()
        outbox = conn.execute(_OUTBOX).fetchone()
        oldest = outbox["oldest"] if outbox is not None else None
        return OpsFigures(
            messages_in={r["channel"]: int(r["n_in"] or 0) for r in messages},
            messages_out={r["channel"]: int(r["n_out"] or 0) for r in messages},
            open_conversations={r["state"]: int(r["n"]) for r in conn.execute(_OPEN)},
            handoffs={str(r["reason"]): int(r["n"]) for r in conn.execute(_HANDOFFS)},
            outbox_backlog=int(outbox["n"]) if outbox is not None else 0,
            outbox_oldest_age_s=max(0.0, (now_ms - oldest) / 1000) if oldest is not None else 0.0,
        )

    try:
        return await db.read(work)
    except (*DB_ERRORS, ValueError, RuntimeError) as exc:  # ValueError/RuntimeError: closed
        raise StorageError(f"cannot count for /metrics: {exc}") from None
