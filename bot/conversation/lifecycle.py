"""The conversation lifecycle of SPEC.md as an explicit transition table.

    bot ──► queued ──► assigned ──► resolved ──► surveying ──► closed
     │  └──────────────────────────────┘ (bot answer accepted)      ▲
     └──► abandoned (customer left while waiting) ─────────────────┘

``resolved`` and ``abandoned`` are passed through in the same step that reaches them
(a resolved conversation is surveyed or closed at once; an abandoned one is closed),
but each is still a real state with its own event in the log. A customer who leaves
(blocks the bot, asks to be forgotten) is abandoned only if they were waiting;
otherwise their conversation is simply closed.
"""

from __future__ import annotations

from types import MappingProxyType

from bot.conversation.model import State
from bot.errors import InvalidTransitionError

TRANSITIONS: MappingProxyType[State, frozenset[State]] = MappingProxyType(
    {
        # answered by the bot; handed off; accepted; idle or customer gone
        State.BOT: frozenset({State.QUEUED, State.RESOLVED, State.ABANDONED, State.CLOSED}),
        # taken; resolved straight from the queue; customer left / timed out
        State.QUEUED: frozenset({State.ASSIGNED, State.RESOLVED, State.ABANDONED}),
        # transferred back to the queue or to another agent; resolved; customer left waiting
        # (abandoned) or left while nothing of theirs was unanswered (closed)
        State.ASSIGNED: frozenset(
            {State.QUEUED, State.ASSIGNED, State.RESOLVED, State.ABANDONED, State.CLOSED}
        ),
        # survey sent, or not (cool-down, surveys off): closed
        State.RESOLVED: frozenset({State.SURVEYING, State.CLOSED}),
        State.SURVEYING: frozenset({State.CLOSED}),
        State.ABANDONED: frozenset({State.CLOSED}),
        State.CLOSED: frozenset(),
    }
)

OPEN_STATES = frozenset({State.BOT, State.QUEUED, State.ASSIGNED, State.SURVEYING})
WITH_AGENTS = frozenset({State.QUEUED, State.ASSIGNED})


def check_transition(conversation_id: int, source: State, target: State) -> None:
    """Raise ``InvalidTransitionError`` unless the table links ``source`` to ``target``."""
    if target not in TRANSITIONS[source]:
        raise InvalidTransitionError(conversation_id, source.value, target.value)
