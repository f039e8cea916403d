"""Changes other processes must hear of: the port behind the web channel's live pushes.

Several ``supportbot run`` processes may share one PostgreSQL database; a visitor's
widget socket (or an agent's console socket) is held by one of them, while the line it
must show may be written by another (the one whose outbox delivered the answer). So
every process publishes small notes ("visitor V has line S", "conversation C changed")
and every process hears all of them, its own included (a listener skips its own).

- SQLite is one process: ``Changes`` hands notes to the listeners in memory, soon
  after the call (``call_soon``), never inside the caller.
- PostgreSQL: ``PgChanges`` sends ``NOTIFY supportbot_web`` (inside the write that
  stores what it tells of, ``in_write``, so a note goes out only if that was committed)
  and keeps a dedicated ``LISTEN`` connection. When that connection drops it reconnects,
  and listeners then get ``{"t": "resync"}``: notes sent meanwhile were lost, so they
  re-read what they show from storage (the transcript by seq), nothing is missed.

Notes carry ids and numbers only, never a customer's words: NOTIFY payloads end at
8000 bytes, and every session of the database may LISTEN.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from bot.errors import StorageError

if TYPE_CHECKING:
    from storage.database import Conn, Database

log = logging.getLogger(__name__)

CHANNEL = "supportbot_web"
MAX_NOTE = 1000  # bytes of JSON: ids and numbers only, far below NOTIFY's 8000
RESYNC: dict[str, Any] = {"t": "resync"}
LISTENER_NAME = "supportbot-listen"  # application_name of the LISTEN connection

Note = dict[str, Any]
Listener = Callable[[Note], None]


def encode(note: Note) -> str:
    text = json.dumps(note, separators=(",", ":"), ensure_ascii=True)
    if len(text) > MAX_NOTE:
        raise ValueError(f"a change note of {len(text)} bytes: ids only, never texts")
    return text


def decode(text: str) -> Note | None:
    """A note, or None for anything else (any session may NOTIFY this channel)."""
    try:
        note = json.loads(text)
    except ValueError:
        return None
    return note if isinstance(note, dict) and isinstance(note.get("t"), str) else None


class Changes:
    """One process (SQLite): notes go from ``publish`` to the listeners in memory."""

    def __init__(self) -> None:
        # Who published a note: a listener skips what its own process already did.
        self.origin = secrets.token_hex(6)
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """``listener(note)`` runs in the event loop for every note, and ``RESYNC``."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def start(self) -> None:
        """Ready to hear (PostgreSQL: the LISTEN connection is open)."""

    async def stop(self) -> None:
        """Stop hearing."""

    async def publish(self, note: Note) -> None:
        """Tell every process, this one included, now (``in_write`` ties a note to a
        write's commit)."""
        text = encode({**note, "o": self.origin})
        asyncio.get_running_loop().call_soon(self._heard, text)

    def in_write(self, conn: Conn, note: Note) -> str:
        """Inside a ``Database.write`` work (on the database thread): on PostgreSQL the
        note goes out with that transaction's commit. Give what it returns to
        ``committed`` once the write has returned."""
        return encode({**note, "o": self.origin})

    def line_note_column(self) -> tuple[str, tuple[Any, ...]] | None:
        """PostgreSQL only (see ``PgChanges``): here notes go through ``in_write``."""
        return None

    def committed(self, text: str) -> None:
        """After the write that carried the note: this process's listeners (SQLite)."""
        asyncio.get_running_loop().call_soon(self._heard, text)

    def _heard(self, text: str) -> None:
        note = decode(text)
        if note is None:
            log.warning("change note ignored: not one of ours (%d bytes)", len(text))
            return
        self._deliver(note)

    def _deliver(self, note: Note) -> None:
        for listener in list(self._listeners):
            try:
                listener(note)
            except Exception:  # one broken listener must not deafen the others
                log.exception("change listener failed on a %r note", note.get("t"))


def _notify(conn: Conn, text: str) -> None:
    conn.execute("SELECT pg_notify(?, ?)", (CHANNEL, text))


class PgChanges(Changes):
    """Several processes on one PostgreSQL database: NOTIFY out, a LISTEN connection in."""

    def __init__(self, db: Database, url: str, *, retry: float = 0.2, max_retry: float = 5.0):
        super().__init__()
        self.db = db
        self.url = url
        self.retry = retry
        self.max_retry = max_retry
        self.reconnects = 0  # LISTEN connections reopened after a drop
        self.listening = asyncio.Event()  # set while the LISTEN connection is open
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None

    async def publish(self, note: Note) -> None:
        text = encode({**note, "o": self.origin})
        await self.db.read(lambda c: _notify(c, text))

    def in_write(self, conn: Conn, note: Note) -> str:
        text = super().in_write(conn, note)
        _notify(conn, text)
        return text

    def committed(self, text: str) -> None:
        """Nothing more: every process, this one included, hears it through LISTEN."""

    def line_note_column(self) -> tuple[str, tuple[Any, ...]]:
        """A RETURNING column for a statement that writes one ``web_messages`` row: it
        sends that line's note, as ``in_write`` would, without a statement of its own."""
        sql = (
            "pg_notify(?, json_build_object('t', 'line', 'v', visitor, 's', seq,"
            " 'o', ?::text)::text)"
        )
        return sql, (CHANNEL, self.origin)

    async def start(self) -> None:
        try:
            self._conn = await self._open()
        except psycopg.Error as exc:
            raise StorageError(f"cannot LISTEN on database {self.db.path}: {exc}") from None
        self._task = asyncio.get_running_loop().create_task(self._listen(), name="pg-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._close()

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, application_name=LISTENER_NAME
        )
        await conn.execute(f"LISTEN {CHANNEL}")
        self.listening.set()
        return conn

    async def _close(self) -> None:
        self.listening.clear()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _listen(self) -> None:
        """Hear notes until stopped; reconnect after a drop, then ask for a resync."""
        while True:
            conn = self._conn
            if conn is not None:
                try:
                    async for notify in conn.notifies():
                        self._heard(notify.payload)
                except psycopg.Error as exc:
                    log.warning("LISTEN connection lost (%s): reconnecting", _first_line(exc))
                await self._close()
            self._conn = await self._reconnect()
            self.reconnects += 1
            log.info("LISTEN connection back: every open socket re-reads its transcript")
            self._deliver(dict(RESYNC))

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        delay = self.retry
        while True:
            try:
                return await self._open()
            except psycopg.Error as exc:
                log.warning("cannot LISTEN yet (%s): again in %.1fs", _first_line(exc), delay)
            await asyncio.sleep(delay)  # a back-off, not a synchronisation
            delay = min(delay * 2, self.max_retry)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def changes_for(db: Database) -> Changes:
    """The right kind for this database's engine."""
    url = getattr(db, "url", None)
    if db.engine == "postgresql" and isinstance(url, str):
        return PgChanges(db, url)
    return Changes()
