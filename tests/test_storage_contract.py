"""The Store port's contract, run against BOTH engines (the ``db`` fixture: a SQLite file,
then a fresh database of the session's throwaway PostgreSQL cluster). Nothing mocked.

What the engine relies on: a conversation opens once per address, a step is applied
all-or-nothing and once per platform delivery, the outbox moves pending → sent / retried /
failed, due timers are found, the transcript reads back in order, a customer's erasure
leaves no personal data and keeps the figures.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import cast

import pytest

from bot.conversation.model import Address, Customer, State
from bot.conversation.store import (
    Delivery,
    KbQuestion,
    NewEvent,
    NewMessage,
    NewOutbox,
    OutboxItem,
    Unit,
)
from bot.knowledge.text import fold
from storage.conversations import SqliteStore
from storage.database import DB_ERRORS, Conn, Database, Later, later, migrations
from storage.group_commit import GroupCommitted
from storage.outbox_rows import DONE, MINE, WAIT, Claim, claim_item
from storage.privacy import PrivacyStore
from storage.web_store import WebStore
from tests.waiting import eventually

ANA = Customer("telegram", "41", "Ana Ünal")
ANA_CHAT = Address("telegram", "41")


async def _conversation(store: SqliteStore, now: int = 1_000) -> tuple[SqliteStore, int]:
    conv = await store.open_conversation(ANA, ANA_CHAT, "fr", now)
    return store, conv.id


async def test_schema_is_current(db: Database) -> None:
    assert await db.schema_version() == len(migrations())


async def test_open_conversation_once_per_address(db: Database) -> None:
    store = SqliteStore(db)
    conv = await store.open_conversation(ANA, ANA_CHAT, "fr", 1_000)
    assert conv.state is State.BOT
    assert conv.customer_name == "Ana Ünal"
    # Opening again (another process got there first) gives the open one, not a second.
    assert (await store.open_conversation(ANA, ANA_CHAT, "fr", 2_000)).id == conv.id
    again = await store.load_open(ANA_CHAT.key)
    assert again is not None
    assert again.id == conv.id
    with pytest.raises(DB_ERRORS):  # and the partial unique index stays: one open per address
        await db.write(
            lambda c: c.execute(
                "INSERT INTO conversations (customer_id, channel, address_key, chat_id,"
                " language, state, started_at, updated_at) VALUES (?, ?, ?, ?, ?, 'bot', 1, 1)",
                (conv.customer_id, "telegram", ANA_CHAT.key, ANA_CHAT.chat_id, "fr"),
            )
        )
    # the failed insert left the connection usable (PostgreSQL aborts the transaction)
    other = await store.open_conversation(ANA, Address("telegram", "41", "7"), "fr", 3_000)
    assert other.id != conv.id
    assert other.customer_id == conv.customer_id
    assert [c.id for c in await store.open_for_customer(ANA.key)] == [conv.id, other.id]


async def test_a_step_is_applied_once_per_delivery(db: Database) -> None:
    store = SqliteStore(db)
    conv = await store.open_conversation(ANA, ANA_CHAT, "fr", 1_000)
    results = []
    for _ in range(3):  # the platform redelivers the same update
        unit = Unit(2_000, "telegram:update:9", conversation=conv)
        unit.message(NewMessage("in", "customer", "où est mon colis ?"))
        unit.message(NewMessage("out", "bot", "Il part demain."))
        unit.events.append(NewEvent("kb_answer", "bot", {"entry": "delivery", "score": 0.8}))
        unit.outbox.append(NewOutbox("c:telegram:41", "send", {"text": "Il part demain."}, 1))
        unit.timers_set["idle"] = 9_000
        conv.update(last_customer_at=2_000, topic="delivery")
        results.append(await store.apply(unit))
    assert [r.applied for r in results] == [True, False, False]
    (item,) = results[0].outbox
    assert item.payload == {"text": "Il part demain."}
    assert item.message_id is not None
    counts = await db.fetchone(
        "SELECT (SELECT COUNT(*) FROM messages) AS m, (SELECT COUNT(*) FROM outbox) AS o, "
        "(SELECT COUNT(*) FROM events WHERE kind = 'kb_answer') AS e"
    )
    assert counts is not None
    assert (counts["m"], counts["o"], counts["e"]) == (2, 1, 1)
    assert await store.seen("telegram:update:9")
    loaded = await store.load(conv.id)
    assert loaded is not None
    assert loaded.topic == "delivery"
    assert loaded.last_customer_at == 2_000
    lines = await store.transcript(conv.id, 10)
    assert [(x.author, x.text) for x in lines] == [
        ("customer", "où est mon colis ?"),
        ("bot", "Il part demain."),
    ]


async def test_a_conversation_read_with_its_key_is_the_last_committed_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hold(key, load_id=…)`` / ``hold(key, load_open=True)``: the step's first read.
    On PostgreSQL it comes back with the key (no trip to the read connection); on both
    engines it is what was last committed, a read after the step's own write reads again,
    and another task's read never takes the rows held for this one."""
    store = SqliteStore(db)
    conv = await store.open_conversation(ANA, ANA_CHAT, "fr", 1_000)
    trips: list[object] = []
    reader = getattr(db, "_reader", None)
    if reader is not None:
        run = reader.run
        monkeypatch.setattr(reader, "run", lambda *a: trips.append(a) or run(*a))

    async def elsewhere() -> int:
        """Another task reading the same conversation, holding nothing."""
        before = len(trips)
        other = await store.load(conv.id)
        assert other is not None
        return len(trips) - before

    async with store.hold(ANA_CHAT.key, load_id=conv.id):
        other_trips = await asyncio.create_task(elsewhere())
        first = await store.load(conv.id)
        assert first is not None
        assert first.topic is None
        if reader is not None:
            assert (len(trips), other_trips) == (1, 1)  # the other task read for itself
        unit = Unit(2_000, "web:v1:m1", conversation=first)
        first.update(topic="delivery")
        assert (await store.apply(unit)).applied
        again = await store.load(conv.id)  # after the step's write: read again
        assert again is not None
        assert again.topic == "delivery"
    async with store.hold(ANA_CHAT.key, load_open=True):
        opened = await store.load_open(ANA_CHAT.key)
        assert opened is not None
        assert (opened.id, opened.topic) == (conv.id, "delivery")
    nobody = Address("telegram", "99").key
    async with store.hold(nobody, load_open=True):  # no conversation open there
        assert await store.load_open(nobody) is None
    if reader is not None:
        assert len(trips) == 2  # the second load only


