"""The visitors' open widget sockets in this process, and the lines they get.

Several processes may share one PostgreSQL database, each serving its own sockets: every
transcript write sends a note (storage/notify.py), and a process holding a socket of that
visitor reads the lines after the socket's last seq from storage. A line stored here goes
straight to a socket whose last line precedes it; any other socket re-reads. Each socket
thus gets every line once and in order, whoever wrote it. Notes about conversations and
alerts go to the console (``Console.heard``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from bot.errors import StorageError
from storage.database import DB_ERRORS
from storage.notify import Changes, Note

if TYPE_CHECKING:
    from handlers.web.console import Console
    from handlers.web.sockets import Outlet
    from storage.web_store import WebLine, WebStore

log = logging.getLogger(__name__)

REPLAY_BATCH = 500  # lines read from the transcript at a time


class Relay:
    """Each visitor's open sockets here; what other processes tell, and what to tell them."""

    def __init__(self) -> None:
        self.visitors: dict[str, set[Outlet]] = defaultdict(set)
        self.store: WebStore | None = None  # set by the transport's ``attach``
        self.changes: Changes | None = None
        self.console: Console | None = None
        self._syncing: set[Outlet] = set()  # sockets reading missed lines from storage
        self._dirty: set[Outlet] = set()  # … told of newer lines meanwhile: read again
        self._readers: dict[Outlet, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, store: WebStore, changes: Changes, console: Console) -> None:
        self.store, self.changes, self.console = store, changes, console
        changes.subscribe(self.heard)
        console.publish = self.publish

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ sockets

    async def open(self, outlet: Outlet, visitor: str, since: int) -> None:
        """Count a new socket in and replay what it has not seen (``since``: its last seq)."""
        assert self.store is not None, "attach() first"
        outlet.seq = min(since, await self.store.last_seq(visitor))
        self.visitors[visitor].add(outlet)
        self.catch_up(outlet, visitor)

    def close(self, outlet: Outlet, visitor: str) -> None:
        self.visitors[visitor].discard(outlet)
        if not self.visitors[visitor]:
            del self.visitors[visitor]
        self._dirty.discard(outlet)
        reader = self._readers.pop(outlet, None)
        if reader is not None:
            reader.cancel()
        self._syncing.discard(outlet)

    def push(self, visitor: str, frame: dict[str, Any]) -> None:
        """Queue for every open socket of the visitor (never waits: see ``Outlet``).

        An offline visitor, or one whose socket is dropped, replays on reconnect."""
        for outlet in list(self.visitors.get(visitor, ())):
            outlet.push(frame)

    def push_line(self, visitor: str, line: WebLine) -> None:
        """A line just stored here: straight to the sockets whose last line precedes it;
        a socket that missed lines (written by another process, not yet heard of)
        re-reads from storage instead, so that it never sees them out of order."""
        for outlet in list(self.visitors.get(visitor, ())):
            if line.seq == outlet.seq + 1 and outlet not in self._syncing:
                outlet.seq = line.seq
                outlet.push(line.json())
            elif line.seq > outlet.seq:
                self.catch_up(outlet, visitor)

    def catch_up(self, outlet: Outlet, visitor: str) -> None:
        """Have ``outlet`` read the lines after its last one from storage: one reader per
        socket, and a request while it reads makes it read once more."""
        self._dirty.add(outlet)
        if outlet in self._readers:
            return
        self._syncing.add(outlet)
        task = asyncio.get_running_loop().create_task(
            self._read_missed(outlet, visitor), name=f"ws-catch-up:{outlet.who}"
        )
        self._readers[outlet] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_missed(self, outlet: Outlet, visitor: str) -> None:
        assert self.store is not None, "attach() first"
        try:
            while outlet in self._dirty and not outlet.dropped:
                self._dirty.discard(outlet)
                while True:
                    lines = await self.store.since(visitor, outlet.seq, REPLAY_BATCH)
                    for line in lines:
                        if line.seq > outlet.seq:  # a direct push may have sent it meanwhile
                            outlet.seq = line.seq
                            outlet.push(line.json())
                    if len(lines) < REPLAY_BATCH:
                        break
        except StorageError as exc:
            log.warning("web channel: could not re-read a visitor's transcript: %s", exc)
        finally:
            self._readers.pop(outlet, None)
            self._syncing.discard(outlet)
            self._dirty.discard(outlet)

    # ------------------------------------------------------------------ other processes

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def publish(self, note: Note) -> None:
        """Tell the other processes (never waits: a note is sent by its own task)."""
        if self.changes is not None:
            self._spawn(self._send_note(self.changes, note), "note")

    @staticmethod
    async def _send_note(changes: Changes, note: Note) -> None:
        try:
            await changes.publish(note)
        except (*DB_ERRORS, StorageError) as exc:
            log.warning("web channel: could not tell other processes of a %r: %s", note["t"], exc)

    def heard(self, note: Note) -> None:
        """A note from any process (storage/notify.py); ours were acted on already."""
        kind = note["t"]
        if kind == "resync":  # notes may have been lost: every socket re-reads
            for held, outlets in list(self.visitors.items()):
                for outlet in list(outlets):
                    self.catch_up(outlet, held)
            if self.console is not None:
                self._spawn(self.console.resync(), "console-resync")
            return
        if self.changes is None or note.get("o") == self.changes.origin:
            return
        visitor, seq = note.get("v"), note.get("s")
        if kind == "line" and isinstance(visitor, str) and isinstance(seq, int):
            for outlet in list(self.visitors.get(visitor, ())):
                if seq > outlet.seq:
                    self.catch_up(outlet, visitor)
        elif kind == "chosen" and isinstance(visitor, str) and isinstance(seq, int):
            if visitor in self.visitors:
                self._spawn(self._show_chosen(visitor, seq), "chosen")
        elif kind == "gone" and isinstance(visitor, str):
            for outlet in list(self.visitors.get(visitor, ())):
                self._spawn(outlet.close(), "gone")
        elif self.console is not None:
            self.console.heard(note)

    async def _show_chosen(self, visitor: str, seq: int) -> None:
        assert self.store is not None, "attach() first"
        line = await self.store.line(visitor, seq)
        if line is not None and line.chosen is not None:
            self.push(visitor, {"type": "chosen", "seq": seq, "label": line.chosen})
