"""Personal data in the database: export one customer, erase one, expire old texts.

Erasing keeps every fact the KPIs are made of (timestamps, states, scores, counts,
channels, topics, agents) and removes what identifies or quotes the customer: message
texts and attachments, survey comments, the name and platform ids, the web transcript
and the outbox payloads that carried them. ``secure_delete`` zeroes the freed bytes and a
TRUNCATE checkpoint then empties the WAL, so the text survives in neither file.

The erase and retention functions take a plain ``Conn`` inside an open
write transaction (``Database.write``), so the engine's own step can erase atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from storage.customer_export import OPTIONAL_TEXT, export_customer, table_columns
from storage.database import Conn, Database, is_sqlite
from storage.followups import close_erased

log = logging.getLogger(__name__)

ERASED_EVENT = "customer_erased"  # audit: who erased whom and when, no personal data
FINISHED_EVENT = "erasure_finished"  # agents' headers queued and the WAL truncated
ERASED_PREFIX = "erased:"
VISITOR_MARK = "erased_visitor:"  # web_settings key prefix: a revoked widget token
EVENT_TEXT_KEYS = ("text", "question", "comment", "name")


@dataclass(frozen=True, slots=True)
class Erased:
    """What one erasure touched (counts only: this is logged and printed)."""

    customer_id: int
    conversations: int
    messages: int
    comments: int
    web_lines: int


@dataclass(frozen=True, slots=True)
class Expired:
    """What one retention pass cleared."""

    messages: int
    comments: int
    web_lines: int
    outbox: int

    @property
    def total(self) -> int:
        return self.messages + self.comments + self.web_lines + self.outbox


def visitor_mark(visitor: str) -> str:
    """The web_settings key that revokes a visitor id (a hash: the id itself is gone)."""
    return VISITOR_MARK + hashlib.sha256(visitor.encode()).hexdigest()


def _marks(n: int) -> str:
    return ",".join("?" * n)


def secure(conn: Conn) -> None:
    """Freed bytes are overwritten with zeros from now on, on this connection."""
    if is_sqlite(conn):  # PostgreSQL has no such switch: its VACUUM reclaims the rows
        conn.execute("PRAGMA secure_delete = ON")


def find_customer(conn: Conn, key: str) -> int | None:
    row = conn.execute("SELECT id FROM customers WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else None


def erase_customer(conn: Conn, customer_id: int, now: int, actor: str) -> Erased:
    """Erase one customer's personal data, keeping every KPI fact (inside a transaction)."""
    secure(conn)
    customer = conn.execute(
        "SELECT channel, user_id FROM customers WHERE id = ?", (customer_id,)
    ).fetchone()
    if customer is None:
        return Erased(customer_id, 0, 0, 0, 0)
    convs = conn.execute(
        "SELECT id, channel, chat_id FROM conversations WHERE customer_id = ?", (customer_id,)
    ).fetchall()
    ids = [int(c[0]) for c in convs]
    addresses = {(str(c[1]), str(c[2])) for c in convs if c[2]}
    if customer[1]:
        addresses.add((str(customer[0]), str(customer[1])))
    visitors = sorted(chat for channel, chat in addresses if channel == "web")
    comments = [
        str(r[0])
        for r in conn.execute(
            "SELECT comment FROM surveys WHERE customer_id = ? AND comment IS NOT NULL "
            "AND comment <> ''",
            (customer_id,),
        )
    ]
    messages = _clear_messages(conn, ids, "")
    conn.execute(
        "UPDATE surveys SET comment = NULL WHERE customer_id = ? AND comment IS NOT NULL",
        (customer_id,),
    )
    _clear_digests(conn, comments)
    _clear_optional(conn, ids)
    close_erased(conn, customer_id, now)
    _clear_outbox(conn, ids, addresses, now)
    _clear_events(conn, customer_id, ids)
    web_lines = _forget_visitors(conn, visitors, now)
    if ids:
        marks = _marks(len(ids))
        # Open ones are closed (close_* and state are no KPI columns): nobody can be
        # reached there any more, and their timers must not act on an erased customer.
        conn.execute(
            f"""UPDATE conversations SET address_key = '{ERASED_PREFIX}' || id, chat_id = '',
                   thread_id = NULL, awaiting = NULL, pending_since = NULL,
                   closed_at = CASE WHEN state <> 'closed' THEN ? ELSE closed_at END,
                   close_reason = CASE WHEN state <> 'closed' THEN 'erased' ELSE close_reason END,
                   state = 'closed'
                WHERE id IN ({marks})""",
            (now, *ids),
        )
        conn.execute(f"DELETE FROM timers WHERE conversation_id IN ({marks})", ids)
    conn.execute(
        f"UPDATE customers SET key = '{ERASED_PREFIX}' || id, user_id = '', name = '' WHERE id = ?",
        (customer_id,),
    )
    done = Erased(customer_id, len(ids), messages, len(comments), web_lines)
    conn.execute(
        "INSERT INTO events (customer_id, at, kind, actor, data) VALUES (?, ?, ?, ?, ?)",
        (
            customer_id,
            now,
            ERASED_EVENT,
            actor,
            json.dumps(
                {
                    "conversations": len(ids),
                    "messages": messages,
                    "comments": len(comments),
                    "web_lines": web_lines,
                }
            ),  # fmt: skip
        ),
    )
    return done


