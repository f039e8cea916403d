"""Resolution and satisfaction surveys: NPS, then CSAT, then an optional comment."""

from __future__ import annotations

from bot.conversation import payloads as P
from bot.conversation.buttons import customer_choice
from bot.conversation.followups import DETRACTOR_NPS, Followups
from bot.conversation.intents import parse_csat, parse_nps
from bot.conversation.model import Agent, Choice, State
from bot.conversation.store import ConversationRecord, Unit
from bot.texts import CSAT_FACES


class Surveys(Followups):
    """Resolving a conversation, then surveying its customer."""

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

    async def _survey_text(self, conv: ConversationRecord, unit: Unit, text: str) -> None:
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
            await self._record_csat(conv, unit, rating)
        elif conv.awaiting == "comment":
            self._record_comment(conv, unit, text)

    def _record_nps(self, conv: ConversationRecord, unit: Unit, score: int) -> None:
        unit.survey_update.update(nps=score, nps_at=unit.now)
        unit.event("nps_answered", "customer", score=score)
        conv.update(awaiting="csat")
        if score <= DETRACTOR_NPS:
            agent = f", {conv.agent_name}" if conv.agent_name else ""
            customer = conv.customer_name or conv.customer_key
            text = self._desk_t("detractor_alert", customer=customer, score=score, id=conv.id,
                                agent=agent)  # fmt: skip
            self._open_followup(conv, unit, text, nps=score)
            unit.event("detractor_alert", "bot", score=score)
        lang = conv.language
        self._say(conv, unit, conv.address, self._t(lang, "csat_question"),
                  self._csat_choices(conv))  # fmt: skip

    async def _record_csat(self, conv: ConversationRecord, unit: Unit, rating: int) -> None:
        unit.survey_update.update(csat=rating, csat_at=unit.now)
        unit.event("csat_answered", "customer", rating=rating)
        await self._csat_followup(conv, unit, rating)
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
