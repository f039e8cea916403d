"""The conversation engine: normalized events in, stored state and outbox actions out.

Every step runs under a per-conversation lock, reads the conversation, decides,
and hands one ``Unit`` to storage (state, messages, events, timers and the actions
to deliver, in one transaction). Delivery happens afterwards, from the outbox, so a
crash never loses a decided action and a restart resumes everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Protocol

from bot import payloads as P
from bot.buttons import customer_choice, parse_agent_token, parse_customer_token
from bot.calendar import BusinessCalendar
from bot.clock import Clock, from_ms, to_ms
from bot.config import Settings
from bot.desk_view import thread_header, transcript_line
from bot.intents import Intent, detect_intent, parse_csat, parse_nps
from bot.lifecycle import WITH_AGENTS, check_transition
from bot.locks import KeyedLocks
from bot.model import (
    Address,
    Agent,
    AgentAction,
    AgentActionKind,
    AgentMessage,
    Choice,
    Customer,
    CustomerChoice,
    CustomerLeft,
    CustomerMessage,
    CustomerReturned,
    InboundEvent,
    LeaveReason,
    Outcome,
    State,
)
from bot.store import ConversationRecord, NewMessage, NewOutbox, OutboxItem, Store, Unit
from bot.texts import CSAT_FACES, Texts

log = logging.getLogger(__name__)

NOTE_PREFIXES = ("//", "note:")
KNOWN_COMMANDS = frozenset({"start", "help", "agent", "cancel", "forget"})
TRANSCRIPT_LINES = 30
MAX_REMINDERS = 3
CONSOLE_DESK = "web"  # agents of the web console, authenticated by their key upstream


class KbMatchLike(Protocol):
    @property
    def answered(self) -> bool: ...
    @property
    def score(self) -> float: ...
    @property
    def id(self) -> str | None: ...
    @property
    def topic(self) -> str | None: ...
    def answer(self, language: str) -> str: ...


class Answerer(Protocol):
    """The knowledge base as the engine sees it."""

    def match(self, text: str, language: str | None = None) -> KbMatchLike: ...


class OutboxSink(Protocol):
    def submit(self, items: Sequence[OutboxItem]) -> None: ...


class AgentAuthority(Protocol):
    async def is_agent(self, user_id: str) -> bool: ...


class ConversationService:
    """Applies the SPEC lifecycle to normalized events; the one entry point is ``handle``."""

    def __init__(
        self,
        store: Store,
        kb: Answerer,
        settings: Settings,
        clock: Clock,
        outbox: OutboxSink,
        *,
        desk: str | None,
        authority: AgentAuthority | None = None,
        texts: Texts | None = None,
    ) -> None:
        self.store = store
        self.kb = kb
        self.settings = settings
        self.clock = clock
        self.outbox = outbox
        self.desk = desk
        self.authority = authority
        self.texts = texts or Texts(settings.language, dict(settings.messages.items()))
        self.calendar: BusinessCalendar = settings.calendar()
        self.locks = KeyedLocks()
        self._conv = settings.conversation
        self._observers: list[Callable[[int], None]] = []

    def add_observer(self, observer: Callable[[int], None]) -> None:
        """Call ``observer(conversation_id)`` after each committed step of a conversation
        agents can see (handed off at least once); must not block. Bot-only chats are most
        steps and concern no agent: telling consoles of them would make each re-read.
        Consoles register here, so with an observer alerts are queued even without a desk."""
        self._observers.append(observer)

    # ------------------------------------------------------------------ entry point

    async def handle(self, event: InboundEvent) -> Outcome:
        """Process one normalized event; the result tells the handler what to show."""
        match event:
            case CustomerMessage():
                return await self._customer_message(event)
            case CustomerChoice():
                return await self._customer_choice(event)
            case AgentMessage():
                return await self._agent_message(event)
            case AgentAction():
                return await self._agent_action(event)
            case CustomerLeft():
                return await self._customer_left(event)
            case CustomerReturned():
                return await self._customer_returned(event)
        raise TypeError(f"not an inbound event: {event!r}")

    # ------------------------------------------------------------------ helpers

    def _now(self) -> int:
        return to_ms(self.clock.now())

    def _t(self, lang: str, key: str, **values: object) -> str:
        return self.texts.get(lang, key, **values)

    def _desk_t(self, key: str, **values: object) -> str:
        return self.texts.get(self.settings.language, key, **values)

    async def _commit(self, unit: Unit) -> bool:
        applied = await self.store.apply(unit)
        if applied.outbox:
            self.outbox.submit(applied.outbox)
        conv = unit.conversation
        if applied.applied and conv is not None and conv.handed_off_at is not None:
            for observer in self._observers:
                try:
                    observer(conv.id)
                except Exception:
                    log.exception("conversation observer failed")
        return applied.applied

    def _move(self, conv: ConversationRecord, unit: Unit, target: State, **data: object) -> None:
        check_transition(conv.id, conv.state, target)
        actor = str(data.pop("actor", None) or "bot")
        unit.event("state", actor, source=conv.state.value, target=target.value, **data)
        conv.update(state=target)

    def _say(
        self,
        conv: ConversationRecord | None,
        unit: Unit,
        address: Address,
        text: str,
        choices: Sequence[Sequence[Choice]] = (),
        *,
        author: str = "bot",
        agent_key: str | None = None,
        relayed: str | None = None,
    ) -> None:
        """Queue a message to the customer and store it in the transcript."""
        index = unit.message(NewMessage("out", author, text, agent_key)) if conv else None
        payload: dict[str, object] = {
            "to": P.address_json(address),
            "text": text,
            "choices": P.choices_json(choices),
            "author": author,
        }
        if relayed:
            payload["relayed"] = relayed
        unit.outbox.append(NewOutbox(P.customer_lane(address), P.SEND, payload, index))

    def _desk(self, conv: ConversationRecord, unit: Unit, op: str, **payload: object) -> None:
        """Queue an action on the conversation's thread at the agents' desk."""
        if self.desk is None or conv.desk is None:
            return
        unit.outbox.append(NewOutbox(P.desk_lane(conv.id), op, dict(payload)))

    def _alert(self, conv: ConversationRecord | None, unit: Unit, text: str) -> None:
        """Queue an alert for agents: the desk shows it (in the conversation's thread when
        it has one), and so does the web console, which keeps it until read."""
        if self.desk is None and not self._observers:
            return  # no desk and no console: nobody to tell
        lane = P.desk_lane(conv.id if conv else None)
        in_thread = conv is not None and conv.desk is not None
        unit.outbox.append(NewOutbox(lane, P.ALERT, {"text": text, "in_thread": in_thread}))

    def _business_deadline(self, start_ms: int, delta: timedelta) -> int:
        return to_ms(self.calendar.add_business_time(from_ms(start_ms), delta))

    # ------------------------------------------------------------------ customer messages

    async def _customer_message(self, ev: CustomerMessage) -> Outcome:
        async with self.locks.hold(ev.address.key):
            now = self._now()
            conv = await self.store.load_open(ev.address.key)
            text = ev.text.strip()
            command = ev.command
            if conv is None:
                lang = self.texts.language_of(ev.customer.language)
                stateless = self._stateless_reply(command, text, ev.media is not None, lang)
                if stateless is not None:
                    unit = Unit(now, ev.dedup_key)
                    self._say(None, unit, ev.address, stateless)
                    return Outcome(duplicate=not await self._commit(unit))
                if command == "forget":
                    return await self._forget_without_conversation(ev, now)
                if await self.store.seen(ev.dedup_key):
                    return Outcome(duplicate=True)
                conv = await self.store.open_conversation(ev.customer, ev.address, lang, now)
            elif conv.state == State.SURVEYING and self._leaves_survey(command, text):
                # The customer needs help again: end this survey; the message then opens
                # a new conversation (below, once this lock is released).
                await self._end_survey(conv, now)
                conv = None
            if conv is not None:
                return await self._customer_step(conv, ev, now, text)
        return await self._customer_message(ev)

    async def _customer_step(
        self, conv: ConversationRecord, ev: CustomerMessage, now: int, text: str
    ) -> Outcome:
        """A customer message in an open conversation (the caller holds its lock)."""
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
        if command == "forget":
            self._forget(conv, unit, ev.customer)
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

    def _refresh_header(self, conv: ConversationRecord, unit: Unit) -> None:
        if conv.desk is not None:
            self._desk(
                conv, unit, P.UPDATE_HEADER, header=P.header_json(thread_header(conv, self._desk_t))
            )

    # ------------------------------------------------------------------ resolution and surveys

    def _resolve_by_bot(self, conv: ConversationRecord, unit: Unit) -> None:
        self._say(conv, unit, conv.address, self._t(conv.language, "glad_to_help"))
        self._move(conv, unit, State.RESOLVED, by="bot")
        conv.update(resolved_at=unit.now, resolved_by="bot", awaiting=None)
        self._after_resolution(conv, unit)

    def _resolve_by_agent(
        self, conv: ConversationRecord, unit: Unit, agent: Agent, tag: str | None
    ) -> None:
        self._move(conv, unit, State.RESOLVED, actor=agent.key, by="agent", tag=tag)
        conv.update(resolved_at=unit.now, resolved_by="agent", awaiting=None, pending_since=None,
                    agent_key=conv.agent_key or agent.key,
                    agent_name=conv.agent_name or agent.name)  # fmt: skip
        if tag:
            conv.update(tag=tag)
        self._say(conv, unit, conv.address, self._t(conv.language, "resolved"))
        suffix = f" ({tag})" if tag else ""
        self._desk(conv, unit, P.POST, text=self._desk_t("resolved_by", agent=agent.name or
                   agent.key, tag=suffix), author="system", name="")  # fmt: skip
        self._after_resolution(conv, unit)
        self._refresh_header(conv, unit)
        self._desk(conv, unit, P.CLOSE_THREAD)

    def _after_resolution(self, conv: ConversationRecord, unit: Unit) -> None:
        """Survey the customer, unless surveys are off, in cool-down, or they are gone."""
        survey = self.settings.survey
        cooldown_ms = int(survey.cooldown.total_seconds() * 1000)
        skip = None
        if not survey.enabled:
            skip = "disabled"
        elif not conv.customer_reachable:
            skip = "unreachable"
        elif conv.last_surveyed_at is not None and unit.now - conv.last_surveyed_at < cooldown_ms:
            skip = "cooldown"
        if skip is not None:
            unit.event("survey_skipped", "bot", reason=skip)
            self._close(conv, unit, "resolved")
            return
        self._move(conv, unit, State.SURVEYING)
        conv.update(awaiting="nps")
        unit.clear_timers()
        expiry = unit.now + int(survey.expires_after.total_seconds() * 1000)
        unit.set_timer("survey_expiry", expiry)
        unit.survey_new = {
            "customer_id": conv.customer_id,
            "channel": conv.channel,
            "agent_key": conv.agent_key,
            "topic": conv.tag or conv.topic,
            "sent_at": unit.now,
        }
        unit.customer_surveyed = True
        unit.event("survey_sent", "bot")
        lang = conv.language
        self._say(conv, unit, conv.address, self._t(lang, "nps_question"), self._nps_choices(conv))

    def _nps_choices(self, conv: ConversationRecord) -> list[list[Choice]]:
        buttons = [customer_choice(str(n), conv.id, "nps", str(n)) for n in range(11)]
        return [buttons[:6], buttons[6:]]

    def _csat_choices(self, conv: ConversationRecord) -> list[list[Choice]]:
        return [
            [customer_choice(face, conv.id, "csat", str(n)) for n, face in enumerate(CSAT_FACES, 1)]
        ]

    def _survey_text(self, conv: ConversationRecord, unit: Unit, text: str) -> None:
        lang = conv.language
        if conv.awaiting == "nps":
            score = parse_nps(text)
            if score is None:
                unit.event("survey_reprompt", "bot", question="nps")
                self._say(conv, unit, conv.address, self._t(lang, "nps_reprompt"),
                          self._nps_choices(conv))  # fmt: skip
                return
            self._record_nps(conv, unit, score)
        elif conv.awaiting == "csat":
            rating = parse_csat(text)
            if rating is None:
                unit.event("survey_reprompt", "bot", question="csat")
                self._say(conv, unit, conv.address, self._t(lang, "csat_reprompt"),
                          self._csat_choices(conv))  # fmt: skip
                return
            self._record_csat(conv, unit, rating)
        elif conv.awaiting == "comment":
            self._record_comment(conv, unit, text)

    def _record_nps(self, conv: ConversationRecord, unit: Unit, score: int) -> None:
        unit.survey_update.update(nps=score, nps_at=unit.now)
        unit.event("nps_answered", "customer", score=score)
        conv.update(awaiting="csat")
        if score <= 6:
            agent = f", {conv.agent_name}" if conv.agent_name else ""
            customer = conv.customer_name or conv.customer_key
            text = self._desk_t("detractor_alert", customer=customer, score=score, id=conv.id,
                                agent=agent)  # fmt: skip
            self._alert(conv, unit, text)
            unit.event("detractor_alert", "bot", score=score)
        lang = conv.language
        self._say(conv, unit, conv.address, self._t(lang, "csat_question"),
                  self._csat_choices(conv))  # fmt: skip

    def _record_csat(self, conv: ConversationRecord, unit: Unit, rating: int) -> None:
        unit.survey_update.update(csat=rating, csat_at=unit.now)
        unit.event("csat_answered", "customer", rating=rating)
        conv.update(awaiting="comment")
        skip = customer_choice(self._t(conv.language, "choice_skip"), conv.id, "comment", "skip")
        self._say(conv, unit, conv.address, self._t(conv.language, "comment_question"), [[skip]])

    def _record_comment(self, conv: ConversationRecord, unit: Unit, comment: str | None) -> None:
        unit.survey_update["completed_at"] = unit.now
        if comment:
            unit.survey_update.update(comment=comment, comment_at=unit.now)
            unit.event("comment", "customer")
            customer = conv.customer_name or conv.customer_key
            if conv.desk is not None:
                text = self._desk_t("detractor_comment", customer=customer, id=conv.id,
                                    comment=comment)  # fmt: skip
                self._desk(conv, unit, P.POST, text=text, author="system", name="")
        else:
            unit.event("comment_skipped", "customer")
        self._say(conv, unit, conv.address, self._t(conv.language, "survey_thanks"))
        self._close(conv, unit, "survey_done")

    def _close(self, conv: ConversationRecord, unit: Unit, reason: str) -> None:
        self._move(conv, unit, State.CLOSED, reason=reason)
        conv.update(closed_at=unit.now, close_reason=reason, awaiting=None, pending_since=None)
        unit.clear_timers()

    def _abandon(self, conv: ConversationRecord, unit: Unit, reason: str) -> None:
        self._move(conv, unit, State.ABANDONED, reason=reason)
        conv.update(abandoned_at=unit.now, abandon_reason=reason)
        if conv.customer_reachable:
            key = "cancelled" if reason == "cancelled" else "abandoned"
            self._say(conv, unit, conv.address, self._t(conv.language, key))
        self._alert(conv, unit, self._desk_t("abandoned_desk", id=conv.id, reason=reason))
        self._close(conv, unit, "abandoned")
        self._refresh_header(conv, unit)

    # ------------------------------------------------------------------ customer buttons

    async def _customer_choice(self, ev: CustomerChoice) -> Outcome:
        token = parse_customer_token(ev.token)
        lang = self.texts.language_of(ev.customer.language)
        closed = Outcome(ok=False, notice=self._t(lang, "question_closed"))
        if token is None:
            return closed
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

    # ------------------------------------------------------------------ agents

    async def _authorized(self, agent: Agent) -> bool:
        if agent.desk == CONSOLE_DESK:
            return True  # only the web console builds such agents, after checking their key
        if self.authority is None or agent.desk != self.desk:
            return False
        return await self.authority.is_agent(agent.user_id)

    def _refused(self) -> Outcome:
        return Outcome(ok=False, notice=self._desk_t("agents_only"))

    async def _target(
        self, agent: Agent, conversation_id: int | None, thread: str | None
    ) -> ConversationRecord | None:
        """The conversation an agent means: by id (console), else by its desk thread."""
        if conversation_id is not None:
            return await self.store.load(conversation_id)
        if thread is not None:
            return await self.store.load_by_thread(agent.desk, thread)
        return None

    async def _agent_message(self, ev: AgentMessage) -> Outcome:
        conv = await self._target(ev.agent, ev.conversation_id, ev.thread)
        if conv is None:
            return Outcome(ok=False, notice=self._desk_t("unknown_conversation"))
        if not await self._authorized(ev.agent):
            return self._refused()
        async with self.locks.hold(conv.address.key):
            conv = await self.store.load(conv.id)
            assert conv is not None
            unit = Unit(self._now(), ev.dedup_key, conversation=conv)
            text = ev.text.strip()
            if text.lower().startswith(NOTE_PREFIXES) and ev.media is None:
                self._note(conv, unit, ev.agent, text)
                return Outcome(duplicate=not await self._commit(unit))
            if conv.state == State.QUEUED:
                self._take(conv, unit, ev.agent, announce=False)
            self._relay_to_customer(conv, unit, ev)
            return Outcome(duplicate=not await self._commit(unit))

    def _note(self, conv: ConversationRecord, unit: Unit, agent: Agent, text: str) -> None:
        unit.message(NewMessage("in", "note", text, agent.key))
        unit.event("note", agent.key)
        if agent.desk != conv.desk:
            self._desk(conv, unit, P.POST, text=text, author="note", name=agent.name or agent.key)

    def _relay_to_customer(self, conv: ConversationRecord, unit: Unit, ev: AgentMessage) -> None:
        agent = ev.agent
        if not conv.customer_reachable:
            unit.message(NewMessage("in", "agent", ev.text, agent.key))
            self._desk(conv, unit, P.POST, text=self._desk_t("customer_unreachable"),
                       author="system", name="")  # fmt: skip
            return
        unit.event("agent_message", agent.key)
        relayed = ev.message_ref if ev.message_ref and conv.desk else None
        if ev.media is not None:
            index = unit.message(NewMessage("out", "agent", ev.text, agent.key,
                                            P.media_json(ev.media)))  # fmt: skip
            payload: dict[str, object] = {
                "to": P.address_json(conv.address),
                "media": P.media_json(ev.media),
                "caption": ev.text,
                "author": "agent",
            }
            if relayed:
                payload["relayed"] = relayed
            lane = P.customer_lane(conv.address)
            unit.outbox.append(NewOutbox(lane, P.SEND_MEDIA, payload, index))
        else:
            self._say(conv, unit, conv.address, ev.text, author="agent", agent_key=agent.key,
                      relayed=relayed)  # fmt: skip
            if agent.desk != conv.desk:  # a console reply: desk agents see it in the thread
                self._desk(conv, unit, P.POST, text=ev.text, author="agent",
                           name=agent.name or agent.key)  # fmt: skip
        if conv.pending_since is not None:
            conv.update(pending_since=None)
            unit.clear_timer("abandon")

    def _take(self, conv: ConversationRecord, unit: Unit, agent: Agent, *, announce: bool) -> None:
        self._move(conv, unit, State.ASSIGNED, actor=agent.key)
        conv.update(agent_key=agent.key, agent_name=agent.name or agent.key)
        unit.clear_timer("remind")
        if announce:
            name = agent.name or agent.key
            self._say(conv, unit, conv.address, self._t(conv.language, "agent_joined", agent=name))
        self._desk(conv, unit, P.POST, text=self._desk_t("taken_by", agent=agent.name or
                   agent.key), author="system", name="")  # fmt: skip
        self._refresh_header(conv, unit)

    async def _agent_action(self, ev: AgentAction) -> Outcome:
        kind = ev.kind
        conversation_id = ev.conversation_id
        if ev.token is not None:
            token = parse_agent_token(ev.token)
            if token is None:
                return Outcome(ok=False, notice=self._desk_t("unknown_conversation"))
            kind, conversation_id = token.action, token.conversation_id
        conv = await self._target(ev.agent, conversation_id, ev.thread)
        if conv is None or kind is None:
            return Outcome(ok=False, notice=self._desk_t("unknown_conversation"))
        if not await self._authorized(ev.agent):
            return self._refused()
        if ev.target is not None and not (ev.target.user_id and await self._authorized(ev.target)):
            return Outcome(ok=False, notice=self._desk_t("not_an_agent", target=ev.target.name))
        async with self.locks.hold(conv.address.key):
            conv = await self.store.load(conv.id)
            assert conv is not None
            unit = Unit(self._now(), ev.dedup_key, conversation=conv)
            outcome = self._agent_step(conv, unit, ev, kind)
            if not await self._commit(unit):
                return Outcome(duplicate=True)
            return outcome

    def _agent_step(
        self, conv: ConversationRecord, unit: Unit, ev: AgentAction, kind: AgentActionKind
    ) -> Outcome:
        agent = ev.agent
        name = agent.name or agent.key
        if kind == AgentActionKind.NOTE:
            self._note(conv, unit, agent, ev.text or "")
            return Outcome(ok=True, notice=self._desk_t("note_saved"))
        if conv.state not in WITH_AGENTS:
            return Outcome(ok=False, notice=self._desk_t("not_open"))
        if kind == AgentActionKind.TAKE:
            if conv.state == State.ASSIGNED:
                if conv.agent_key == agent.key:
                    return Outcome(ok=True, notice=self._desk_t("taken_by", agent=name))
                holder = conv.agent_name or conv.agent_key
                return Outcome(ok=False, notice=self._desk_t("already_taken", agent=holder))
            self._take(conv, unit, agent, announce=True)
            return Outcome(ok=True, chosen=self._desk_t("status_taken", agent=name))
        if kind == AgentActionKind.RESOLVE:
            self._resolve_by_agent(conv, unit, agent, (ev.tag or "").strip() or None)
            return Outcome(ok=True, chosen=self._desk_t("status_resolved"))
        # transfer
        target = ev.target
        if target is not None:
            self._move(conv, unit, State.ASSIGNED, actor=agent.key, target_agent=target.key)
            conv.update(agent_key=target.key, agent_name=target.name or target.key)
            text = self._desk_t("transferred_to", agent=name, target=target.name or target.key)
        elif conv.state == State.QUEUED:
            return Outcome(ok=False, notice=self._desk_t("already_in_queue"))
        else:
            self._move(conv, unit, State.QUEUED, actor=agent.key, reason="transfer")
            conv.update(agent_key=None, agent_name=None)
            unit.set_timer("remind", self._business_deadline(unit.now, self._conv.remind_after))
            text = self._desk_t("transferred", agent=name)
        self._desk(conv, unit, P.POST, text=text, author="system", name="")
        self._refresh_header(conv, unit)
        return Outcome(ok=True, notice=text)

    # ------------------------------------------------------------------ customers leaving

    async def _customer_left(self, ev: CustomerLeft) -> Outcome:
        customer = ev.customer
        record = await self.store.customer_record(customer.key)
        if record is None:
            return Outcome()
        customer_id, reachable = record
        now = self._now()
        handled = False
        for conv in await self.store.open_for_customer(customer.key):
            async with self.locks.hold(conv.address.key):
                fresh = await self.store.load(conv.id)
                if fresh is None or fresh.state == State.CLOSED:
                    continue
                unit = Unit(now, None if handled else ev.dedup_key, conversation=fresh)
                if not handled and reachable:
                    unit.customer_reachable = (False, ev.reason.value)
                fresh.customer_reachable = False
                if ev.reason == LeaveReason.FORGET:
                    unit.customer_forget = True
                self._leave(fresh, unit, ev.reason.value)
                if not await self._commit(unit) and not handled:
                    return Outcome(duplicate=True)
                handled = True
        if not handled:
            unit = Unit(now, ev.dedup_key, customer_id=customer_id)
            if reachable:
                unit.customer_reachable = (False, ev.reason.value)
            unit.customer_forget = ev.reason == LeaveReason.FORGET
            unit.event("customer_left", "customer", reason=ev.reason.value)
            return Outcome(duplicate=not await self._commit(unit))
        return Outcome()

    def _leave(self, conv: ConversationRecord, unit: Unit, reason: str) -> None:
        unit.event("customer_left", "customer", reason=reason)
        if conv.desk is not None:
            self._desk(conv, unit, P.POST, text=self._desk_t("customer_left", reason=reason),
                       author="system", name="")  # fmt: skip
        waiting = conv.state == State.QUEUED or (
            conv.state == State.ASSIGNED and conv.pending_since is not None
        )
        if waiting:
            self._abandon(conv, unit, reason)
        elif conv.state == State.SURVEYING:
            unit.survey_update["expired_at"] = unit.now
            self._close(conv, unit, "customer_left")
        elif conv.state == State.ASSIGNED:
            self._close(conv, unit, "customer_left")
            self._refresh_header(conv, unit)
            self._desk(conv, unit, P.CLOSE_THREAD)
        else:
            self._close(conv, unit, "customer_left")

    def _forget(self, conv: ConversationRecord, unit: Unit, customer: Customer) -> None:
        self._say(conv, unit, conv.address, self._t(conv.language, "forgotten"))
        unit.customer_reachable = (False, LeaveReason.FORGET.value)
        unit.customer_forget = True
        conv.customer_reachable = False
        self._leave(conv, unit, LeaveReason.FORGET.value)

    async def _forget_without_conversation(self, ev: CustomerMessage, now: int) -> Outcome:
        lang = self.texts.language_of(ev.customer.language)
        record = await self.store.customer_record(ev.customer.key)
        unit = Unit(now, ev.dedup_key, customer_id=record[0] if record else None)
        if record is not None:
            if record[1]:
                unit.customer_reachable = (False, LeaveReason.FORGET.value)
            unit.customer_forget = True
            unit.event("customer_left", "customer", reason=LeaveReason.FORGET.value)
        self._say(None, unit, ev.address, self._t(lang, "forgotten"))
        return Outcome(duplicate=not await self._commit(unit))

    async def _customer_returned(self, ev: CustomerReturned) -> Outcome:
        record = await self.store.customer_record(ev.customer.key)
        if record is None or record[1]:
            return Outcome()
        unit = Unit(self._now(), ev.dedup_key, customer_id=record[0])
        unit.customer_reachable = (True, "returned")
        unit.event("customer_returned", "customer")
        return Outcome(duplicate=not await self._commit(unit))

    # ------------------------------------------------------------------ timers

    async def sweep(self, limit: int = 500) -> int:
        """Fire every due timer (abandonment, reminders, survey expiry, idle close)."""
        now = self._now()
        fired = 0
        for timer in await self.store.due_timers(now, limit):
            conv = await self.store.load(timer.conversation_id)
            if conv is None:
                continue
            async with self.locks.hold(conv.address.key):
                fresh = await self.store.load(conv.id)
                if fresh is None:
                    continue
                unit = Unit(now, conversation=fresh)
                unit.clear_timer(timer.kind)
                self._fire(fresh, unit, timer.kind)
                await self._commit(unit)
                fired += 1
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
