"""What the per-message cost cuts keep: the same results as the slower code they replaced
(bench/load_bench.py measures the cost; these check the behaviour)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict

import pytest

from bot.config import SlackSettings
from bot.conversation.model import Address, Choice
from bot.conversation.payloads import address_from, address_json
from handlers.slack import render
from handlers.slack.api import library_logger
from handlers.slack.transport import SlackTransport
from tests.test_slack_channel import RecordingSink


def walk_split(text: str, limit: int, *, escaped: bool) -> list[str]:
    """The character walk ``render.split`` always did (now only for texts that do not fit)."""
    pieces: list[str] = []
    start, used, last_break, i = 0, 0, -1, 0
    while i < len(text):
        ch = text[i]
        used += (5 if ch == "&" else 4 if ch in "<>" else 1) if escaped else 1
        if ch in "\n ":
            last_break = i
        if used > limit:
            cut = last_break + 1 if last_break >= start + limit // 2 else i
            pieces.append(text[start:cut])
            start, i, used, last_break = cut, cut, 0, -1
            continue
        i += 1
    if start < len(text):
        pieces.append(text[start:])
    return [p for p in pieces if p.strip()] or ([text] if text.strip() else [])


@pytest.mark.parametrize(
    "text",
    ["", "   ", "\n", "Bonjour", "a & b < c > d", "x" * 30, "&" * 6, "<>" * 4, "mot " * 9,
     "ligne\n" * 5, "a&b " * 7],
)  # fmt: skip
@pytest.mark.parametrize("limit", [6, 10, 24, 30, 100])
@pytest.mark.parametrize("escaped", [True, False])
def test_split_is_the_walk(text: str, limit: int, escaped: bool) -> None:
    assert render.split(text, limit, escaped=escaped) == walk_split(text, limit, escaped=escaped)


def test_escaped_length() -> None:
    for text in ("", "plain", "a & b", "<!channel>", "&&<<>>", "é 🙂 & <x>"):
        assert render.escaped_length(text) == len(render.escape(text))


def test_customer_message_rendering_unchanged_for_a_long_answer() -> None:
    text = "Réponse & détails <ici>. " * 400  # over a section: several sections
    blocks = render.customer_blocks(text, [[Choice("Oui", "t1")]], "fr")
    sections = [b for b in blocks if b["type"] == "section"]
    assert len(sections) > 1
    assert "".join(walk_split(text, render.SECTION_LIMIT * 9 // 10, escaped=True)) == text


def test_address_json_has_every_field() -> None:
    for address in (Address("slack", "D1"), Address("slack", "C1", "1700.1")):
        assert address_json(address) == asdict(address)
        assert address_from(address_json(address)) == address


@pytest.fixture
def root_level() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level = root.level
    yield root
    root.setLevel(level)


def test_library_logger_takes_the_level_in_force(root_level: logging.Logger) -> None:
    root_level.setLevel(logging.INFO)
    logger = library_logger("tests.hot_path.library")
    assert logger.level == logging.INFO  # slack_sdk's "level <= DEBUG" test is now false
    root_level.setLevel(logging.DEBUG)
    assert logger.level == logging.INFO
    again = library_logger("tests.hot_path.library")  # the next transport: DEBUG now
    assert again is logger
    assert logger.level == logging.DEBUG  # an operator's DEBUG still shows the libraries' lines


def test_slack_clients_do_not_format_debug_lines_at_info(root_level: logging.Logger) -> None:
    logging.getLogger("handlers.slack.sdk").setLevel(logging.NOTSET)
    logging.getLogger("handlers.slack.bolt").setLevel(logging.NOTSET)
    root_level.setLevel(logging.INFO)
    settings = SlackSettings(
        api_url="http://127.0.0.1:9/api/", agents_channel="C0AGENTS", mode="http"
    )
    transport = SlackTransport(
        settings, bot_token="xoxb-1", signing_secret="s", on_event=RecordingSink()
    )
    assert transport.client.logger.level > logging.DEBUG
    assert logging.getLogger("handlers.slack.bolt").level > logging.DEBUG
