"""A consistent copy of the database while the bot runs: SQLite's online backup API.

The whole database is copied in one step, inside one read transaction, so the copy is
the database as of one instant even while another process writes (WAL readers never
block writers, nor are they blocked). The copy is written to a private temporary file
(mode 0600: it holds every conversation) and renamed into place only once it is complete
and checked, so a failed backup never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiosqlite

from bot.errors import StorageError


@dataclass(frozen=True, slots=True)
class BackupResult:
    path: Path
    pages: int
    size: int  # bytes


def target_path(target: Path, source: Path, now: datetime) -> Path:
    """``target`` itself, or a dated file inside it when it is a directory."""
    if target.is_dir():
        return target / f"{source.stem}-{now:%Y%m%d-%H%M%S}.db"
    return target


async def backup_database(
    source: Path,
    target: Path,
    now: datetime,
    busy_timeout: timedelta = timedelta(seconds=10),
) -> BackupResult:
    """Copy the database at ``source`` to ``target`` (a file, or a directory)."""
    final, temporary = _prepare(source, target, now)
    try:
        pages = await _copy(source, temporary, busy_timeout)
        return _publish(temporary, final, pages)
    except sqlite3.Error as exc:
        raise StorageError(f"backup of {source} failed: {exc}") from None
    except OSError as exc:
        raise StorageError(f"cannot write the backup {final}: {exc.strerror}") from None
    finally:
        for side in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{temporary}{side}")


def _prepare(source: Path, target: Path, now: datetime) -> tuple[Path, Path]:
    """The final path, and an empty private (0600) temporary file beside it."""
    if not source.is_file():
        raise StorageError(f"no database at {source}")
    final = target_path(target, source, now)
    if final.resolve() == source.resolve():
        raise StorageError("the backup cannot overwrite the database itself")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(f".{final.name}.{os.getpid()}.partial")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # even if a stale partial file had other rights
        os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot write the backup {final}: {exc.strerror}") from None
    return final, temporary


def _publish(temporary: Path, final: Path, pages: int) -> BackupResult:
    """Flush the finished copy to disk and give it its final name in one rename."""
    with open(temporary, "rb+") as done:
        os.fsync(done.fileno())
    os.replace(temporary, final)
    return BackupResult(final, pages, final.stat().st_size)


async def _copy(source: Path, target: Path, busy_timeout: timedelta) -> int:
    ms = int(busy_timeout.total_seconds() * 1000)
    src = await aiosqlite.connect(str(source))
    try:
        await src.execute(f"PRAGMA busy_timeout = {ms}")
        dst = await aiosqlite.connect(str(target))
        try:
            await src.backup(dst, pages=-1)  # one step: one consistent snapshot
            # A single self-contained file: no WAL beside the copy (the bot turns WAL back
            # on when it opens a restored copy).
            await dst.execute("PRAGMA journal_mode = DELETE")
            rows = await dst.execute_fetchall("PRAGMA quick_check")
            verdict = [str(r[0]) for r in rows]
            if verdict != ["ok"]:
                raise StorageError(f"the backup copy failed its check: {'; '.join(verdict)}")
            count = await dst.execute_fetchall("PRAGMA page_count")
            pages = int(next(iter(count))[0])
        finally:
            await dst.close()
    finally:
        await src.close()
    return pages