async def test_a_steps_rows_point_at_its_own_messages(db: Database) -> None:
    """A step's outbox items and knowledge-base question name the messages of that step
    (on PostgreSQL the messages and the rows pointing at them are one statement, the ids
    never read back in between), also when steps of other conversations share a group."""
    store = SqliteStore(db)
    bob = Customer("telegram", "42", "Bob")
    convs = [
        await store.open_conversation(ANA, ANA_CHAT, "fr", 1_000),
        await store.open_conversation(bob, Address("telegram", "42"), "fr", 1_000),
    ]

    def unit(n: int, conv_index: int) -> Unit:
        conv = convs[conv_index]
        step = Unit(2_000 + n, f"tg:{n}", conversation=conv)
        step.message(NewMessage("in", "customer", f"question {n}"))
        step.message(NewMessage("out", "bot", f"answer {n}"))
        step.message(NewMessage("out", "bot", f"did it help {n}?"))
        step.kb_question = KbQuestion(0, "fr", "answered", "delivery")
        step.outbox.append(NewOutbox(f"c:{n}", "send", {"text": f"did it help {n}?"}, 2))
        step.outbox.append(NewOutbox(f"c:{n}", "send", {"text": f"answer {n}"}, 1))
        step.outbox.append(NewOutbox(f"d:{n}", "post", {"text": "no message"}))
        return step

    results = await asyncio.gather(*(store.apply(unit(n, n % 2)) for n in range(6)))
    for n, result in enumerate(results):
        texts = []
        for item in result.outbox:
            if item.message_id is None:
                texts.append(None)
                continue
            row = await db.fetchone(
                "SELECT m.text, o.message_id FROM messages m JOIN outbox o ON o.message_id = m.id"
                " WHERE o.id = ?",
                (item.id,),
            )
            assert row is not None
            assert row["message_id"] == item.message_id
            texts.append(row["text"])
        assert texts == [f"did it help {n}?", f"answer {n}", None]
        question = await db.fetchone(
            "SELECT m.text FROM kb_questions q JOIN messages m ON m.id = q.message_id"
            " JOIN inbound i ON i.dedup_key = ? WHERE q.at = ?",
            (f"tg:{n}", 2_000 + n),
        )
        assert question is not None
        assert question["text"] == f"question {n}"


