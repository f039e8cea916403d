"""Recording fakes of our own ports: they remember every call and can be told to fail."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.conversation.model import Address, Choice, Media, Sent, ThreadHeader, ThreadRef
from bot.errors import DeliveryError

_ids = itertools.count(1000)


@dataclass
class Call:
    op: str
    args: dict[str, Any]


class _Failing:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._failures: list[DeliveryError] = []

    def fail_next(self, *errors: DeliveryError) -> None:
        """The next calls raise these errors, in order."""
        self._failures.extend(errors)

    def _record(self, op: str, **args: Any) -> None:
        if self._failures:
            raise self._failures.pop(0)
        self.calls.append(Call(op, args))

    def ops(self, op: str) -> list[dict[str, Any]]:
        return [c.args for c in self.calls if c.op == op]


class RecordingChannel(_Failing):
    """A customer channel that keeps what each customer was sent."""

    def __init__(self, channel: str = "telegram") -> None:
        super().__init__()
        self._channel = channel

    @property
    def channel(self) -> str:
        return self._channel

    async def send(self, to: Address, text: str, choices: Sequence[Sequence[Choice]] = ()) -> Sent:
        self._record("send", to=to, text=text, choices=[list(r) for r in choices])
        return Sent(str(next(_ids)))

    async def send_media(self, to: Address, media: Media, caption: str) -> Sent:
        self._record("send_media", to=to, media=media, caption=caption)
        return Sent(str(next(_ids)))

    def texts(self, to: Address | None = None) -> list[str]:
        return [c["text"] for c in self.ops("send") if to is None or c["to"] == to]

    def last(self, to: Address | None = None) -> dict[str, Any]:
        sends = [c for c in self.ops("send") if to is None or c["to"] == to]
        assert sends, "nothing was sent"
        return sends[-1]

    def last_tokens(self, to: Address | None = None) -> dict[str, str]:
        """Label → token of the buttons of the last message."""
        return {c.label: c.token for row in self.last(to)["choices"] for c in row}


@dataclass
class Thread:
    header: ThreadHeader
    posts: list[tuple[str, str]] = field(default_factory=list)  # (author, text)
    closed: bool = False
    relayed: list[str] = field(default_factory=list)


class RecordingDesk(_Failing):
    """An agents' desk that keeps threads, posts, alerts, and knows who the agents are."""

    def __init__(
        self, desk: str = "slack", agents: Sequence[str] = ("U_AGENT", "U_AGENT2")
    ) -> None:
        super().__init__()
        self._desk = desk
        self.agents = set(agents)
        self.threads: dict[str, Thread] = {}
        self.alerts: list[tuple[str, str | None]] = []
        self.alert_buttons: list[tuple[Choice, ...]] = []  # beside each alert
        self.mentions: list[tuple[str, str, str | None]] = []

    @property
    def desk(self) -> str:
        return self._desk

    async def open_thread(self, header: ThreadHeader, previous: str | None) -> ThreadRef:
        self._record("open_thread", header=header, previous=previous)
        thread = f"T{next(_ids)}"
        self.threads[thread] = Thread(header)
        return ThreadRef(thread, thread)

    async def update_header(self, ref: ThreadRef, header: ThreadHeader) -> None:
        self._record("update_header", ref=ref, header=header)
        self.threads[ref.thread].header = header

    async def post(self, thread: str, text: str, author: str, name: str) -> Sent:
        self._record("post", thread=thread, text=text, author=author, name=name)
        self.threads[thread].posts.append((author, text))
        return Sent(str(next(_ids)))

    async def post_choices(
        self, thread: str, text: str, choices: Sequence[Sequence[Choice]]
    ) -> Sent:
        self._record("post_choices", thread=thread, text=text, choices=choices)
        self.threads[thread].posts.append(("system", text))
        return Sent(str(next(_ids)))

    async def post_media(self, thread: str, media: Media, caption: str) -> Sent:
        self._record("post_media", thread=thread, media=media, caption=caption)
        self.threads[thread].posts.append(("media", media.kind))
        return Sent(str(next(_ids)))

    async def mark_relayed(self, thread: str, message_ref: str) -> None:
        self._record("mark_relayed", thread=thread, ref=message_ref)
        self.threads[thread].relayed.append(message_ref)

    async def close_thread(self, thread: str) -> None:
        self._record("close_thread", thread=thread)
        self.threads[thread].closed = True

    async def reopen_thread(self, thread: str) -> None:
        self._record("reopen_thread", thread=thread)
        self.threads[thread].closed = False

    async def alert(
        self, text: str, thread: str | None = None, *, buttons: Sequence[Sequence[Choice]] = ()
    ) -> Sent:
        self._record("alert", text=text, thread=thread, buttons=buttons)
        self.alerts.append((text, thread))
        self.alert_buttons.append(tuple(c for row in buttons for c in row))
        return Sent(str(next(_ids)))

    async def is_agent(self, user_id: str) -> bool:
        return user_id in self.agents

    async def mention(self, who: str, name: str, text: str, thread: str | None) -> Sent:
        """Routing's call of one person or group (``MentioningDesk``)."""
        self._record("mention", who=who, name=name, text=text, thread=thread)
        self.mentions.append((who, text, thread))
        return Sent(str(next(_ids)))

    def only_thread(self) -> tuple[str, Thread]:
        assert len(self.threads) == 1, f"expected one thread, got {list(self.threads)}"
        return next(iter(self.threads.items()))


class RecordingBoard(_Failing):
    """An alert board (the web console's port): keeps every alert it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.alerts: list[tuple[int, int | None, str]] = []

    async def post_alert(self, alert_id: int, conversation_id: int | None, text: str) -> None:
        self._record("post_alert", id=alert_id, conversation=conversation_id, text=text)
        self.alerts.append((alert_id, conversation_id, text))

    def texts(self) -> list[str]:
        return [text for _id, _conv, text in self.alerts]
