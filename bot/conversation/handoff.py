"""The handoff: a conversation leaves the bot for the queue, and the desk hears of it."""

from __future__ import annotations

import json
import logging

from bot.clock import from_ms
from bot.conversation import payloads as P
from bot.conversation.desk_view import thread_header, transcript_line
from bot.conversation.model import State
from bot.conversation.routing import Routing
from bot.conversation.store import ConversationRecord, Unit

log = logging.getLogger(__name__)

TRANSCRIPT_LINES = 30


class Handoff(Routing):
    """Handing a conversation to people: the queue, the customer told when, the thread."""

    async def _remember_context(self, conv: ConversationRecord) -> None:
        """Keep what the customer's earlier conversations were, for every header redraw."""
        context = await self.store.customer_context(conv.customer_id, conv.id) or {"count": 0}
        if context.get("last_at") is not None:
            local = from_ms(context["last_at"]).astimezone(self.settings.tz)
            context["last_date"] = local.date().isoformat()
        conv.update(customer_context=json.dumps(context, ensure_ascii=False))

    async def _handoff(self, conv: ConversationRecord, unit: Unit, reason: str) -> None:
        lang = conv.language
        now = unit.now
        self._move(conv, unit, State.QUEUED, reason=reason)
        pending = conv.pending_since or now
        conv.update(handed_off_at=now, handoff_reason=reason, awaiting=None,
                    desk=self.desk, pending_since=pending)  # fmt: skip
        unit.clear_timer("idle")
        if reason == "complaint":
            self._open_complaint(conv, unit, "customer")
        unit.set_timer("abandon", self._business_deadline(pending, self._conv.abandon_after))
        unit.set_timer("remind", self._business_deadline(now, self._conv.remind_after))
        at = from_ms(now)
        if self.calendar.is_open(at):
            self._say(conv, unit, conv.address, await self._queue_greeting(conv, unit, reason))
        else:
            opens = self.calendar.next_open(at)
            when = self.texts.when(lang, opens.astimezone(self.settings.tz)) if opens else "?"
            self._say(conv, unit, conv.address, self._t(lang, "handoff_closed", when=when))
        if self.desk is None:
            if not self._observers:  # no console either: nobody will ever see it
                log.warning("conversation #%d handed off but no agent can see it", conv.id)
            return
        await self._remember_context(conv)
        transcript = await self.store.transcript(conv.id, TRANSCRIPT_LINES)
        transcript += [transcript_line(conv, m) for m in unit.messages]
        previous = await self.store.previous_thread(conv.customer_id, self.desk)
        header = thread_header(conv, self._desk_t, transcript[-TRANSCRIPT_LINES:])
        self._desk(conv, unit, P.OPEN_THREAD, header=P.header_json(header), previous=previous)
        for media in await self.store.media_messages(conv.id):
            self._desk(conv, unit, P.POST_MEDIA, media=media, caption="")
        for message in unit.messages:
            if message.media and message.author == "customer":
                self._desk(conv, unit, P.POST_MEDIA, media=message.media, caption=message.text)
