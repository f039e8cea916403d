"""Closing the loop: a detractor's survey opens a follow-up; agents' messages to that
customer count as contact; overdue follow-ups are reminded once a business day.

The follow-up is written with the step that caused it (``Unit.followups``), its events
go to the append-only log (``followup_*``), and its reminder time is stored on the row,
so a restart neither loses nor repeats a reminder. What agents do with a follow-up
(buttons, ``/followup``, the console) is in ``followup_actions``.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from bot.clock import from_ms, to_ms
from bot.conversation.buttons import agent_choice
from bot.conversation.followup_types import (
    FollowupChange,
    FollowupOpen,
    FollowupRecord,
    FollowupStatus,
)
from bot.conversation.model import Agent, AgentActionKind, Choice
from bot.conversation.store import ConversationRecord, Unit
from bot.conversation.timers import Timers
from bot.logs import conversation_id as log_conversation
from bot.texts import CSAT_FACES

DETRACTOR_NPS = 6  # 0–6 opens a follow-up
UNHAPPY_CSAT = 2  # 1–2 opens one too
BUTTONS = (
    (AgentActionKind.FOLLOWUP_TAKE, "followup_button_take"),
    (AgentActionKind.FOLLOWUP_CONTACTED, "followup_button_contacted"),
    (AgentActionKind.FOLLOWUP_RESOLVED, "followup_button_resolved"),
    (AgentActionKind.FOLLOWUP_UNREACHABLE, "followup_button_unreachable"),
)


class Followups(Timers):
    """Opening follow-ups, marking contact, and reminding the overdue ones."""

    # ------------------------------------------------------------------ opening

    def _followup_buttons(self, followup_id: int) -> list[Choice]:
        return [agent_choice(self._desk_t(key), followup_id, kind) for kind, key in BUTTONS]

    def _followup_due(self, start_ms: int) -> int:
        """``followup.due_after`` after ``start_ms``: whole days are business days."""
        delta = self.settings.followup.due_after
        if delta % timedelta(days=1) == timedelta(0):
            return to_ms(self.calendar.add_business_days(from_ms(start_ms), delta.days))
        return self._business_deadline(start_ms, delta)

    def _when(self, ms: int) -> str:
        return self.texts.when(self.settings.language, from_ms(ms).astimezone(self.settings.tz))

    def _owner(self, key: str | None, name: str | None) -> str:
        return name or key or self._desk_t("followup_unassigned")

    def _open_followup(
        self, conv: ConversationRecord, unit: Unit, alert: str, *, nps: int | None = None,
        csat: int | None = None,
    ) -> None:  # fmt: skip
        """Open the conversation's follow-up and tell agents, with its buttons. With
        follow-ups off, the alert alone goes out, as before."""
        if not self.settings.followup.enabled:
            self._alert(conv, unit, alert)
            return
        due = self._followup_due(unit.now)
        unit.followups.append(FollowupOpen(nps, csat, conv.agent_key, conv.agent_name, due))
        unit.event("followup_opened", "bot", followup=conv.id, nps=nps, csat=csat,
                   owner=conv.agent_key, due_at=due)  # fmt: skip
        line = self._desk_t("followup_line", id=conv.id, due=self._when(due),
                            owner=self._owner(conv.agent_key, conv.agent_name))  # fmt: skip
        self._alert(conv, unit, f"{alert}\n{line}", self._followup_buttons(conv.id))

    async def _csat_followup(self, conv: ConversationRecord, unit: Unit, rating: int) -> None:
        """A smiley of 1–2 opens a follow-up unless the NPS answer already did (once per
        survey); on an existing follow-up the smiley is recorded beside the NPS."""
        existing = await self.store.followups.get(conv.id)
        if existing is not None:
            unit.followups.append(FollowupChange(existing.id, {"csat": rating}))
            return
        if rating > UNHAPPY_CSAT:
            return
        agent = f", {conv.agent_name}" if conv.agent_name else ""
        alert = self._desk_t("followup_csat_alert", customer=conv.customer_name or
                             conv.customer_key, face=CSAT_FACES[rating - 1], rating=rating,
                             id=conv.id, agent=agent)  # fmt: skip
        survey = await self.store.survey(conv.id)
        self._open_followup(conv, unit, alert, nps=survey.nps if survey else None, csat=rating)

    # ------------------------------------------------------------------ contact

    async def _mark_contacted(self, conv: ConversationRecord, unit: Unit, agent: Agent) -> None:
        """An agent's message reached this customer: their follow-ups waiting for a first
        contact count as contacted now (the caller relayed it, under the lock)."""
        if not conv.customer_reachable:
            return
        for record in await self.store.followups.uncontacted(conv.customer_id):
            if record.opened_at > unit.now:
                continue
            values = {"status": FollowupStatus.CONTACTED.value, "contacted_at": unit.now,
                      "remind_at": None}  # fmt: skip
            if record.owner_key is None:
                values.update(owner_key=agent.key, owner_name=agent.name or agent.key)
            unit.followups.append(FollowupChange(record.id, values))
            unit.event("followup_contacted", agent.key, followup=record.id, via="message")

    # ------------------------------------------------------------------ reminders

    async def sweep(self, limit: int = 500) -> int:
        """Conversation timers, then overdue follow-ups."""
        fired = await super().sweep(limit)
        return fired + await self._remind_followups(limit)

    def _next_reminder(self, now_ms: int) -> int:
        """The opening of the next business day: at most one reminder a business day,
        however long the bot was down."""
        cal = self.calendar
        local = from_ms(now_ms).astimezone(cal.tz)
        if cal.always_open:
            return to_ms((local + timedelta(days=1)).astimezone(UTC))
        for offset in range(1, 400):
            for start, _end in cal.intervals(local.date() + timedelta(days=offset)):
                return to_ms(start)
        return now_ms + 86_400_000  # a calendar with no working day at all

    def _scores(self, record: FollowupRecord) -> str:
        parts = []
        if record.nps is not None:
            parts.append(f"NPS {record.nps}/10")
        if record.csat is not None:
            parts.append(f"{CSAT_FACES[record.csat - 1]} {record.csat}/5")
        return ", ".join(parts) or "—"

    async def _remind_followups(self, limit: int) -> int:
        now = self._now()
        fired = 0
        for due in await self.store.followups.due_reminders(now, limit):
            conv = await self.store.load(due.id)
            if conv is None:
                continue
            async with self.locks.hold(conv.address.key):
                record = await self.store.followups.get(due.id)
                fresh = await self.store.load(due.id)
                if record is None or fresh is None or record.status != FollowupStatus.OPEN:
                    continue
                if record.remind_at is None or record.remind_at > now:
                    continue  # reminded meanwhile
                log_conversation.set(fresh.id)
                unit = Unit(now, conversation=fresh)
                self._remind(fresh, record, unit)
                await self._commit(unit)
                fired += 1
        log_conversation.set(None)
        return fired

    def _remind(self, conv: ConversationRecord, record: FollowupRecord, unit: Unit) -> None:
        """Remind the whole desk (the old thread is closed) and set the next reminder."""
        next_at = self._next_reminder(unit.now)
        unit.followups.append(FollowupChange(record.id, {"remind_at": next_at}))
        unit.event("followup_reminder", "bot", followup=record.id)
        text = self._desk_t(
            "followup_reminder",
            id=record.id,
            scores=self._scores(record),
            customer=record.customer_name or record.customer_key,
            due=self._when(record.due_at),
            owner=self._owner(record.owner_key, record.owner_name),
        )
        self._alert(conv, unit, text, self._followup_buttons(record.id), in_thread=False)
