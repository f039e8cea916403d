"""Complaints: the record a complaint conversation carries, set at resolution, and the
journey touchpoint a resolution tag maps to.

A conversation becomes a complaint when it is handed off as one, or when an agent marks
it (``/complaint``, ``!complaint``, the console). Its category, root cause and solution
come from ``/resolve … cause=… solution=…`` (see ``complaint_args``), the console's
selects, or the menu of buttons posted in the thread when a complaint is resolved
without them. Menu buttons carry ``k<conversation id>:<field letter>:<index>`` and keep
working after the conversation is closed.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.config_complaints import SOLUTIONS
from bot.conversation import payloads as P
from bot.conversation.complaint_args import (
    Choices,
    Refusal,
    ResolveArgs,
    check_details,
    normalized,
    parse_resolve,
)
from bot.conversation.model import Agent, AgentAction, Choice, Outcome
from bot.conversation.store import ComplaintRecord, ConversationRecord, Unit
from bot.conversation.surveys import Surveys

_FIELDS = {"c": "cause", "s": "solution"}
MENU_ROW = 2  # buttons per row: long French labels stay readable on a phone


@dataclass(frozen=True, slots=True)
class ComplaintToken:
    conversation_id: int
    field: str  # cause | solution
    index: int


def complaint_choice(label: str, conversation_id: int, field: str, index: int) -> Choice:
    letter = next(k for k, v in _FIELDS.items() if v == field)
    return Choice(label=label, token=f"k{conversation_id}:{letter}:{index}")


def parse_complaint_token(token: str) -> ComplaintToken | None:
    if not token.startswith("k"):
        return None
    parts = token[1:].split(":")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    field = _FIELDS.get(parts[1])
    return ComplaintToken(int(parts[0]), field, int(parts[2])) if field else None


class Complaints(Surveys):
    """Complaint records and touchpoints, for the handoff and the agents' actions."""

    def _choices(self) -> Choices:
        spellings = {normalized(key): key for key in SOLUTIONS}
        for lang in ("fr", "en"):
            for key in SOLUTIONS:
                spellings.setdefault(normalized(self._t(lang, f"solution_{key}")), key)
        settings = self.settings.complaints
        return Choices(settings.causes, settings.categories, spellings, SOLUTIONS)

    def _solution_label(self, key: str | None) -> str:
        if key is None:
            return self._desk_t("complaint_unset")
        return self._desk_t(f"solution_{key}") if key in SOLUTIONS else key

    def _refusal(self, refusal: Refusal) -> Outcome:
        shown = [self._solution_label(v) + f" ({v})" if refusal.field == "solution" else v
                 for v in refusal.valid]  # fmt: skip
        field = self._desk_t(f"complaint_field_{refusal.field}")
        text = self._desk_t("complaint_unknown", field=field, given=refusal.given,
                            valid=", ".join(shown))  # fmt: skip
        return Outcome(ok=False, notice=text)

    def _open_complaint(self, conv: ConversationRecord, unit: Unit, by: str) -> None:
        """Create the complaint record (the handoff of a complaint, or an agent's mark)."""
        unit.complain(opened_by=by)
        unit.event("complaint_opened", by)

    def _mark_complaint(
        self, conv: ConversationRecord, unit: Unit, agent: Agent, known: ComplaintRecord | None
    ) -> Outcome:
        if known is not None or unit.complaint is not None:
            return Outcome(ok=True, notice=self._desk_t("complaint_already"))
        self._open_complaint(conv, unit, agent.key)
        text = self._desk_t("complaint_marked", id=conv.id, agent=agent.name or agent.key)
        self._desk(conv, unit, P.POST, text=text, author="system", name="")
        return Outcome(ok=True, notice=text)

    def _resolve_args(self, ev: AgentAction) -> ResolveArgs | Refusal:
        """The typed arguments, completed by the console's selects (which win)."""
        choices = self._choices()
        typed = parse_resolve(ev.tag or "", choices)
        if isinstance(typed, Refusal) or not ev.details:
            return typed
        picked = check_details(ev.details, choices)
        if isinstance(picked, Refusal):
            return picked
        fields = {**typed.complaint_fields, **picked.complaint_fields}
        return ResolveArgs(tag=typed.tag, **fields)

    def _set_touchpoint(self, conv: ConversationRecord, tag: str) -> None:
        """A resolution tag places the conversation in the journey: the configured mapping,
        else the tag itself as the touchpoint (as a knowledge entry's topic is)."""
        mapped = self.settings.touchpoints.get(tag) or next(
            (v for k, v in self.settings.touchpoints.items() if normalized(k) == normalized(tag)),
            None,
        )
        if mapped is not None:
            conv.update(touchpoint=mapped.touchpoint, stage=mapped.stage)
        else:
            conv.update(touchpoint=tag, stage=None)

    def _resolve_with_complaint(
        self, conv: ConversationRecord, unit: Unit, ev: AgentAction, known: ComplaintRecord | None
    ) -> Outcome | None:
        """Resolve by an agent with its tag and complaint fields; an Outcome refuses."""
        args = self._resolve_args(ev)
        if isinstance(args, Refusal):
            return self._refusal(args)
        agent = ev.agent
        fields = args.complaint_fields
        if args.tag:
            self._set_touchpoint(conv, args.tag)
        self._resolve_by_agent(conv, unit, agent, args.tag)
        if known is None and not fields:
            return None
        if known is None:
            self._open_complaint(conv, unit, agent.key)
        if fields:
            unit.complain(**fields, updated_by=agent.key)
            unit.event("complaint_updated", agent.key, **fields)
        cause = fields.get("cause") or (known.cause if known else None)
        solution = fields.get("solution") or (known.solution if known else None)
        note = fields.get("note")
        summary = self._desk_t("complaint_summary", cause=cause or self._desk_t(
            "complaint_unset"), solution=self._solution_label(solution),
            note=f" — {note}" if note else "")  # fmt: skip
        self._desk(conv, unit, P.POST, text=summary, author="system", name="")
        if cause is None or solution is None:
            self._post_menu(conv, unit, cause=cause is None, solution=solution is None)
        return None

    def _post_menu(
        self, conv: ConversationRecord, unit: Unit, *, cause: bool, solution: bool
    ) -> None:
        """Buttons for what is still unset; each press is confirmed, the menu stays."""
        rows: list[list[Choice]] = []
        if cause:
            buttons = [complaint_choice(c, conv.id, "cause", i)
                       for i, c in enumerate(self.settings.complaints.causes)]  # fmt: skip
            rows += [buttons[i : i + MENU_ROW] for i in range(0, len(buttons), MENU_ROW)]
        if solution:
            buttons = [complaint_choice(self._solution_label(s), conv.id, "solution", i)
                       for i, s in enumerate(SOLUTIONS)]  # fmt: skip
            rows += [buttons[i : i + MENU_ROW] for i in range(0, len(buttons), MENU_ROW)]
        text = self._desk_t("complaint_menu", id=conv.id)
        self._desk(conv, unit, P.POST_CHOICES, text=text, choices=P.choices_json(rows))

    def _pick_complaint(
        self,
        conv: ConversationRecord,
        unit: Unit,
        agent: Agent,
        token: ComplaintToken,
        known: ComplaintRecord | None,
    ) -> Outcome:
        """A press on a complaint menu: set the cause or the solution, whatever the state
        (the menu is posted as the conversation is resolved, and often used later)."""
        if known is None:
            return Outcome(ok=False, notice=self._desk_t("complaint_none"))
        options = self.settings.complaints.causes if token.field == "cause" else SOLUTIONS
        if token.index >= len(options):
            return Outcome(ok=False, notice=self._desk_t("unknown_conversation"))
        value = options[token.index]
        unit.complain(**{token.field: value}, updated_by=agent.key)
        unit.event("complaint_updated", agent.key, **{token.field: value})
        shown = value if token.field == "cause" else self._solution_label(value)
        field = self._desk_t(f"complaint_field_{token.field}")
        text = self._desk_t("complaint_set", id=conv.id, field=field, value=shown,
                            agent=agent.name or agent.key)  # fmt: skip
        self._desk(conv, unit, P.POST, text=text, author="system", name="")
        return Outcome(ok=True, notice=text)
