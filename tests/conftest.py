"""Shared fixtures. Tests never reach the internet: HTTP goes to local servers only."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fakes.clock import FakeClock

if TYPE_CHECKING:
    from storage.database import Database
    from tests.harness import Harness
    from tests.pg_cluster import PgCluster

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def harness(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    from tests.harness import Harness, make_settings

    h = Harness(make_settings(tmp_path / "t.db"), clock)
    await h.start()
    yield h
    await h.stop()


# ------------------------------------------------------------------ PostgreSQL
# One throwaway cluster for the session (tests/pg_cluster.py); each test gets a fresh
# database copied from a migrated template (CREATE DATABASE … TEMPLATE: milliseconds).


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    from tests.pg_cluster import PgCluster

    cluster = PgCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PgCluster) -> str:
    """A database with every migration applied, the template of the tests' databases."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import psycopg

    from storage.database import Database

    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE supportbot_template")

    async def migrate() -> None:
        db = await Database.open(pg_cluster.url("supportbot_template"))
        await db.close()

    # its own thread and loop: the fixture may be first asked for inside a running loop
    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(asyncio.run, migrate()).result()
    return "supportbot_template"


_databases = itertools.count(1)


@pytest.fixture
def pg_url(pg_cluster: PgCluster, pg_template: str) -> Iterator[str]:
    """The URL of a fresh, migrated PostgreSQL database, dropped after the test."""
    import psycopg

    name = f"t{next(_databases)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    yield pg_cluster.url(name)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def pg_empty_url(pg_cluster: PgCluster) -> Iterator[str]:
    """The URL of a fresh EMPTY PostgreSQL database (no schema), dropped after the test."""
    import psycopg

    name = f"e{next(_databases)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_cluster.url(name)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a contract test's database lives: a SQLite file, or a PostgreSQL URL."""
    if request.param == "sqlite":
        return str(tmp_path / "contract.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def db(db_target: str) -> AsyncIterator[Database]:
    """An open, migrated database on each engine in turn (the contract suite's subject)."""
    from storage.database import Database

    database = await Database.open(db_target)
    yield database
    await database.close()
