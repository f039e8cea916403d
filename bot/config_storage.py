"""The ``storage:`` section: a SQLite file (the default) or a PostgreSQL URL, whose
password (or the whole URL) may come from $SUPPORTBOT_DATABASE_URL."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import field_validator

from bot.config_types import Duration, Section
from bot.errors import ConfigError

DATABASE_URL_ENV = "SUPPORTBOT_DATABASE_URL"


def check_database_url(url: str) -> str:
    """A ``postgresql://[user[:password]@]host[:port]/database`` URL, or ValueError."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("has a port that is not a number") from None
    if parts.scheme not in ("postgresql", "postgres") or not parts.path.strip("/"):
        raise ValueError(
            "must be a PostgreSQL URL: postgresql://user@host:5432/database "
            "(the password may come from $SUPPORTBOT_DATABASE_URL)"
        )
    return url


class StorageSettings(Section):
    """``path``: the SQLite file (the default engine); ``url``: a PostgreSQL database instead.

    The password, or the whole URL, may come from $SUPPORTBOT_DATABASE_URL instead of the
    file (a URL there wins over ``url``). Files beside the database (the web signing
    secret, the embeddings cache) stay beside ``path`` on both engines.
    """

    path: Path = Path("supportbot.db")
    url: str | None = None
    busy_timeout: Duration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else check_database_url(value.strip())

    def target(self, env: Mapping[str, str] | None = None) -> Path | str:
        """What ``Database.open`` opens: the PostgreSQL URL (with the password from the
        environment) when one is configured, else the SQLite file."""
        env = os.environ if env is None else env
        secret = env.get(DATABASE_URL_ENV, "").strip()
        if secret.startswith(("postgresql://", "postgres://")):
            try:
                return check_database_url(secret)
            except ValueError as exc:
                raise ConfigError(DATABASE_URL_ENV, str(exc)) from None
        if self.url is None:
            return self.path
        if not secret:
            return self.url
        parts = urlsplit(self.url)
        user = quote(unquote(parts.username or ""), safe="")
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{user}:{quote(secret, safe='')}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def secret_values(self, env: Mapping[str, str] | None = None) -> list[str]:
        """The database password and URL, for log redaction."""
        env = os.environ if env is None else env
        found = [v for v in (env.get(DATABASE_URL_ENV, "").strip(),) if v]
        for url in (self.url, *found):
            if url and url.startswith(("postgresql://", "postgres://")):
                password = urlsplit(url).password
                if password:
                    found += [password, quote(unquote(password), safe="")]
        return found

    def where(self) -> str:
        """The database for messages: the file, or the URL without its password."""
        target = self.target()
        if isinstance(target, Path):
            return str(target)
        parts = urlsplit(target)
        host = parts.netloc.rpartition("@")[2]
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, user + host, parts.path, "", ""))
