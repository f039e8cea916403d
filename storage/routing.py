"""SQL of routing: agents' presence, the queue in one read, the holders once at start, and
the recent agent response times the wait estimate is drawn from.

Per-agent open counts are never counted here per assignment: the engine reads the holders
(``routing_holders``) once, or on a database other processes share once per routing pass,
and keeps the counts itself as conversations change.
"""

from __future__ import annotations

import json

from bot.conversation.routing_types import (
    AVAILABLE,
    AWAY,
    PresenceRecord,
    QueueEntry,
    ResponseSample,
)
from storage.database import Database

_QUEUE = """
SELECT c.id, c.customer_id, c.handed_off_at, c.handoff_reason,
       (SELECT s.nps FROM surveys s
         WHERE s.customer_id = c.customer_id AND s.conversation_id <> c.id
           AND s.nps IS NOT NULL
         ORDER BY s.nps_at DESC LIMIT 1) AS last_nps,
       EXISTS (SELECT 1 FROM events e WHERE e.conversation_id = c.id AND e.kind = 'escalated')
         AS escalated,
       (SELECT e.data FROM events e WHERE e.conversation_id = c.id AND e.kind = 'queue_told'
         ORDER BY e.id DESC LIMIT 1) AS told
FROM conversations c
WHERE c.state = 'queued' AND c.handed_off_at IS NOT NULL
"""

_HOLDERS = """
SELECT id, agent_key FROM conversations WHERE state = 'assigned' AND agent_key IS NOT NULL
UNION ALL
SELECT id, NULL FROM conversations WHERE state = 'queued'
"""
_ANY_QUEUED = "SELECT 1 FROM conversations WHERE state = 'queued' LIMIT 1"


class RoutingQueries:
    """Mixed into ``SqliteStore``: the routing part of ``bot.conversation.store.Store``."""

    db: Database

    async def presences(self) -> list[PresenceRecord]:
        rows = await self.db.fetchall(
            "SELECT agent_key, name, available, changed_at, last_assigned_at FROM agent_presence"
        )
        return [
            PresenceRecord(
                r["agent_key"],
                r["name"],
                bool(r["available"]),
                r["changed_at"],
                r["last_assigned_at"],
            )  # fmt: skip
            for r in rows
        ]

    async def set_presence(
        self, agent_key: str, name: str, available: bool, at: int, dedup_key: str
    ) -> bool:
        """Record what the agent said, once per platform delivery; False for a redelivery."""
        async with self.db.transaction() as conn:
            fresh = await conn.execute_fetchall(
                "INSERT INTO inbound (dedup_key, at) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (dedup_key, at),
            )
            if not list(fresh):
                return False
            await conn.execute(
                """INSERT INTO agent_presence (agent_key, name, available, changed_at)
                   VALUES (?, ?, ?, ?)
                   ON CONFLICT(agent_key) DO UPDATE SET
                     name = CASE WHEN excluded.name <> '' THEN excluded.name
                                 ELSE agent_presence.name END,
                     available = excluded.available, changed_at = excluded.changed_at""",
                (agent_key, name, int(available), at),
            )
            await conn.execute(
                "INSERT INTO events (at, kind, actor, data) VALUES (?, 'presence', ?, ?)",
                (at, agent_key, json.dumps({"available": available})),
            )
        return True

    async def note_assigned(self, agent_key: str, name: str, at: int) -> None:
        """Remember when an agent was last given a conversation (round robin order)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                """INSERT INTO agent_presence (agent_key, name, available, changed_at,
                     last_assigned_at) VALUES (?, ?, 1, ?, ?)
                   ON CONFLICT(agent_key) DO UPDATE SET
                     last_assigned_at = excluded.last_assigned_at""",
                (agent_key, name, at, at),
            )

    async def routing_holders(self) -> tuple[list[tuple[int, str]], list[int]]:
        """(conversation id, agent key) of every assigned conversation and the ids of the
        queued ones, in one statement: one snapshot, so a conversation taken meanwhile is
        never counted in neither or both (read once at start; on a shared database at
        each routing pass, from the two partial indexes: what is open, not the history)."""
        rows = await self.db.fetchall(_HOLDERS)
        holders = [(r["id"], r["agent_key"]) for r in rows if r["agent_key"] is not None]
        return holders, [r["id"] for r in rows if r["agent_key"] is None]

    async def anything_queued(self) -> bool:
        """Is any conversation waiting? (a shared database's routing pass, before its lock)"""
        return await self.db.fetchone(_ANY_QUEUED) is not None

    async def routing_queue(self) -> list[QueueEntry]:
        """Every queued conversation with what orders it (unsorted: the engine sorts)."""
        rows = await self.db.fetchall(_QUEUE)
        return [
            QueueEntry(
                id=r["id"],
                handed_off_at=r["handed_off_at"],
                reason=r["handoff_reason"],
                last_nps=r["last_nps"],
                escalated=bool(r["escalated"]),
                told_position=_told(r["told"]),
            )
            for r in rows
        ]

    async def last_nps(self, customer_id: int, besides: int) -> int | None:
        """The customer's latest NPS answer, from another conversation than ``besides``."""
        row = await self.db.fetchone(
            "SELECT nps FROM surveys WHERE customer_id = ? AND conversation_id <> ? "
            "AND nps IS NOT NULL ORDER BY nps_at DESC LIMIT 1",
            (customer_id, besides),
        )
        return int(row["nps"]) if row else None

    async def response_samples(self, since: int, limit: int) -> list[ResponseSample]:
        """Handoff → first agent answer of the latest handed-off conversations."""
        rows = await self.db.fetchall(
            "SELECT handed_off_at, first_agent_response_at FROM conversations "
            "WHERE started_at >= ? AND handed_off_at IS NOT NULL "
            "AND first_agent_response_at IS NOT NULL "
            "ORDER BY started_at DESC LIMIT ?",
            (since, limit),
        )
        return [ResponseSample(r["handed_off_at"], r["first_agent_response_at"]) for r in rows]


def _told(data: str | None) -> int | None:
    if not data:
        return None
    try:
        value = json.loads(data).get("position")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None


async def presence_words(db: Database) -> dict[str, str]:
    """Each agent's presence as reports name it ("available" or "away", as the agent last
    said); an agent missing here never said, and reports show them as "unknown"."""
    rows = await db.fetchall("SELECT agent_key, available FROM agent_presence")
    return {r["agent_key"]: AVAILABLE if r["available"] else AWAY for r in rows}
