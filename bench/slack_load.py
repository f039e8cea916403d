"""Slack load: signed Events API deliveries to an app's HTTP endpoint, timed acks and replies.

Each customer writes to the app in a DM: the fake Slack POSTs the signed ``event_callback``
(the ack is the HTTP response, timed), then the clock for the reply runs until the app's
``chat.postMessage`` reaches the local Web API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from bench.loadkit import Tally, Waiters
from tests.fakes.slack_server import FakeSlack, Message

REPLY_TIMEOUT_S = 30.0
AGENTS = "C0AGENTS"


class TimedSlack(FakeSlack):
    """The local Slack, telling the waiters about every message the app posts."""

    def __init__(self) -> None:
        super().__init__()
        self.waiters = Waiters()
        self.add_channel(AGENTS, "support-agents", ["U0PAUL"])
        self.add_user("U0PAUL", "paul")

    def _store(self, msg: Message) -> Message:
        stored = super()._store(msg)
        if msg.user == self.bot_user_id:
            self.waiters.arrived(msg.channel, msg)
        return stored

    def forget_history(self) -> None:
        self.calls.clear()
        self.messages.clear()
        self._by_ts.clear()


def shows(text: str) -> Any:
    """A predicate: the message's text or blocks contain ``text``."""
    return lambda m: text in m.text or any(text in t for t in m.mrkdwn_texts() + m.plain_texts())


async def run_customers(
    slack: TimedSlack,
    customers: Sequence[str],
    questions: Sequence[str],
    tally: Tally,
    duration: float,
    *,
    expect: str | None,
) -> None:
    """Closed loop: each customer writes, waits for the reply, writes again. ``tally.other``
    collects the acknowledgement times (HTTP round trip of the delivery)."""
    start = time.perf_counter()
    deadline = start + duration

    async def one(i: int, user: str) -> None:
        channel = slack.dm_channel(user)
        turn = 0
        while time.perf_counter() < deadline:
            turn += 1
            text = questions[(i + turn) % len(questions)]
            waiter = slack.waiters.expect(channel, shows(text if expect is None else expect))
            sent = time.perf_counter()
            try:
                delivery = await slack.send_event(slack.dm_message(user, text))
                tally.other.append(time.perf_counter() - sent)
                if delivery.status != 200:
                    raise LookupError(f"HTTP {delivery.status}")
                arrived, _ = await asyncio.wait_for(waiter, REPLY_TIMEOUT_S)
                tally.note(sent, arrived)
            except (TimeoutError, LookupError):
                waiter.cancel()
                tally.errors += 1

    await asyncio.gather(*(one(i, u) for i, u in enumerate(customers)))
    tally.elapsed = time.perf_counter() - start
