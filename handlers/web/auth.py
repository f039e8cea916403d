"""Who may talk on the web channel: signed visitor tokens and agent keys.

A visitor token is ``<visitor id>.<HMAC>``: the browser keeps it, and only the
server can make one, so a visitor can never name another visitor's conversation.
Agents log in with a key from ``WEB_AGENT_KEYS`` (or a generated key file) and then
carry a signed session cookie, which ends at logout, after ``SESSION_TTL_S``, or when
the agent's key changes. Generated secrets live in owner-only files beside the
database, never in it: whoever can read a copy of the database cannot sign cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from bot.errors import ConfigError
from bot.logs import redact

log = logging.getLogger(__name__)

DEFAULT_AGENT = "agent"
SESSION_TTL_S = 12 * 3600
MIN_KEY_LENGTH = 20  # a guessable key would make the login limit the only defence


class Signer:
    """HMAC-SHA256 signatures under one secret, for tokens and cookies."""

    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def sign(self, value: str) -> str:
        mac = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return f"{value}.{mac}"

    def verify(self, signed: str) -> str | None:
        """The value if the signature is ours, else None."""
        value, _, mac = signed.rpartition(".")
        if not value or not mac:
            return None
        good = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()
        return value if hmac.compare_digest(good, mac) else None

    def new_visitor(self) -> tuple[str, str]:
        """A fresh visitor id and its token."""
        visitor = secrets.token_hex(12)
        return visitor, self.sign(f"v1:{visitor}")

    def visitor_of(self, token: str) -> str | None:
        value = self.verify(token)
        if value is None or not value.startswith("v1:"):
            return None
        return value.removeprefix("v1:")

    def fingerprint(self, value: str) -> str:
        """A short keyed digest of ``value`` (an agent's key): says when it changed, not what."""
        return hmac.new(self._key, f"fp:{value}".encode(), hashlib.sha256).hexdigest()[:16]


class AgentKeys:
    """The console's agents: name → key."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = dict(keys)

    @property
    def names(self) -> list[str]:
        return sorted(self._keys)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def key_of(self, name: str) -> str | None:
        return self._keys.get(name)

    def agent_for(self, key: str) -> str | None:
        """The agent whose key this is (constant-time comparison), else None."""
        found = None
        for name, expected in self._keys.items():
            if hmac.compare_digest(expected.encode(), key.encode()):
                found = name
        return found

    @classmethod
    def parse(cls, spec: str) -> AgentKeys:
        """``name:key,name2:key2`` as in WEB_AGENT_KEYS (errors name agents, never keys)."""
        keys: dict[str, str] = {}
        for number, pair in enumerate(spec.split(","), start=1):
            name, sep, key = (part.strip() for part in pair.strip().partition(":"))
            if not sep or not name or not key:
                raise ConfigError(
                    "WEB_AGENT_KEYS",
                    f"entry {number} is not name:key (comma-separated name:key pairs)",
                )
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(
                    "WEB_AGENT_KEYS",
                    f"the key of agent {name!r} is shorter than {MIN_KEY_LENGTH} characters; "
                    "use a long random key, e.g. the output of "
                    "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'",
                )
            if name in keys:
                raise ConfigError("WEB_AGENT_KEYS", f"agent {name!r} is listed twice")
            twin = next((other for other, k in keys.items() if k == key), None)
            if twin is not None:
                raise ConfigError(
                    "WEB_AGENT_KEYS", f"agents {twin!r} and {name!r} have the same key"
                )
            keys[name] = key
        return cls(keys)

    @classmethod
    def load(cls, spec: str | None, key_file: Path) -> AgentKeys:
        """From WEB_AGENT_KEYS, else from the key file, generated at first start."""
        if spec:
            return cls.parse(spec)
        existed = key_file.exists()
        key = secret_file(key_file, lambda: secrets.token_urlsafe(24))
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(
                str(key_file),
                f"the agent key in this file is shorter than {MIN_KEY_LENGTH} characters; "
                "delete the file to have a new key generated at the next start",
            )
        if not existed:
            log.warning("generated an agent key for the web console in %s", key_file)
        log.info("web console: agent %r logs in with the key in %s", DEFAULT_AGENT, key_file)
        return cls({DEFAULT_AGENT: key})


class Sessions:
    """Agents' session cookies, revocable by the server.

    A cookie signs the agent, its expiry, the agent's session generation and a
    fingerprint of the agent's key. Logging out raises the generation (every session
    of that agent ends, on every browser); a new key changes the fingerprint. The
    generations are stored by the caller, so a restart revives no ended session.
    """

    def __init__(self, signer: Signer, keys: AgentKeys, generations: Mapping[str, int]) -> None:
        self.signer = signer
        self.keys = keys
        self._generations = dict(generations)
        self._prints = {name: signer.fingerprint(keys.key_of(name) or "") for name in keys.names}

    def generation(self, agent: str) -> int:
        return self._generations.get(agent, 0)

    def issue(self, agent: str, now: float) -> str:
        expires = int(now + SESSION_TTL_S)
        stamp = f"{self.generation(agent)}:{self._prints[agent]}"
        return self.signer.sign(f"s2:{agent}:{expires}:{stamp}")

    def agent_of(self, cookie: str, now: float) -> str | None:
        """The agent of a live session cookie, else None (forged, expired, ended, old key)."""
        value = self.signer.verify(cookie)
        if value is None or not value.startswith("s2:"):
            return None
        parts = value.removeprefix("s2:").rsplit(":", 3)
        if len(parts) != 4:
            return None
        agent, expires, generation, fingerprint = parts
        if agent not in self.keys or not expires.isdigit() or int(expires) < now:
            return None
        if generation != str(self.generation(agent)):
            return None
        if not hmac.compare_digest(fingerprint, self._prints[agent]):
            return None
        return agent

    def end(self, agent: str) -> int:
        """End every session of ``agent``; returns the new generation, for the caller to store."""
        self._generations[agent] = self.generation(agent) + 1
        return self._generations[agent]


def secret_file(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in ``path`` (owner-only), written from ``make()`` the first time.

    Several processes may start together on one folder (PostgreSQL lets them share a
    database): the first secret written wins, whole, and the others read it.
    The value is registered with the log redaction, like the environment's secrets.
    """
    try:
        value = _read_secret(path)
    except FileNotFoundError:
        value = _create_secret(path, make())
    redact(value)
    return value


def _read_secret(path: Path) -> str:
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # written by an older version, or copied with loose modes
    return path.read_text(encoding="utf-8").strip()


def _create_secret(path: Path, value: str) -> str:
    """Write ``value`` to a private temporary file, then link it to ``path``: the link
    appears complete or not at all, and fails if another process made ``path`` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(value + "\n")
        try:
            os.link(draft, path)
        except FileExistsError:  # another process was first: its secret is the one
            return _read_secret(path)
    finally:
        draft.unlink(missing_ok=True)
    return value


def key_file_for(database: Path) -> Path:
    """``support.db`` → ``support.agent-key`` next to it."""
    return database.with_name(database.stem + ".agent-key")


def secret_file_for(database: Path) -> Path:
    """``support.db`` → ``support.web-secret`` next to it: the token-signing secret."""
    return database.with_name(database.stem + ".web-secret")