async def test_a_web_line_and_its_delivery_record_are_one_write(db: Database) -> None:
    """The web channel stores a reply and the outbox's record of it in one transaction
    (``append_with``): a record that fails leaves no line, and one that works gives its
    result back with the line."""
    store = WebStore(db)

    def boom(conn: Conn) -> None:
        conn.execute("UPDATE outbox SET sent_at = 1")
        raise RuntimeError("the record failed")

    with pytest.raises(RuntimeError, match="the record failed"):
        await store.append_with("v1", 1_000, "bot", "Bonjour !", also=boom)
    assert await store.since("v1", 0) == []

    def record(conn: Conn) -> Later[int]:
        cursor = conn.execute("INSERT INTO inbound (dedup_key, at) VALUES ('k', 1) RETURNING at")
        return later(conn, cursor, lambda rows: int(rows[0][0]) + 1)

    line, recorded = await store.append_with("v1", 1_001, "bot", "Bonjour !", also=record)
    assert line is not None
    assert recorded == 2
    assert [x.text for x in await store.since("v1", 0)] == ["Bonjour !"]


async def test_a_visitors_lines_go_on_from_what_is_stored(db: Database) -> None:
    """A visitor's next line is numbered after every stored line, even lines its number
    row does not count (copied from SQLite, written by an older version), and even when
    that row lags; a frame sent again takes no number; an erased visitor's lines and
    number row go, and no new line is stored for them."""
    store = WebStore(db)
    async with db.transaction() as conn:
        for seq in (1, 2, 3):  # as `db copy` or an older version leaves them
            await conn.execute(
                "INSERT INTO web_messages(visitor, seq, at, author, text) VALUES (?, ?, ?, ?, ?)",
                ("v9", seq, 1_000 + seq, "customer", f"ligne {seq}"),
            )
    fourth = await store.append("v9", 2_000, "bot", "quatre")
    assert fourth is not None
    assert fourth.seq == 4
    async with db.transaction() as conn:  # a number row behind the lines
        await conn.execute(
            "INSERT INTO web_line_numbers(visitor, last_seq) VALUES ('v9', 1) "
            "ON CONFLICT (visitor) DO UPDATE SET last_seq = 1"
        )
    fifth = await store.append("v9", 2_001, "bot", "cinq")
    assert fifth is not None
    assert fifth.seq == 5
    assert await store.append("v9", 2_002, "customer", "six", client_id="c6") is not None
    assert await store.append("v9", 2_003, "customer", "six", client_id="c6") is None
    seventh = await store.append("v9", 2_004, "bot", "sept")
    assert seventh is not None
    assert seventh.seq == 7  # the frame sent again took no number
    assert [line.seq for line in await store.since("v9", 0)] == [1, 2, 3, 4, 5, 6, 7]

    web = Customer("web", "v9", "Ana")
    await SqliteStore(db).open_conversation(web, Address("web", "v9"), "fr", 3_000)
    assert await PrivacyStore(db).erase(web.key, 5_000, "admin") is not None
    assert await store.since("v9", 0) == []
    assert await db.fetchall("SELECT * FROM web_line_numbers WHERE visitor = 'v9'") == []
    assert await store.append("v9", 6_000, "customer", "encore là ?") is None
    assert await db.fetchall("SELECT * FROM web_line_numbers WHERE visitor = 'v9'") == []


