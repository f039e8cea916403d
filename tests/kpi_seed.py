"""Writes KPI rows (customers, conversations, surveys) straight through the schema, for tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from storage.database import Database


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass
class Seeder:
    """Adds rows with sensible defaults; every ``*_at`` argument is an aware datetime."""

    db: Database
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _customers: dict[str, int] = field(default_factory=dict)

    async def customer(self, key: str, first_seen: datetime, channel: str = "telegram") -> int:
        if key in self._customers:
            return self._customers[key]
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO customers (key, channel, user_id, language, first_seen_at) "
                "VALUES (?, ?, ?, 'fr', ?) RETURNING id",
                (key, channel, key, ms(first_seen)),
            )
            cid = int((await cur.fetchone())[0])
        self._customers[key] = cid
        return cid

    async def conversation(
        self,
        started: datetime,
        *,
        customer: str | None = None,
        channel: str = "telegram",
        first_response_s: float | None = 2.0,
        handed_off_s: float | None = None,
        agent: tuple[str, str] | None = None,
        agent_response_s: float | None = None,
        resolved_s: float | None = None,
        abandoned_s: float | None = None,
        topic: str | None = None,
        tag: str | None = None,
    ) -> int:
        """A conversation; the ``*_s`` arguments are seconds after its start."""
        n = next(self._ids)
        cid = await self.customer(customer or f"{channel}:c{n}", started, channel)
        start = ms(started)

        def after(seconds: float | None) -> int | None:
            return None if seconds is None else start + int(seconds * 1000)

        values: dict[str, Any] = {
            "customer_id": cid,
            "channel": channel,
            "address_key": f"{channel}:conv{n}",
            "chat_id": str(cid),
            "language": "fr",
            "state": "closed",
            "topic": topic,
            "tag": tag,
            "started_at": start,
            "updated_at": start,
            "first_response_at": after(first_response_s),
            "handed_off_at": after(handed_off_s),
            "agent_key": agent[0] if agent else None,
            "agent_name": agent[1] if agent else None,
            "first_agent_response_at": after(agent_response_s),
            "resolved_at": after(resolved_s),
            "resolved_by": None
            if resolved_s is None
            else ("agent" if handed_off_s is not None else "bot"),
            "abandoned_at": after(abandoned_s),
        }
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                f"INSERT INTO conversations ({', '.join(values)}) "
                f"VALUES ({', '.join('?' * len(values))}) RETURNING id",
                list(values.values()),
            )
            return int((await cur.fetchone())[0])

    async def survey(
        self,
        answered: datetime,
        *,
        nps: int | None,
        csat: int | None = None,
        comment: str | None = None,
        topic: str | None = None,
        channel: str = "telegram",
        agent: tuple[str, str] | None = None,
    ) -> int:
        """A resolved conversation and its survey, sent a minute before ``answered``."""
        sent = datetime.fromtimestamp((ms(answered) - 60_000) / 1000, answered.tzinfo)
        conversation = await self.conversation(
            sent,
            channel=channel,
            topic=topic,
            resolved_s=1,
            agent=agent,
            handed_off_s=0.5 if agent else None,
            agent_response_s=0.8 if agent else None,
        )
        row = await self.db.fetchone(
            "SELECT customer_id FROM conversations WHERE id = ?", (conversation,)
        )
        assert row is not None
        at = ms(answered)
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO surveys (conversation_id, customer_id, channel, agent_key, topic, "
                "sent_at, nps, nps_at, csat, csat_at, comment, comment_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    conversation,
                    row["customer_id"],
                    channel,
                    agent[0] if agent else None,
                    topic,
                    at - 60_000,
                    nps,
                    at if nps is not None else None,
                    csat,
                    at if csat is not None else None,
                    comment,
                    at if comment else None,
                ),
            )
            return int((await cur.fetchone())[0])


async def seed_week(db: Database) -> Seeder:
    """A week of activity (16–22 Nov 2026, Paris) plus rows on both sides of its bounds.

    Inside: 3 conversations of their own and 10 NPS answers on the 20th (5/3/2 → NPS 30),
    each with its surveyed conversation.
    """
    tz = ZoneInfo("Europe/Paris")

    def paris(*args: int) -> datetime:
        return datetime(*args, tzinfo=tz)  # type: ignore[misc]

    seed = Seeder(db)
    await seed.conversation(
        paris(2026, 11, 16, 0, 0), channel="telegram", first_response_s=1, resolved_s=60
    )
    await seed.conversation(
        paris(2026, 11, 18, 10, 0),
        channel="slack",
        first_response_s=3,
        handed_off_s=10,
        agent=("slack:UA", "Alice"),
        agent_response_s=130,
        resolved_s=600,
        topic="livraison",
    )
    await seed.conversation(
        paris(2026, 11, 22, 23, 59, 59),
        channel="web",
        first_response_s=5,
        handed_off_s=5,
        abandoned_s=905,
    )
    for i, score in enumerate([10, 10, 9, 9, 9, 8, 7, 7, 3, 0]):
        await seed.survey(
            paris(2026, 11, 20, 12, i),
            nps=score,
            csat=5 if score >= 9 else 2,
            channel="slack" if i % 2 else "telegram",
        )
    # Outside: just before the start, and exactly at the (exclusive) end.
    await seed.conversation(paris(2026, 11, 15, 23, 59, 59), channel="telegram")
    await seed.conversation(paris(2026, 11, 23, 0, 0), channel="telegram")
    return seed
