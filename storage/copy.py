"""``supportbot db copy --to postgresql://…``: move an installation from its SQLite file to
an EMPTY PostgreSQL database, every table in one transaction (all or nothing).

The target gets its schema from the same migrations, then the rows, parents before
children (the foreign keys say the order), through ``COPY``; the identity sequences are
set past the largest id so that new rows do not collide. The KPI day cache is not copied:
it is rebuilt on demand from the conversations.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bot.errors import StorageError
from storage.database import Database
from storage.postgres import VERSION_TABLE, PgDatabase, redact
from storage.sqlite import SqliteDatabase

log = logging.getLogger(__name__)

# Derived data, rebuilt on demand (storage/kpi_cohort.py): not worth moving.
SKIPPED = frozenset({"kpi_cohort_days", "kpi_keys"})


@dataclass(frozen=True, slots=True)
class Copied:
    """What was copied: rows per table, in the order they were written."""

    tables: tuple[tuple[str, int], ...]

    @property
    def rows(self) -> int:
        return sum(n for _, n in self.tables)


def _order(conn: sqlite3.Connection) -> list[str]:
    """The tables, each after those its foreign keys point to."""
    names = [
        str(r[0])
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    parents = {
        name: {str(r[2]) for r in conn.execute(f"PRAGMA foreign_key_list({name})")} - {name}
        for name in names
    }
    done: list[str] = []
    while len(done) < len(names):
        ready = [n for n in names if n not in done and parents[n] <= set(done)]
        if not ready:
            raise StorageError("the tables' foreign keys form a cycle: cannot order the copy")
        done.extend(ready)
    return [n for n in done if n not in SKIPPED]


def _tables(source: Path) -> set[str]:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        rows = src.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        src.close()
    return {str(r[0]) for r in rows}


def _refuse_foreign_tables(url: str, ours: set[str]) -> None:
    """A database holding tables that are not supportbot's is not the empty one asked for."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    others = sorted({str(r[0]) for r in rows} - ours - {VERSION_TABLE})
    if others:
        raise StorageError(
            f"database {redact(url)} is not empty (table {others[0]}): "
            "copy into an empty database only"
        )


def _copy(source: Path, target: PgDatabase) -> Copied:
    """On the target's thread: every row of ``source`` in one PostgreSQL transaction."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    pg = target.pg
    copied = []
    try:
        with pg.transaction():
            tables = pg.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            ).fetchall()
            for (table,) in tables:
                if table != VERSION_TABLE and table not in SKIPPED:
                    found = pg.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone()
                    if found is not None:
                        raise StorageError(
                            f"database {target.path} is not empty (table {table} has rows): "
                            "copy into an empty database only"
                        )
            for table in _order(src):
                cur = src.execute(f"SELECT * FROM {table}")
                columns = [d[0] for d in cur.description]
                count = 0
                with pg.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in cur:
                        copy.write_row(row)
                        count += 1
                copied.append((table, count))
            identities = pg.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND is_identity = 'YES'"
            ).fetchall()
            for table, column in identities:
                pg.execute(
                    f"SELECT setval(pg_get_serial_sequence(%s, %s), "
                    f"COALESCE((SELECT max({column}) FROM {table}), 0) + 1, false)",
                    [table, column],
                )
    finally:
        src.close()
    return Copied(tuple(copied))


async def copy_to_postgresql(source: Path, url: str) -> Copied:
    """Copy the SQLite database at ``source`` (migrated first) into the EMPTY database at
    ``url`` (its schema created by the same migrations); StorageError otherwise."""
    if not await asyncio.to_thread(source.is_file):
        raise StorageError(f"no database at {source}")
    db = await Database.open(source)  # brings the file to the current schema
    await db.close()
    current, known = await SqliteDatabase.pending(source)
    if current != known:
        raise StorageError(f"database {source} is at schema {current}, expected {known}")
    try:
        ours = await asyncio.to_thread(_tables, source)
        await asyncio.to_thread(_refuse_foreign_tables, url, ours)
    except psycopg.Error as exc:
        raise StorageError(f"cannot open database {redact(url)}: {exc}") from None
    target = await Database.open(url)
    assert isinstance(target, PgDatabase)
    try:
        copied = await target._run(_copy, source, target)
    except psycopg.Error as exc:
        raise StorageError(f"copy to {redact(url)} failed: {exc}") from None
    finally:
        await target.close()
    log.info("copied %d rows from %s to %s", copied.rows, source, redact(url))
    return copied