async def test_a_redelivery_in_a_group_of_writes_fails_alone(db: Database) -> None:
    """Steps committed together (group commit): the one whose update was stored already
    is not applied (its inbound key fails, the group runs again without it); the others
    are, once each."""
    store = SqliteStore(db)
    conv = await store.open_conversation(ANA, ANA_CHAT, "fr", 1_000)

    def unit(key: str, text: str) -> Unit:
        step = Unit(2_000, key, conversation=conv)
        step.message(NewMessage("in", "customer", text))
        step.events.append(NewEvent("customer_message", "customer"))
        return step

    assert (await store.apply(unit("tg:1", "un"))).applied
    started, go = threading.Event(), threading.Event()

    def gate(conn: Conn) -> None:  # holds the write thread: the steps queue up behind it
        started.set()
        if not go.wait(10):
            raise TimeoutError("the test never opened the gate")

    held = asyncio.create_task(db.write(gate))
    assert await asyncio.to_thread(started.wait, 10)
    steps = [("tg:2", "deux"), ("tg:1", "un encore"), ("tg:3", "trois")]
    results = [asyncio.create_task(store.apply(unit(k, t))) for k, t in steps]
    await eventually(lambda: len(cast(GroupCommitted, db)._queued) == len(steps))
    go.set()
    await held
    assert [r.applied for r in await asyncio.gather(*results)] == [True, False, True]
    lines = await store.transcript(conv.id, 10)
    assert [x.text for x in lines] == ["un", "deux", "trois"]
    count = await db.fetchone("SELECT COUNT(*) FROM events WHERE kind = 'customer_message'")
    assert count is not None
    assert count[0] == 3


async def test_a_failed_step_leaves_nothing(db: Database) -> None:
    store, cid = await _conversation(SqliteStore(db))

    def half_then_fail(conn: Conn) -> None:
        conn.execute("INSERT INTO inbound (dedup_key, at) VALUES ('k', 1)")
        conn.execute("UPDATE conversations SET topic = 'x' WHERE id = ?", (cid,))
        conn.execute("INSERT INTO inbound (dedup_key, at) VALUES ('k', 2)")  # primary key

    with pytest.raises(DB_ERRORS):
        await db.write(half_then_fail)
    assert await db.fetchone("SELECT 1 FROM inbound") is None
    loaded = await store.load(cid)
    assert loaded is not None
    assert loaded.topic is None

    def step(n: int) -> Conn | int:
        def work(conn: Conn) -> int:
            conn.execute("INSERT INTO inbound (dedup_key, at) VALUES (?, ?)", (f"k{n}", n))
            return n

        return work  # type: ignore[return-value]

    done = await asyncio.gather(*(db.write(step(n)) for n in range(20)))  # type: ignore[arg-type]
    assert done == list(range(20))
    rows = await db.fetchall("SELECT at FROM inbound ORDER BY at")
    assert [r["at"] for r in rows] == list(range(20))


async def test_outbox_pending_sent_retry_failed(db: Database) -> None:
    store, cid = await _conversation(SqliteStore(db))
    conv = await store.load(cid)
    unit = Unit(2_000, None, conversation=conv)
    unit.message(NewMessage("out", "bot", "un"))
    unit.outbox.append(NewOutbox("c:telegram:41", "send", {"text": "un"}, 0))
    unit.outbox.append(NewOutbox("c:telegram:41", "send", {"text": "deux"}))
    unit.outbox.append(NewOutbox("desk", "open_thread", {"title": "Ana"}))
    first, second, third = (await store.apply(unit)).outbox
    assert first.id < second.id < third.id
    assert [i.id for i in await store.pending_outbox()] == [first.id, second.id, third.id]

    follow = await store.outbox_sent(
        first,
        3_000,
        Delivery(customer_response=True, follow_up=(NewOutbox("desk", "copy", {"n": 1}),)),
    )
    await store.outbox_retry(second, 5_000, "429 Too Many Requests " * 40)
    await store.outbox_failed(third, 4_000, "403 Forbidden")
    pending = await store.pending_outbox()
    assert [i.id for i in pending] == [second.id, follow[0].id]
    assert pending[0].attempts == 1
    assert pending[0].next_attempt_at == 5_000
    sent = await db.fetchone(
        "SELECT o.sent_at, m.delivered_at, c.first_response_at FROM outbox o "
        "JOIN messages m ON m.id = o.message_id "
        "JOIN conversations c ON c.id = o.conversation_id WHERE o.id = ?",
        (first.id,),
    )
    assert sent is not None
    assert tuple(sent) == (3_000, 3_000, 3_000)
    failed = await db.fetchone("SELECT failed_at, error FROM outbox WHERE id = ?", (third.id,))
    assert failed is not None
    assert tuple(failed) == (4_000, "403 Forbidden")
    retried = await db.fetchone("SELECT error FROM outbox WHERE id = ?", (second.id,))
    assert retried is not None
    assert len(retried["error"]) == 500
    # Every field a delivery records, in one statement on PostgreSQL (execute_all).
    effects = Delivery(customer_response=True, agent_response=True, thread="T1",
                       header_message="H1")  # fmt: skip
    await store.outbox_sent(second, 6_000, effects)
    conv_row = await db.fetchone(
        "SELECT first_response_at, first_agent_response_at, desk_thread, desk_header"
        " FROM conversations WHERE id = ?",
        (cid,),
    )
    assert conv_row is not None
    assert tuple(conv_row) == (3_000, 6_000, "T1", "H1")  # the first response stays
    second_row = await db.fetchone("SELECT sent_at, attempts FROM outbox WHERE id = ?",
                                   (second.id,))  # fmt: skip
    assert second_row is not None
    assert tuple(second_row) == (6_000, 2)