def _clear_messages(conn: Conn, ids: Sequence[int], where: str) -> int:
    """Texts and attachments of these conversations' messages (the rows and times stay)."""
    if not ids:
        return 0
    cur = conn.execute(
        f"UPDATE messages SET text = '', media = NULL WHERE conversation_id IN "
        f"({_marks(len(ids))}) AND (text <> '' OR media IS NOT NULL){where}",
        ids,
    )
    return int(cur.rowcount)


def _clear_digests(conn: Conn, comments: Sequence[str]) -> None:
    """A digest quotes a few detractor comments: cut them out of the stored text."""
    for comment in comments:
        conn.execute(
            "UPDATE digest_runs SET text = replace(text, ?, '…') WHERE instr(text, ?) > 0",
            (comment, comment),
        )


def _clear_optional(conn: Conn, ids: Sequence[int]) -> None:
    if not ids:
        return
    for table, columns in OPTIONAL_TEXT.items():
        present = table_columns(conn, table)
        wanted = [c for c in columns if c in present]
        if "conversation_id" not in present or not wanted:
            continue
        sets = ", ".join(f"{c} = NULL" for c in wanted)
        conn.execute(
            f"UPDATE {table} SET {sets} WHERE conversation_id IN ({_marks(len(ids))})", ids
        )


def _clear_outbox(
    conn: Conn, ids: Sequence[int], addresses: set[tuple[str, str]], now: int
) -> None:
    """Payloads quote texts and carry platform ids, lanes name the address. Undelivered
    ones are cancelled: a running dispatcher still delivers what it already holds in
    memory (e.g. the goodbye after /forget)."""
    cancel = (
        "payload = '{}', lane = 'erased', "
        "failed_at = CASE WHEN sent_at IS NULL AND failed_at IS NULL THEN ? ELSE failed_at END, "
        "error = CASE WHEN sent_at IS NULL AND failed_at IS NULL "
        "THEN 'erased' ELSE error END"
    )
    if ids:
        conn.execute(
            f"UPDATE outbox SET {cancel} WHERE conversation_id IN ({_marks(len(ids))}) "
            "AND payload <> '{}'",
            (now, *ids),
        )
    for channel, chat in addresses:  # replies sent outside a conversation (e.g. /forget)
        conn.execute(
            f"UPDATE outbox SET {cancel} WHERE conversation_id IS NULL AND payload <> '{{}}' "
            "AND json_extract(payload, '$.to.channel') = ? "
            "AND json_extract(payload, '$.to.chat_id') = ?",
            (now, channel, chat),
        )


def _clear_events(conn: Conn, customer_id: int, ids: Sequence[int]) -> None:
    """Events hold no text today; drop any free-text key a later feature may add."""
    paths = ", ".join(f"'$.{k}'" for k in EVENT_TEXT_KEYS)
    found = " OR ".join(f"json_extract(data, '$.{k}') IS NOT NULL" for k in EVENT_TEXT_KEYS)
    scope = "customer_id = ?"
    params: list[int] = [customer_id]
    if ids:
        scope += f" OR conversation_id IN ({_marks(len(ids))})"
        params.extend(ids)
    conn.execute(
        f"UPDATE events SET data = json_remove(data, {paths}) "
        f"WHERE ({scope}) AND data IS NOT NULL AND json_valid(data) AND ({found})",
        params,
    )


def _forget_visitors(conn: Conn, visitors: Sequence[str], now: int) -> int:
    """Delete web transcripts and revoke the visitors' widget tokens."""
    lines = 0
    for visitor in visitors:
        cur = conn.execute("DELETE FROM web_messages WHERE visitor = ?", (visitor,))
        lines += int(cur.rowcount)
        conn.execute("DELETE FROM web_line_numbers WHERE visitor = ?", (visitor,))
        prefix = f"web:{visitor}:"
        conn.execute("DELETE FROM inbound WHERE substr(dedup_key, 1, ?) = ?", (len(prefix), prefix))
        conn.execute(
            "INSERT INTO web_settings (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (visitor_mark(visitor), str(now)),
        )
    return lines


# ---------------------------------------------------------------------- retention


