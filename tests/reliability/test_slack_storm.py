"""Slack down for a while, then rate limiting, while a retry storm redelivers every event
three more times at once: each customer message is handled once and answered once, and
no call is retried before the Retry-After Slack asked for."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest

from tests.fakes.slack_server import Call, FakeSlack
from tests.test_e2e_slack import DELIVERY_QUESTION, make_settings, running
from tests.test_e2e_slack import slack as slack  # noqa: F401 - the fixture, reused
from tests.waiting import eventually

pytestmark = pytest.mark.slow

CUSTOMERS = [f"U0CLIENT{i}" for i in range(5)]
RETRY_AFTER = 1


def by_channel(calls: list[Call]) -> dict[str, list[Call]]:
    grouped: dict[str, list[Call]] = defaultdict(list)
    for call in calls:
        grouped[str(call.params.get("channel"))].append(call)
    return grouped


async def test_retry_storm_during_an_outage_is_handled_once(
    tmp_path: Path, slack: FakeSlack
) -> None:
    for user in CUSTOMERS:
        slack.add_user(user, user.lower(), locale="fr-FR")
    async with running(make_settings(tmp_path, slack), slack) as p:
        slack.down(seconds=1.0)  # every API call answers 503 for a while
        slack.rate_limit("chat.postMessage", times=2, retry_after=RETRY_AFTER)  # then this
        storm = []
        for user in CUSTOMERS:
            event = slack.dm_message(user, DELIVERY_QUESTION)
            first = await slack.send_event(event)
            assert first.status == 200
            storm += [slack.send_event(event, event_id=first.event_id, retry=n) for n in (1, 2, 3)]
        assert {d.status for d in await asyncio.gather(*storm)} == {200}
        # Each event is stored once; its redeliveries are acknowledged at the door.
        await p.transport.wait_handled(len(CUSTOMERS), within=10)
        assert len(p.rows("SELECT * FROM inbound_queue")) == len(CUSTOMERS)

        def answered() -> bool:
            return all(p.dm(user) for user in CUSTOMERS)

        await eventually(answered, within=30)
        await p.settle()

        assert [len(p.dm(user)) for user in CUSTOMERS] == [1] * len(CUSTOMERS)
        stored = p.rows("SELECT text FROM messages WHERE author = 'customer'")
        assert len(stored) == len(CUSTOMERS)
        assert len(p.rows("SELECT * FROM conversations")) == len(CUSTOMERS)
        posts = slack.calls_to("chat.postMessage")
        assert [c.status for c in posts].count(200) == len(CUSTOMERS)
        assert [c.status for c in posts].count(429) == 2
        assert any(c.status == 503 for c in posts)  # the outage was met by a send
        for tries in by_channel(posts).values():
            for refused, retry in zip(tries, tries[1:], strict=False):
                if refused.status == 429:
                    assert retry.at - refused.at >= RETRY_AFTER - 0.05
        sends = p.rows("SELECT sent_at, failed_at FROM outbox WHERE op = 'send'")
        assert len(sends) == len(CUSTOMERS)
        assert all(r["sent_at"] is not None and r["failed_at"] is None for r in sends)
        assert p.transport.errors == []
