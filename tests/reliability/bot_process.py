"""``supportbot run`` as a real child process, for tests that kill it or run two.

The process logs to a file; readiness is the "supportbot started" line appearing after
the start, so nothing sleeps: tests wait on conditions with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.waiting import eventually

READY = "supportbot started"
SUPPORTBOT = Path(sys.executable).with_name("supportbot")
ROOT = Path(__file__).resolve().parents[2]
KNOWLEDGE = ROOT / "knowledge.yaml"


def write_config(tmp: Path, overrides: dict[str, Any], name: str = "config.yaml") -> Path:
    """A config.yaml in ``tmp`` with a temp database and the shipped knowledge base."""
    config: dict[str, Any] = {
        "language": "fr",
        "storage": {"path": str(tmp / "supportbot.db"), "busy_timeout": "5s"},
        "knowledge": {"path": str(KNOWLEDGE)},
        "slack": {"enabled": False},
        "digest": {"enabled": False},
        "web": {"enabled": False},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def database_rows(path: Path, sql: str, *params: object) -> list[sqlite3.Row]:
    """Read the product's database with a separate connection (WAL: sees every commit)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class BotProcess:
    """One ``supportbot`` child process; its output goes to ``log``."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config = config
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self._log_from = 0
        self.starts = 0

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        """Start ``supportbot <args> --config …`` (default: run) without waiting for it."""
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            return await asyncio.create_subprocess_exec(
                str(SUPPORTBOT),
                *(args or ("run",)),
                "--config",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=self.env,
            )

    async def start(self, within: float = 30.0) -> None:
        """Run the bot and return once it says it started (fails if it exits first)."""
        self.proc = await self.spawn("run")
        self.starts += 1
        proc = self.proc
        await eventually(
            lambda: READY in self.output() or proc.returncode is not None, within=within
        )
        assert proc.returncode is None, f"supportbot exited {proc.returncode}:\n{self.output()}"

    def output(self) -> str:
        """What the process wrote since its last start."""
        if not self.log.exists():
            return ""
        with self.log.open("rb") as f:
            f.seek(self._log_from)
            return f.read().decode("utf-8", "replace")

    def all_output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    async def kill(self) -> None:
        """kill -9: no cleanup of any kind runs in the child."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    async def stop(self, within: float = 15.0) -> int:
        """SIGTERM, then wait for the clean exit; returns the exit code."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(within):
            return await proc.wait()

    async def close(self) -> None:
        """For fixtures: whatever state the test left, no child outlives it."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        self.proc = None
