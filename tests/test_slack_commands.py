"""Agent thread commands on the Slack desk: ``!take``, ``!resolve tag``, ``!transfer @x``."""

from __future__ import annotations

import pytest

from bot.conversation.model import Agent, AgentActionKind, AgentMessage
from handlers.slack.translate import Person, agent_command, agent_message

PAUL = Person(user_id="U1", name="Paul", locale="fr-FR", team_id="T1")


@pytest.mark.parametrize(
    ("raw", "kind", "tag", "text"),
    [
        ("!take", AgentActionKind.TAKE, None, None),
        ("!resolve livraison-retard", AgentActionKind.RESOLVE, "livraison-retard", None),
        ("!Resolve", AgentActionKind.RESOLVE, None, None),
        ("!note client VIP &amp; pressé", AgentActionKind.NOTE, None, "client VIP & pressé"),
    ],
)
def test_thread_commands(
    raw: str, kind: AgentActionKind, tag: str | None, text: str | None
) -> None:
    action = agent_command(raw, "171.5", PAUL, "slack:Ev1")
    assert action is not None
    assert (action.kind, action.tag, action.text, action.thread) == (kind, tag, text, "171.5")
    assert action.agent == Agent("slack", "U1", "Paul")


def test_transfer_names_the_mentioned_agent() -> None:
    action = agent_command("!transfer <@U2|zoe> merci", "171.5", PAUL, "k")
    assert action is not None
    assert action.target == Agent("slack", "U2", "zoe")
    back = agent_command("!transfer", "171.5", PAUL, "k")
    assert back is not None
    assert back.target is None


def test_ordinary_replies_stay_messages() -> None:
    event = {
        "type": "message",
        "text": "!! urgent, je regarde",
        "ts": "172.1",
        "thread_ts": "171.5",
    }
    assert isinstance(agent_message(event, PAUL, "k"), AgentMessage)
    assert agent_command("je vais !resolve ça", "171.5", PAUL, "k") is None
