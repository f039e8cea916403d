"""Customers leaving: blocking the bot, leaving the channel, asking to be forgotten.

``/forget`` asks for a confirmation button first; once confirmed, storage erases the
customer's personal data in the same step (``storage/privacy.py``).
"""

from __future__ import annotations

from bot.conversation import payloads as P
from bot.conversation.bot_answers import BotAnswers
from bot.conversation.buttons import customer_choice
from bot.conversation.model import (
    Choice,
    Customer,
    CustomerChoice,
    CustomerLeft,
    CustomerMessage,
    CustomerReturned,
    LeaveReason,
    Outcome,
    State,
)
from bot.conversation.store import ConversationRecord, NewMessage, Unit
from bot.logs import conversation_id as log_conversation


class Leaving(BotAnswers):
    """A customer leaves (blocks, leaves the channel, /forget) or comes back."""

    async def _customer_left(self, ev: CustomerLeft) -> Outcome:
        customer = ev.customer
        record = await self.store.customer_record(customer.key)
        if record is None:
            return Outcome()
        customer_id, reachable = record
        now = self._now()
        handled = False
        for conv in await self.store.open_for_customer(customer.key):
            async with self.locks.hold(conv.address.key, load_id=conv.id):
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
        """Confirmed: leave, and erase everything stored (storage erases it in this step)."""
        self._say(conv, unit, conv.address, self._t(conv.language, "forgotten"))
        if conv.customer_reachable:
            unit.customer_reachable = (False, LeaveReason.FORGET.value)
        unit.customer_forget = True
        conv.customer_reachable = False
        conv.customer_name = self._desk_t("erased_customer")  # for headers sent in this step
        self._leave(conv, unit, LeaveReason.FORGET.value)

    def _forget_choices(self, conversation_id: int, lang: str) -> list[list[Choice]]:
        """Erasing is final: the customer confirms with a button (0: no conversation open)."""
        yes = self._t(lang, "choice_forget_yes")
        no = self._t(lang, "choice_forget_no")
        return [[customer_choice(yes, conversation_id, "forget", "yes"),
                 customer_choice(no, conversation_id, "forget", "no")]]  # fmt: skip

    async def _forget_answer(self, ev: CustomerChoice, erase: bool) -> Outcome:
        """The answer to /forget's question, whichever conversation (if any) is open now."""
        async with self.locks.hold(ev.address.key, load_open=True):
            now = self._now()
            conv = await self.store.load_open(ev.address.key)
            if conv is not None and conv.customer_key != ev.customer.key:
                conv = None
            lang = conv.language if conv else self.texts.language_of(ev.customer.language)
            label = self._t(lang, "choice_forget_yes" if erase else "choice_forget_no")
            if conv is None:
                if erase:
                    outcome = await self._forget_without_conversation(ev, now)
                    return Outcome(ok=True, chosen=label, duplicate=outcome.duplicate)
                unit = Unit(now, ev.dedup_key)
                self._say(None, unit, ev.address, self._t(lang, "forget_cancelled"))
                return Outcome(ok=True, chosen=label, duplicate=not await self._commit(unit))
            log_conversation.set(conv.id)
            unit = Unit(now, ev.dedup_key, conversation=conv)
            unit.message(NewMessage("in", "customer", f"[{label}]"))
            unit.event("choice", "customer", question="forget", value="yes" if erase else "no")
            if erase:
                self._forget(conv, unit, ev.customer)
            else:
                self._say(conv, unit, conv.address, self._t(lang, "forget_cancelled"))
            if not await self._commit(unit):
                return Outcome(duplicate=True)
            return Outcome(ok=True, chosen=label)

    async def _privacy_notice(self, customer_key: str, lang: str) -> str | None:
        """The configured privacy notice, for a customer never seen before."""
        notices = {str(k): v for k, v in self.settings.privacy.notice.items() if v.strip()}
        if not notices:
            return None
        if await self.store.customer_record(customer_key) is not None:
            return None
        return (
            notices.get(lang) or notices.get(self.settings.language) or next(iter(notices.values()))
        )

    async def _forget_without_conversation(
        self, ev: CustomerMessage | CustomerChoice, now: int
    ) -> Outcome:
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
