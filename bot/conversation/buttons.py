"""Button tokens: what a button sends back when pressed, bound to one conversation.

Customer buttons: ``c<conversation id>:<question>:<value>`` (question = help | nps |
csat | comment | pick; a pick's value is ``<stamp>.<candidate number>`` or ``<stamp>.x``).
Agent buttons: ``a<conversation id>:<action>``. Both fit Telegram's 64-byte callback
data. A token names its conversation and question, so a stale button (closed survey,
other conversation, an earlier "did you mean") is recognized and refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.conversation.model import AgentActionKind, Choice


@dataclass(frozen=True, slots=True)
class CustomerToken:
    conversation_id: int
    question: str
    value: str


@dataclass(frozen=True, slots=True)
class AgentToken:
    conversation_id: int
    action: AgentActionKind


def customer_choice(label: str, conversation_id: int, question: str, value: str) -> Choice:
    return Choice(label=label, token=f"c{conversation_id}:{question}:{value}")


def agent_choice(label: str, conversation_id: int, action: AgentActionKind) -> Choice:
    return Choice(label=label, token=f"a{conversation_id}:{action.value}")


def parse_customer_token(token: str) -> CustomerToken | None:
    if not token.startswith("c"):
        return None
    parts = token[1:].split(":", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return CustomerToken(int(parts[0]), parts[1], parts[2])


def parse_agent_token(token: str) -> AgentToken | None:
    if not token.startswith("a"):
        return None
    parts = token[1:].split(":", 1)
    if len(parts) != 2 or not parts[0].isdigit():
        return None
    try:
        return AgentToken(int(parts[0]), AgentActionKind(parts[1]))
    except ValueError:
        return None