async def test_an_outbox_item_is_claimed_in_lane_order_and_by_one_live_process(
    db: Database,
) -> None:
    """``claim_item``, one statement on both engines: MINE when free (or ours, or its
    lease ran out), WAIT (released) while an earlier item of its lane is undelivered, DONE
    when delivered, failed, or held by another live process."""
    store, cid = await _conversation(SqliteStore(db))
    unit = Unit(2_000, None, conversation=await store.load(cid))
    unit.outbox.append(NewOutbox("c:telegram:41", "send", {"text": "un"}))
    unit.outbox.append(NewOutbox("c:telegram:41", "send", {"text": "deux"}))
    first, second = (await store.apply(unit)).outbox

    def claim(item_id: int, lane: str, owner: str, now: int) -> Callable[[Conn], str]:
        return lambda conn: claim_item(conn, item_id, lane, Claim(owner, now + 60_000), now,
                                       db.claim_lock)  # fmt: skip

    async def holder(item_id: int) -> tuple[object, object]:
        row = await db.fetchone("SELECT claimed_by, claimed_until FROM outbox WHERE id = ?",
                                (item_id,))  # fmt: skip
        assert row is not None
        return row[0], row[1]

    lane, me = "c:telegram:41", store.owner  # the items were enqueued claimed by us
    assert await db.write(claim(second.id, lane, me, 3_000)) == WAIT
    assert await holder(second.id) == (None, None)  # released for a later sweep, in order
    assert await db.write(claim(first.id, lane, me, 3_000)) == MINE
    assert await holder(first.id) == (me, 63_000)
    assert await db.write(claim(first.id, lane, "other", 4_000)) == DONE  # my lease holds
    assert await db.write(claim(first.id, lane, me, 5_000)) == MINE  # renewed
    assert await holder(first.id) == (me, 65_000)
    assert await db.write(claim(first.id, lane, "other", 66_000)) == MINE  # lease ran out
    assert await holder(first.id) == ("other", 126_000)
    await store.outbox_sent(first, 67_000, Delivery())
    assert await db.write(claim(first.id, lane, "other", 68_000)) == DONE  # delivered
    assert await db.write(claim(second.id, lane, me, 68_000)) == MINE  # its turn now
    assert await db.write(claim(10_000_000, lane, me, 68_000)) == DONE  # no such item


