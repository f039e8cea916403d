"""A detractor's follow-up on a real (fake) Slack: the alert's Block Kit buttons in the
conversation's thread, a stranger refused, an agent's presses, and ``!followup``."""

from __future__ import annotations

from tests.fakes.slack_server import FakeSlack
from tests.test_e2e_slack import (  # noqa: F401, F811 - fixtures
    AGENT,
    AGENTS,
    ASK_PERSON,
    CUSTOMER,
    STRANGER,
    Product,
    labels,
    product,
    slack,
    with_text,
    words,
)

AGENTS_ONLY = "Réservé aux agents du service client."


async def test_follow_up_buttons_and_command_in_the_agents_channel(
    product: Product,  # noqa: F811
) -> None:
    p, fake = product, product.slack
    assert isinstance(fake, FakeSlack)
    await p.event(fake.dm_message(CUSTOMER, ASK_PERSON))
    (header,) = p.threads()
    await p.press(AGENT, header, label="Prendre")
    await p.press(AGENT, header, label="Résoudre")
    (nps,) = with_text(p.dm(), "Sur une échelle de 0 à 10")
    await p.press(CUSTOMER, nps, label="1")
    (alert,) = with_text(p.thread_posts(header), "Suivi #1")
    assert "Détracteur : marie a donné 1/10 (conversation #1, paul)" in words(alert)
    assert labels(alert) == ["Je m'en charge", "Contacté", "Résolu", "Injoignable"]

    await p.press(STRANGER, alert, label="Contacté")
    assert [e.text for e in fake.ephemerals if e.user == STRANGER] == [AGENTS_ONLY]
    assert p.rows("SELECT status FROM followups")[0]["status"] == "open"

    await p.press(AGENT, alert, label="Je m'en charge")
    assert fake.ephemerals[-1].user == AGENT
    assert fake.ephemerals[-1].text == "Suivi #1 : pris en charge par paul."
    assert labels(alert) == ["Je m'en charge", "Contacté", "Résolu", "Injoignable"]  # kept

    typed = fake.channel_message(AGENTS, AGENT, "!followup 1 unreachable Trois appels, messagerie")
    await p.event(typed)
    (row,) = p.rows("SELECT status, note, owner_key, contacted_at FROM followups")
    assert tuple(row) == ("unreachable", "Trois appels, messagerie", f"slack:{AGENT}", None)
    assert fake.ephemerals[-1].text == "Suivi #1 : client injoignable (paul)."

    await p.event(fake.channel_message(AGENTS, AGENT, "!followup un truc"))
    assert fake.ephemerals[-1].text.startswith("Usage : !followup ID take|contacted")
    kinds = [
        r["kind"] for r in p.rows("SELECT kind FROM events WHERE kind LIKE 'followup%' ORDER BY id")
    ]
    assert kinds == ["followup_opened", "followup_take", "followup_unreachable"]