def expire_before(conn: Conn, cutoff: int) -> Expired:
    """Clear message texts, comments, web transcripts and delivered payloads older than
    ``cutoff`` (inside a transaction); rows, times and scores stay for the KPIs."""
    secure(conn)
    messages = conn.execute(
        "UPDATE messages SET text = '', media = NULL WHERE created_at < ? "
        "AND (text <> '' OR media IS NOT NULL)",
        (cutoff,),
    ).rowcount
    old = [
        str(r[0])
        for r in conn.execute(
            "SELECT comment FROM surveys WHERE comment_at < ? AND comment IS NOT NULL "
            "AND comment <> ''",
            (cutoff,),
        )
    ]
    comments = conn.execute(
        "UPDATE surveys SET comment = NULL WHERE comment_at < ? AND comment IS NOT NULL",
        (cutoff,),
    ).rowcount
    _clear_digests(conn, old)
    conn.execute(
        "UPDATE digest_runs SET text = NULL WHERE status = 'done' AND sent_at < ? "
        "AND text IS NOT NULL",
        (cutoff,),
    )
    # Each visitor keeps their newest line (blanked) so that seq numbers never restart.
    web = conn.execute(
        """DELETE FROM web_messages WHERE at < ? AND seq < (
               SELECT MAX(seq) FROM web_messages AS w WHERE w.visitor = web_messages.visitor)""",
        (cutoff,),
    ).rowcount
    web += conn.execute(
        "UPDATE web_messages SET text = '', choices = '[]', chosen = NULL, client_id = NULL "
        "WHERE at < ? AND (text <> '' OR choices <> '[]')",
        (cutoff,),
    ).rowcount
    outbox = conn.execute(
        "UPDATE outbox SET payload = '{}' WHERE created_at < ? AND payload <> '{}' "
        "AND (sent_at IS NOT NULL OR failed_at IS NOT NULL)",
        (cutoff,),
    ).rowcount
    for table, columns in OPTIONAL_TEXT.items():
        present = table_columns(conn, table)
        wanted = [c for c in columns if c in present]
        if "conversation_id" in present and wanted:
            sets = ", ".join(f"{c} = NULL" for c in wanted)
            conn.execute(
                f"UPDATE {table} SET {sets} WHERE conversation_id IN (SELECT id FROM "
                "conversations WHERE COALESCE(closed_at, updated_at) < ?)",
                (cutoff,),
            )
    return Expired(int(messages), int(comments), int(web), int(outbox))


# ---------------------------------------------------------------------- async access


@dataclass(frozen=True, slots=True)
class PendingErasure:
    """An erasure whose agents' headers are not yet updated (e.g. done from the CLI)."""

    event_id: int
    customer_id: int


class PrivacyStore:
    """The privacy queries on one open ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def export(self, key: str) -> dict[str, Any] | None:
        return await self.db.read(lambda conn: export_customer(conn, key))

    async def erase(self, key: str, now: int, actor: str) -> Erased | None:
        def work(conn: Conn) -> Erased | None:
            customer_id = find_customer(conn, key)
            if customer_id is None:
                return None
            return erase_customer(conn, customer_id, now, actor)

        return await self.db.write(work)

    async def expire(self, cutoff: int) -> Expired:
        return await self.db.write(lambda conn: expire_before(conn, cutoff))

    async def pending_erasures(self) -> list[PendingErasure]:
        rows = await self.db.fetchall(
            f"""SELECT e.id, e.customer_id FROM events e
                WHERE e.kind = '{ERASED_EVENT}' AND NOT EXISTS (
                    SELECT 1 FROM events f WHERE f.kind = '{FINISHED_EVENT}'
                    AND f.customer_id = e.customer_id AND f.id > e.id)
                ORDER BY e.id"""
        )
        return [PendingErasure(int(r[0]), int(r[1])) for r in rows]

    async def desk_threads(self, customer_id: int, desk: str) -> list[int]:
        """The customer's conversations that have a thread at this desk."""
        rows = await self.db.fetchall(
            "SELECT id FROM conversations WHERE customer_id = ? AND desk = ? "
            "AND desk_thread IS NOT NULL ORDER BY id",
            (customer_id, desk),
        )
        return [int(r[0]) for r in rows]

    async def finished(self, erasure: PendingErasure, now: int, headers: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO events (customer_id, at, kind, actor, data) VALUES (?, ?, ?, ?, ?)",
                (
                    erasure.customer_id,
                    now,
                    FINISHED_EVENT,
                    "bot",
                    json.dumps({"erasure": erasure.event_id, "headers": headers}),
                ),
            )

    async def visitor_erased(self, visitor: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM web_settings WHERE key = ?", (visitor_mark(visitor),)
        )
        return row is not None

    async def truncate_wal(self, attempts: int = 20) -> bool:
        """Copy the WAL into the database and empty it; False if readers kept it busy."""
        return await self.db.checkpoint(attempts)
