"""One ``supportbot run`` per database: an exclusive lock on ``<database>.lock``.

Why a ``flock`` on a side file rather than a lease row in SQLite: the kernel drops the
lock the moment the process dies, even on ``kill -9``, so a restart never waits for a
lease to expire and no heartbeat has to be written; and a side file never contends with
SQLite's own locks on the database. Read-only commands (check, kpi, digest --dry-run)
do not take it, so they keep working next to the running bot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from bot.errors import AlreadyRunningError


def lock_path(database: Path | str) -> Path:
    """The lock file that stands for ``database``."""
    return Path(f"{database}.lock")


class InstanceLock:
    """Held for the life of a ``supportbot run``; the second one fails at once."""

    def __init__(self, database: Path | str) -> None:
        self.path = lock_path(database)
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, 0o600)  # a lock file left 0644 by an older version
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise AlreadyRunningError(
                f"another supportbot is already running on this database{who}; "
                f"stop it first (lock: {self.path})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
