"""Follow-ups as the engine sees them: the record, the changes a step makes, the store.

A follow-up is the tracked work a detractor's survey opens (SPEC "Closing the loop").
Its id is the surveyed conversation's id: one survey per conversation, one follow-up
per survey, and agents already know the conversation by that number ("#42").
Status: open → contacted → resolved, or unreachable (from open or contacted).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from enum import StrEnum
from typing import Any, Protocol

from bot.clock import from_ms


class FollowupStatus(StrEnum):
    OPEN = "open"
    CONTACTED = "contacted"
    RESOLVED = "resolved"
    UNREACHABLE = "unreachable"


CLOSED_STATUSES = (FollowupStatus.RESOLVED, FollowupStatus.UNREACHABLE)


@dataclass(frozen=True, slots=True)
class FollowupRecord:
    """One stored follow-up, with its customer's key and name."""

    id: int  # = conversation_id
    customer_id: int
    customer_key: str
    customer_name: str
    nps: int | None
    csat: int | None
    owner_key: str | None
    owner_name: str | None
    status: FollowupStatus
    opened_at: int
    due_at: int
    contacted_at: int | None
    closed_at: int | None
    note: str | None
    remind_at: int | None

    @property
    def conversation_id(self) -> int:
        return self.id

    @property
    def closed(self) -> bool:
        return self.status in CLOSED_STATUSES

    def overdue(self, now: int) -> bool:
        """Nobody reached the customer and the due time has passed."""
        return self.status == FollowupStatus.OPEN and now >= self.due_at

    def json(self, now: int, tz: tzinfo) -> dict[str, Any]:
        """The public JSON of a follow-up (``supportbot followups``, the console): times
        in ISO 8601 with the offset of the configured time zone."""

        def iso(ms: int | None) -> str | None:
            return None if ms is None else from_ms(ms).astimezone(tz).isoformat()

        return {
            "id": self.id,
            "customer": self.customer_key,
            "customer_name": self.customer_name,
            "conversation_id": self.conversation_id,
            "nps": self.nps,
            "csat": self.csat,
            "owner": self.owner_key,
            "owner_name": self.owner_name,
            "status": self.status.value,
            "opened_at": iso(self.opened_at),
            "due_at": iso(self.due_at),
            "contacted_at": iso(self.contacted_at),
            "closed_at": iso(self.closed_at),
            "note": self.note,
            "overdue": self.overdue(now),
        }


@dataclass(frozen=True, slots=True)
class FollowupOpen:
    """A new follow-up for the unit's conversation (ignored if it already has one)."""

    nps: int | None
    csat: int | None
    owner_key: str | None
    owner_name: str | None
    due_at: int


@dataclass(frozen=True, slots=True)
class FollowupChange:
    """Columns of one follow-up to set (status, contacted_at, note, remind_at, …)."""

    id: int
    values: dict[str, Any]


class FollowupStore(Protocol):
    """Reads of follow-ups; writes go through ``Unit.followups`` with the rest of a step."""

    async def get(self, followup_id: int) -> FollowupRecord | None: ...

    async def uncontacted(self, customer_id: int) -> list[FollowupRecord]:
        """The customer's follow-ups still waiting for a first contact (status open)."""
        ...

    async def due_reminders(self, now: int, limit: int) -> list[FollowupRecord]:
        """Open follow-ups whose next reminder is due."""
        ...

    async def listing(self, *, open_only: bool, limit: int = 1000) -> list[FollowupRecord]:
        """Newest first; ``open_only``: not resolved nor unreachable."""
        ...


def parse_followup_args(rest: str) -> tuple[int, str, str | None]:
    """ "12 resolved Bon d'achat envoyé" → (12, "resolved", "Bon d'achat envoyé"), as typed
    after ``/followup`` (``!followup`` on Slack). Anything else gives (0, "", None), which
    the engine answers with the usage line."""
    parts = rest.strip().split(maxsplit=2)
    if len(parts) < 2 or not parts[0].lstrip("#").isdigit() or len(parts[0]) > 16:
        return 0, "", None
    note = parts[2].strip() if len(parts) == 3 else None
    return int(parts[0].lstrip("#")), parts[1].lower(), note or None
