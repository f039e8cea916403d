"""The composition root: SupportApp wires storage, engine, outbox, sweeper and transports."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.app import SupportApp
from bot.channels import plan_channels
from bot.config import Secrets, Settings, settings_from_mapping
from bot.conversation.model import Address, Agent, AgentMessage, Customer, CustomerMessage
from bot.errors import ConfigError
from tests.fakes.clock import FakeClock
from tests.fakes.recording import RecordingChannel, RecordingDesk
from tests.fakes.telegram_server import running_server
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent


class TelegramLike(RecordingChannel):
    """A customer-channel transport with a lifecycle, as the app expects."""

    started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False


class SlackDeskLike(RecordingDesk):
    started = False

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False


def settings_for(tmp_path: Path, **extra: object) -> Settings:
    shutil.copy(ROOT / "knowledge.yaml", tmp_path / "knowledge.yaml")
    data: dict[str, object] = {
        "storage": {"path": str(tmp_path / "app.db")},
        "knowledge": {"path": str(tmp_path / "knowledge.yaml")},
        "desk": "slack",
        "conversation": {"sweep_every": "20ms"},
        "digest": {"enabled": False},
    }
    data.update(extra)
    return settings_from_mapping(data)


def message(text: str, key: str, command: str | None = None) -> CustomerMessage:
    return CustomerMessage(
        Customer("telegram", "1", "Léa", "fr"), Address("telegram", "1"), text, key, command
    )


async def test_telegram_customer_served_from_slack_desk_across_restart(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    clock = FakeClock()
    channel, desk = TelegramLike("telegram"), SlackDeskLike("slack", agents=("U1",))
    app = SupportApp(settings, Secrets(), clock=clock, transports=[channel, desk])
    await app.start()
    assert channel.started
    assert desk.started
    await app.engine.handle(message("Comment suivre ma commande ?", "u1"))
    await eventually(lambda: len(channel.texts()) == 1)
    await app.engine.handle(message("", "u2", command="agent"))
    await eventually(lambda: len(desk.threads) == 1)
    await app.stop()
    assert not channel.started

    app = SupportApp(settings, Secrets(), clock=clock, transports=[channel, desk])
    await app.start()
    thread = next(iter(desk.threads))
    agent = Agent("slack", "U1", "Paul")
    await app.engine.handle(AgentMessage(agent, thread, "Bonjour Léa !", "a1", message_ref="m1"))
    await eventually(lambda: "Bonjour Léa !" in channel.texts())
    await eventually(lambda: desk.threads[thread].relayed == ["m1"])
    await app.stop()


async def test_sweeper_fires_timers_in_the_background(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    clock = FakeClock()
    channel, desk = TelegramLike("telegram"), SlackDeskLike("slack")
    app = SupportApp(settings, Secrets(), clock=clock, transports=[channel, desk])
    await app.start()
    try:
        await app.engine.handle(message("", "u1", command="agent"))
        await eventually(lambda: len(desk.threads) == 1)
        clock.advance(timedelta(minutes=16))
        await eventually(lambda: any("reviendra vers vous" in t for t in channel.texts()))
    finally:
        await app.stop()


def test_plan_channels_from_environment() -> None:
    base = settings_from_mapping({"slack": {"agents_channel": "C1"}, "desk": "slack"})
    plan = plan_channels(base, Secrets(telegram_bot_token="1:x"))
    assert plan.telegram
    assert not plan.slack
    assert any("SLACK_BOT_TOKEN and SLACK_APP_TOKEN" in p for p in plan.off)
    assert plan.desk == "web"  # desk: slack, but Slack is not connected
    assert plan.problems == ("desk is slack but slack is not connected: handoffs reach only "
                             "the web console",)  # fmt: skip
    http = settings_from_mapping({"slack": {"mode": "http"}})
    plan = plan_channels(http, Secrets(slack_bot_token="xoxb-1", slack_signing_secret="s"))
    assert plan.slack
    assert not plan.telegram
    web_only = plan_channels(base, Secrets())
    assert web_only.any
    assert web_only.web
    assert not (web_only.telegram)
    assert not (web_only.slack)
    off = settings_from_mapping({"web": {"enabled": False}})
    assert not plan_channels(off, Secrets()).any


async def test_blocked_customer_found_at_send_is_marked_gone(tmp_path: Path) -> None:
    from bot.errors import RecipientGoneError

    settings = settings_for(tmp_path)
    channel, desk = TelegramLike("telegram"), SlackDeskLike("slack")
    app = SupportApp(settings, Secrets(), clock=FakeClock(), transports=[channel, desk])
    await app.start()
    try:
        await app.engine.handle(message("", "u1", command="agent"))
        await eventually(lambda: len(desk.threads) == 1)
        thread = next(iter(desk.threads))
        await eventually(lambda: len(channel.texts()) == 1)  # the handoff notice went out
        assert app.components is not None
        await app.components.dispatcher.drain()  # ... and the thread is recorded
        channel.fail_next(RecipientGoneError("Forbidden: bot was blocked by the user"))
        agent = Agent("slack", "U_AGENT", "Paul")
        await app.engine.handle(AgentMessage(agent, thread, "Bonjour ?", "a1", message_ref="m1"))
        await eventually(lambda: any("plus joignable" in t or "parti" in t
                                     for _, t in desk.threads[thread].posts))  # fmt: skip
        row = await app.engine.store.customer_record("telegram:1")  # type: ignore[attr-defined]
        assert row is not None
        assert row[1] is False
    finally:
        await app.stop()


async def test_kpi_summary_for_the_slash_command_reads_the_live_database(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    clock = FakeClock()
    channel, desk = TelegramLike("telegram"), SlackDeskLike("slack")
    app = SupportApp(settings, Secrets(), clock=clock, transports=[channel, desk])
    await app.start()
    try:
        await app.engine.handle(message("Comment suivre ma commande ?", "u1"))
        await eventually(lambda: len(channel.texts()) == 1)
        token = channel.last_tokens()["Oui, merci"]
        from bot.conversation.model import CustomerChoice

        customer = Customer("telegram", "1", "Léa", "fr")
        await app.engine.handle(CustomerChoice(customer, Address("telegram", "1"), token, "u2"))
        await eventually(lambda: len(channel.texts()) == 3)  # glad + NPS question
        nps = channel.last_tokens()["10"]
        await app.engine.handle(CustomerChoice(customer, Address("telegram", "1"), nps, "u3"))
        await eventually(lambda: len(channel.texts()) == 4)
        summary = await app._kpi_summary()
        assert "NPS" in summary
        assert "100" in summary  # one promoter, no detractor
    finally:
        await app.stop()


def test_desk_auto_is_telegram_or_slack_when_usable_else_the_console() -> None:
    tg_desk = {"agents_chat_id": -100123}
    cases: list[tuple[dict[str, object], Secrets, str | None, int]] = [
        # (settings, secrets, desk expected, warnings expected)
        ({}, Secrets(), "web", 0),  # the zero-configuration start
        ({"telegram": tg_desk}, Secrets(telegram_bot_token="1:x"), "telegram", 0),
        ({}, Secrets(telegram_bot_token="1:x"), "web", 0),  # no agents' group named: console
        (
            {"slack": {"agents_channel": "C1", "mode": "http"}},
            Secrets(slack_bot_token="xoxb-1", slack_signing_secret="s"),
            "slack",
            0,
        ),  # fmt: skip
        ({"desk": "telegram"}, Secrets(), "web", 1),  # named, not connected: said, then console
        (
            {"desk": "telegram", "web": {"enabled": False}},
            Secrets(telegram_bot_token="1:x"),
            None,
            1,
        ),  # fmt: skip
        ({"desk": "web", "web": {"enabled": False}}, Secrets(telegram_bot_token="1:x"), None, 1),
        ({"desk": "web", "telegram": tg_desk}, Secrets(telegram_bot_token="1:x"), "web", 0),
    ]
    for data, secrets, desk, warnings in cases:
        plan = plan_channels(settings_from_mapping(data), secrets)
        assert (plan.desk, len(plan.problems)) == (desk, warnings), (data, plan)


async def test_zero_configuration_start_says_in_one_line_that_the_console_is_the_desk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The shipped config.yaml and no token: no warning, one line naming the console."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))
    config["storage"]["path"] = str(tmp_path / "supportbot.db")
    config["knowledge"]["path"] = str(ROOT / "knowledge.yaml")
    config["web"]["port"] = 0
    app = SupportApp(settings_from_mapping(config), Secrets(), clock=FakeClock())
    caplog.set_level(logging.INFO)
    await app.start()
    try:
        web = app.components.customers["web"] if app.components else None
        port = getattr(web, "port", None)
        assert port
        assert app.engine.settings.desk == "web"  # what the engine (alerts…) goes by
        records = [r for r in caplog.records if r.name.startswith(("bot", "handlers"))]
        warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
        assert [w for w in warnings if "generated an agent key" not in w] == []  # first start
        desk_lines = [r.getMessage() for r in records if "desk" in r.getMessage()]
        assert desk_lines == [
            f"supportbot started: channels web; desk: the web console at "
            f"http://127.0.0.1:{port}/agent (no Telegram or Slack token set); "
            f"{len(app.engine.kb.entries)} knowledge-base entries"
        ]
    finally:
        await app.stop()


async def test_a_failed_start_releases_the_port_and_the_database(tmp_path: Path) -> None:
    """Telegram refuses the token after the web server listens: all is released, so that
    ``supportbot run`` exits instead of hanging on an open database thread and port."""
    async with running_server() as tg:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        settings = settings_for(
            tmp_path,
            web={"enabled": True, "port": port},
            telegram={"enabled": True, "api_url": tg.url},
            desk="auto",
        )
        app = SupportApp(settings, Secrets(telegram_bot_token="42:refused"), clock=FakeClock())
        with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN"):
            await app.start()
        assert app._db is None  # closed: no aiosqlite thread keeps the process alive
        with socket.socket() as again:  # the port is free again
            again.bind(("127.0.0.1", port))
        assert [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()
                and not t.get_name().startswith("Task-")] == []  # fmt: skip
