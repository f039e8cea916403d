"""Routing end to end: presence commands typed on the desk, the queue position the customer
is told, the assignment notice that mentions the agent, and the escalation, through the
whole product against the local Telegram and Slack servers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.app import SupportApp
from bot.config import RoutingSettings, Secrets
from handlers.telegram import RateLimits
from tests import test_e2e_slack, test_e2e_telegram
from tests.fakes.slack_server import FakeSlack
from tests.test_e2e_slack import (
    AGENT,
    AGENTS,
    ASK_PERSON,
    CUSTOMER,
    Product,
    make_settings,
    running,
    words,
)
from tests.test_e2e_telegram import World

# the fixtures of the Slack and Telegram end-to-end tests
slack = test_e2e_slack.slack
world = test_e2e_telegram.world

QUEUED_FIRST = "Vous êtes le prochain dans la file d'attente."
ASSIGNED = "Cette conversation vous est attribuée : à vous de répondre."


async def test_telegram_presence_commands_and_assignment_mention(world: World) -> None:
    tg, paul, ana = world.tg, world.paul, world.ana
    settings = world.settings().model_copy(
        update={"routing": RoutingSettings(mode="round_robin", max_open_per_agent=2)}
    )
    secrets = Secrets(telegram_bot_token=tg.token)
    options = {"telegram": {"limits": RateLimits.unlimited()}}
    app = SupportApp(settings, secrets, clock=world.clock, transport_options=options)
    world.apps.append(app)
    await app.start()

    mark = tg.mark()
    await tg.agent_writes(paul, None, "/away")  # in the General topic
    await world.to_desk("Paul Martin est absent", since=mark)
    assert world.row("SELECT available FROM agent_presence")["available"] == 0

    mark = tg.mark()
    await tg.customer_sends(ana, "/agent")
    thread, _ = await world.topic_opened(since=mark)
    told = await world.to_customer(ana, "Je vous mets en relation", since=mark)
    assert told["text"].endswith(QUEUED_FIRST)  # nobody available: first in the queue
    await world.settle()
    assert world.row("SELECT state FROM conversations")["state"] == "queued"

    mark = tg.mark()
    await tg.agent_writes(paul, None, "/available")
    await world.to_desk("Paul Martin est disponible", since=mark)
    notice = await world.to_desk(ASSIGNED, thread=thread, since=mark)
    mention = [e for e in notice.get("entities", []) if e["type"] == "text_mention"]
    assert [e["user"]["id"] for e in mention] == [paul.id]  # Telegram notifies Paul
    assert notice["text"] == f"Paul Martin {ASSIGNED}"
    await world.to_customer(ana, "Paul Martin a rejoint la conversation.", since=mark)
    await world.settle()
    conv = world.row("SELECT state, agent_key FROM conversations")
    assert tuple(conv) == ("assigned", f"telegram:{paul.id}")

    # a stranger's presence command is refused, and changes nothing
    mark = tg.mark()
    await tg.agent_writes(world.eve, None, "/away")
    await world.to_desk("Réservé aux agents du service client.", since=mark)
    assert len(world.rows("SELECT * FROM agent_presence")) == 1


async def test_slack_presence_commands_escalation_and_assignment_mention(
    tmp_path: Path, slack: FakeSlack
) -> None:
    routing = RoutingSettings(
        mode="least_busy", escalate_to="S0LEADS", escalate_after=timedelta(minutes=10)
    )
    settings = make_settings(tmp_path, slack, agent_ids=[AGENT]).model_copy(
        update={"routing": routing}
    )
    async with running(settings, slack) as p:
        await _slack_story(p, slack)


async def _slack_story(p: Product, slack: FakeSlack) -> None:
    await p.event(slack.channel_message(AGENTS, AGENT, "!away"))  # top level of the channel
    (away,) = [e for e in slack.ephemerals if e.user == AGENT]
    assert away.text == "paul est absent : plus aucune conversation ne lui est attribuée."

    await p.event(slack.dm_message(CUSTOMER, ASK_PERSON))
    (header,) = p.threads()
    assert p.dm()[-1].text.endswith(QUEUED_FIRST)

    # ten working minutes untaken: the leads' group is called, once, in the channel
    p.clock.advance(timedelta(minutes=11))
    assert p.app.components is not None
    await p.app.engine.sweep()
    await p.settle()
    escalations = [m for m in p.threads() if "S0LEADS" in " ".join(slack.pings(m))]
    assert len(escalations) == 1
    assert "attend depuis 11 min" in words(escalations[0])
    p.clock.advance(timedelta(minutes=2))
    await p.app.engine.sweep()
    await p.settle()
    assert len([m for m in p.threads() if "S0LEADS" in " ".join(slack.pings(m))]) == 1

    # back: the waiting conversation is assigned to Paul, who is mentioned in its thread
    await p.event(slack.channel_message(AGENTS, AGENT, "!available", thread_ts=header.ts))
    notices = [e.text for e in slack.ephemerals if e.user == AGENT]
    assert notices[-1].startswith("paul est disponible")
    (assigned,) = [m for m in p.thread_posts(header) if ASSIGNED in words(m)]
    assert set(slack.pings(assigned)) == {f"@{AGENT}"}  # Slack notifies Paul
    assert p.dm()[-1].text == "paul a rejoint la conversation."
    (conv,) = p.rows("SELECT state, agent_key FROM conversations")
    assert tuple(conv) == ("assigned", f"slack:{AGENT}")
