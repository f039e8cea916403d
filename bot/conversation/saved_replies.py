"""Saved replies at the desk: ``/r SHORTCUT`` (Telegram), ``!r SHORTCUT`` (Slack), the
console's picker. The text goes to the customer as the agent's own message, in the
conversation's language; the shortcut alone or a wrong one answers the agent only."""

from __future__ import annotations

from bot.conversation import payloads as P
from bot.conversation.agent_actions import AgentActions
from bot.conversation.lifecycle import WITH_AGENTS
from bot.conversation.model import AgentAction, AgentMessage, Outcome, State
from bot.conversation.store import ConversationRecord, Unit
from bot.replies import SavedReplies

COMMAND_OF_DESK = {"telegram": "/r", "slack": "!r", "web": "/r"}


class SavedReplyActions(AgentActions):
    """Sends, lists and refuses saved replies; they are loaded once, from config."""

    _replies: SavedReplies | None = None

    def use_replies(self, replies: SavedReplies) -> None:
        """Give the loaded replies.yaml (the app loads it at start so a bad file stops it)."""
        self._replies = replies

    @property
    def replies(self) -> SavedReplies:
        if self._replies is None:
            self._replies = SavedReplies.configured(self.settings)
        return self._replies

    def _saved_reply(self, conv: ConversationRecord, unit: Unit, ev: AgentAction) -> Outcome:
        replies = self.replies
        command = COMMAND_OF_DESK.get(ev.agent.desk, "/r")
        shortcut = (ev.text or "").strip().split(maxsplit=1)[0] if (ev.text or "").strip() else ""
        if not len(replies):
            return Outcome(ok=False, notice=self._desk_t("saved_replies_none"))
        if not shortcut:
            listing = replies.listing(self.settings.language)
            return Outcome(notice=self._desk_t("saved_replies_list", command=command,
                                               replies=listing))  # fmt: skip
        reply = replies.get(shortcut)
        if reply is None:
            close = replies.close_to(shortcut)
            hint = self._desk_t("saved_reply_close", options=", ".join(close)) if close else ""
            return Outcome(ok=False, notice=self._desk_t("saved_reply_unknown", shortcut=shortcut,
                                                          close=hint, command=command))  # fmt: skip
        if conv.state not in WITH_AGENTS:
            return Outcome(ok=False, notice=self._desk_t("not_open"))
        agent = ev.agent
        lang = conv.language
        text = reply.render(
            lang,
            customer=conv.customer_name.strip() or self._t(lang, "reply_customer"),
            agent=self._shown_name(agent, lang),
        )
        if conv.state == State.QUEUED:
            self._take(conv, unit, agent, announce=False)
        unit.event("saved_reply", agent.key, shortcut=reply.shortcut)
        message = AgentMessage(agent, ev.thread, text, ev.dedup_key, conversation_id=conv.id)
        self._relay_to_customer(conv, unit, message)
        if agent.desk == conv.desk and conv.customer_reachable:  # show the desk what was sent
            self._desk(conv, unit, P.POST, text=text, author="agent", name=agent.name or agent.key)
        return Outcome(ok=True)
