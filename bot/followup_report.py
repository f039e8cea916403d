"""``supportbot followups [--open] [--format table|json]``: the detractors' follow-ups.

JSON: a list of objects (newest first) with ``id`` (= the surveyed conversation's id),
``customer`` (the customer's key), ``customer_name``, ``conversation_id``, ``nps``,
``csat``, ``owner`` (agent key or null), ``owner_name``, ``owner_presence`` (available |
away as the owner last said, unknown if they never said; null without owner),
``status`` (open | contacted | resolved | unreachable), ``opened_at``, ``due_at``,
``contacted_at``, ``closed_at`` (ISO 8601 in the configured time zone, or null),
``note`` and ``overdue`` (no contact
yet and past the due time).
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from bot.clock import Clock, SystemClock, from_ms, to_ms
from bot.config import Settings
from bot.conversation.followup_types import FollowupRecord
from bot.conversation.routing_types import presence_of
from bot.errors import StorageError, SupportbotError

FORMATS = ("table", "json")


async def followups_command(
    settings: Settings, *, open_only: bool, fmt: str, clock: Clock | None = None
) -> str:
    """The text ``supportbot followups`` prints."""
    from storage.database import Database
    from storage.followups import SqliteFollowups
    from storage.routing import presence_words

    if fmt not in FORMATS:
        raise SupportbotError(f"unknown format {fmt!r} (expected table or json)")
    path = settings.storage.target()
    if (
        isinstance(path, Path)
        and str(path) != ":memory:"
        and not await asyncio.to_thread(path.exists)
    ):
        raise StorageError(f"no database at {path} (start the bot once, or pass --config)")
    now = to_ms((clock or SystemClock()).now())
    db = await Database.open(path, settings.storage.busy_timeout)
    try:
        records = await SqliteFollowups(db).listing(open_only=open_only)
        presence = await presence_words(db)
    finally:
        await db.close()
    if fmt == "json":
        items = [
            {**r.json(now, settings.tz), "owner_presence": presence_of(presence, r.owner_key)}
            for r in records
        ]
        return json.dumps(items, ensure_ascii=False, indent=2)
    return render_table(records, now, settings, presence)


def _scores(record: FollowupRecord) -> str:
    parts = [f"NPS {record.nps}" if record.nps is not None else "",
             f"CSAT {record.csat}" if record.csat is not None else ""]  # fmt: skip
    return ", ".join(p for p in parts if p) or "-"


def _owner(record: FollowupRecord, presence: dict[str, str]) -> str:
    """The owner's name with their presence: "Paul (away)"."""
    if record.owner_key is None:
        return "-"
    return f"{record.owner_name or record.owner_key} ({presence_of(presence, record.owner_key)})"


def render_table(
    records: list[FollowupRecord],
    now: int,
    settings: Settings,
    presence: dict[str, str] | None = None,
) -> str:
    """One line per follow-up, for people; the note shortened; the owner's presence (who
    can act on it now)."""

    def local(ms: int | None) -> str:
        return "-" if ms is None else from_ms(ms).astimezone(settings.tz).strftime("%Y-%m-%d %H:%M")

    table = Table(box=box.SIMPLE_HEAD, title_justify="left")
    for name in ("#", "customer", "scores", "owner", "status", "due", "contacted", "note"):
        table.add_column(name, overflow="fold")
    for r in records:
        status = r.status.value + (" (overdue)" if r.overdue(now) else "")
        note = (r.note or "-") if len(r.note or "") <= 40 else (r.note or "")[:39] + "…"
        table.add_row(str(r.id), r.customer_name or r.customer_key, _scores(r),
                      _owner(r, presence or {}), status, local(r.due_at),
                      local(r.contacted_at), note)  # fmt: skip
    buffer = io.StringIO()
    Console(file=buffer, width=132, no_color=True, highlight=False, emoji=False).print(table)
    if not records:
        return "no follow-ups\n"
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip().splitlines()) + "\n"
