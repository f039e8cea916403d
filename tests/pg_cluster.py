"""A throwaway PostgreSQL cluster for the tests and the benchmarks: Debian's binaries,
initdb in a temporary directory owned by a non-root user, a free 127.0.0.1 port.

PostgreSQL refuses to run as root; the tests run as root in CI, so the cluster belongs to
the ``postgres`` system user that Debian's package creates (``runuser``), and to whoever
runs the tests otherwise. ``make unit`` installs the package when it is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

OWNER = "postgres"


def pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb, or None."""
    root = Path("/usr/lib/postgresql")
    found = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def _server_env() -> dict[str, str]:
    """This environment without libfaketime: ``make test-dates`` fakes the tests' clock,
    but a faked PostgreSQL never fires its own timers (``lock_timeout`` waited forever).
    The server's clock is never the product's: every stored time comes from the app."""
    return {
        k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WAIT = ("-w", "-t", "60")  # pg_ctl: until the server is up (or down), at most a minute


@dataclass
class PgCluster:
    """A running cluster; ``url(name)`` is a libpq URL of database ``name``."""

    root: Path
    port: int
    bin: Path
    as_user: list[str] = field(default_factory=list)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, *args],
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            env=_server_env(),
        )

    @classmethod
    def start(cls) -> PgCluster:
        binary = pg_bin()
        if binary is None:
            raise RuntimeError(
                "PostgreSQL is not installed: apt-get install postgresql (make unit does it)"
            )
        root = Path(tempfile.mkdtemp(prefix="supportbot-pg-"))
        as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam(OWNER)
            os.chown(root, owner.pw_uid, owner.pw_gid)
            as_user = ["runuser", "-u", OWNER, "--"]
        cluster = cls(root=root, port=_free_port(), bin=binary, as_user=as_user)
        try:
            cluster._run(
                str(binary / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            cluster.resume()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def resume(self) -> None:
        """Start the server on its data directory (first start, or after ``halt``)."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        data, log = str(self.root / "data"), str(self.root / "log")
        self._run(str(self.bin / "pg_ctl"), "-D", data, "-l", log, "-o", options, *WAIT, "start")

    def halt(self) -> None:
        """Stop the server as an operator's restart does (``-m fast``: every session
        ended, the data kept); ``resume`` starts it again."""
        data = str(self.root / "data")
        self._run(str(self.bin / "pg_ctl"), "-D", data, "-m", "fast", *WAIT, "stop")

    def stop(self) -> None:
        """Stop the server (fast: the data is thrown away) and remove the directory."""
        if (self.root / "data" / "postmaster.pid").exists():
            subprocess.run(
                [*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.root / "data")]
                + ["-m", "immediate", "-w", "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.root,
                env=_server_env(),
            )
        shutil.rmtree(self.root, ignore_errors=True)
