"""Customer turns: messages, button presses, and customers leaving (the bot's answering
step is ``bot_answers``, the handoff ``handoff``)."""

from __future__ import annotations

import logging

from bot.conversation import payloads as P
from bot.conversation.bot_answers import PICK
from bot.conversation.buttons import parse_customer_token
from bot.conversation.intents import Intent, detect_intent
from bot.conversation.leaving import Leaving
from bot.conversation.lifecycle import WITH_AGENTS
from bot.conversation.model import (
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


class CustomerTurns(Leaving):
    """What a customer writes and the buttons they press (answers: ``bot_answers.py``,
    leaving: ``leaving.py``)."""

    async def _customer_message(self, ev: CustomerMessage) -> Outcome:
        async with self.locks.hold(ev.address.key, load_open=True):
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
            await self._survey_text(conv, unit, text)
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

    # ------------------------------------------------------------------ customer buttons

    async def _customer_choice(self, ev: CustomerChoice) -> Outcome:
        token = parse_customer_token(ev.token)
        lang = self.texts.language_of(ev.customer.language)
        closed = Outcome(ok=False, notice=self._t(lang, "question_closed"))
        if token is None:
            return closed
        if token.question == "forget" and token.value in ("yes", "no"):
            return await self._forget_answer(ev, token.value == "yes")
        async with self.locks.hold(ev.address.key, load_id=token.conversation_id):
            conv = await self.store.load(token.conversation_id)
            if conv is None or conv.address.key != ev.address.key:
                return closed
            if conv.customer_key != ev.customer.key:
                return Outcome(ok=False, notice=self._t(conv.language, "not_your_question"))
            lang = conv.language
            if token.question == PICK:
                return await self._pick_choice(conv, ev.dedup_key, token.value)
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
            elif value == "no":
                await self._not_helped(conv, unit)
            else:
                await self._handoff(conv, unit, "requested")
        elif question == "nps":
            self._record_nps(conv, unit, int(value))
        elif question == "csat":
            await self._record_csat(conv, unit, int(value))
        elif question == "comment":
            self._record_comment(conv, unit, None)
