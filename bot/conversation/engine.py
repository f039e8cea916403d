"""The conversation engine: normalized events in, stored state and outbox actions out.

Every step runs under a per-conversation lock, reads the conversation, decides,
and hands one ``Unit`` to storage (state, messages, events, timers and the actions
to deliver, in one transaction). Delivery happens afterwards, from the outbox, so a
crash never loses a decided action and a restart resumes everything.

The concerns live in their own modules (``customer_turns``, ``agent_actions``,
``saved_replies``, ``surveys``, ``followups``, ``followup_actions``, ``timers``) over the
shared ``core``; this class joins them.
"""

from __future__ import annotations

import time

from bot.conversation.customer_turns import CustomerTurns
from bot.conversation.followup_actions import FollowupDesk
from bot.conversation.model import (
    AgentAction,
    AgentMessage,
    AgentPresence,
    CustomerChoice,
    CustomerLeft,
    CustomerMessage,
    CustomerReturned,
    FollowupAction,
    InboundEvent,
    Outcome,
)
from bot.conversation.saved_replies import SavedReplyActions
from bot.conversation.timers import Timers
from bot.logs import conversation_id as log_conversation
from bot.metrics import event_kind


class ConversationService(CustomerTurns, FollowupDesk, SavedReplyActions, Timers):
    """Applies the SPEC lifecycle to normalized events; the one entry point is ``handle``."""

    async def handle(self, event: InboundEvent) -> Outcome:
        """Process one normalized event; the result tells the handler what to show."""
        started = time.perf_counter()  # a duration, not a time of day: not the app's clock
        try:
            outcome = await self._handle(event)
            await self._route_pending()  # the queue may move: assign, escalate, retell
        finally:
            self.metrics.step(event_kind(event), time.perf_counter() - started)
        return outcome

    async def sweep(self, limit: int = 500) -> int:
        """Fire due timers, then a routing pass (hours reopened, escalations due)."""
        fired = await super().sweep(limit)
        await self._route_pending(force=True)
        return fired

    async def _handle(self, event: InboundEvent) -> Outcome:
        log_conversation.set(None)  # each step names its conversation once it knows it
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
            case FollowupAction():
                return await self._followup_action(event)
            case AgentPresence():
                return await self._presence_change(event)
        raise TypeError(f"not an inbound event: {event!r}")
