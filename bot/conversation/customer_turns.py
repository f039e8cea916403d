"""Customer turns: messages, button presses, the handoff, and customers leaving."""

from __future__ import annotations

import logging

from bot.clock import from_ms
from bot.conversation import payloads as P
from bot.conversation.buttons import customer_choice, parse_customer_token
from bot.conversation.desk_view import thread_header, transcript_line
from bot.conversation.intents import Intent, detect_intent
from bot.conversation.leaving import Leaving
from bot.conversation.lifecycle import WITH_AGENTS
from bot.conversation.model import (
    Choice,
    CustomerChoice,
    CustomerMessage,
    Outcome,
    State,
)
from bot.conversation.store import ConversationRecord, NewMessage, Unit
from bot.logs import conversation_id as log_conversation
from bot.texts import CSAT_FACES

log = logging.getLogger(__name__)

KNOWN_COMMANDS = frozenset({"start", "help", "agent", "cancel", "forget"})
TRANSCRIPT_LINES = 30


class CustomerTurns(Leaving):
    """What a customer writes and the buttons they press (leaving: ``leaving.py``)."""

    async def _customer_message(self, ev: CustomerMessage) -> Outcome:
        async with self.locks.hold(ev.address.key):
            now = self._now()
            conv = await self.store.load_open(ev.address.key)
            text = ev.text.strip()
            command = ev.command
            notice: str | None = None
            if conv is None:
                lang = self.texts.language_of(ev.customer.language)
                stateless = self._stateless_reply(command, text, ev.media is not None, lang)
                if stateless is not None:
                    unit = Unit(now, ev.dedup_key)
                    self._say(None, unit, ev.address, stateless)
                    return Outcome(duplicate=not await self._commit(unit))
                if command == "forget":
                    unit = Unit(now, ev.dedup_key)
                    ask = self._t(lang, "forget_confirm")
                    self._say(None, unit, ev.address, ask, self._forget_choices(0, lang))
                    return Outcome(duplicate=not await self._commit(unit))
                if await self.store.seen(ev.dedup_key):
                    return Outcome(duplicate=True)
                notice = await self._privacy_notice(ev.customer.key, lang)
                conv = await self.store.open_conversation(ev.customer, ev.address, lang, now)
            elif conv.state == State.SURVEYING and self._leaves_survey(command, text):
                # The customer needs help again: end this survey; the message then opens
                # a new conversation (below, once this lock is released).
                await self._end_survey(conv, now)
                conv = None
            if conv is not None:
                return await self._customer_step(conv, ev, now, text, notice)
        return await self._customer_message(ev)

    async def _customer_step(
        self,
        conv: ConversationRecord,
        ev: CustomerMessage,
        now: int,
        text: str,
        notice: str | None = None,
    ) -> Outcome:
        """A customer message in an open conversation (the caller holds its lock)."""
        log_conversation.set(conv.id)
        command = ev.command
        unit = Unit(now, ev.dedup_key, conversation=conv)
        if not conv.customer_reachable:
            unit.customer_reachable = (True, "returned")
            conv.customer_reachable = True
        media = P.media_json(ev.media) if ev.media else None
        shown = ev.text if command is None else f"/{command} {ev.text}".strip()
        unit.message(NewMessage("in", "customer", shown, media=media))
        unit.event("message_in", "customer", **({"command": command} if command else {}))
        conv.update(last_customer_at=now)
        if notice:  # first contact: how their data is used, before anything else
            self._say(conv, unit, conv.address, notice)
        if command == "forget":
            ask = self._t(conv.language, "forget_confirm")
            self._say(conv, unit, conv.address, ask, self._forget_choices(conv.id, conv.language))
        elif conv.state == State.BOT:
            await self._bot_turn(conv, unit, ev, text)
        elif conv.state in WITH_AGENTS:
            self._customer_to_agents(conv, unit, ev, text)
        elif conv.state == State.SURVEYING:
            self._survey_text(conv, unit, text)
        return Outcome(duplicate=not await self._commit(unit))

    def _stateless_reply(
        self, command: str | None, text: str, has_media: bool, lang: str
    ) -> str | None:
        """Replies that open no conversation (greeting, help, unknown command, empty)."""
        if command == "start" and not text:
            return self._t(lang, "greeting", name="")
        if command == "help":
            return self._t(lang, "help")
        if command == "cancel":
            return self._t(lang, "nothing_to_cancel")
        if command is not None and command not in KNOWN_COMMANDS:
            return self._t(lang, "unknown_command", command=command, help=self._t(lang, "help"))
        if not text and not has_media and command is None:
            return self._t(lang, "empty_message")
        return None

    def _leaves_survey(self, command: str | None, text: str) -> bool:
        if command == "agent":
            return True
        return bool(text) and detect_intent(text) in (Intent.HUMAN, Intent.COMPLAINT)

    async def _end_survey(self, conv: ConversationRecord, now: int) -> None:
        unit = Unit(now, conversation=conv)
        unit.survey_update["expired_at"] = now
        unit.event("survey_abandoned", "customer")
        self._close(conv, unit, "new_request")
        await self._commit(unit)

    async def _bot_turn(
        self, conv: ConversationRecord, unit: Unit, ev: CustomerMessage, text: str
    ) -> None:
        lang = conv.language
        command = ev.command
        unit.set_timer("idle", unit.now + int(self._conv.close_idle_after.total_seconds() * 1000))
        if command == "agent":
            await self._handoff(conv, unit, "requested")
            return
        if command == "cancel":
            self._say(conv, unit, conv.address, self._t(lang, "nothing_to_cancel"))
            return
        if command in ("start", "help"):
            key = "greeting" if command == "start" else "help"
            self._say(conv, unit, conv.address, self._t(lang, key, name=""))
            if not text:
                return
        elif command is not None:
            help_text = self._t(lang, "help")
            reply = self._t(lang, "unknown_command", command=command, help=help_text)
            self._say(conv, unit, conv.address, reply)
            return
        if not text:
            key = "text_only" if ev.media else "empty_message"
            self._say(conv, unit, conv.address, self._t(lang, key))
            return
        intent = detect_intent(text)
        if intent == Intent.COMPLAINT:
            await self._handoff(conv, unit, "complaint")
            return
        if intent == Intent.HUMAN:
            await self._handoff(conv, unit, "requested")
            return
        if conv.awaiting == "help" and intent in (Intent.YES, Intent.THANKS):
            self._resolve_by_bot(conv, unit)
            return
        if conv.awaiting == "help" and intent == Intent.NO:
            await self._handoff(conv, unit, "not_helpful")
            return
        if intent == Intent.GREETING:
            self._say(conv, unit, conv.address, self._t(lang, "greeting", name=""))
            return
        if intent == Intent.THANKS:
            self._say(conv, unit, conv.address, self._t(lang, "glad_to_help"))
            return
        if intent in (Intent.YES, Intent.NO):
            # "oui" / "non" with no question pending: not a question the KB can miss.
            self._say(conv, unit, conv.address, self._t(lang, "ask_question"))
            return
        match = self.kb.match(text, lang)
        if match.answered:
            conv.update(misses=0, topic=match.topic, kb_entry=match.id, awaiting="help")
            unit.event("bot_answered", "bot", entry=match.id, topic=match.topic,
                       score=round(match.score, 3))  # fmt: skip
            body = f"{match.answer(lang)}\n\n{self._t(lang, 'did_it_help')}"
            self._say(conv, unit, conv.address, body, self._help_choices(conv))
            return
        misses = conv.misses + 1
        unit.event("bot_missed", "bot", score=round(match.score, 3), misses=misses)
        if misses >= self._conv.misses_before_handoff:
            conv.update(misses=misses)
            await self._handoff(conv, unit, "not_understood")
            return
        conv.update(misses=misses, awaiting=None)
        agent_button = customer_choice(self._t(lang, "choice_agent"), conv.id, "help", "agent")
        self._say(conv, unit, conv.address, self._t(lang, "not_sure"), [[agent_button]])

    def _help_choices(self, conv: ConversationRecord) -> list[list[Choice]]:
        lang = conv.language
        return [
            [
                customer_choice(self._t(lang, "choice_yes"), conv.id, "help", "yes"),
                customer_choice(self._t(lang, "choice_no"), conv.id, "help", "no"),
            ],
            [customer_choice(self._t(lang, "choice_agent"), conv.id, "help", "agent")],
        ]

    def _customer_to_agents(
        self, conv: ConversationRecord, unit: Unit, ev: CustomerMessage, text: str
    ) -> None:
        lang = conv.language
        if ev.command == "cancel":
            self._abandon(conv, unit, "cancelled")
            return
        if ev.command == "agent" or (
            conv.state == State.QUEUED and text and detect_intent(text) == Intent.HUMAN
        ):
            self._say(conv, unit, conv.address, self._t(lang, "already_queued"))
        name = conv.customer_name
        if ev.media is not None:
            self._desk(conv, unit, P.POST_MEDIA, media=P.media_json(ev.media), caption=ev.text)
        elif ev.command not in ("agent", "start", "help") or text:
            shown = ev.text if ev.command is None else f"/{ev.command} {ev.text}".strip()
            self._desk(conv, unit, P.POST, text=shown, author="customer", name=name)
        if conv.pending_since is None:
            conv.update(pending_since=unit.now)
            deadline = self._business_deadline(unit.now, self._conv.abandon_after)
            unit.set_timer("abandon", deadline)

    # ------------------------------------------------------------------ handoff

    async def _handoff(self, conv: ConversationRecord, unit: Unit, reason: str) -> None:
        lang = conv.language
        now = unit.now
        self._move(conv, unit, State.QUEUED, reason=reason)
        pending = conv.pending_since or now
        conv.update(handed_off_at=now, handoff_reason=reason, awaiting=None,
                    desk=self.desk, pending_since=pending)  # fmt: skip
        unit.clear_timer("idle")
        unit.set_timer("abandon", self._business_deadline(pending, self._conv.abandon_after))
        unit.set_timer("remind", self._business_deadline(now, self._conv.remind_after))
        at = from_ms(now)
        if self.calendar.is_open(at):
            key = "handoff_complaint" if reason == "complaint" else "handoff_open"
            self._say(conv, unit, conv.address, self._t(lang, key))
        else:
            opens = self.calendar.next_open(at)
            when = self.texts.when(lang, opens.astimezone(self.settings.tz)) if opens else "?"
            self._say(conv, unit, conv.address, self._t(lang, "handoff_closed", when=when))
        if self.desk is None:
            if not self._observers:  # no console either: nobody will ever see it
                log.warning("conversation #%d handed off but no agent can see it", conv.id)
            return
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

    # ------------------------------------------------------------------ customer buttons

    async def _customer_choice(self, ev: CustomerChoice) -> Outcome:
        token = parse_customer_token(ev.token)
        lang = self.texts.language_of(ev.customer.language)
        closed = Outcome(ok=False, notice=self._t(lang, "question_closed"))
        if token is None:
            return closed
        if token.question == "forget" and token.value in ("yes", "no"):
            return await self._forget_answer(ev, token.value == "yes")
        async with self.locks.hold(ev.address.key):
            conv = await self.store.load(token.conversation_id)
            if conv is None or conv.address.key != ev.address.key:
                return closed
            if conv.customer_key != ev.customer.key:
                return Outcome(ok=False, notice=self._t(conv.language, "not_your_question"))
            lang = conv.language
            if not self._choice_open(conv, token.question, token.value):
                return closed
            label = self._choice_label(lang, token.question, token.value)
            if label is None:
                return closed
            unit = Unit(self._now(), ev.dedup_key, conversation=conv)
            unit.message(NewMessage("in", "customer", f"[{label}]"))
            unit.event("choice", "customer", question=token.question, value=token.value)
            conv.update(last_customer_at=unit.now)
            await self._apply_choice(conv, unit, token.question, token.value)
            if not await self._commit(unit):
                return Outcome(duplicate=True)
            return Outcome(ok=True, chosen=label)

    def _choice_open(self, conv: ConversationRecord, question: str, value: str) -> bool:
        if question == "help":
            return conv.state == State.BOT and (conv.awaiting == "help" or value == "agent")
        return conv.state == State.SURVEYING and conv.awaiting == question

    def _choice_label(self, lang: str, question: str, value: str) -> str | None:
        if question == "help" and value in ("yes", "no", "agent"):
            return self._t(lang, {"yes": "choice_yes", "no": "choice_no"}.get(value,
                           "choice_agent"))  # fmt: skip
        if question == "nps" and value.isdigit() and 0 <= int(value) <= 10:
            return value
        if question == "csat" and value.isdigit() and 1 <= int(value) <= 5:
            return CSAT_FACES[int(value) - 1]
        if question == "comment" and value == "skip":
            return self._t(lang, "choice_skip")
        return None

    async def _apply_choice(
        self, conv: ConversationRecord, unit: Unit, question: str, value: str
    ) -> None:
        if question == "help":
            if value == "yes":
                self._resolve_by_bot(conv, unit)
            else:
                await self._handoff(conv, unit, "not_helpful" if value == "no" else "requested")
        elif question == "nps":
            self._record_nps(conv, unit, int(value))
        elif question == "csat":
            self._record_csat(conv, unit, int(value))
        elif question == "comment":
            self._record_comment(conv, unit, None)