async def test_items_enqueued_on_a_shared_database_say_whether_their_claim_serves(
    db: Database,
) -> None:
    """On a shared database an item is enqueued claimed by its process; it is marked
    ``claimed_until`` (its first attempt needs no claim) unless an earlier undelivered
    item of its lane is not ours: then it claims, and waits its turn, as usual."""
    from storage.outbox_rows import enqueue

    store, cid = await _conversation(SqliteStore(db))
    lane, other_lane = "c:telegram:41", "d:41"

    def step(owner: str, now: int, *lanes: str) -> Callable[[Conn], tuple[OutboxItem, ...]]:
        items = [NewOutbox(lane, "send", {"text": str(n)}) for n, lane in enumerate(lanes)]
        claim = Claim(owner, now + 60_000, shared=True)
        return lambda conn: enqueue(conn, items, cid, [], now, claim)

    mine = await db.write(step("me", 1_000, lane, lane, other_lane))
    assert [i.claimed_until for i in mine] == [61_000, 61_000, 61_000]  # ours, in order
    theirs = await db.write(step("other", 2_000, lane, other_lane))
    assert [i.claimed_until for i in theirs] == [None, None]  # behind mine: claim, wait
    await store.outbox_sent(mine[0], 3_000, Delivery())
    await store.outbox_sent(mine[1], 3_000, Delivery())
    later = await db.write(step("me", 4_000, lane))
    assert [i.claimed_until for i in later] == [None]  # behind the other process's item
    unshared = await db.write(
        lambda conn: enqueue(
            conn, [NewOutbox(lane, "send", {})], cid, [], 5_000, Claim("me", 65_000)
        )  # fmt: skip
    )
    assert unshared[0].claimed_until is None  # one process alone: no claims at all


async def test_timers_due_in_order(db: Database) -> None:
    store = SqliteStore(db)
    ids = []
    for n, due in enumerate((5_000, 3_000, 9_000)):
        conv = await store.open_conversation(
            Customer("web", f"v{n}"), Address("web", f"v{n}"), "en", 1_000
        )
        unit = Unit(1_000, None, conversation=conv)
        unit.timers_set.update({"abandon": due, "remind": due - 500})
        await store.apply(unit)
        ids.append(conv.id)
    again = Unit(1_500, None, conversation=await store.load(ids[2]))
    again.timers_set["abandon"] = 4_000  # replaces the timer of the same kind
    again.timers_clear.add("remind")
    await store.apply(again)
    due = await store.due_timers(5_000, 10)
    assert [(t.conversation_id, t.kind, t.due_at) for t in due] == [
        (ids[1], "remind", 2_500),
        (ids[1], "abandon", 3_000),
        (ids[2], "abandon", 4_000),
        (ids[0], "remind", 4_500),
        (ids[0], "abandon", 5_000),
    ]


async def test_customer_erasure(db: Database) -> None:
    store = SqliteStore(db)
    conv = await store.open_conversation(ANA, ANA_CHAT, "fr", 1_000)
    unit = Unit(2_000, "telegram:update:1", conversation=conv)
    unit.message(NewMessage("in", "customer", "Je m'appelle Ana, 12 rue des Lilas"))
    unit.events.append(NewEvent("note", "customer", {"text": "12 rue des Lilas", "n": 3}))
    unit.outbox.append(NewOutbox("c:telegram:41", "send", {"text": "Merci Ana"}))
    await store.apply(unit)
    privacy = PrivacyStore(db)
    exported = await privacy.export(ANA.key)
    assert exported is not None
    assert exported["conversations"][0]["messages"][0]["text"].startswith("Je m'appelle")
    erased = await privacy.erase(ANA.key, 5_000, "admin")
    assert erased is not None
    assert erased.messages == 1
    assert await privacy.export(ANA.key) is None
    texts = await db.fetchall("SELECT text FROM messages")
    assert [r["text"] for r in texts] == [""]
    event = await db.fetchone("SELECT data FROM events WHERE kind = 'note'")
    assert event is not None
    assert json.loads(event["data"]) == {"n": 3}
    started = await db.fetchone("SELECT COUNT(*) AS n FROM conversations")
    assert started is not None
    assert started["n"] == 1


async def test_search_folds_accents_like_python(db: Database) -> None:
    words = ["Éléonore", "ÇA VA", "cœur", "Straße", "naïve", "L’été", "Ñandú", "FIANCÉE"]
    for word in words:
        row = await db.fetchone("SELECT fold(?) AS f", (word,))
        assert row is not None
        assert row["f"] == fold(word), word
    row = await db.fetchone("SELECT fold(NULL) AS f")
    assert row is not None
    assert row["f"] is None


