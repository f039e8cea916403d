"""The composition root: SupportApp wires storage, engine, outbox, sweeper and transports."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from bot.app import SupportApp, plan_channels
from bot.config import Secrets, Settings, settings_from_mapping
from bot.conversation.model import Address, Agent, AgentMessage, Customer, CustomerMessage
from tests.fakes.clock import FakeClock
from tests.fakes.recording import RecordingChannel, RecordingDesk
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
    assert any("SLACK_BOT_TOKEN and SLACK_APP_TOKEN" in p for p in plan.problems)
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
