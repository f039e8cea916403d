"""Who the customer is to agents: their earlier conversations, and the console's search.

Read-only queries. The follow-ups table belongs to another part of the product and may not
exist in a given database: it is looked up, never assumed.
"""

from __future__ import annotations

from typing import Any

from bot.knowledge.text import fold
from storage.database import DB_ERRORS, Database, Row, table_columns_of

SEARCH_LIMIT = 50
SNIPPET = 140
FOLLOWUP_OPEN = ("open", "contacted")

_PAST = """SELECT c.id, c.started_at, c.state, c.channel, COALESCE(c.tag, c.topic) AS topic,
       c.agent_name, c.handoff_reason, c.resolved_at, c.abandoned_at,
       s.nps, s.csat, s.comment
FROM conversations c LEFT JOIN surveys s ON s.conversation_id = c.id"""


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its own % and _ taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _past(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "started_at": row["started_at"],
        "state": row["state"],
        "channel": row["channel"],
        "topic": row["topic"],
        "agent": row["agent_name"],
        "handed_off": row["handoff_reason"] is not None,
        "resolved": row["resolved_at"] is not None,
        "abandoned": row["abandoned_at"] is not None,
        "nps": row["nps"],
        "csat": row["csat"],
        "comment": row["comment"],
    }


async def history(
    db: Database, customer_id: int, *, before: int | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The customer's conversations, newest first (only those before id ``before``)."""
    rows = await db.fetchall(
        f"{_PAST} WHERE c.customer_id = ? AND c.id < ? ORDER BY c.id DESC LIMIT ?",
        (customer_id, before if before is not None else 2**62, limit),
    )
    return [_past(row) for row in rows]


async def open_followup(db: Database, customer_id: int) -> dict[str, Any] | None:
    """The customer's latest unfinished follow-up, if this database has follow-ups at all."""
    columns = set(await db.read(lambda conn: table_columns_of(conn, "followups")))
    if "status" not in columns:
        return None
    if "customer_id" in columns:
        where, params = "f.customer_id = ?", (customer_id,)
    elif "conversation_id" in columns:
        where = "f.conversation_id IN (SELECT id FROM conversations WHERE customer_id = ?)"
        params = (customer_id,)
    else:
        return None
    marks = ", ".join("?" for _ in FOLLOWUP_OPEN)
    due = "f.due_at" if "due_at" in columns else "NULL"
    try:
        row = await db.fetchone(
            f"SELECT f.status, {due} AS due_at FROM followups f "
            f"WHERE {where} AND f.status IN ({marks}) ORDER BY f.id DESC LIMIT 1",
            (*params, *FOLLOWUP_OPEN),
        )
    except DB_ERRORS:  # a follow-ups table of another shape: no context rather than none
        return None
    return {"status": row["status"], "due_at": row["due_at"]} if row else None


async def customer_context(db: Database, customer_id: int, before: int) -> dict[str, Any] | None:
    """A short summary for the thread header; None for a first-time customer."""
    past = await history(db, customer_id, before=before, limit=200)
    followup = await open_followup(db, customer_id)
    if not past and followup is None:
        return None
    last = past[0] if past else None
    scored = next((p for p in past if p["nps"] is not None or p["csat"] is not None), None)
    return {
        "count": len(past),
        "last_topic": last["topic"] if last else None,
        "last_at": last["started_at"] if last else None,
        "nps": scored["nps"] if scored else None,
        "csat": scored["csat"] if scored else None,
        "followup": followup,
    }


async def search(
    db: Database,
    *,
    text: str = "",
    topic: str = "",
    since: int | None = None,
    until: int | None = None,
    limit: int = SEARCH_LIMIT,
) -> list[dict[str, Any]]:
    """Conversations matching every given criterion, newest first.

    ``text`` is looked for in the customer's name and key, the topic or tag, and the
    messages (the first matching message is returned as ``snippet``); ``topic`` is an
    exact topic or tag; ``since``/``until`` bound the start time (ms, ``until`` excluded).
    """
    clauses: list[str] = []
    params: list[Any] = []
    snippet_sql = "NULL"
    snippet_params: list[Any] = []
    if text.strip():
        # Folded on both sides: "reclamation" finds « Réclamation ».
        pattern = _like(fold(text.strip()))
        snippet_sql = (
            "(SELECT m.text FROM messages m WHERE m.conversation_id = c.id "
            "AND fold(m.text) LIKE ? ESCAPE '\\' ORDER BY m.id LIMIT 1)"
        )
        snippet_params = [pattern]
        clauses.append(
            "(fold(cu.name) LIKE ? ESCAPE '\\' OR fold(cu.key) LIKE ? ESCAPE '\\' "
            "OR fold(c.topic) LIKE ? ESCAPE '\\' OR fold(c.tag) LIKE ? ESCAPE '\\' "
            "OR EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id "
            "AND fold(m.text) LIKE ? ESCAPE '\\'))"
        )
        params += [pattern] * 5
    if topic.strip():
        clauses.append("(c.topic = ? OR c.tag = ?)")
        params += [topic.strip(), topic.strip()]
    if since is not None:
        clauses.append("c.started_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("c.started_at < ?")
        params.append(until)
    where = " AND ".join(clauses) or "1 = 1"
    rows = await db.fetchall(
        f"""SELECT c.id, c.started_at, c.state, c.channel, COALESCE(c.tag, c.topic) AS topic,
                   c.agent_name, cu.name AS customer, cu.key AS customer_key,
                   s.nps, s.csat, {snippet_sql} AS snippet
            FROM conversations c JOIN customers cu ON cu.id = c.customer_id
            LEFT JOIN surveys s ON s.conversation_id = c.id
            WHERE {where} ORDER BY c.started_at DESC, c.id DESC LIMIT ?""",
        (*snippet_params, *params, limit),
    )
    found = []
    for row in rows:
        snippet = row["snippet"]
        if snippet and len(snippet) > SNIPPET:
            snippet = snippet[: SNIPPET - 1] + "…"
        found.append(
            {
                "id": row["id"],
                "started_at": row["started_at"],
                "state": row["state"],
                "channel": row["channel"],
                "topic": row["topic"],
                "agent": row["agent_name"],
                "customer": row["customer"] or row["customer_key"],
                "nps": row["nps"],
                "csat": row["csat"],
                "snippet": snippet,
            }
        )
    return found


async def customer_of(db: Database, conversation_id: int) -> dict[str, Any] | None:
    """The customer of a conversation: id, key and name (None for an unknown id)."""
    row = await db.fetchone(
        "SELECT cu.id, cu.key, cu.name FROM conversations c "
        "JOIN customers cu ON cu.id = c.customer_id WHERE c.id = ?",
        (conversation_id,),
    )
    return {"id": row["id"], "key": row["key"], "name": row["name"]} if row else None
