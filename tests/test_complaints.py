"""Complaint records, /resolve arguments, the desk menus, and touchpoints, through the
engine on a real SQLite file (and the argument parser on its own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import settings_from_mapping
from bot.config_complaints import DEFAULT_CATEGORIES, DEFAULT_CAUSES, SOLUTIONS
from bot.conversation.complaint_args import (
    Choices,
    Refusal,
    ResolveArgs,
    check_details,
    normalized,
    parse_resolve,
)
from bot.conversation.complaints import parse_complaint_token
from bot.conversation.model import Agent, AgentAction, AgentActionKind
from bot.errors import ConfigError
from tests.fakes.clock import FakeClock
from tests.harness import Harness, make_settings

RESOLVE, COMPLAINT = AgentActionKind.RESOLVE, AgentActionKind.COMPLAINT
CHOICES = Choices(
    DEFAULT_CAUSES,
    DEFAULT_CATEGORIES,
    {normalized(s): s for s in SOLUTIONS} | {"remboursement partiel": "partial_refund"},
    SOLUTIONS,
)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("livraison", ResolveArgs(tag="livraison")),
        ("", ResolveArgs()),
        (
            "livraison cause=retard de livraison solution=refund",
            ResolveArgs(tag="livraison", cause="retard de livraison", solution="refund"),
        ),
        (  # accents, case and underscores do not matter; what follows a value is the note
            "cause=Colis_Endommage solution=free-delivery geste commercial offert",
            ResolveArgs(
                cause="colis endommagé", solution="free_delivery", note="geste commercial offert"
            ),
        ),
        (  # the longest label wins; a quoted label; a French solution label
            'cause="remboursement en attente" solution=remboursement partiel note=10 € rendus',
            ResolveArgs(
                cause="remboursement en attente", solution="partial_refund", note="10 € rendus"
            ),
        ),
        (
            "catégorie=facturation cause=erreur de facturation",
            ResolveArgs(category="facturation", cause="erreur de facturation"),
        ),
    ],
)
def test_resolve_arguments(text: str, expected: ResolveArgs) -> None:
    assert parse_resolve(text, CHOICES) == expected


@pytest.mark.parametrize(
    ("text", "field", "given"),
    [
        ("cause=météo solution=refund", "cause", "météo"),
        ("cause=retard de livraison solution=cadeau", "solution", "cadeau"),
        ("category=voyages", "category", "voyages"),
        ("cause=", "cause", ""),
    ],
)
def test_unknown_values_are_refused_with_the_valid_ones(text: str, field: str, given: str) -> None:
    refusal = parse_resolve(text, CHOICES)
    assert isinstance(refusal, Refusal)
    assert (refusal.field, refusal.given) == (field, given)
    assert refusal.valid == CHOICES.options(field)


def test_console_details_are_checked_exactly() -> None:
    ok = check_details((("cause", "Produit défectueux"), ("solution", "replacement")), CHOICES)
    assert ok == ResolveArgs(cause="produit défectueux", solution="replacement")
    bad = check_details((("cause", "produit"),), CHOICES)
    assert isinstance(bad, Refusal)
    assert bad.field == "cause"


def test_complaint_tokens() -> None:
    token = parse_complaint_token("k12:c:3")
    assert token is not None
    assert (token.conversation_id, token.field, token.index) == (
        12,
        "cause",
        3,
    )
    for bad in ("a12:resolve", "k12:x:1", "kx:c:1", "k12:c", "k12:s:-1"):
        assert parse_complaint_token(bad) is None


# ------------------------------------------------------------------ engine


async def complaint_row(h: Harness, cid: int = 1) -> dict[str, object] | None:
    row = await h.row("SELECT * FROM complaints WHERE conversation_id = ?", cid)
    return dict(row) if row else None


async def test_a_complaint_handoff_opens_a_record_kept_across_a_restart(harness: Harness) -> None:
    h = harness
    await h.say("Je veux déposer une réclamation, mon colis est arrivé cassé")
    record = await complaint_row(h)
    assert record is not None
    assert record["opened_by"] == "customer"
    assert record["cause"] is None
    assert record["solution"] is None

    await h.restart()
    await h.agent_does(RESOLVE)  # without cause nor solution: the menu is posted
    menus = h.desk.ops("post_choices")
    assert len(menus) == 1
    labels = [c.label for row in menus[0]["choices"] for c in row]
    assert labels[: len(DEFAULT_CAUSES)] == list(DEFAULT_CAUSES)
    assert "Remboursement partiel" in labels
    tokens = {c.label: c.token for row in menus[0]["choices"] for c in row}

    await h.restart()  # the menu still works after a restart, and after the resolution
    outcome = await h.agent_presses(tokens["colis endommagé"])
    assert outcome.ok
    assert outcome.notice is not None
    assert "colis endommagé" in outcome.notice
    outcome = await h.agent_presses(tokens["Remplacement"])
    assert outcome.ok
    record = await complaint_row(h)
    assert record is not None
    assert (record["cause"], record["solution"], record["updated_by"]) == (
        "colis endommagé",
        "replacement",
        "slack:U_AGENT",
    )
    _, thread = h.desk.only_thread()
    assert any("colis endommagé" in text for _, text in thread.posts)


async def test_resolve_with_cause_and_solution_posts_no_menu(harness: Harness) -> None:
    h = harness
    await h.say("C'est un scandale, je veux porter plainte !")
    outcome = await h.agent_does(
        RESOLVE, tag="livraison cause=retard de livraison solution=voucher bon de 15 €"
    )
    assert outcome.ok
    record = await complaint_row(h)
    assert record is not None
    assert (record["cause"], record["solution"], record["note"]) == (
        "retard de livraison",
        "voucher",
        "bon de 15 €",
    )
    assert h.desk.ops("post_choices") == []
    conv = await h.row("SELECT tag, touchpoint, stage, state FROM conversations WHERE id = 1")
    assert conv["tag"] == "livraison"
    assert conv["touchpoint"] == "livraison"
    assert conv["state"] in ("surveying", "closed")


async def test_an_unknown_cause_is_refused_and_nothing_is_resolved(harness: Harness) -> None:
    h = harness
    await h.say("Je veux parler à un conseiller")
    outcome = await h.agent_does(RESOLVE, tag="cause=la pluie solution=refund")
    assert not outcome.ok
    assert outcome.notice is not None
    assert "Cause inconnue « la pluie »" in outcome.notice
    assert "retard de livraison" in outcome.notice
    assert "service client injoignable" in outcome.notice
    conv = await h.row("SELECT state FROM conversations WHERE id = 1")
    assert conv["state"] == "queued"
    assert await complaint_row(h) is None

    outcome = await h.agent_does(RESOLVE, tag="cause=autre solution=gift")
    assert not outcome.ok
    assert outcome.notice is not None
    assert "Solution inconnue « gift »" in outcome.notice
    assert "partial_refund" in outcome.notice


async def test_an_agent_marks_a_complaint_and_a_plain_resolve_asks_for_the_rest(
    harness: Harness,
) -> None:
    h = harness
    await h.say("Je veux parler à un conseiller")
    outcome = await h.agent_does(COMPLAINT)
    assert outcome.ok
    assert outcome.notice is not None
    assert "réclamation" in outcome.notice
    assert (await complaint_row(h) or {})["opened_by"] == "slack:U_AGENT"
    again = await h.agent_does(COMPLAINT)
    assert again.notice == "Cette conversation est déjà une réclamation."

    await h.agent_does(RESOLVE, tag="cause=erreur de commande")
    menus = h.desk.ops("post_choices")
    assert len(menus) == 1  # only the solution is missing
    labels = [c.label for row in menus[0]["choices"] for c in row]
    assert "erreur de commande" not in labels
    assert "Aucune" in labels


async def test_a_plain_conversation_resolved_without_fields_has_no_record(
    harness: Harness,
) -> None:
    h = harness
    await h.say("Je veux parler à un conseiller")
    await h.agent_does(RESOLVE, tag="facture")
    assert await complaint_row(h) is None
    assert h.desk.ops("post_choices") == []
    token = "k1:c:0"  # a forged menu press on a conversation that is no complaint
    outcome = await h.agent_presses(token)
    assert not outcome.ok
    assert outcome.notice == "Cette conversation n'est pas une réclamation."


async def test_the_console_sends_its_selects_as_details(harness: Harness) -> None:
    h = harness
    await h.say("Je veux déposer une réclamation")
    assert h.engine is not None
    event = AgentAction(
        Agent("web", "paul", "paul"),
        h.key(),
        kind=RESOLVE,
        conversation_id=1,
        details=(("cause", "Produit défectueux"), ("solution", "refund"), ("note", "ok")),
    )
    outcome = await h.engine.handle(event)
    await h.drain()
    assert outcome.ok
    record = await complaint_row(h)
    assert record is not None
    assert (record["cause"], record["solution"], record["note"]) == (
        "produit défectueux",
        "refund",
        "ok",
    )


async def test_touchpoint_from_the_answered_entry_and_from_the_tag_mapping(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = make_settings(
        tmp_path / "t.db",
        touchpoints={"facture": {"touchpoint": "facturation", "stage": "after"}},
    )
    h = Harness(settings, clock)
    await h.start()
    try:
        await h.say("Quel est le délai de livraison ?")
        conv = await h.row("SELECT touchpoint, stage FROM conversations WHERE id = 1")
        assert (conv["touchpoint"], conv["stage"]) == ("livraison", None)  # default: the topic
        await h.press("Non")
        await h.agent_does(RESOLVE, tag="facture")
        conv = await h.row("SELECT touchpoint, stage, tag FROM conversations WHERE id = 1")
        assert (conv["touchpoint"], conv["stage"], conv["tag"]) == (
            "facturation",
            "after",
            "facture",
        )
    finally:
        await h.stop()


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"touchpoints": {"facture": {"touchpoint": "facturation", "stage": "later"}}}, "stage"),
        ({"complaints": {"causes": ["retard", "Retard"]}}, "complaints.causes"),
        ({"complaints": {"causes": []}}, "complaints.causes"),
    ],
)
def test_bad_complaint_settings_name_their_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        settings_from_mapping(data)
    assert key in str(error.value)


def test_default_complaint_settings() -> None:
    settings = settings_from_mapping({})
    assert "retard de livraison" in settings.complaints.causes
    assert settings.touchpoints == {}
