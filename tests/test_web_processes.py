"""The web channel with two processes on one PostgreSQL database (issue 19).

Two SupportApps (two aiohttp servers, two Database connections, two LISTEN connections)
on one real throwaway PostgreSQL: a widget socket or a console held by process A hears
what process B's engine and outbox did, each line once and in order, and a LISTEN
connection that drops comes back and re-reads what it may have missed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import psycopg
import pytest

from bot.app import SupportApp
from bot.config import Secrets
from handlers.web import WebTransport
from storage.database import Conn, Database
from storage.group_commit import GroupCommitted
from storage.notify import Changes, PgChanges
from storage.web_store import WebStore
from tests.fakes.clock import FakeClock
from tests.test_app import settings_for
from tests.test_web_channel import KEYS, Served, Socket, Visitor
from tests.waiting import eventually

SECRET = "a-shared-web-secret-0123456789abcdef"  # WEB_SECRET: the same in every process


@dataclass
class Pair:
    a: Served
    b: Served


class Console(Socket):
    """An agent console socket: collects what the server pushes."""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]


async def console_of(served: Served) -> Console:
    ws = await served.http.ws_connect(f"{served.base}/ws/agent", headers=served.auth())
    return Console(ws)


@pytest.fixture
async def pair(tmp_path: Path, pg_url: str) -> AsyncIterator[Pair]:
    clock = FakeClock()
    secrets = Secrets(web_agent_keys=KEYS, web_secret=SECRET)
    web = {"port": 0, "rate_limit": "50/10s", "max_message_length": 3000}
    served: list[Served] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                storage = {"path": str(tmp_path / name / "app.db"), "url": pg_url}
                settings = settings_for(tmp_path / name, web=web, desk="web", storage=storage)
                app = SupportApp(settings, secrets, clock=clock)
                await app.start()
                transport = next(t for t in app.transports if isinstance(t, WebTransport))
                assert isinstance(transport.changes, PgChanges)
                served.append(Served(app, transport, http))
            yield Pair(served[0], served[1])
        finally:
            for each in served:
                await each.app.stop()


async def queued(served: Served) -> int:
    """The conversation waiting for an agent (the engine's step may still be running)."""
    async with asyncio.timeout(5):
        while True:
            waiting = [c for c in await served.conversations() if c["state"] == "queued"]
            if waiting:
                return int(waiting[0]["id"])
            await asyncio.sleep(0.01)  # polling a condition over HTTP, bounded above


def seqs(visitor: Visitor) -> list[int]:
    return [line["seq"] for line in visitor.lines()]


def in_order_once(visitor: Visitor) -> bool:
    numbers = seqs(visitor)
    return numbers == list(range(1, len(numbers) + 1))


async def test_widget_on_a_hears_what_process_b_answers_once_and_in_order(pair: Pair) -> None:
    token = await pair.a.token()
    on_a = await pair.a.widget(token)  # the visitor's tab served by process A
    on_b = await pair.b.widget(token)  # … and another one, served by process B
    await on_b.say("Quel est le délai de livraison ?")  # B's engine answers, B's outbox sends
    await eventually(lambda: any(line["choices"] for line in on_a.lines()))
    await eventually(lambda: any(line["choices"] for line in on_b.lines()))
    await on_b.press("Oui, merci")  # the choice is stored by B: A's tab marks it too
    await eventually(lambda: any(f["type"] == "chosen" for f in on_a.frames))
    await eventually(lambda: on_a.asked(11) and on_b.asked(11))
    before = len(on_b.lines())
    await on_b.say("je veux parler à un conseiller")
    await eventually(lambda: len(on_b.lines()) >= before + 2)  # the request and the answer
    cid = await queued(pair.b)
    await eventually(lambda: len(on_a.lines()) == len(on_b.lines()))
    console = await console_of(pair.a)  # agent console on A; the agent works on B
    await pair.b.act(cid, "take")
    await pair.b.act(cid, "reply", text="Bonjour, ici Alice.")
    await eventually(lambda: on_a.has("Bonjour, ici Alice."))
    await eventually(lambda: on_b.has("Bonjour, ici Alice."))
    await eventually(lambda: any(f["id"] == cid for f in console.of("changed")))
    await pair.b.web.post_alert(9001, cid, "Conversation en attente.")  # B keeps an alert
    await eventually(lambda: bool(console.of("alert")))
    assert console.of("alert") == [
        {
            "type": "alert",
            "alert": {
                "id": 9001,
                "conversation": cid,
                "at": console.of("alert")[0]["alert"]["at"],
                "text": "Conversation en attente.",
            },
        }  # fmt: skip
    ]
    # Each line exactly once, in order, and the same lines on both tabs.
    assert in_order_once(on_a), seqs(on_a)
    assert on_a.lines() == on_b.lines()
    assert on_a.texts()[-1] == "Bonjour, ici Alice."
    assert [f["seq"] for f in on_a.frames if f["type"] == "chosen"] == [
        f["seq"] for f in on_b.frames if f["type"] == "chosen"
    ]
    for each in (on_a, on_b, console):
        await each.close()


async def test_many_lines_from_both_processes_reach_every_tab_once_in_order(pair: Pair) -> None:
    """Lines written alternately by A and B, as fast as they come: no gap, no double."""
    token = await pair.a.token()
    visitor = pair.a.web.signer.visitor_of(token)
    assert visitor is not None
    tabs = [await pair.a.widget(token), await pair.b.widget(token)]
    from bot.conversation.model import Address

    sends = [
        (pair.a if i % 2 else pair.b).web.send(Address("web", visitor), f"ligne {i}")
        for i in range(40)
    ]
    await asyncio.gather(*sends)
    for tab in tabs:
        await eventually(lambda tab=tab: len(tab.lines()) == 40)  # type: ignore[misc]
        assert in_order_once(tab), seqs(tab)
    late = await pair.a.widget(token, since=35)  # a reconnect replays only what it missed
    await eventually(lambda: len(late.lines()) == 5)
    assert seqs(late) == [36, 37, 38, 39, 40]
    for tab in [*tabs, late]:
        await tab.close()


async def test_a_dropped_listen_connection_comes_back_and_rereads(pair: Pair, pg_url: str) -> None:
    token = await pair.a.token()
    visitor = pair.a.web.signer.visitor_of(token)
    assert visitor is not None
    on_a = await pair.a.widget(token)
    console = await console_of(pair.a)
    await on_a.say("bonjour")
    await eventually(lambda: len(on_a.lines()) == 2)
    changes = pair.a.web.changes
    assert isinstance(changes, PgChanges)
    assert changes.reconnects == 0
    # Written by B while A was not listening: no note reaches A (a store without notes).
    quiet = WebStore(pair.b.app._db)
    await quiet.append(visitor, 1, "agent", "écrit pendant la coupure", name="alice")
    await quiet.add_alert(424242, None, "Alerte pendant la coupure.", 1)
    assert changes._conn is not None
    pid = changes._conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    await eventually(lambda: changes.reconnects == 1)
    await eventually(lambda: on_a.has("écrit pendant la coupure"))
    await eventually(lambda: any(f["alert"]["id"] == 424242 for f in console.of("alert")))
    assert any(f.get("all") for f in console.of("changed"))  # lists and open view refresh
    # Listening again: what B's stack sends now comes by note.
    from bot.conversation.model import Address

    await pair.b.web.send(Address("web", visitor), "après la coupure")
    await eventually(lambda: on_a.has("après la coupure"))
    assert in_order_once(on_a), seqs(on_a)
    assert on_a.texts()[-2:] == ["écrit pendant la coupure", "après la coupure"]
    for each in (on_a, console):
        await each.close()


async def test_a_note_goes_out_only_if_its_write_commits(pg_url: str) -> None:
    """Also inside a group commit: a work rolled back to its savepoint takes its note
    with it, while the works committed beside it send theirs."""
    db = await Database.open(pg_url)
    changes = PgChanges(db, pg_url)
    heard: list[dict[str, Any]] = []
    changes.subscribe(heard.append)
    await changes.start()

    def fail(conn: Conn) -> str:
        changes.in_write(conn, {"t": "line", "v": "rolled-back", "s": 1})
        raise RuntimeError("the write fails")

    def note(visitor: str) -> Callable[[Conn], str]:
        return lambda conn: changes.in_write(conn, {"t": "line", "v": visitor, "s": 1})

    started, gate = threading.Event(), threading.Event()

    def hold(conn: Conn) -> None:
        started.set()
        if not gate.wait(10):
            raise TimeoutError("the test never opened the gate")

    try:
        with pytest.raises(RuntimeError):
            await db.write(fail)  # alone in its transaction
        held = asyncio.create_task(db.write(hold))
        assert await asyncio.to_thread(started.wait, 10)
        grouped = [asyncio.create_task(db.write(w)) for w in (note("a"), fail, note("b"))]
        await eventually(lambda: len(cast(GroupCommitted, db)._queued) == 3)
        gate.set()
        await held
        outcomes = await asyncio.gather(*grouped, return_exceptions=True)
        assert isinstance(outcomes[1], RuntimeError)
        assert not isinstance(outcomes[0], BaseException)
        assert not isinstance(outcomes[2], BaseException)
        await changes.publish({"t": "changed", "c": 7})  # outside a write: at once
        await eventually(lambda: len(heard) == 3)
        assert [(n["t"], n.get("v"), n["o"]) for n in heard] == [
            ("line", "a", changes.origin),
            ("line", "b", changes.origin),
            ("changed", None, changes.origin),
        ]
    finally:
        await changes.stop()
        await db.close()


async def test_a_stored_line_sends_its_note_from_its_own_insert(pg_url: str) -> None:
    """On PostgreSQL the line's note rides the INSERT (RETURNING): one note for each
    line stored, with its visitor, seq and origin; none for a line refused (a resent
    frame's client id)."""
    db = await Database.open(pg_url)
    changes = PgChanges(db, pg_url)
    heard: list[dict[str, Any]] = []
    changes.subscribe(heard.append)
    await changes.start()
    store = WebStore(db, changes)
    try:
        first = await store.append("v1", 1_000, "customer", "bonjour", client_id="c1")
        again = await store.append("v1", 1_001, "customer", "bonjour", client_id="c1")
        second = await store.append("v1", 1_002, "bot", "Bonjour !")
        assert first is not None
        assert again is None
        assert second is not None
        await eventually(lambda: len(heard) == 2)
        assert [(n["t"], n["v"], n["s"], n["o"]) for n in heard] == [
            ("line", "v1", first.seq, changes.origin),
            ("line", "v1", second.seq, changes.origin),
        ]
    finally:
        await changes.stop()
        await db.close()


async def test_two_processes_writing_one_visitors_lines_lose_none(pg_url: str) -> None:
    """Two processes write one visitor's lines at once: each line takes its number by
    bumping the visitor's row of web_line_numbers in its INSERT, whose lock orders them,
    so every line is stored once, seqs 1..n, each line's write run once (numbered by
    MAX(seq) alone, two lines would get one seq: the second's INSERT fails, and its group
    is rolled back and run again)."""
    first, second = await Database.open(pg_url), await Database.open(pg_url)
    runs: list[int] = []
    for db in (first, second):
        write = db.write

        async def counted(work: Any, write: Any = write) -> Any:
            def run(conn: Conn) -> Any:
                runs.append(1)
                return work(conn)

            return await write(run)

        db.write = counted  # type: ignore[method-assign]
    try:
        stores = (WebStore(first), WebStore(second))
        for _ in range(3):  # three rounds of lines written at once by both
            lines = await asyncio.gather(*(
                stores[n % 2].append("v7", 1_000 + n, "bot", f"ligne {n}") for n in range(40)
            ))  # fmt: skip
            assert all(line is not None for line in lines)
        stored = await stores[0].since("v7", 0)
        assert [line.seq for line in stored] == list(range(1, 121))
        assert len({line.text for line in stored}) == 40
        assert len(runs) == 120
        assert await stores[1].append("v7", 9_000, "customer", "hé", client_id="c1") is not None
        assert await stores[0].append("v7", 9_001, "customer", "hé", client_id="c1") is None
    finally:
        await first.close()
        await second.close()


async def test_a_frame_stored_by_another_process_meanwhile_is_not_stored_twice(
    pg_url: str,
) -> None:
    """A widget frame sent again reaches a second process while the first is still
    storing it: the second waits for the visitor's number row, then finds the frame
    stored and stores nothing (not an error), as for any resent frame."""
    first, second = await Database.open(pg_url), await Database.open(pg_url)
    watcher = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
    try:
        async with first.transaction() as conn:  # the first process, mid-write
            await conn.execute("INSERT INTO web_line_numbers(visitor, last_seq) VALUES ('v8', 1)")
            await conn.execute(
                "INSERT INTO web_messages(visitor, seq, at, author, text, client_id) "
                "VALUES ('v8', 1, 1000, 'customer', 'bonjour', 'c1')"
            )
            again = asyncio.create_task(
                WebStore(second).append("v8", 1_001, "customer", "bonjour", client_id="c1")
            )

            async def second_waits() -> bool:
                cur = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                row = await cur.fetchone()
                return row is not None and row[0] > 0

            async with asyncio.timeout(10):
                while not await second_waits():  # noqa: ASYNC110 - state of another server session
                    await asyncio.sleep(0.005)
        assert await again is None
        lines = await WebStore(first).since("v8", 0)
        assert [(line.seq, line.text) for line in lines] == [(1, "bonjour")]
        after = await WebStore(second).append("v8", 1_002, "bot", "Bonjour !")
        assert after is not None
        assert after.seq == 3  # the skipped frame had taken 2: a gap, which widgets read past
    finally:
        await watcher.close()
        await first.close()
        await second.close()


async def test_one_process_hears_a_written_note_after_the_write() -> None:
    changes = Changes()
    heard: list[dict[str, Any]] = []
    changes.subscribe(heard.append)
    text = changes.in_write(cast(Conn, None), {"t": "line", "v": "x", "s": 2})
    assert heard == []  # nothing before the write has returned
    changes.committed(text)
    await eventually(lambda: len(heard) == 1)
    assert heard == [{"t": "line", "v": "x", "s": 2, "o": changes.origin}]


async def test_one_process_hears_its_notes_in_memory_and_refuses_texts() -> None:
    changes = Changes()
    heard: list[dict[str, Any]] = []
    changes.subscribe(heard.append)
    await changes.publish({"t": "changed", "c": 3})
    await eventually(lambda: len(heard) == 1)
    assert heard == [{"t": "changed", "c": 3, "o": changes.origin}]
    with pytest.raises(ValueError, match="never texts"):
        await changes.publish({"t": "line", "text": "x" * 2000})
