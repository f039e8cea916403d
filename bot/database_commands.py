"""The commands about the database itself: where it is and whether it needs migrating
(``supportbot check``), and ``supportbot db copy`` (SQLite → PostgreSQL). They open the
database, so storage is imported lazily (tests/test_architecture.py)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from bot.config import Settings
from bot.config_storage import StorageSettings, check_database_url
from bot.errors import ConfigError


def database_status(settings: Settings) -> str:
    """Where the database is and whether it needs migrating (it is not migrated here)."""
    from storage.database import schema_status

    target = settings.storage.target()
    where = settings.storage.where()
    if isinstance(target, Path) and str(target) != ":memory:" and not target.exists():
        return f"{where} (SQLite) — not created yet: the first run creates it"
    engine = "SQLite" if isinstance(target, Path) else "PostgreSQL"
    current, known = asyncio.run(schema_status(target))
    if current == known:
        state = f"schema version {current}, up to date"
    elif current < known:
        state = (
            f"schema version {current}, NEEDS MIGRATING to {known} "
            "(done by the next `supportbot run`)"
        )
    else:
        state = f"schema version {current}, newer than this supportbot ({known}): upgrade it"
    return f"{where} ({engine}) — {state}"


def db_copy(settings: Settings, to: str) -> int:
    """``supportbot db copy --to URL``: the configured SQLite file into an empty
    PostgreSQL database (the password may come from $SUPPORTBOT_DATABASE_URL)."""
    from storage.copy import copy_to_postgresql
    from storage.postgres import redact as redact_url

    try:
        check_database_url(to)
    except ValueError as exc:
        raise ConfigError("--to", str(exc)) from None
    env = os.environ.get("SUPPORTBOT_DATABASE_URL", "").strip()
    # the password may come from the environment, as for storage.url (not a whole URL)
    url = str(StorageSettings(url=to).target({} if "://" in env else None))
    copied = asyncio.run(copy_to_postgresql(settings.storage.path, url))
    for table, rows in copied.tables:
        print(f"{table}: {rows} rows")
    print(f"copied {copied.rows} rows to {redact_url(url)}")
    return 0
