"""What agents do with a follow-up: take it, mark the customer contacted, close it as
resolved or unreachable, and write the outcome note.

The same steps come from three places: the buttons under the detractor alert (agent
tokens ``a<id>:fu_<step>``, so the desks need nothing new to route them), the desk
command ``/followup ID STEP [note]`` (``!followup`` on Slack), and the console.
Only agents may act, as for conversations.
"""

from __future__ import annotations

from bot.conversation import payloads as P
from bot.conversation.agent_actions import AgentActions
from bot.conversation.buttons import parse_agent_token
from bot.conversation.followup_types import FollowupChange, FollowupRecord, FollowupStatus
from bot.conversation.model import Agent, AgentAction, AgentActionKind, FollowupAction, Outcome
from bot.conversation.store import ConversationRecord, Unit
from bot.logs import conversation_id as log_conversation

STEPS = ("take", "contacted", "resolved", "unreachable", "note")
BUTTON_STEPS = {
    AgentActionKind.FOLLOWUP_TAKE: "take",
    AgentActionKind.FOLLOWUP_CONTACTED: "contacted",
    AgentActionKind.FOLLOWUP_RESOLVED: "resolved",
    AgentActionKind.FOLLOWUP_UNREACHABLE: "unreachable",
}
COMMAND_PREFIX = {"telegram": "/followup", "slack": "!followup"}
NOTE_LIMIT = 2000


class FollowupDesk(AgentActions):
    """Agents' follow-up steps, after the same authority check as conversation actions."""

    async def _agent_action(self, ev: AgentAction) -> Outcome:
        """A follow-up button is an agent button whose action is a follow-up step."""
        token = parse_agent_token(ev.token) if ev.token is not None else None
        if token is not None and token.action in BUTTON_STEPS:
            step = BUTTON_STEPS[token.action]
            event = FollowupAction(ev.agent, token.conversation_id, step, ev.dedup_key)
            return await self._followup_action(event)
        return await super()._agent_action(ev)

    def _command(self, agent: Agent) -> str:
        return COMMAND_PREFIX.get(agent.desk, "/followup")

    def _usage(self, agent: Agent) -> Outcome:
        return Outcome(
            ok=False, notice=self._desk_t("followup_usage", command=self._command(agent))
        )

    async def _followup_action(self, ev: FollowupAction) -> Outcome:
        if not await self._authorized(ev.agent):
            return self._refused()
        step = ev.step.strip().lower()
        if step not in STEPS:
            return self._usage(ev.agent)
        unknown = Outcome(ok=False, notice=self._desk_t("followup_unknown", id=ev.followup_id))
        conv = await self.store.load(ev.followup_id)
        if conv is None:
            return unknown
        async with self.locks.hold(conv.address.key):
            record = await self.store.followups.get(ev.followup_id)
            fresh = await self.store.load(ev.followup_id)
            if record is None or fresh is None:
                return unknown
            log_conversation.set(fresh.id)
            unit = Unit(self._now(), ev.dedup_key, conversation=fresh)
            note = (ev.note or "").strip()[:NOTE_LIMIT] or None
            outcome = self._followup_step(fresh, record, unit, ev.agent, step, note)
            if not outcome.ok:
                return outcome
            if not await self._commit(unit):
                return Outcome(duplicate=True)
            return outcome

    def _followup_step(
        self,
        conv: ConversationRecord,
        record: FollowupRecord,
        unit: Unit,
        agent: Agent,
        step: str,
        note: str | None,
    ) -> Outcome:
        name = agent.name or agent.key
        fid = record.id
        if record.closed and step != "note":
            return Outcome(ok=False, notice=self._desk_t("followup_closed", id=fid,
                                                         status=record.status.value))  # fmt: skip
        values: dict[str, object] = {}
        if step == "note":
            if note is None:
                return self._usage(agent)
            text = self._desk_t("followup_note_saved", id=fid)
        elif step == "take":
            values.update(owner_key=agent.key, owner_name=name)
            text = self._desk_t("followup_taken", id=fid, agent=name)
        elif step == "contacted":
            if record.status == FollowupStatus.OPEN:
                values.update(status=FollowupStatus.CONTACTED.value, contacted_at=unit.now,
                              remind_at=None)  # fmt: skip
            text = self._desk_t("followup_contacted", id=fid, agent=name)
        else:  # resolved | unreachable
            values.update(status=step, closed_at=unit.now, remind_at=None)
            if step == "resolved" and record.contacted_at is None:
                values["contacted_at"] = unit.now  # resolving it means they were reached
            text = self._desk_t(f"followup_{step}", id=fid, agent=name)
        if record.owner_key is None and step != "note":
            values.setdefault("owner_key", agent.key)
            values.setdefault("owner_name", name)
        if note is not None:
            values["note"] = note
        if values:
            unit.followups.append(FollowupChange(fid, values))
        unit.event(f"followup_{step}", agent.key, followup=fid, note=note is not None)
        posted = f"{text} — {note}" if note else text
        self._desk(conv, unit, P.POST, text=posted, author="system", name="")
        notice = text
        if step in ("resolved", "unreachable") and note is None and record.note is None:
            ask = self._desk_t("followup_ask_note", command=self._command(agent), id=fid)
            notice = f"{text} {ask}"
        return Outcome(ok=True, notice=notice)