async def test_a_write_blocked_past_busy_timeout_says_locked(db_target: str) -> None:
    """Another connection holds the rows' lock: the step fails as DatabaseLockedError (the
    engine waits it out), then goes through once the lock is released."""
    from datetime import timedelta

    from bot.errors import DatabaseLockedError

    db = await Database.open(db_target, busy_timeout=timedelta(milliseconds=200))
    holder = await Database.open(db_target)
    release = asyncio.Event()
    locked = asyncio.Event()

    async def hold() -> None:
        async with holder.transaction() as conn:
            await conn.execute("INSERT INTO inbound (dedup_key, at) VALUES ('held', 1)")
            locked.set()
            await release.wait()

    def insert(conn: Conn) -> None:
        conn.execute(
            "INSERT INTO inbound (dedup_key, at) VALUES ('held', 2) ON CONFLICT DO NOTHING"
        )

    task = asyncio.create_task(hold())
    try:
        await asyncio.wait_for(locked.wait(), 10)
        with pytest.raises(DatabaseLockedError, match="locked"):
            await db.write(insert)
        release.set()
        await task
        await db.write(insert)
        row = await db.fetchone("SELECT at FROM inbound WHERE dedup_key = 'held'")
        assert row is not None
        assert row["at"] == 1
    finally:
        release.set()
        await task
        await holder.close()
        await db.close()


async def test_a_column_added_by_a_newer_version_breaks_no_statement(
    db: Database, db_target: str
) -> None:
    """A rolling upgrade: another process (a newer version) adds a column while this one
    runs. PostgreSQL refused this connection's statements prepared before it ("cached plan
    must not change result type") for as long as the connection lived; they are prepared
    again, on the read and the write connections, and see the new column."""
    await db.write(lambda conn: conn.execute("CREATE TABLE rolled (id INTEGER, a TEXT)"))
    await db.write(lambda conn: conn.execute("INSERT INTO rolled VALUES (1, 'x')"))

    def everything(conn: Conn) -> list[tuple[object, ...]]:
        return [tuple(row) for row in conn.execute("SELECT * FROM rolled WHERE id = ?", (1,))]

    for _ in range(3):
        assert await db.read(everything) == [(1, "x")]
        assert await db.write(everything) == [(1, "x")]
    newer = await Database.open(db_target)
    try:
        await newer.write(lambda conn: conn.execute("ALTER TABLE rolled ADD COLUMN b TEXT"))
    finally:
        await newer.close()
    assert await db.read(everything) == [(1, "x", None)]
    assert await db.write(everything) == [(1, "x", None)]
    assert await db.read(everything) == [(1, "x", None)]  # and from then on


def test_the_sql_is_translated_once_for_postgresql() -> None:
    """``?`` → ``%s`` outside literals and comments, literal ``%`` doubled, SQLite's planner
    hints dropped; schema types widened, identity keys, triggers as PL/pgSQL."""
    from storage.postgres import pg_schema, pg_sql

    sql = "SELECT '?%' FROM t INDEXED BY t_ix WHERE a LIKE ? ESCAPE '\\' -- why?\n AND b = ?"
    assert pg_sql(sql) == "SELECT '?%%' FROM t WHERE a LIKE %s ESCAPE '\\' -- why?\n AND b = %s"
    schema = pg_schema(
        "CREATE TABLE x (id INTEGER PRIMARY KEY, f INTEGER PRIMARY KEY REFERENCES y(id), "
        "r REAL, b BLOB) WITHOUT ROWID;\n"
        "CREATE TRIGGER t AFTER UPDATE OF a,\n  b ON x BEGIN\n  DELETE FROM z;\nEND;"
    )
    assert "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" in schema
    assert "f BIGINT PRIMARY KEY REFERENCES y(id)" in schema
    assert "r DOUBLE PRECISION, b BYTEA)" in schema
    assert "ROWID" not in schema
    assert "CREATE TRIGGER t AFTER UPDATE OF a, b ON x FOR EACH ROW EXECUTE FUNCTION t_fn()" in (
        schema
    )
