"""Updates in: Slack events, button presses and /support-kpi → our events →
``on_event`` → the Outcome shown back (message edited, ephemeral notice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse

from bot.conversation.model import (
    AgentAction,
    AgentMessage,
    AgentPresence,
    FollowupAction,
    InboundEvent,
    Outcome,
)
from bot.errors import DeliveryError, TransientDeliveryError
from handlers.slack import render, translate
from handlers.slack.api import SlackApi

log = logging.getLogger(__name__)

_ANY = re.compile(r".*")
_OUR_BUTTONS = re.compile(r"^sb_")
# What reading a payload with a missing or mistyped field raises (Slack never sends one).
MALFORMED = (AttributeError, KeyError, IndexError, TypeError, ValueError)


def reject_malformed(error: Exception, body: Mapping[str, Any] | None) -> None:
    kind = body.get("type") if isinstance(body, Mapping) else None
    log.warning(
        "slack: %s request rejected: malformed payload (%s: %s)",
        kind if isinstance(kind, str) else "a",
        type(error).__name__,
        error,
    )


class SlackInbound(SlackApi):
    """Bolt listeners: each acks, translates once and calls ``on_event``."""

    def _listen(self) -> None:
        self.app.event(_ANY)(self._on_slack_event)
        self.app.action(_OUR_BUTTONS)(self._on_block_action)
        self.app.command(self.settings.kpi_command)(self._on_kpi_command)
        self.app.error(self._on_bolt_side_error)

    @contextlib.asynccontextmanager
    async def _listening(self, body: Mapping[str, Any]) -> AsyncIterator[None]:
        """Run a listener's work after its ack: tracked (``stop`` lets it finish), counted,
        and its failure handed to the central error handler.

        A listener must not raise after ``ack()``: Bolt would replace the ack with its error
        response (Slack then sees a failure, or a 404), so the error is reported from here.
        """
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            yield
        except Exception as exc:
            await self._on_bolt_error(exc, dict(body))
        finally:
            if task is not None:
                self._inflight.discard(task)
            self.handled += 1
            async with self._condition():
                self._condition().notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._handled_changed is None:
            self._handled_changed = asyncio.Condition()
        return self._handled_changed

    async def wait_handled(self, count: int, within: float = 5.0) -> None:
        """Wait until ``count`` listener runs have finished (for tests and benchmarks)."""
        cond = self._condition()
        async with asyncio.timeout(within), cond:
            await cond.wait_for(lambda: self.handled >= count)

    # ------------------------------------------------------------------ inbound: events

    async def _on_slack_event(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """Every Events API event (Bolt has already acked it)."""
        async with self._listening(body):
            inbound = await self._read(body, self._translate_event(body, event))
            if inbound is None:
                return
            outcome = await self._on_event(inbound)
            if (
                isinstance(inbound, AgentMessage | AgentAction | AgentPresence | FollowupAction)
                and outcome.notice
            ):
                if isinstance(inbound, AgentMessage) and outcome.ok:
                    return  # a relayed message needs no notice
                thread = translate.thread_of(event)
                await self._ephemeral(str(event["channel"]), inbound.agent.user_id,
                                      outcome.notice, thread)  # fmt: skip

    async def _read(
        self, body: Mapping[str, Any], translating: Awaitable[InboundEvent | None]
    ) -> InboundEvent | None:
        """Our event for a payload, or None (and a warning) when a field is missing or
        mistyped: Slack never sends such a body, so it is refused rather than a crash."""
        try:
            return await translating
        except MALFORMED as exc:
            reject_malformed(exc, body)
            return None

    async def _translate_event(
        self, body: Mapping[str, Any], event: Mapping[str, Any]
    ) -> InboundEvent | None:
        dedup_key = f"slack:{body.get('event_id')}"
        kind = event.get("type")
        if kind == "message":
            return await self._translate_message(event, dedup_key)
        if kind in ("member_left_channel", "member_joined_channel"):
            return await self._translate_membership(event, dedup_key)
        log.debug("slack: %s event ignored", kind)
        return None

    async def _translate_message(
        self, event: Mapping[str, Any], dedup_key: str
    ) -> InboundEvent | None:
        ident = await self.identity()
        if not translate.is_person_message(event, ident.user_id):
            return None
        channel = str(event.get("channel", ""))
        user = str(event["user"])
        hint = event.get("user_team") or event.get("team")
        thread = translate.thread_of(event)
        parent = event.get("parent_user_id")
        if channel == self.settings.agents_channel:
            text = str(event.get("text") or "")
            if translate.is_presence_command(text):  # anywhere in the channel
                return translate.presence_command(text, await self.person(user, hint), dedup_key)
            person = await self.person(user, hint) if translate.is_followup(event) else None
            if person is not None:
                return translate.followup_command(event, person, dedup_key)
            if thread is None or (parent and parent != ident.user_id):
                return None  # agents talking among themselves, not in a conversation thread
            return translate.agent_message(event, await self.person(user, hint), dedup_key)
        if translate.is_dm(event):
            person = await self.person(user, hint)
            return translate.customer_message(event, person, dedup_key, shared_channel=False)
        if channel in self.settings.support_channels:
            if thread is not None and parent and parent != user:
                return None  # a reply in someone else's conversation
            person = await self.person(user, hint)
            if await self._is_staff(person):
                return None
            return translate.customer_message(event, person, dedup_key, shared_channel=True)
        return None

    async def _translate_membership(
        self, event: Mapping[str, Any], dedup_key: str
    ) -> InboundEvent | None:
        channel = str(event.get("channel", ""))
        user = str(event.get("user", ""))
        if channel not in self.settings.support_channels or not user:
            return None
        if user == (await self.identity()).user_id:
            return None
        person = await self.person(user, event.get("team"))
        if await self._is_staff(person):
            return None
        return translate.membership(event, person, dedup_key)

    # ------------------------------------------------------------------ inbound: buttons

    async def _on_block_action(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        """A button of ours was pressed: ack at once, then translate and show the Outcome."""
        await ack()
        async with self._listening(body):
            inbound = await self._read(body, self._translate_action(body, action))
            if inbound is None:
                return
            outcome = await self._on_event(inbound)
            await self._show_outcome(body, inbound, outcome, respond)

    async def _translate_action(
        self, body: Mapping[str, Any], action: Mapping[str, Any]
    ) -> InboundEvent | None:
        channel = translate.action_channel(body)
        user = body.get("user") or {}
        person = await self.person(str(user.get("id", "")), user.get("team_id"))
        if channel == self.settings.agents_channel:
            return translate.agent_action(body, action, person)
        if channel.startswith("D"):
            return translate.customer_choice(body, action, person, shared_channel=False)
        if channel in self.settings.support_channels:
            return translate.customer_choice(body, action, person, shared_channel=True)
        log.debug("slack: button pressed in unknown channel %s ignored", channel)
        return None

    async def _show_outcome(
        self,
        body: Mapping[str, Any],
        inbound: InboundEvent,
        outcome: Outcome,
        respond: AsyncRespond | None = None,
    ) -> None:
        """Edit the answered question (buttons → the choice), or tell the presser why not.

        A header button's message is re-rendered by the engine (``update_header``), so it
        is not edited here.
        """
        if outcome.duplicate:
            return
        channel = translate.action_channel(body)
        user = str(translate.part(body, "user").get("id", ""))
        thread = translate.action_thread(body)
        is_header = isinstance(inbound, AgentAction) and thread is None
        if outcome.ok and outcome.chosen and not is_header:
            message = translate.part(body, "message")
            chosen = outcome.chosen
            blocks = render.chosen_blocks(message.get("blocks") or [], chosen)
            try:
                await self._api(
                    lambda: self.client.chat_update(
                        channel=channel,
                        ts=translate.action_message_ts(body),
                        text=message.get("text") or render.fallback(chosen),
                        blocks=blocks,
                    ),
                    what="chat.update",
                )
            except DeliveryError as exc:
                log.warning("slack: could not show the choice made (%s)", exc)
        elif outcome.notice:
            shown = await self._ephemeral(channel, user, outcome.notice, thread)
            if not shown and respond is not None:  # not a member: the response_url still works
                try:
                    await respond(
                        text=render.escape(outcome.notice),
                        response_type="ephemeral",
                        replace_original=False,
                    )
                except Exception as exc:
                    log.warning("slack: could not show a notice to %s (%s)", user, exc)

    async def _ephemeral(self, channel: str, user: str, text: str, thread: str | None) -> bool:
        """A note only ``user`` sees (refusals, confirmations)."""
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": render.escape(text)}
        if thread:
            kwargs["thread_ts"] = thread
        try:
            await self._api(lambda: self.client.chat_postEphemeral(**kwargs), what="ephemeral")
        except DeliveryError as exc:
            log.warning("slack: could not show a notice to %s (%s)", user, exc)
            return False
        return True

    # ------------------------------------------------------------------ inbound: /support-kpi

    async def _on_kpi_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        """Answer the KPI command with the summary, visible only to the person who asked."""
        async with self._listening(command):
            refusal = await self._kpi_refusal(command)
            if refusal is not None:
                await ack(text=render.escape(refusal), response_type="ephemeral")
                return
            assert self._kpi_summary is not None
            task = asyncio.ensure_future(self._kpi_summary())
            done, _ = await asyncio.wait({task}, timeout=self._ack_budget)
            slow = task not in done
            if slow:  # Slack wants an answer within 3 s: say so, then follow up
                working = render.label(self.language, "working")
                await ack(text=render.escape(working), response_type="ephemeral")
            failure: Exception | None = None
            try:
                text = await task
            except Exception as exc:
                text, failure = render.label(self.language, "unavailable"), exc
            if slow:
                await respond(text=render.escape(text), response_type="ephemeral",
                              replace_original=True)  # fmt: skip
            else:
                await ack(text=render.escape(text), response_type="ephemeral")
            if failure is not None:
                raise failure

    async def _kpi_refusal(self, command: Mapping[str, Any]) -> str | None:
        """Why this person may not see the KPIs (None: they may): the business's people only."""
        if self._kpi_summary is None:
            return render.label(self.language, "unavailable")
        person = await self.person(str(command.get("user_id", "")), command.get("team_id"))
        if not await self._is_staff(person):
            return self._texts.get(self.language, "agents_only")
        return None

    async def _on_bolt_side_error(
        self, error: Exception, body: dict[str, Any]
    ) -> BoltResponse | None:
        """What Bolt itself hits while matching a request (our listeners report their own
        failures through ``_listening``): a malformed payload is refused with a 400."""
        if isinstance(error, MALFORMED):
            reject_malformed(error, body)
            return BoltResponse(status=400, body="")
        if isinstance(error, TransientDeliveryError):  # auth.test while Slack is down
            log.warning("slack: request not handled yet (%s); Slack will send it again", error)
            return BoltResponse(status=503, body="")
        await self._on_bolt_error(error, body)
        return None

    async def _on_bolt_error(self, error: Exception, body: dict[str, Any]) -> None:
        """The one place where a failed Slack listener ends up: logged with its traceback."""
        self.errors.append(error)
        event = body.get("event") or {}
        log.error(
            "slack: error while handling %s %s",
            body.get("type") or "request",
            body.get("event_id") or event.get("type") or body.get("command") or "",
            exc_info=error,
        )
