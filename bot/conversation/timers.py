"""Timers: abandonment, reminders to the desk, survey expiry and idle close."""

from __future__ import annotations

from bot.conversation.core import EngineCore
from bot.conversation.model import State
from bot.conversation.store import ConversationRecord, Unit
from bot.logs import conversation_id as log_conversation

MAX_REMINDERS = 3


class Timers(EngineCore):
    """Fires due timers; ``sweep`` is called periodically by the app."""

    async def sweep(self, limit: int = 500) -> int:
        """Fire every due timer (abandonment, reminders, survey expiry, idle close)."""
        now = self._now()
        fired = 0
        for timer in await self.store.due_timers(now, limit):
            conv = await self.store.load(timer.conversation_id)
            if conv is None:
                continue
            async with self.locks.hold(conv.address.key, load_id=conv.id):
                fresh = await self.store.load(conv.id)
                if fresh is None:
                    continue
                log_conversation.set(fresh.id)
                unit = Unit(now, conversation=fresh)
                unit.clear_timer(timer.kind)
                self._fire(fresh, unit, timer.kind)
                await self._commit(unit)
                fired += 1
        log_conversation.set(None)
        return fired

    def _fire(self, conv: ConversationRecord, unit: Unit, kind: str) -> None:
        now = unit.now
        if kind == "abandon":
            waiting = conv.state == State.QUEUED or (
                conv.state == State.ASSIGNED and conv.pending_since is not None
            )
            if waiting:
                self._abandon(conv, unit, "timeout")
        elif kind == "remind" and conv.state == State.QUEUED:
            waited = (now - (conv.handed_off_at or now)) // 60000
            self._alert(conv, unit, self._desk_t("reminder", id=conv.id, minutes=waited))
            unit.event("reminder", "bot")
            remind_ms = int(self._conv.remind_after.total_seconds() * 1000)
            if now - (conv.handed_off_at or now) < remind_ms * MAX_REMINDERS:
                due = self._business_deadline(now, self._conv.remind_after)
                unit.set_timer("remind", due)
        elif kind == "survey_expiry" and conv.state == State.SURVEYING:
            unit.survey_update["expired_at"] = now
            unit.event("survey_expired", "bot")
            self._close(conv, unit, "survey_expired")
        elif kind == "idle" and conv.state == State.BOT:
            self._close(conv, unit, "idle")
