"""Storage against real SQLite files: pragmas, migrations, locking, idempotent ingestion."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from importlib import resources
from pathlib import Path

import pytest

from bot.conversation.model import Address, Customer
from bot.conversation.store import NewMessage, NewOutbox, Unit
from bot.errors import DatabaseLockedError, SchemaError
from storage.conversations import SqliteStore
from storage.database import Database, migrations


async def test_pragmas_and_schema_version(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "s.db")
    try:
        assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
        assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
        assert (await db.fetchone("PRAGMA busy_timeout"))[0] == 10_000  # type: ignore[index]
        assert await db.schema_version() == len(migrations())
    finally:
        await db.close()


async def test_older_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    first = resources.files("storage.migrations").joinpath("0001_initial.sql").read_text()
    with sqlite3.connect(path) as conn:
        conn.executescript(first + "\nPRAGMA user_version = 1;")
        conn.execute(
            "INSERT INTO customers (key, channel, user_id, language, first_seen_at) "
            "VALUES ('telegram:1', 'telegram', '1', 'fr', 0)"
        )
    db = await Database.open(path)
    try:
        assert await db.schema_version() == len(migrations())
        row = await db.fetchone("SELECT key FROM customers")
        assert row is not None
        assert row["key"] == "telegram:1"
    finally:
        await db.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaError, match="newer than this supportbot"):
        await Database.open(path)


async def test_locked_database_waits_then_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    await (await Database.open(path)).close()  # create the schema
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    db = await Database.open(path, busy_timeout=timedelta(milliseconds=200))
    try:
        with pytest.raises(DatabaseLockedError, match="locked"):
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO inbound VALUES ('x', 1)")
        holder.execute("COMMIT")
        async with db.transaction() as conn:  # once released, writes go through
            await conn.execute("INSERT INTO inbound VALUES ('x', 1)")
        assert await db.fetchone("SELECT 1 FROM inbound WHERE dedup_key = 'x'") is not None
    finally:
        holder.close()
        await db.close()


async def test_write_in_one_hop_is_all_or_nothing(tmp_path: Path) -> None:
    """``Database.write`` (one hop to the database thread) rolls the whole step back when
    any statement of it fails, and a failed step leaves the next ones unharmed."""
    db = await Database.open(tmp_path / "w.db")

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO inbound VALUES ('first', 1)")
        conn.execute("INSERT INTO inbound VALUES ('first', 2)")  # primary key: fails

    def step(n: int) -> int:
        def work(conn: sqlite3.Connection) -> int:
            conn.execute("INSERT INTO inbound VALUES (?, ?)", (f"k{n}", n))
            conn.execute("INSERT INTO inbound VALUES (?, ?)", (f"k{n}b", n))
            return n

        return work

    try:
        with pytest.raises(sqlite3.IntegrityError):
            await db.write(half_then_fail)
        assert await db.fetchone("SELECT 1 FROM inbound WHERE dedup_key = 'first'") is None
        assert not db.conn.in_transaction
        done = await asyncio.gather(*(db.write(step(n)) for n in range(20)))
        assert done == list(range(20))
        rows = await db.fetchall("SELECT at FROM inbound ORDER BY at, dedup_key")
        assert [r["at"] for r in rows] == [n for n in range(20) for _ in range(2)]
    finally:
        await db.close()


async def test_write_reports_a_locked_database(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    await (await Database.open(path)).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    db = await Database.open(path, busy_timeout=timedelta(milliseconds=200))

    def insert(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO inbound VALUES ('x', 1)")

    try:
        with pytest.raises(DatabaseLockedError, match="locked"):
            await db.write(insert)
        holder.execute("COMMIT")
        await db.write(insert)
        assert await db.fetchone("SELECT 1 FROM inbound WHERE dedup_key = 'x'") is not None
    finally:
        holder.close()
        await db.close()


async def test_apply_is_idempotent_per_dedup_key(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "d.db")
    store = SqliteStore(db)
    try:
        conv = await store.open_conversation(
            Customer("telegram", "1", "Ana"), Address("telegram", "1"), "fr", 1000
        )
        for _ in range(3):
            unit = Unit(2000, "telegram:update:5", conversation=conv)
            unit.message(NewMessage("in", "customer", "bonjour"))
            unit.outbox.append(NewOutbox("c:telegram:1", "send", {"text": "hi"}))
            conv.update(last_customer_at=2000)
            applied = await store.apply(unit)
        counts = await db.fetchone(
            "SELECT (SELECT COUNT(*) FROM messages) AS m, (SELECT COUNT(*) FROM outbox) AS o"
        )
        assert counts is not None
        assert (counts["m"], counts["o"]) == (1, 1)
        assert not applied.applied
        assert await store.seen("telegram:update:5")
    finally:
        await db.close()


async def test_one_open_conversation_per_address(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "u.db")
    store = SqliteStore(db)
    try:
        customer, address = Customer("slack", "U1"), Address("slack", "D1")
        first = await store.open_conversation(customer, address, "fr", 1)
        # opening again (another process was first) gives the open one: never a second
        assert (await store.open_conversation(customer, address, "fr", 2)).id == first.id
        # a shared-channel thread is its own conversation
        await store.open_conversation(customer, Address("slack", "C1", "171.1"), "fr", 3)
        assert len(await store.open_for_customer("slack:U1")) == 2
    finally:
        await db.close()
