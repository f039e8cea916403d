"""Saved replies: replies.yaml validation (and `supportbot check`), and the engine sending,
listing and refusing them; agents' display names; the customer context in headers."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.cli import main
from bot.conversation.model import Agent, AgentAction, AgentActionKind, Outcome
from bot.errors import SavedRepliesError
from bot.replies import load
from tests.fakes.clock import FakeClock
from tests.harness import Harness, make_settings

ROOT = Path(__file__).resolve().parent.parent
SAVED = AgentActionKind.SAVED_REPLY

REPLIES = """\
replies:
  - shortcut: delai
    title: Delivery times
    text:
      fr: "Bonjour {customer}, la livraison prend 2 à 4 jours. {agent}"
      en: "Hello {customer}, delivery takes 2 to 4 days. {agent}"
  - shortcut: retour
    text:
      fr: "Les retours sont gratuits sous 30 jours."
      en: "Returns are free within 30 days."
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "replies.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- the file


def test_shipped_sample_is_valid_and_names_both_placeholders() -> None:
    replies = load(ROOT / "replies.yaml")
    assert len(replies) >= 6
    bonjour = replies.get("bonjour")
    assert bonjour is not None
    text = bonjour.render("en", customer="Ana", agent="Paul")
    assert "Ana" in text
    assert "Paul" in text
    assert "{" not in text


@pytest.mark.parametrize(
    ("source", "line", "key", "reason"),
    [
        (REPLIES.replace("{agent}\"\n  - shortcut: retour", "{client}\"\n  - shortcut: retour"),
         6, "replies[0].text.en", "unknown placeholder {client}"),
        (REPLIES.replace('      en: "Returns are free within 30 days."\n', ""),
         9, "replies[1].text.en", "missing"),
        (REPLIES.replace("shortcut: retour", "shortcut: delai"),
         7, "replies[1].shortcut", "duplicate shortcut 'delai'"),
        (REPLIES.replace("shortcut: retour", "shortcut: Mon Retour"),
         7, "replies[1].shortcut", "lower-case"),
        (REPLIES.replace("title: Delivery times", "titre: Delivery times"),
         3, "replies[0].titre", "unknown key"),
        (REPLIES.replace("la livraison prend", "la {livraison prend"),
         5, "replies[0].text.fr", "literal brace"),
    ],
)  # fmt: skip
def test_a_bad_file_names_file_line_and_key(
    tmp_path: Path, source: str, line: int, key: str, reason: str
) -> None:
    path = write(tmp_path, source)
    with pytest.raises(SavedRepliesError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert reason in message


def test_a_yaml_syntax_error_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "replies:\n  - shortcut: a\n    text: {fr: 'x', en: 'y'\n")
    with pytest.raises(SavedRepliesError, match=rf"^{path}:\d+:\d+: YAML syntax error"):
        load(path)


