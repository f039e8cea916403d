"""A detractor's follow-up on a real (fake) Telegram: the alert with its buttons in the
agents' group, a stranger refused, Paul's presses, and ``/followup`` typed on the desk."""

from __future__ import annotations

from bot.app import SupportApp
from tests.test_e2e_telegram import (  # noqa: F401, F811 - fixtures
    AGENTS_ONLY,
    NPS_QUESTION,
    World,
    app,
    buttons,
    world,
)

FOLLOWUP_BUTTONS = [
    ("Je m'en charge", "a1:fu_take"),
    ("Contacté", "a1:fu_contacted"),
    ("Résolu", "a1:fu_resolved"),
    ("Injoignable", "a1:fu_unreachable"),
]


async def test_buttons_on_the_detractor_alert_and_the_followup_command(
    world: World,  # noqa: F811
    app: SupportApp,  # noqa: F811
) -> None:
    tg = world.tg
    thread, header = await world.handed_off()
    mark = tg.mark()
    await tg.press_button(world.paul, header, "a1:take")
    await world.to_customer(world.ana, "a rejoint la conversation", since=mark)
    await tg.press_button(world.paul, header, "a1:resolve")
    nps = await world.to_customer(world.ana, NPS_QUESTION, since=mark)
    mark = tg.mark()
    await tg.press_button(world.ana, nps, "c1:nps:2")
    alert = await world.to_desk("Suivi #1", since=mark)
    assert "Détracteur : Ana Lopez a donné 2/10 (conversation #1, Paul Martin)" in alert["text"]
    assert "responsable : Paul Martin" in alert["text"]
    assert buttons(alert) == [FOLLOWUP_BUTTONS]
    await world.settle()

    refused = await tg.press_button(world.eve, alert, "a1:fu_contacted")
    assert await world.answer_to(refused) == {"text": AGENTS_ONLY, "show_alert": True}
    await world.settle()
    assert world.row("SELECT status FROM followups")["status"] == "open"

    contacted = await tg.press_button(world.paul, alert, "a1:fu_contacted")
    assert await world.answer_to(contacted) == {
        "text": "Suivi #1 : client contacté par Paul Martin.",
        "show_alert": False,
    }
    await world.settle()
    assert world.row("SELECT status FROM followups")["status"] == "contacted"
    assert buttons(tg.message(world.desk, alert["message_id"])) == [FOLLOWUP_BUTTONS]  # kept

    mark = tg.mark()
    await tg.agent_writes(world.paul, None, "/followup 1 resolved Avoir de 15 € accepté")
    await world.to_desk("Suivi #1 : résolu par Paul Martin.", since=mark)  # the reply
    await world.settle()
    done = world.row("SELECT status, note, closed_at FROM followups")
    assert (done["status"], done["note"]) == ("resolved", "Avoir de 15 € accepté")
    assert done["closed_at"] is not None
    kinds = [
        r["kind"]
        for r in world.rows("SELECT kind FROM events WHERE kind LIKE 'followup%' ORDER BY id")
    ]
    assert kinds == ["followup_opened", "followup_contacted", "followup_resolved"]

    mark = tg.mark()
    await tg.agent_writes(world.eve, None, "/followup 1 note je ne suis pas agent")
    await world.to_desk(AGENTS_ONLY, since=mark)
    await world.settle()
    assert world.row("SELECT note FROM followups")["note"] == "Avoir de 15 € accepté"
    assert thread  # the conversation's topic existed all along
