"""The web channel's own tables: each visitor's transcript, small settings, and the
agents' alerts shown in the console.

A website visitor has no platform server keeping their messages (as Telegram does),
so the transcript stored here is what a reload or a reconnect replays. Likewise the
console has no channel history: its alerts, and what each agent has read, live here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storage.conversations import transcript_lines
from storage.database import Conn, Database, Later, Row, later
from storage.notify import Changes
from storage.privacy import visitor_mark

SECRET_KEY = "token_secret"  # where earlier versions kept the generated secret
GENERATION_PREFIX = "session_generation:"


@dataclass(frozen=True, slots=True)
class WebLine:
    """One message the visitor sees in the widget."""

    seq: int
    at: int
    author: str  # customer | bot | agent
    text: str
    choices: list[list[dict[str, str]]]
    chosen: str | None
    name: str | None = None  # an agent's display name ("Paul"); None: a generic label

    def json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "type": "line",
            "seq": self.seq,
            "at": self.at,
            "author": self.author,
            "text": self.text,
            "choices": self.choices,
            "chosen": self.chosen,
        }
        if self.name:
            line["name"] = self.name
        return line


@dataclass(frozen=True, slots=True)
class WebAlert:
    """One alert in the console: the desk's sentence, about a conversation or the desk."""

    id: int
    conversation_id: int | None
    at: int
    text: str

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "conversation": self.conversation_id, "at": self.at,
                "text": self.text}  # fmt: skip


_CONSOLE_COLUMNS = """SELECT c.id, c.channel, c.state, c.language, c.topic, c.tag,
       c.handed_off_at, c.handoff_reason, c.agent_key, c.agent_name, c.desk, c.resolved_at,
       c.pending_since, c.updated_at, cu.name AS customer
FROM conversations c JOIN customers cu ON cu.id = c.customer_id"""


# The visitor's next line, unless the visitor was erased (their mark in web_settings) or
# the widget's client id was already stored (a frame sent again after a reconnect).
_APPEND = """INSERT INTO web_messages(visitor, seq, at, author, text, choices, client_id, name)
SELECT ?, next.seq, ?, ?, ?, ?, ?, ?
FROM (SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM web_messages WHERE visitor = ?) next
WHERE NOT EXISTS (SELECT 1 FROM web_settings WHERE key = ?)
  AND NOT EXISTS (SELECT 1 FROM web_messages WHERE visitor = ? AND client_id = ?)"""

# PostgreSQL: the same, the number taken by bumping the visitor's row of web_line_numbers
# in the statement itself. Its row lock, held to the COMMIT, numbers a visitor's lines one
# transaction at a time across processes, and ON CONFLICT DO UPDATE reads the row's latest
# committed value even where the statement's snapshot is older (a MAX(seq) alone would
# miss a line committed while this statement waited for that lock). GREATEST catches up
# with lines the row does not count (copied from SQLite, written by an older version). An
# erased visitor gets no row, and a frame sent again takes no number (no gap in the seqs).
# The same frame stored by another process while this statement waited for the row (its
# snapshot did not see it) is skipped by the ON CONFLICT: not stored, as a resent frame.
_APPEND_PG = """WITH next AS (
  INSERT INTO web_line_numbers(visitor, last_seq)
  SELECT ?, COALESCE(MAX(seq), 0) + 1 FROM web_messages WHERE visitor = ?
  HAVING NOT EXISTS (SELECT 1 FROM web_settings WHERE key = ?)
     AND NOT EXISTS (SELECT 1 FROM web_messages WHERE visitor = ? AND client_id = ?)
  ON CONFLICT (visitor) DO UPDATE
  SET last_seq = GREATEST(web_line_numbers.last_seq + 1, excluded.last_seq)
  RETURNING last_seq
)
INSERT INTO web_messages(visitor, seq, at, author, text, choices, client_id, name)
SELECT ?, next.last_seq, ?, ?, ?, ?, ?, ? FROM next
ON CONFLICT (visitor, client_id) WHERE client_id IS NOT NULL DO NOTHING"""


def _line(row: Row) -> WebLine:
    return WebLine(
        seq=int(row["seq"]),
        at=int(row["at"]),
        author=str(row["author"]),
        text=str(row["text"]),
        choices=json.loads(row["choices"]),
        chosen=row["chosen"],
        name=row["name"],
    )