def test_check_refuses_a_bad_replies_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copy(ROOT / "knowledge.yaml", tmp_path / "knowledge.yaml")
    shutil.copy(ROOT / "replies.yaml", tmp_path / "replies.yaml")
    for name in ("TELEGRAM_BOT_TOKEN", "SLACK_BOT_TOKEN", "WEB_AGENT_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["check"]) == 0
    assert "saved replies:" in capsys.readouterr().out

    good = (tmp_path / "replies.yaml").read_text(encoding="utf-8")
    (tmp_path / "replies.yaml").write_text(
        good.replace("Bonjour {customer}", "Bonjour {client}"), "utf-8"
    )
    assert main(["check"]) == 2
    err = capsys.readouterr().err
    assert "replies.yaml:" in err
    assert "unknown placeholder {client}" in err
    assert "replies[0].text.fr" in err


# ---------------------------------------------------------------- the engine


@pytest.fixture
async def h(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    path = write(tmp_path, REPLIES)
    harness = Harness(make_settings(tmp_path / "t.db", replies={"path": str(path)}), clock)
    await harness.start()
    yield harness
    await harness.stop()


async def saved(h: Harness, text: str, *, agent: Agent | None = None) -> Outcome:
    assert h.engine is not None
    thread = h.desk.only_thread()[0]
    who = agent or Agent("slack", "U_AGENT", "Paul Martin", shown="Paul")
    outcome = await h.engine.handle(AgentAction(who, h.key(), SAVED, thread=thread, text=text))
    await h.drain()
    return outcome


async def test_saved_reply_goes_out_in_the_customer_language_with_placeholders(
    h: Harness,
) -> None:
    await h.say("I want to talk to a human", lang="en")
    outcome = await saved(h, "delai")
    assert outcome.ok
    assert h.channel.last()["text"] == "Hello Marie, delivery takes 2 to 4 days. Paul"
    thread = h.desk.only_thread()[1]
    assert ("agent", "Hello Marie, delivery takes 2 to 4 days. Paul") in thread.posts
    assert thread.header.status == "Pris en charge par Paul Martin"  # a queued one is taken
    row = await h.row("SELECT author, agent_key FROM messages ORDER BY id DESC LIMIT 1")
    assert tuple(row) == ("agent", "slack:U_AGENT")
    assert await h.row("SELECT 1 FROM events WHERE kind = 'saved_reply'") is not None


async def test_listing_and_refusals_reach_the_agent_only(h: Harness) -> None:
    await h.say("Je veux parler à un conseiller")
    sent_before = len(h.channel.texts())
    posts_before = list(h.desk.only_thread()[1].posts)

    listing = await saved(h, "")
    assert listing.ok
    assert listing.notice is not None
    assert "delai — Delivery times" in listing.notice
    assert "retour — Les retours sont gratuits" in listing.notice

    unknown = await saved(h, "delia")
    assert not unknown.ok
    assert unknown.notice is not None
    assert "« delia »" in unknown.notice
    assert "delai" in unknown.notice

    assert len(h.channel.texts()) == sent_before  # nothing reached the customer
    assert h.desk.only_thread()[1].posts == posts_before


async def test_an_agent_with_no_name_is_never_shown_by_id(h: Harness) -> None:
    await h.say("Je veux parler à un conseiller")
    await saved(h, "delai", agent=Agent("slack", "U_AGENT"))  # users.info failed: no name
    assert h.channel.last()["text"].endswith(" Un conseiller")
    assert not any("U_AGENT" in text for text in h.channel.texts())


async def test_take_announces_the_display_name(h: Harness) -> None:
    assert h.engine is not None
    await h.say("Je veux parler à un conseiller")
    thread = h.desk.only_thread()[0]
    paul = Agent("slack", "U_AGENT", "Paul Martin", shown="Paul")
    await h.engine.handle(AgentAction(paul, h.key(), AgentActionKind.TAKE, thread=thread))
    await h.drain()
    assert "Paul a rejoint la conversation." in h.channel.texts()
    assert h.desk.only_thread()[1].header.status == "Pris en charge par Paul Martin"


async def test_without_replies_configured_the_agent_is_told(harness: Harness) -> None:
    await harness.say("Je veux parler à un conseiller")
    outcome = await saved(harness, "delai")
    assert not outcome.ok
    assert outcome.notice is not None
    assert "replies.yaml" in outcome.notice


# ---------------------------------------------------------------- customer context


async def test_header_shows_the_previous_conversation(h: Harness) -> None:
    await h.say("Je veux parler à un conseiller")
    first, _ = h.desk.only_thread()
    assert h.desk.threads[first].header.context == "Premier contact"
    await h.agent_does(AgentActionKind.RESOLVE, tag="livraison")
    await h.press("3")  # NPS
    await h.press("🙁")  # CSAT 2
    h.desk.threads.clear()

    await h.say("Je veux parler à un conseiller")
    thread = h.desk.only_thread()[1]
    context = thread.header.context
    today = h.clock.now().astimezone(h.settings.tz).date().isoformat()
    assert context.startswith("1 conversation(s) avant celle-ci")
    assert f"dernière le {today} : livraison" in context
    assert "NPS 3/10, CSAT 2/5" in context
    await h.agent_does(AgentActionKind.TAKE)  # a redrawn header keeps it
    assert h.desk.only_thread()[1].header.context == context
