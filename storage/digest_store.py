"""The digest's schedule state: which period was claimed, by whom, and which targets got it.

A period is claimed by inserting its row under the UNIQUE (period_start, period_end)
constraint inside one write transaction (BEGIN IMMEDIATE), before anything is posted:
whoever inserts it — or takes over an expired lease — is the only sender. Each
delivered target is recorded as it succeeds, so a resumed run sends only the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.database import Database


@dataclass(slots=True)
class DigestRun:
    id: int
    period_start: int
    period_end: int
    status: str  # sending | done
    owner: str
    lease_until: int
    attempts: int
    text: str | None = None
    chart: bytes | None = None
    done: dict[str, str] = field(default_factory=dict)  # target → sent | failed


class DigestRuns:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(
        self, start: int, end: int, *, owner: str, now: int, lease_ms: int, force: bool = False
    ) -> DigestRun | None:
        """Become the sender of this period, or None when it is done or someone else holds it.

        ``force`` re-sends a period already done (an explicit ``digest --now``); it still
        never takes a run from a live holder.
        """
        # Several processes (PostgreSQL): the row is locked while we decide, and of two
        # first claims together the second inserts nothing.
        lock = " FOR UPDATE" if self.db.shared else ""
        async with self.db.transaction() as conn:
            async with conn.execute(
                "SELECT id, status, owner, lease_until FROM digest_runs "
                f"WHERE period_start = ? AND period_end = ?{lock}",
                (start, end),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                async with conn.execute(
                    "INSERT INTO digest_runs (period_start, period_end, status, owner, "
                    "lease_until, attempts, claimed_at) VALUES (?, ?, 'sending', ?, ?, 1, ?) "
                    "ON CONFLICT (period_start, period_end) DO NOTHING RETURNING id",
                    (start, end, owner, now + lease_ms, now),
                ) as cur:
                    inserted = await cur.fetchone()
                if inserted is None:  # another process claimed it a moment ago
                    return None
                return DigestRun(int(inserted[0]), start, end, "sending", owner, now + lease_ms, 1)
            run_id = int(row["id"])
            if row["status"] == "done":
                if not force:
                    return None
                await conn.execute("DELETE FROM digest_deliveries WHERE run_id = ?", (run_id,))
                await conn.execute(
                    "UPDATE digest_runs SET status = 'sending', owner = ?, lease_until = ?, "
                    "attempts = 1, claimed_at = ?, sent_at = NULL, text = NULL, chart = NULL, "
                    "error = NULL WHERE id = ?",
                    (owner, now + lease_ms, now, run_id),
                )
            elif int(row["lease_until"]) > now:
                return None  # being sent, or waiting for its retry time
            else:
                await conn.execute(
                    "UPDATE digest_runs SET owner = ?, lease_until = ?, attempts = attempts + 1 "
                    "WHERE id = ?",
                    (owner, now + lease_ms, run_id),
                )
        return await self.load(run_id)

    async def load(self, run_id: int) -> DigestRun | None:
        row = await self.db.fetchone(
            "SELECT id, period_start, period_end, status, owner, lease_until, attempts, text, "
            "chart FROM digest_runs WHERE id = ?",
            (run_id,),
        )
        if row is None:
            return None
        done = await self.db.fetchall(
            "SELECT target, status FROM digest_deliveries WHERE run_id = ?", (run_id,)
        )
        return DigestRun(
            id=int(row["id"]),
            period_start=int(row["period_start"]),
            period_end=int(row["period_end"]),
            status=str(row["status"]),
            owner=str(row["owner"]),
            lease_until=int(row["lease_until"]),
            attempts=int(row["attempts"]),
            text=row["text"],
            chart=row["chart"],
            done={str(d["target"]): str(d["status"]) for d in done},
        )

    async def save_content(self, run: DigestRun, text: str, chart: bytes | None) -> None:
        """Keep what was composed, so that a resumed run posts exactly the same digest."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE digest_runs SET text = ?, chart = ? WHERE id = ? AND owner = ?",
                (text, chart, run.id, run.owner),
            )
        run.text, run.chart = text, chart

    async def renew(self, run: DigestRun, now: int, lease_ms: int) -> bool:
        """Extend the lease before the next target; False if another sender took the run."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE digest_runs SET lease_until = ? "
                "WHERE id = ? AND owner = ? AND status = 'sending'",
                (now + lease_ms, run.id, run.owner),
            )
            return int(cur.rowcount) == 1

    async def delivered(
        self,
        run: DigestRun,
        target: str,
        *,
        now: int,
        ok: bool,
        message_id: str | None = None,
        error: str | None = None,
    ) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO digest_deliveries "
                "(run_id, target, status, at, message_id, error) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id, target) DO UPDATE SET status = excluded.status, "
                "at = excluded.at, message_id = excluded.message_id, error = excluded.error",
                (run.id, target, "sent" if ok else "failed", now, message_id, error),
            )
        run.done[target] = "sent" if ok else "failed"

    async def finish(self, run: DigestRun, now: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE digest_runs SET status = 'done', sent_at = ?, lease_until = ? "
                "WHERE id = ? AND owner = ?",
                (now, now, run.id, run.owner),
            )
        run.status = "done"

    async def postpone(self, run: DigestRun, until: int, error: str) -> None:
        """Leave the run unfinished; whoever comes after ``until`` resumes it."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE digest_runs SET lease_until = ?, error = ? WHERE id = ? AND owner = ?",
                (until, error[:500], run.id, run.owner),
            )

    async def pending(self, now: int) -> list[tuple[int, int]]:
        """(start, end) of unfinished runs whose lease has expired (crashed or retrying)."""
        rows = await self.db.fetchall(
            "SELECT period_start, period_end FROM digest_runs "
            "WHERE status = 'sending' AND lease_until <= ? ORDER BY period_end",
            (now,),
        )
        return [(int(r["period_start"]), int(r["period_end"])) for r in rows]

    async def status(self, start: int, end: int) -> str | None:
        row = await self.db.fetchone(
            "SELECT status FROM digest_runs WHERE period_start = ? AND period_end = ?",
            (start, end),
        )
        return None if row is None else str(row["status"])