class WebStore:
    """Reads and writes ``web_messages`` / ``web_settings`` and the console's queries."""

    def __init__(self, db: Database, changes: Changes | None = None) -> None:
        self.db = db
        # Other processes hear of new lines and choices (storage/notify.py); a note is
        # sent inside the write's transaction, so only if it commits.
        self.changes = changes

    async def legacy_secret(self) -> str | None:
        """The token secret older versions kept here (now in its own file), if any."""
        row = await self.db.fetchone("SELECT value FROM web_settings WHERE key = ?", (SECRET_KEY,))
        return None if row is None else str(row["value"])

    async def forget_legacy_secret(self) -> None:
        """Delete the old secret row, its bytes overwritten (not left in a free page)."""
        # SQLite: secure_delete is on for the whole connection (storage/database.py).
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM web_settings WHERE key = ?", (SECRET_KEY,))

    async def session_generations(self) -> dict[str, int]:
        """Per agent, how many times their sessions were ended (logout)."""
        rows = await self.db.fetchall(
            "SELECT key, value FROM web_settings WHERE key LIKE ?", (GENERATION_PREFIX + "%",)
        )
        return {str(r["key"]).removeprefix(GENERATION_PREFIX): int(r["value"]) for r in rows}

    async def set_session_generation(self, agent: str, generation: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO web_settings(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (GENERATION_PREFIX + agent, str(generation)),
            )

    async def append(
        self, visitor: str, at: int, author: str, text: str,
        choices: list[list[dict[str, str]]] | None = None, client_id: str | None = None,
        *, name: str | None = None,
    ) -> WebLine | None:  # fmt: skip
        """Add a line with the visitor's next seq; None if it was not stored: the visitor
        was erased, or ``client_id`` was already stored."""
        line, _ = await self.append_with(visitor, at, author, text, choices, client_id, name=name)
        return line

    async def append_with(
        self,
        visitor: str,
        at: int,
        author: str,
        text: str,
        choices: list[list[dict[str, str]]] | None = None,
        client_id: str | None = None,
        *,
        name: str | None = None,
        also: Callable[[Conn], Any] | None = None,
    ) -> tuple[WebLine | None, Any]:
        """``append``, and ``also`` (a delivery's record) in the same transaction: the
        line and what ``also`` returned (read after the COMMIT when it is a ``Later``).

        One statement (group-committed with the others): the erasure and duplicate
        checks and the next seq are in the INSERT. On PostgreSQL the visitor's row of
        ``web_line_numbers`` orders the numbering across processes (``_APPEND_PG``: another
        process numbering the same visitor's lines waits for our COMMIT, then counts on
        from ours), so a line is never refused for its seq; its note rides its RETURNING
        and the seq is read after the COMMIT: no wait inside the group."""
        shown = json.dumps(choices or [], ensure_ascii=False)
        changes = self.changes
        noting = changes.line_note_column() if changes is not None else None
        if self.db.engine == "postgresql":
            sql = _APPEND_PG
            params: tuple[Any, ...] = (
                visitor, visitor, visitor_mark(visitor), visitor, client_id,
                visitor, at, author, text, shown, client_id, name,
            )  # fmt: skip
        else:
            sql = _APPEND
            params = (visitor, at, author, text, shown, client_id, name,
                      visitor, visitor_mark(visitor), visitor, client_id)  # fmt: skip
        sql += " RETURNING seq"
        if noting is not None:
            sql, params = f"{sql}, {noting[0]}", (*params, *noting[1])

        def add(conn: Conn) -> Later[tuple[tuple[int, str | None] | None, Any]]:
            cursor = conn.execute(sql, params)
            line: Later[tuple[int, str | None] | None]
            if changes is not None and noting is None:  # SQLite: the note made in the write
                row = cursor.fetchone()
                added = None
                if row is not None:
                    seq = int(row[0])
                    added = (seq, changes.in_write(conn, {"t": "line", "v": visitor, "s": seq}))
                line = Later(lambda: added)
            else:  # the note, if any, rides the INSERT (PostgreSQL); the seq read after COMMIT
                line = later(conn, cursor, lambda rows: (int(rows[0][0]), None) if rows else None)
            more = also(conn) if also is not None else None
            return Later(lambda: (line.read(), more.read() if isinstance(more, Later) else more))

        added, recorded = await self.db.write_later(add)
        if added is None:
            return None, recorded
        seq, note = added
        if changes is not None and note is not None:
            changes.committed(note)
        return WebLine(seq, at, author, text, choices or [], None, name), recorded

    async def erased(self, visitor: str) -> bool:
        """Whether this visitor's data was erased: their token no longer opens anything."""
        row = await self.db.fetchone("SELECT 1 FROM web_settings WHERE key = ?",
                                     (visitor_mark(visitor),))  # fmt: skip
        return row is not None

    async def since(self, visitor: str, seq: int, limit: int = 500) -> list[WebLine]:
        """Lines after ``seq`` (lines blanked by the retention limit are not replayed)."""
        rows = await self.db.fetchall(
            "SELECT * FROM web_messages WHERE visitor = ? AND seq > ? "
            "AND (text <> '' OR choices <> '[]') ORDER BY seq LIMIT ?",
            (visitor, seq, limit),
        )
        return [_line(row) for row in rows]

    async def offered(self, visitor: str, seq: int, token: str) -> bool:
        """Whether line ``seq`` of this visitor offers the button ``token``, still unanswered."""
        row = await self.db.fetchone(
            "SELECT choices, chosen FROM web_messages WHERE visitor = ? AND seq = ?",
            (visitor, seq),
        )
        if row is None or row["chosen"] is not None:
            return False
        return any(c.get("token") == token for r in json.loads(row["choices"]) for c in r)

    async def mark_chosen(self, visitor: str, seq: int, label: str) -> None:
        changes = self.changes

        def mark(conn: Conn) -> str | None:
            conn.execute(
                "UPDATE web_messages SET chosen = ? WHERE visitor = ? AND seq = ?",
                (label, visitor, seq),
            )
            if changes is None:
                return None
            return changes.in_write(conn, {"t": "chosen", "v": visitor, "s": seq})

        note = await self.db.write(mark)
        if changes is not None and note is not None:
            changes.committed(note)

    async def last_seq(self, visitor: str) -> int:
        """The visitor's latest line number (0: none yet)."""
        row = await self.db.fetchone(
            "SELECT COALESCE(MAX(seq), 0) FROM web_messages WHERE visitor = ?", (visitor,)
        )
        return int(row[0]) if row else 0

    async def line(self, visitor: str, seq: int) -> WebLine | None:
        row = await self.db.fetchone(
            "SELECT * FROM web_messages WHERE visitor = ? AND seq = ?", (visitor, seq)
        )
        return None if row is None else _line(row)

    async def console_conversations(self, resolved_since: int) -> list[dict[str, Any]]:
        """Conversations agents care about: waiting, taken, and recently resolved."""
        rows = await self.db.fetchall(
            f"""{_CONSOLE_COLUMNS}
               WHERE c.handed_off_at IS NOT NULL AND (c.state IN ('queued', 'assigned')
                     OR (c.resolved_at IS NOT NULL AND c.resolved_at >= ?))
               ORDER BY c.handed_off_at""",
            (resolved_since,),
        )
        return [dict(row) for row in rows]

    async def console_conversation(self, conversation_id: int) -> dict[str, Any] | None:
        """Any one conversation, as the lists show it (an alert may name an old one)."""
        row = await self.db.fetchone(f"{_CONSOLE_COLUMNS} WHERE c.id = ?", (conversation_id,))
        return dict(row) if row is not None else None

    async def console_transcript(self, conversation_id: int, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` lines of a conversation, oldest first, with their time (ms)."""
        lines = await transcript_lines(self.db, conversation_id, limit)
        return [{"author": a, "name": n, "text": t, "at": at} for a, n, t, at in lines]

    # ------------------------------------------------------------------ alerts

    async def add_alert(
        self, alert_id: int, conversation_id: int | None, text: str, at: int
    ) -> WebAlert | None:
        """Keep an alert; None when this id is already kept (a redelivery).

        Its time is when the engine raised it (its outbox item's), ``at`` only if unknown.
        """
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                "INSERT INTO web_alerts(id, conversation_id, at, text) VALUES "
                "(?, ?, COALESCE((SELECT created_at FROM outbox WHERE id = ?), ?), ?) "
                "ON CONFLICT DO NOTHING RETURNING at",
                (alert_id, conversation_id, alert_id, at, text),
            )
            row = await cursor.fetchone()
            await cursor.close()
        if row is None:
            return None
        return WebAlert(alert_id, conversation_id, int(row[0]), text)

    async def alert(self, alert_id: int) -> WebAlert | None:
        """One kept alert (another process kept it and told us its id)."""
        row = await self.db.fetchone(
            "SELECT id, conversation_id, at, text FROM web_alerts WHERE id = ?", (alert_id,)
        )
        if row is None:
            return None
        return WebAlert(int(row["id"]), row["conversation_id"], int(row["at"]), row["text"])

    async def alerts(self, limit: int) -> list[WebAlert]:
        """The latest alerts, newest first."""
        rows = await self.db.fetchall(
            "SELECT id, conversation_id, at, text FROM web_alerts ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [WebAlert(int(r["id"]), r["conversation_id"], int(r["at"]), r["text"]) for r in rows]

    async def unread_alerts(self, agent: str) -> int:
        row = await self.db.fetchone(
            "SELECT COUNT(*) FROM web_alerts WHERE id > COALESCE("
            "(SELECT seen_id FROM web_alert_reads WHERE agent = ?), 0)",
            (agent,),
        )
        return int(row[0]) if row else 0

    async def mark_alerts_read(self, agent: str, up_to: int) -> None:
        """The agent has seen every alert up to ``up_to`` (never moves backwards)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO web_alert_reads(agent, seen_id) VALUES (?, ?) "
                "ON CONFLICT(agent) DO UPDATE SET seen_id = CASE WHEN excluded.seen_id > "
                "web_alert_reads.seen_id THEN excluded.seen_id ELSE web_alert_reads.seen_id END",
                (agent, up_to),
            )
