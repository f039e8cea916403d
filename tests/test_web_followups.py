"""The console's follow-ups: the list (as ``supportbot followups`` prints it), the steps
an agent takes on one, and the same key check as every agent route."""

from __future__ import annotations

from typing import Any

import aiohttp

from tests.test_web_channel import (  # noqa: F401, F811 - fixtures
    ALICE_KEY,
    BOB_KEY,
    Served,
    queued_conversation,
    served,
)
from tests.waiting import eventually


async def followups(served: Served, query: str = "", key: str = ALICE_KEY) -> list[Any]:  # noqa: F811
    url = f"{served.base}/api/agent/followups{query}"
    async with served.http.get(url, headers=served.auth(key)) as resp:
        assert resp.status == 200
        return list((await resp.json())["followups"])


async def step(served: Served, fid: int, name: str, status: int = 200, key: str = ALICE_KEY,  # noqa: F811
               **body: Any) -> dict[str, Any]:  # fmt: skip
    url = f"{served.base}/api/agent/followups/{fid}/{name}"
    body.setdefault("id", f"s-{name}-{key[:3]}")
    async with served.http.post(url, json=body, headers=served.auth(key)) as resp:
        assert resp.status == status, await resp.text()
        return dict(await resp.json())


async def test_console_lists_a_detractor_followup_and_acts_on_it(served: Served) -> None:  # noqa: F811
    visitor, cid = await queued_conversation(served)
    await served.act(cid, "take")
    await served.act(cid, "resolve")
    await eventually(lambda: visitor.asked(11))
    await visitor.press("4")
    await eventually(lambda: visitor.asked(5))
    # the CSAT question went out after the step that opened the follow-up was committed
    [item] = await followups(served, "?open=1")
    assert (item["id"], item["conversation_id"], item["nps"], item["status"]) == (
        cid,
        cid,
        4,
        "open",
    )
    assert (item["owner"], item["owner_name"], item["overdue"]) == ("web:alice", "alice", False)
    assert item["due_at"].endswith("+01:00")  # in the configured time zone

    taken = await step(served, cid, "take", key=BOB_KEY)
    assert taken == {"ok": True, "notice": f"Suivi #{cid} : pris en charge par bob."}
    again = await step(served, cid, "take", key=BOB_KEY)  # the same client id: once
    assert again["ok"]
    done = await step(served, cid, "resolved", key=BOB_KEY, note="Bon d'achat envoyé")
    assert done["ok"]
    [item] = await followups(served)
    assert (item["status"], item["owner"], item["note"]) == (
        "resolved",
        "web:bob",
        "Bon d'achat envoyé",
    )
    assert item["contacted_at"] is not None
    assert await followups(served, "?open=1") == []
    refused = await step(served, cid, "contacted", status=409)
    assert refused == {"ok": False, "notice": f"Le suivi #{cid} est déjà clos (resolved)."}
    unknown = await step(served, 999, "take", status=409)
    assert unknown["notice"] == "Suivi #999 inconnu."
    await step(served, cid, "resolved", status=400, id="")


async def test_followup_routes_need_the_key(served: Served) -> None:  # noqa: F811
    base = served.base
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(f"{base}/api/agent/followups") as resp:
            assert resp.status == 401
        url = f"{base}/api/agent/followups/1/take"
        async with anonymous.post(url, json={"id": "x"}, headers={"Origin": base}) as resp:
            assert resp.status == 401
        wrong = {"Authorization": "Bearer not-a-key-at-all-0000"}
        async with anonymous.get(f"{base}/api/agent/followups", headers=wrong) as resp:
            assert resp.status == 401


async def test_the_console_page_loads_the_followups_section(served: Served) -> None:  # noqa: F811
    async with served.http.get(f"{served.base}/agent") as resp:
        page = await resp.text()
    assert '<script src="/agent/agent-followups.js" defer></script>' in page
    assert 'id="followups"' in page
    async with served.http.get(f"{served.base}/agent/agent-followups.js") as resp:
        assert resp.status == 200
        script = await resp.text()
    assert "/api/agent/followups?open=1" in script
    assert "innerHTML" not in script  # data only ever as text
