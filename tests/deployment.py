"""The README's deployment, for real: Debian's nginx with deploy/nginx.conf in front of
``supportbot run`` processes on one PostgreSQL database (tests/test_deploy_nginx.py).

nginx runs in the foreground (``daemon off``) under a prefix of its own in the test's
temporary directory (pid file, logs, temp paths), with a self-signed certificate made by
``openssl`` and the site file's placeholders filled with free 127.0.0.1 ports. ``make
unit`` installs the package when it is missing, as it does for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import string
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tests.reliability.bot_process import ROOT, BotProcess, write_config
from tests.waiting import eventually

SITE = ROOT / "deploy" / "nginx.conf"
SLOTS = ("1", "2")


def nginx_binary() -> Path | None:
    """Debian's nginx (in /usr/sbin, which is not on every PATH), or None."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    return Path(found) if found else None


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nobody listens on, never the same twice in this run (a deployment needs
    seven at once, chosen before anything binds them)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (the name the clients use) and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def fill(site: str, values: Mapping[str, str]) -> str:
    """The site file with its ``${NAME}`` placeholders filled (nginx's own ``$vars`` kept)."""
    filled = string.Template(site).safe_substitute(values)
    left = re.findall(r"\$\{[A-Z0-9_]+\}", filled)
    assert not left, f"placeholders not filled: {left}"
    return filled


@dataclass
class Nginx:
    """One foreground nginx with the deployment's site file; ``stop`` ends it."""

    prefix: Path
    port: int
    values: dict[str, str]
    proc: asyncio.subprocess.Process | None = None

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def main_conf(self) -> str:
        """What /etc/nginx/nginx.conf gives a Debian site, with every path under prefix."""
        p = self.prefix
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach tmp_path
        return (
            f"{user}worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\n"
            f"error_log {self.error_log} notice;\nevents {{ worker_connections 1024; }}\n"
            "http {\n"
            f"  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n"
            f"  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n"
            f"  scgi_temp_path {p}/scgi;\n"
            f"  include {p}/supportbot.conf;\n"
            f"  access_log {self.access_log} supportbot_upstream;\n"
            "}\n"
        )

    async def start(self) -> None:
        binary = nginx_binary()
        assert binary is not None, "nginx is not installed (make unit installs it)"
        self.prefix.mkdir(parents=True, exist_ok=True)
        (self.prefix / "supportbot.conf").write_text(
            fill(SITE.read_text(encoding="utf-8"), self.values), encoding="utf-8"
        )
        conf = self.prefix / "nginx.conf"
        conf.write_text(self.main_conf(), encoding="utf-8")
        argv = [str(binary), "-p", f"{self.prefix}/", "-c", str(conf)]
        check = await asyncio.create_subprocess_exec(
            *argv, "-t", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await check.communicate()
        assert check.returncode == 0, out.decode()
        self.proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        proc = self.proc
        await eventually(lambda: listening(self.port) or proc.returncode is not None, within=10)
        assert proc.returncode is None, self.error_log.read_text()

    async def stop(self) -> None:
        """SIGQUIT (graceful), SIGKILL if it lingers: nothing outlives the test."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            async with asyncio.timeout(10):
                await self.proc.wait()
        except TimeoutError:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def upstreams(self, path: str) -> list[str]:
        """For each logged request to ``path``: the upstream that answered it last."""
        found = []
        for line in self.access_log.read_text(encoding="utf-8").splitlines():
            match = re.search(r'"[A-Z]+ (\S+) [^"]*" \d+ upstream=(\S.*?) rt=', line)
            if match and match.group(1).split("?")[0] == path:
                found.append(match.group(2).split(",")[-1].strip())
        return found


@dataclass
class Process:
    """One ``supportbot run`` of the deployment and its ports."""

    name: str
    web: int = field(default_factory=free_port)
    telegram: int = field(default_factory=free_port)
    slack: int = field(default_factory=free_port)
    bot: BotProcess | None = None

    def address(self, kind: str) -> str:
        return f"127.0.0.1:{getattr(self, kind)}"


def process_config(
    tmp: Path,
    proc: Process,
    *,
    api_url: str,
    slack_api_url: str,
    desk: int,
    agent: int,
    public: str,
) -> Path:
    """A process's config.yaml: storage from $SUPPORTBOT_DATABASE_URL (set in its env),
    Telegram in webhook mode with the public URL nginx serves, Slack's HTTP events, the
    web channel trusting nginx's X-Forwarded-* headers; the agents' desk on Telegram."""
    folder = tmp / proc.name
    folder.mkdir(exist_ok=True)
    overrides: dict[str, Any] = {
        "storage": {"path": str(folder / "supportbot.db"), "busy_timeout": "5s"},
        "telegram": {
            "enabled": True,
            "api_url": api_url,
            "agents_chat_id": desk,
            "agent_ids": [agent],
            "mode": "webhook",
            "webhook_url": f"{public}/telegram",
            "webhook_listen": "127.0.0.1",
            "webhook_port": proc.telegram,
            "webhook_path": "/telegram",
            "pacing": False,
        },
        "slack": {
            "enabled": True,
            "api_url": slack_api_url,
            "mode": "http",
            "http_listen": "127.0.0.1",
            "http_port": proc.slack,
            "http_path": "/slack/events",
            "pacing": False,
        },
        "web": {
            "enabled": True,
            "host": "127.0.0.1",
            "port": proc.web,
            "trusted_proxies": ["127.0.0.1"],
            "rate_limit": "100000/1s",  # one machine plays every visitor
            "max_sockets_per_ip": 10_000,
        },
        "desk": "telegram",
    }
    return write_config(folder, overrides)


def tls_client(cert: Path) -> ssl.SSLContext:
    """A client that trusts the deployment's self-signed certificate, and verifies it."""
    return ssl.create_default_context(cafile=str(cert))


class Visitor:
    """A widget over wss through nginx: the lines it saw, by seq (each once)."""

    def __init__(self, http: aiohttp.ClientSession, public: str) -> None:
        self.http = http
        self.public = public
        self.token = ""
        self.lines: dict[int, dict[str, Any]] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @property
    def seq(self) -> int:
        return max(self.lines, default=0)

    async def open(self) -> None:
        if not self.token:
            async with self.http.post(f"{self.public}/api/web/session") as resp:
                assert resp.status == 200, await resp.text()
                self.token = (await resp.json())["token"]
        url = f"{self.public.replace('https', 'wss')}/ws/widget"
        query = {"token": self.token, "since": str(self.seq), "lang": "fr"}
        self.closed.clear()
        self.ws = await self.http.ws_connect(url, params=query, headers={"Origin": self.public})
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                frame = json.loads(msg.data)
                if frame.get("type") == "line":
                    assert frame["seq"] not in self.lines, f"line {frame['seq']} twice"
                    self.lines[frame["seq"]] = frame
        self.closed.set()

    async def say(self, text: str, frame_id: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"type": "message", "id": frame_id, "text": text}))

    def bot_lines(self, containing: str) -> list[str]:
        return [
            line["text"]
            for line in self.lines.values()
            if line.get("author") == "bot" and containing in line.get("text", "")
        ]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader
