"""The bot's answering step: intents first, then the knowledge base answers, asks
"did you mean …?" between close candidates, or declines.

Each question the knowledge base handles is recorded by reference (``Unit.kb_question``):
what it answered, offered or declined, and later what the customer made of it (a pick,
"something else", "did not help"). Those records are the knowledge author's to-do list
(``supportbot kb gaps``) and labelled phrasings (``supportbot kb picks``).

The conversation speaks the customer's language: when a message clearly tells its
language and it differs from the conversation's, the conversation switches (the
platform's locale, set at the start, only breaks ties).
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.conversation.buttons import customer_choice
from bot.conversation.core import KbEntryLike
from bot.conversation.handoff import Handoff
from bot.conversation.intents import Intent, detect_intent
from bot.conversation.model import Choice, CustomerMessage, Outcome, State
from bot.conversation.store import ConversationRecord, KbQuestion, KbVerdict, NewMessage, Unit

AWAITING_HELP = "help"
AWAITING_PICK = "pick"
PICK = "pick"  # the button question of "did you mean …?"
OTHER = "x"  # the pick value of "something else" (no entry id is that)
LABEL_CHARS = 64  # Slack caps button labels at 75 characters
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


def pick_stamp(at: int) -> str:
    """The moment a "did you mean" was asked, in base 36: pick buttons carry it, so a
    button of an earlier question is refused instead of choosing from the latest list."""
    out = ""
    while True:
        at, digit = divmod(at, 36)
        out = _DIGITS[digit] + out
        if not at:
            return out


def entry_label(entry: KbEntryLike, language: str) -> str:
    """A candidate as the customer sees it: its first example question in ``language``."""
    questions = entry.questions.get(language) or next(
        (q for q in entry.questions.values() if q), ()
    )
    label = questions[0] if questions else entry.topic
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1].rstrip() + "…"


def _inbound(unit: Unit) -> int:
    """Index of the customer's message in this step."""
    return next(i for i, m in enumerate(unit.messages) if m.direction == "in")


