"""Who may talk on the web channel: signed visitor tokens and agent keys.

A visitor token is ``<visitor id>.<HMAC>``: the browser keeps it, and only the
server can make one, so a visitor can never name another visitor's conversation.
Agents log in with a key from ``WEB_AGENT_KEYS`` (or a generated key file) and then
carry a signed session cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path

from bot.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_AGENT = "agent"
SESSION_TTL_S = 12 * 3600


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

    def session(self, agent: str, now: float) -> str:
        """A session cookie for ``agent``, valid ``SESSION_TTL_S`` from ``now`` (the app
        clock's epoch seconds)."""
        expires = int(now + SESSION_TTL_S)
        return self.sign(f"s1:{agent}:{expires}")

    def session_agent(self, cookie: str, now: float) -> str | None:
        value = self.verify(cookie)
        if value is None or not value.startswith("s1:"):
            return None
        agent, _, expires = value.removeprefix("s1:").rpartition(":")
        if not expires.isdigit() or int(expires) < now:
            return None
        return agent


class AgentKeys:
    """The console's agents: name → key."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._keys = dict(keys)

    @property
    def names(self) -> list[str]:
        return sorted(self._keys)

    def __contains__(self, name: object) -> bool:
        return name in self._keys

    def agent_for(self, key: str) -> str | None:
        """The agent whose key this is (constant-time comparison), else None."""
        found = None
        for name, expected in self._keys.items():
            if hmac.compare_digest(expected.encode(), key.encode()):
                found = name
        return found

    @classmethod
    def parse(cls, spec: str) -> AgentKeys:
        """``name:key,name2:key2`` as in WEB_AGENT_KEYS."""
        keys: dict[str, str] = {}
        for pair in spec.split(","):
            name, sep, key = pair.strip().partition(":")
            if not sep or not name.strip() or len(key.strip()) < 8:
                raise ConfigError(
                    "WEB_AGENT_KEYS",
                    "must be comma-separated name:key pairs, each key at least 8 characters",
                )
            keys[name.strip()] = key.strip()
        return cls(keys)

    @classmethod
    def load(cls, spec: str | None, key_file: Path) -> AgentKeys:
        """From WEB_AGENT_KEYS, else from the key file, generated at first start."""
        if spec:
            return cls.parse(spec)
        if key_file.exists():
            key = key_file.read_text(encoding="utf-8").strip()
        else:
            key = secrets.token_urlsafe(24)
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(key + "\n")
            log.warning("generated an agent key for the web console in %s", key_file)
        log.info("web console: agent %r logs in with the key in %s", DEFAULT_AGENT, key_file)
        return cls({DEFAULT_AGENT: key})


def key_file_for(database: Path) -> Path:
    """``support.db`` → ``support.agent-key`` next to it."""
    return database.with_name(database.stem + ".agent-key")
