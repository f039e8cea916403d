"""``/healthz``, ``/readyz`` and ``/metrics`` through the real web server (SPEC "Web
endpoints"): no login, no rate limit, readiness from the database and every channel,
metrics counted from the database in the Prometheus text format."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import tests.test_web_channel as web_channel
from tests.test_web_channel import Served
from tests.waiting import eventually

served = web_channel.served  # the fixture: a SupportApp with the web channel on port 0


async def _get(served: Served, path: str) -> tuple[int, Any]:
    async with served.http.get(f"{served.base}{path}") as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def _samples(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and labels (the parser must accept it all)."""
    status, text = await _get(served, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


class _Offline:
    """A started channel that lost its connection."""

    channel = "telegram"
    ready = False

    async def stop(self) -> None:
        return None


async def test_healthz_without_login_and_without_rate_limit(served: Served) -> None:
    # The fixture allows 8 requests in 10 s per client where a limit applies.
    for _ in range(12):
        assert await _get(served, "/healthz") == (200, {"status": "ok"})
        status, _body = await _get(served, "/readyz")
        assert status == 200


async def test_readyz_reports_the_database(served: Served) -> None:
    status, body = await _get(served, "/readyz")
    assert status == 200
    assert body == {"status": "ready", "checks": {"database": "ok", "web": "ok"}}
    await served.app._db.close()
    status, body = await _get(served, "/readyz")
    assert status == 503
    assert body["status"] == "not ready"
    assert [r.split(":")[0] for r in body["reasons"]] == ["database"]
    assert "does not answer" in body["reasons"][0]
    assert await _get(served, "/healthz") == (200, {"status": "ok"})  # still alive


async def test_readyz_reports_a_disconnected_channel(served: Served) -> None:
    served.app.transports.append(_Offline())
    status, body = await _get(served, "/readyz")
    assert status == 503
    assert body["reasons"] == ["telegram: not connected"]
    assert body["checks"]["database"] == "ok"


async def test_metrics_count_a_conversation(served: Served) -> None:
    before = await _samples(served)
    assert before[("supportbot_outbox_backlog", ())] == 0
    assert not [k for k in before if k[0] == "supportbot_messages_in_total"]
    visitor = await served.widget(await served.token())
    await visitor.say("Quel est le délai de livraison ?")
    await eventually(lambda: any(line["author"] == "bot" for line in visitor.lines()))
    bot_lines = sum(line["author"] == "bot" for line in visitor.lines())
    web = (("channel", "web"),)
    got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for _ in range(200):  # the delivery is recorded just after the line reaches the socket
        got = await _samples(served)
        if got.get(("supportbot_messages_out_total", web)) == bot_lines:
            break
    assert got[("supportbot_messages_in_total", web)] == 1
    assert got[("supportbot_messages_out_total", web)] == bot_lines == 1
    assert got[("supportbot_open_conversations", (("state", "bot"),))] == 1
    assert got[("supportbot_outbox_backlog", ())] == 0
    assert got[("supportbot_outbox_oldest_age_seconds", ())] == 0
    await visitor.close()


async def test_metrics_count_a_handoff(served: Served) -> None:
    visitor = await served.widget(await served.token())
    await visitor.say("je veux parler à un conseiller")
    # (the customer's own line comes back first: wait for the bot's answer)
    await eventually(lambda: any(line["author"] == "bot" for line in visitor.lines()))
    got = await _samples(served)
    assert got[("supportbot_handoffs_total", (("reason", "requested"),))] == 1
    assert got[("supportbot_open_conversations", (("state", "queued"),))] == 1
    assert got[("supportbot_messages_in_total", (("channel", "web"),))] == 1
    await visitor.close()


def _histogram(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, label: tuple[str, str]
) -> tuple[list[tuple[float, float]], float, float]:
    """(le, cumulative count) per bucket, the count and the sum of one labelled histogram."""
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (sample, labels), value in samples.items()
        if sample == f"{name}_bucket" and label in labels
    )
    return buckets, samples[(f"{name}_count", (label,))], samples[(f"{name}_sum", (label,))]


async def test_metrics_engine_step_latency(served: Served) -> None:
    before = await _samples(served)
    assert not [k for k in before if k[0].startswith("supportbot_engine_step_seconds")]
    visitor = await served.widget(await served.token())
    await visitor.say("Quel est le délai de livraison ?")
    await eventually(lambda: any(line["author"] == "bot" for line in visitor.lines()))
    buckets, count, total = _histogram(
        await _samples(served), "supportbot_engine_step_seconds", ("event", "customer_message")
    )
    assert count == 1
    assert 0 < total < 30  # seconds of one real step (the fake clock does not move)
    assert buckets[-1] == (float("inf"), 1)
    counts = [n for _le, n in buckets]
    assert counts == sorted(counts)  # cumulative
    first = next(le for le, n in buckets if n == 1)
    assert total <= first  # the step falls in the first bucket that counts it
    await visitor.say("Quel est le délai de livraison ?")
    await eventually(lambda: sum(line["author"] == "bot" for line in visitor.lines()) == 2)
    _, count, _ = _histogram(
        await _samples(served), "supportbot_engine_step_seconds", ("event", "customer_message")
    )
    assert count == 2
    await visitor.close()


async def test_metrics_knowledge_base_confidence(served: Served) -> None:
    kb = served.app.components.engine.kb if served.app.components else None
    assert kb is not None
    known, unknown = "Quel est le délai de livraison ?", "zorglub quantique ptérodactyle"
    assert kb.match(known, "fr").answered
    assert not kb.match(unknown, "fr").answered
    visitor = await served.widget(await served.token())
    await visitor.say(known)
    await eventually(lambda: sum(line["author"] == "bot" for line in visitor.lines()) == 1)
    await visitor.say(unknown)
    await eventually(lambda: sum(line["author"] == "bot" for line in visitor.lines()) == 2)
    samples = await _samples(served)
    name = "supportbot_kb_confidence"
    buckets, count, total = _histogram(samples, name, ("outcome", "answered"))
    assert count == 1
    assert total == pytest.approx(kb.match(known, "fr").score)
    score_bucket = next(le for le, n in buckets if n == 1)
    assert score_bucket - 0.1 < total <= score_bucket
    _, declined, declined_sum = _histogram(samples, name, ("outcome", "declined"))
    assert declined == 1
    assert declined_sum == pytest.approx(kb.match(unknown, "fr").score)
    assert _histogram(samples, name, ("outcome", "ambiguous"))[1] == 0
    await visitor.close()