class BotAnswers(Handoff):
    """A customer's message while the bot is in charge, and the buttons of its answers."""

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
        if conv.awaiting == AWAITING_HELP and intent in (Intent.YES, Intent.THANKS):
            self._resolve_by_bot(conv, unit)
            return
        if conv.awaiting == AWAITING_HELP and intent == Intent.NO:
            await self._not_helped(conv, unit)
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
        await self._kb_turn(conv, unit, text)

    async def _kb_turn(self, conv: ConversationRecord, unit: Unit, text: str) -> None:
        match = self.kb.match(text, conv.language)
        self._follow_language(conv, unit, match.language)
        lang, message = conv.language, _inbound(unit)
        if match.answered and match.entry is not None:
            unit.kb_question = KbQuestion(message, lang, "answered", match.entry.id,
                                           score=match.score)  # fmt: skip
            self._answer(conv, unit, match.entry, score=match.score)
            return
        candidates = [c.entry for c in match.candidates]
        if match.ambiguous and len(candidates) >= 2:
            ids = tuple(e.id for e in candidates)
            unit.kb_question = KbQuestion(message, lang, "ambiguous", candidates=ids,
                                           score=match.score)  # fmt: skip
            unit.event("bot_ambiguous", "bot", candidates=list(ids), score=round(match.score, 3))
            self._ask_which(conv, unit, candidates)
            return
        unit.kb_question = KbQuestion(message, lang, "missed", score=match.score)
        await self._missed(conv, unit, score=match.score)

    def _follow_language(self, conv: ConversationRecord, unit: Unit, detected: str | None) -> None:
        """Switch to the message's own language when it tells one the bot speaks."""
        if detected is None or detected == conv.language:
            return
        if self.texts.language_of(detected) != detected:
            return  # a language without texts: keep the conversation's
        unit.event("language", "bot", source=conv.language, target=detected)
        conv.update(language=detected)

    def _answer(
        self,
        conv: ConversationRecord,
        unit: Unit,
        entry: KbEntryLike,
        *,
        score: float | None = None,
        via: str | None = None,
    ) -> None:
        lang = conv.language
        conv.update(misses=0, topic=entry.topic, kb_entry=entry.id, awaiting=AWAITING_HELP,
                    touchpoint=entry.touchpoint or entry.topic, stage=entry.stage)  # fmt: skip
        data: dict[str, object] = {"entry": entry.id, "topic": entry.topic}
        if score is not None:
            data["score"] = round(score, 3)
        if via is not None:
            data["via"] = via
        unit.event("bot_answered", "bot", **data)
        body = f"{entry.answer(lang)}\n\n{self._t(lang, 'did_it_help')}"
        self._say(conv, unit, conv.address, body, self._help_choices(conv))

    async def _missed(
        self, conv: ConversationRecord, unit: Unit, *, score: float | None, via: str | None = None
    ) -> None:
        lang = conv.language
        misses = conv.misses + 1
        data: dict[str, object] = {"misses": misses}
        if score is not None:
            data["score"] = round(score, 3)
        if via is not None:
            data["via"] = via
        unit.event("bot_missed", "bot", **data)
        if misses >= self._conv.misses_before_handoff:
            conv.update(misses=misses)
            await self._handoff(conv, unit, "not_understood")
            return
        conv.update(misses=misses, awaiting=None)
        agent_button = customer_choice(self._t(lang, "choice_agent"), conv.id, "help", "agent")
        self._say(conv, unit, conv.address, self._t(lang, "not_sure"), [[agent_button]])

    def _ask_which(
        self, conv: ConversationRecord, unit: Unit, candidates: Sequence[KbEntryLike]
    ) -> None:
        """ "Did you mean …?": a button per candidate, "something else", "talk to a person"."""
        lang = conv.language
        stamp = pick_stamp(unit.now)
        labels = [entry_label(entry, lang) for entry in candidates]
        rows: list[list[Choice]] = [
            [customer_choice(label, conv.id, PICK, f"{stamp}.{number}")]
            for number, label in enumerate(labels, start=1)
        ]
        rows.append(
            [
                customer_choice(self._t(lang, "choice_other"), conv.id, PICK, f"{stamp}.{OTHER}"),
                customer_choice(self._t(lang, "choice_agent"), conv.id, "help", "agent"),
            ]
        )
        conv.update(awaiting=AWAITING_PICK)
        options = "\n".join(f"• {label}" for label in labels)
        self._say(conv, unit, conv.address, self._t(lang, "did_you_mean", options=options), rows)

    def _help_choices(self, conv: ConversationRecord) -> list[list[Choice]]:
        lang = conv.language
        return [
            [
                customer_choice(self._t(lang, "choice_yes"), conv.id, "help", "yes"),
                customer_choice(self._t(lang, "choice_no"), conv.id, "help", "no"),
            ],
            [customer_choice(self._t(lang, "choice_agent"), conv.id, "help", "agent")],
        ]

    async def _not_helped(self, conv: ConversationRecord, unit: Unit) -> None:
        """ "No, that did not help": the answer goes on the to-do list, a person takes over."""
        asked = await self.store.kb_question(conv.id)
        if asked is not None and asked.outcome in ("answered", "picked"):
            unit.kb_verdict = KbVerdict(asked.id, helped=False)
        await self._handoff(conv, unit, "not_helpful")

    async def _pick_choice(
        self, conv: ConversationRecord, dedup_key: str | None, value: str
    ) -> Outcome:
        """A "did you mean" button: a candidate (answered as if sure) or "something else"
        (a miss). Buttons of an earlier question, or once answered, are refused."""
        closed = Outcome(ok=False, notice=self._t(conv.language, "question_closed"))
        if conv.state != State.BOT or conv.awaiting != AWAITING_PICK:
            return closed
        asked = await self.store.kb_question(conv.id)
        stamp, _, choice = value.partition(".")
        if asked is None or asked.outcome != "ambiguous" or pick_stamp(asked.at) != stamp:
            return closed
        entry = None
        if choice != OTHER:
            number = int(choice) if choice.isdigit() else 0
            if not 1 <= number <= len(asked.candidates):
                return closed
            entry = self.kb.get(asked.candidates[number - 1])
            if entry is None:  # the knowledge base changed since the question
                return closed
        lang = conv.language
        label = self._t(lang, "choice_other") if entry is None else entry_label(entry, lang)
        unit = Unit(self._now(), dedup_key, conversation=conv)
        unit.message(NewMessage("in", "customer", f"[{label}]"))
        unit.event("choice", "customer", question=PICK, value=value)
        conv.update(last_customer_at=unit.now)
        unit.set_timer("idle", unit.now + int(self._conv.close_idle_after.total_seconds() * 1000))
        if entry is None:
            unit.kb_verdict = KbVerdict(asked.id, outcome="other")
            await self._missed(conv, unit, score=None, via="other")
        else:
            unit.kb_verdict = KbVerdict(asked.id, outcome="picked", entry=entry.id)
            unit.event("kb_pick", "customer", message=asked.message_id, entry=entry.id,
                       candidates=list(asked.candidates))  # fmt: skip
            self._answer(conv, unit, entry, via="pick")
        if not await self._commit(unit):
            return Outcome(duplicate=True)
        return Outcome(ok=True, chosen=label)
