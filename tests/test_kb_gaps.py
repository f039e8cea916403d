"""The knowledge author's to-do list: grouping by meaning, ``supportbot kb gaps`` and
``kb picks``, the digest's section and the dashboard's table.

The database is filled by the real engine (``Harness``) with a scripted knowledge base:
what the customers asked is what the lists show.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.cli import main
from bot.insights.digest import compose
from bot.insights.kpi import Period
from bot.insights.report import report_period
from bot.knowledge import load_encoder
from bot.knowledge.gaps import group_questions
from handlers.web.dashboard import dashboard_routes
from tests.fakes.clock import FakeClock
from tests.harness import Harness, make_settings
from tests.test_bot_answers import ScriptedAnswerer

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
DAY = date(2026, 11, 23)  # the fake clock's day
GERMANY = [
    "vous livrez en Allemagne ?",
    "do you ship to Germany?",
    "livraison possible en Allemagne ?",
]
PAYPAL = ["Can I pay with PayPal?", "paiement par paypal possible ?"]
CARD = "je voudrais parler de ma carte cadeau expirée"


# ---------------------------------------------------------------------- grouping


def test_questions_group_by_meaning_across_languages() -> None:
    texts = [*GERMANY, *PAYPAL, GERMANY[0], CARD]
    groups = group_questions(texts, load_encoder("use-multilingual"))
    assert [(g.count, set(g.examples)) for g in groups] == [
        (4, set(GERMANY)),  # the repeated wording counts twice, is shown once
        (2, set(PAYPAL)),
        (1, {CARD}),
    ]
    assert groups[0].members == (0, 1, 2, 5)
    assert groups[0].question in GERMANY


def test_without_an_encoder_questions_group_by_their_words() -> None:
    groups = group_questions([*GERMANY, *PAYPAL, GERMANY[0], CARD], None)
    assert [(g.count, set(g.examples)) for g in groups] == [
        (3, {GERMANY[0], GERMANY[2]}),
        (2, set(PAYPAL)),  # "paypal" is the same word in both languages
        (1, {GERMANY[1]}),  # ... "Germany" and "Allemagne" are not
        (1, {CARD}),
    ]


def test_examples_are_at_most_five_distinct_wordings() -> None:
    texts = [f"vous livrez en Allemagne {n} ?" for n in range(8)]
    [group] = group_questions(texts, None)
    assert group.count == 8
    assert len(group.examples) == 5
    assert group_questions([], None) == []


# ---------------------------------------------------------------------- a filled database


@pytest.fixture
async def filled(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    """Misses (Germany ×4, PayPal ×2, the gift card), an answer that did not help, a pick."""
    kb = ScriptedAnswerer()
    kb.answers("c koi le delai", "delivery-time")
    kb.hesitates("et mon colis alors", "delivery-time", "refund")
    settings = make_settings(tmp_path / "t.db", timezone="Europe/Paris", language="fr")
    h = Harness(settings, clock, kb=kb)
    await h.start()
    for user, text in enumerate([*GERMANY, *PAYPAL, GERMANY[0], CARD]):
        await h.say(text, user=str(100 + user))
    await h.say("c koi le delai", user="200")
    await h.press("Non", user="200")
    await h.say("et mon colis alors", user="300")
    await h.press("Quel est le délai de livraison ?", user="300")
    yield h
    await h.stop()


def config(h: Harness, tmp_path: Path, **knowledge: str) -> Path:
    path = tmp_path / "config.yaml"
    data: dict[str, Any] = {
        "language": "fr",
        "timezone": "Europe/Paris",
        "storage": {"path": str(h.settings.storage.path)},
        "knowledge": {"path": str(ROOT / "knowledge.yaml"), **knowledge},
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 0
    return capsys.readouterr().out


def test_kb_gaps_json(filled: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(config(filled, tmp_path))
    out = run(["kb", "gaps", "--config", path, "--format", "json", "--from", "2026-11-23",
               "--to", "2026-11-24"], capsys)  # fmt: skip
    data = json.loads(out)
    assert set(data) == {"period", "gaps", "weak_answers"}
    assert data["period"] == {
        "from": "2026-11-23T00:00:00+01:00",
        "to": "2026-11-24T00:00:00+01:00",
        "timezone": "Europe/Paris",
    }
    shown = [(g["count"], set(g["examples"]), g["reasons"]) for g in data["gaps"]]
    assert shown == [
        (4, set(GERMANY), {"missed": 4}),
        (2, set(PAYPAL), {"missed": 2}),
        (1, {CARD}, {"missed": 1}),
        (1, {"c koi le delai"}, {"not_helpful": 1}),
    ]
    for gap in data["gaps"]:
        assert set(gap) == {"question", "count", "examples", "reasons"}
        assert gap["question"] == gap["examples"][0]
    # delivery-time: answered twice (typed, then picked), did not help once
    assert data["weak_answers"] == [{"entry": "delivery-time", "not_helpful": 1, "answered": 2}]

    before = run(["kb", "gaps", "--config", path, "--format", "json", "--from", "2026-11-16",
                  "--to", "2026-11-23"], capsys)  # fmt: skip
    assert json.loads(before)["gaps"] == []


def test_kb_gaps_table_in_the_configured_language(
    filled: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(config(filled, tmp_path, encoder="none"))
    out = run(["kb", "gaps", "--config", path, "--from", "2026-11-23", "--to", "2026-11-24"],
              capsys)  # fmt: skip
    assert out.startswith("Questions sans réponse — ")
    assert "Question (la plus représentative)" in out
    assert "Réponses qui n'ont pas aidé" in out
    assert "paiement par paypal possible ?" in out
    lines = out.splitlines()
    weak = lines[next(i for i, line in enumerate(lines) if "n'ont pas aidé" in line) :]
    assert any("delivery-time" in line and line.split()[-2:] == ["1", "2"] for line in weak)


async def test_kb_gaps_default_period_is_the_kpi_reports(filled: Harness) -> None:
    from bot.insights.gaps import gaps_command

    settings = make_settings(filled.settings.storage.path, timezone="Europe/Paris")
    out = await gaps_command(settings, date_from=None, date_to=None, fmt="json", today=DAY)
    expected = report_period(settings, None, None, DAY)
    period = json.loads(out)["period"]
    assert (period["from"], period["to"]) == (
        expected.start.isoformat(),
        expected.end.isoformat(),
    )


def test_kb_picks_prints_eval_cases(
    filled: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(config(filled, tmp_path))
    out = run(["kb", "picks", "--config", path, "--from", "2026-11-23", "--to", "2026-11-24"],
              capsys)  # fmt: skip
    assert yaml.safe_load(out) == {
        "cases": [{"lang": "fr", "expected": "delivery-time", "text": "et mon colis alors"}]
    }


# ---------------------------------------------------------------------- digest, dashboard


def today_in_paris() -> Period:
    start = datetime(2026, 11, 23, tzinfo=PARIS)
    return Period(start, start + timedelta(days=1))


async def test_the_digest_lists_the_three_largest_gaps(filled: Harness) -> None:
    assert filled.db is not None
    content = await compose(filled.settings, filled.db, today_in_paris(), chart=False)
    lines = content.text.splitlines()
    start = lines.index("Questions restées sans réponse (à ajouter à la base) :")
    shown = lines[start + 1 :]
    assert len(shown) == 3
    assert shown[0].startswith("• « ")
    assert shown[0].endswith(" » — 4 fois")
    assert shown[0][4:].split(" » ")[0] in GERMANY
    assert shown[1].endswith(" » — 2 fois")
    assert shown[2].endswith(" » — 1 fois")


async def test_a_period_without_gaps_has_no_section(filled: Harness) -> None:
    assert filled.db is not None
    day_before = Period(today_in_paris().start - timedelta(days=1), today_in_paris().start)
    text = (await compose(filled.settings, filled.db, day_before, chart=False)).text
    assert "Questions restées sans réponse" not in text


async def test_the_dashboard_shows_the_gaps(filled: Harness, clock: FakeClock) -> None:
    assert filled.db is not None
    app = web.Application()
    app.add_routes(dashboard_routes(filled.db, filled.settings, clock))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/kb-gaps", params={"from": "2026-11-23"})
        assert response.status == 200
        data = await response.json()
        bad = await client.get("/api/kb-gaps", params={"from": "23/11/2026"})
        assert bad.status == 400
    assert [g["count"] for g in data["gaps"]] == [4, 2, 1, 1]
    assert data["labels"]["col_question"] == "Question (la plus représentative)"
    assert data["labels"]["title"].startswith("Questions sans réponse")


async def test_dashboard_page_has_the_gaps_table() -> None:
    from handlers.web.transport import static_dir

    page = static_dir().joinpath("dashboard.html").read_text(encoding="utf-8")
    script = static_dir().joinpath("dashboard.js").read_text(encoding="utf-8")
    assert 'id="gaps"' in page
    assert "/api/kb-gaps?" in script
