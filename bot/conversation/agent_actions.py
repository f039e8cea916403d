"""Agent actions: replies, notes, take, resolve and transfer, after an authority check."""

from __future__ import annotations

from bot.conversation import payloads as P
from bot.conversation.buttons import parse_agent_token
from bot.conversation.complaints import Complaints, parse_complaint_token
from bot.conversation.lifecycle import WITH_AGENTS
from bot.conversation.model import Agent, AgentAction, AgentActionKind, AgentMessage, Outcome, State
from bot.conversation.store import ComplaintRecord, ConversationRecord, NewMessage, NewOutbox, Unit
from bot.logs import conversation_id as log_conversation

NOTE_PREFIXES = ("//", "note:")
CONSOLE_DESK = "web"  # agents of the web console, authenticated by their key upstream


_COMPLAINT_KINDS = (AgentActionKind.RESOLVE, AgentActionKind.COMPLAINT)


class AgentActions(Complaints):
    """Everything an agent does at the desk or in the console."""

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
        async with self.locks.hold(conv.address.key, load_id=conv.id):
            conv = await self.store.load(conv.id)
            assert conv is not None
            log_conversation.set(conv.id)
            unit = Unit(self._now(), ev.dedup_key, conversation=conv)
            text = ev.text.strip()
            if text.lower().startswith(NOTE_PREFIXES) and ev.media is None:
                self._note(conv, unit, ev.agent, text)
                return Outcome(duplicate=not await self._commit(unit))
            if conv.state == State.QUEUED:
                self._take(conv, unit, ev.agent, announce=False)
            self._relay_to_customer(conv, unit, ev)
            await self._mark_contacted(conv, unit, ev.agent)
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
                      relayed=relayed, name=self._shown_name(agent, conv.language))  # fmt: skip
            if agent.desk != conv.desk:  # a console reply: desk agents see it in the thread
                self._desk(conv, unit, P.POST, text=ev.text, author="agent",
                           name=agent.name or agent.key)  # fmt: skip
        if conv.pending_since is not None:
            conv.update(pending_since=None)
            unit.clear_timer("abandon")

    def _shown_name(self, agent: Agent, language: str) -> str:
        """The name the customer sees: the agent's display name, never a login or an id."""
        return agent.shown.strip() or agent.name.strip() or self._t(language, "an_agent")

    def _saved_reply(self, conv: ConversationRecord, unit: Unit, ev: AgentAction) -> Outcome:
        """Overridden by ``SavedReplyActions``; an engine without it has no saved replies."""
        return Outcome(ok=False, notice=self._desk_t("saved_replies_none"))

    def _take(self, conv: ConversationRecord, unit: Unit, agent: Agent, *, announce: bool) -> None:
        self._move(conv, unit, State.ASSIGNED, actor=agent.key)
        conv.update(agent_key=agent.key, agent_name=agent.name or agent.key)
        unit.clear_timer("remind")
        if announce:
            name = self._shown_name(agent, conv.language)
            self._say(conv, unit, conv.address, self._t(conv.language, "agent_joined", agent=name))
        self._desk(conv, unit, P.POST, text=self._desk_t("taken_by", agent=agent.name or
                   agent.key), author="system", name="")  # fmt: skip
        self._refresh_header(conv, unit)

    async def _agent_action(self, ev: AgentAction) -> Outcome:
        kind = ev.kind
        conversation_id = ev.conversation_id
        picked = parse_complaint_token(ev.token) if ev.token is not None else None
        if picked is not None:
            kind, conversation_id = AgentActionKind.COMPLAINT, picked.conversation_id
        elif ev.token is not None:
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
        async with self.locks.hold(conv.address.key, load_id=conv.id):
            conv = await self.store.load(conv.id)
            assert conv is not None
            log_conversation.set(conv.id)
            unit = Unit(self._now(), ev.dedup_key, conversation=conv)
            known = await self.store.complaint(conv.id) if kind in _COMPLAINT_KINDS else None
            if picked is not None:
                outcome = self._pick_complaint(conv, unit, ev.agent, picked, known)
            else:
                outcome = self._agent_step(conv, unit, ev, kind, known)
            if not await self._commit(unit):
                return Outcome(duplicate=True)
            return outcome

    def _agent_step(
        self,
        conv: ConversationRecord,
        unit: Unit,
        ev: AgentAction,
        kind: AgentActionKind,
        known: ComplaintRecord | None = None,
    ) -> Outcome:
        agent = ev.agent
        name = agent.name or agent.key
        if kind == AgentActionKind.NOTE:
            self._note(conv, unit, agent, ev.text or "")
            return Outcome(ok=True, notice=self._desk_t("note_saved"))
        if kind == AgentActionKind.SAVED_REPLY:
            return self._saved_reply(conv, unit, ev)
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
            refused = self._resolve_with_complaint(conv, unit, ev, known)
            return refused or Outcome(ok=True, chosen=self._desk_t("status_resolved"))
        if kind == AgentActionKind.COMPLAINT:
            return self._mark_complaint(conv, unit, agent, known)
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
