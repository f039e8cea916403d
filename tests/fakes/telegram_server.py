"""A local Telegram Bot API server that python-telegram-bot talks real HTTP to.

Point PTB at it with ``base_url(f"{server.url}/bot")`` and ``base_file_url(server.file_url)``.
It keeps simulated users, their private chats with the bot and one or more groups (a
forum supergroup for the agents), queues the updates those users produce (long polling
with confirmation by offset, or pushed to a webhook with the secret header), answers the
bot's methods with full objects and Telegram's own errors, logs every call, and lets a
test wait for a call by condition instead of sleeping.

Reusable by any test or benchmark: every call costs O(1) bookkeeping plus the work of
the method itself; waiting scans only the calls of one method made since ``since``.

    async with running_server() as tg:
        ana = tg.add_user("Ana", language_code="fr")
        await tg.customer_sends(ana, "Bonjour")
        call = await tg.wait_for("sendMessage", lambda c: c.params["chat_id"] == ana.id)
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import itertools
import json
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import web
from telegram.constants import ReactionEmoji

T = TypeVar("T")
JSON = dict[str, Any]

DEFAULT_TOKEN = "123456789:AAF-fake-token-for-tests-only_0123456789"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_ANSWER = 200
ALLOWED_REACTIONS = frozenset(e.value for e in ReactionEmoji)
DEFAULT_UPDATES = frozenset(  # what Telegram sends when allowed_updates is empty
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "callback_query",
        "my_chat_member",
        "inline_query",
        "chosen_inline_result",
    }
)
CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
MEMBER_STATUSES = frozenset({"creator", "administrator", "member", "restricted"})

_INT_FIELDS = frozenset(
    {
        "chat_id",
        "from_chat_id",
        "message_id",
        "message_thread_id",
        "offset",
        "limit",
        "timeout",
        "user_id",
        "reply_to_message_id",
        "cache_time",
        "icon_color",
        "max_connections",
    }
)
_BOOL_FIELDS = frozenset(
    {
        "show_alert",
        "is_big",
        "drop_pending_updates",
        "disable_notification",
        "protect_content",
        "allow_sending_without_reply",
        "has_spoiler",
        "disable_web_page_preview",
    }
)
_JSON_FIELDS = frozenset(
    {
        "reply_markup",
        "entities",
        "caption_entities",
        "reaction",
        "allowed_updates",
        "reply_parameters",
        "link_preview_options",
    }
)
_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,})?")
_MENTION = re.compile(r"(?<![\w@])@[A-Za-z][A-Za-z0-9_]{3,31}")
_MEDIA_KINDS = (
    "photo",
    "document",
    "voice",
    "audio",
    "video",
    "video_note",
    "sticker",
    "animation",
)
_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def utf16_len(text: str) -> int:
    """Telegram counts text lengths and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


class ApiError(Exception):
    """A method refused the call: answered as ``{"ok": false, ...}`` with this status."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def bad_request(reason: str) -> ApiError:
    return ApiError(400, f"Bad Request: {reason}")


# ---------------------------------------------------------------------- the simulated world


@dataclass
class FakeUser:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_bot: bool = False

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}" if self.last_name else self.first_name

    def json(self) -> JSON:
        data: JSON = {"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


@dataclass
class Topic:
    thread_id: int
    name: str
    icon_color: int = 7322096
    closed: bool = False


@dataclass
class FakeChat:
    id: int
    type: str  # "private" | "supergroup"
    title: str | None = None
    is_forum: bool = False
    user: FakeUser | None = None  # the other side of a private chat
    members: dict[int, str] = field(default_factory=dict)  # user id → status
    topics: dict[int, Topic] = field(default_factory=dict)
    messages: dict[int, JSON] = field(default_factory=dict)
    last_message_id: int = 0

    def json(self) -> JSON:
        if self.type == "private":
            assert self.user is not None
            data: JSON = {"id": self.id, "type": "private", "first_name": self.user.first_name}
            if self.user.last_name:
                data["last_name"] = self.user.last_name
            if self.user.username:
                data["username"] = self.user.username
            return data
        data = {"id": self.id, "type": self.type, "title": self.title}
        if self.is_forum:
            data["is_forum"] = True
        return data

    def next_message_id(self) -> int:
        self.last_message_id += 1
        return self.last_message_id


@dataclass
class Call:
    """One request the bot made; ``result`` and ``status`` are filled once answered."""

    seq: int
    method: str
    params: JSON
    at: float  # time.monotonic()
    status: int | None = None
    result: Any = None
    error: str | None = None
    host: str = ""  # the Host header: which of several clients (named differently) called

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass
class _Fault:
    status: int
    description: str
    retry_after: int | None
    remaining: int


@dataclass
class _Pending:
    update: JSON
    returned: bool = False


# ---------------------------------------------------------------------- HTML parse mode


class _HtmlEntities(HTMLParser):
    """Turns Telegram-HTML into (visible text, entities), failing like Telegram does."""

    TAGS = {
        "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
        "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
        "del": "strikethrough", "code": "code", "pre": "pre", "a": "text_link",
        "tg-spoiler": "spoiler", "span": "spoiler", "blockquote": "blockquote",
        "tg-emoji": "custom_emoji",
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.visible = 0
        self.stack: list[tuple[str, int, dict[str, str | None]]] = []
        self.entities: list[JSON] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.TAGS:
            raise ValueError(f'Unsupported start tag "{tag}"')
        self.stack.append((tag, self.visible, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1][0] != tag:
            raise ValueError(f'Unmatched end tag "{tag}"')
        _, start, attrs = self.stack.pop()
        if self.visible == start:
            return
        entity: JSON = {"type": self.TAGS[tag], "offset": start, "length": self.visible - start}
        href = attrs.get("href") or ""
        if tag == "a":
            match = re.match(r"tg://user\?id=(\d+)$", href)
            if match:
                entity["type"] = "text_mention"
                entity["user"] = {"id": int(match.group(1)), "is_bot": False, "first_name": "?"}
            else:
                entity["url"] = href
        self.entities.append(entity)

    def handle_data(self, data: str) -> None:
        self.parts.append(data)
        self.visible += utf16_len(data)


def parse_html(text: str) -> tuple[str, list[JSON]]:
    """Visible text and entities of an HTML-formatted message, or a Telegram-like error."""
    stray = re.search(r"<(?!/?[a-zA-Z])", text)
    if stray:
        raise bad_request(f"can't parse entities: unexpected character at byte offset "
                          f"{len(text[: stray.start()].encode())}")  # fmt: skip
    parser = _HtmlEntities()
    try:
        parser.feed(text)
        parser.close()
    except ValueError as exc:
        raise bad_request(f"can't parse entities: {exc}") from None
    if parser.stack:
        tag = parser.stack[-1][0]
        raise bad_request(
            f"can't parse entities: Can't find end tag corresponding to start tag \"{tag}\""
        )
    parser.entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(parser.parts), parser.entities


def plain_entities(text: str) -> list[JSON]:
    """Entities Telegram detects by itself in plain text: a leading command, @mentions."""
    entities: list[JSON] = []
    command = _COMMAND.match(text)
    if command:
        entities.append({"type": "bot_command", "offset": 0, "length": utf16_len(command.group())})
    for match in _MENTION.finditer(text):
        offset = utf16_len(text[: match.start()])
        entities.append({"type": "mention", "offset": offset, "length": utf16_len(match.group())})
    return entities


# ---------------------------------------------------------------------- the server


class TelegramServer:
    """One bot's view of Telegram, served on 127.0.0.1 with an ephemeral port."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        bot_name: str = "Support",
        bot_username: str = "supportbot_test_bot",
    ) -> None:
        self.token = token
        self.bot = FakeUser(int(token.split(":")[0]), bot_name, username=bot_username, is_bot=True)
        self.users: dict[int, FakeUser] = {}
        self.chats: dict[int, FakeChat] = {}
        self.blocked: set[int] = set()
        self.callback_answers: dict[str, JSON] = {}
        self.reactions: dict[tuple[int, int], list[str]] = {}
        self.files: dict[str, bytes] = {}
        self.calls: list[Call] = []
        self.webhook_url: str | None = None
        self.webhook_secret: str | None = None
        self.webhook_deliveries: list[tuple[int, int | None]] = []  # (update_id, HTTP status)
        self.forum: FakeChat | None = None  # the first forum group added
        self._by_method: dict[str, list[Call]] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._down_status: int | None = None
        self._queue: deque[_Pending] = deque()  # unconfirmed updates, oldest first
        self._history: dict[int, JSON] = {}  # update_id → update, for redelivery
        self._delivered: dict[int, int] = {}  # update_id → times confirmed
        self._allowed: frozenset[str] = DEFAULT_UPDATES
        self._open_queries: dict[str, tuple[int, int]] = {}  # callback id → (chat, message)
        self._file_meta: dict[str, tuple[str, int]] = {}  # file_id → (path, size)
        self._ids = itertools.count(1001)
        self._group_ids = itertools.count(1001234567890)
        self._update_ids = itertools.count(10001)
        self._query_ids = itertools.count(500001)
        self._file_ids = itertools.count(1)
        self._updates = asyncio.Condition()
        self._polls = 0  # getUpdates calls so far: a newer one terminates a waiting one
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._push_task: asyncio.Task[None] | None = None
        self.url = ""
        self._methods: dict[str, Callable[[JSON], Any]] = {
            name[3:].replace("_", "").lower(): getattr(self, name)
            for name in dir(self)
            if name.startswith("_m_")
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> TelegramServer:
        app = web.Application(client_max_size=50 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        self._closing = True
        await self._wake_pollers()
        if self._push_task is not None:
            self._push_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._push_task
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> TelegramServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """What the bot's ``api_url`` setting should be (PTB appends ``/bot<token>``)."""
        return self.url

    @property
    def file_url(self) -> str:
        return f"{self.url}/file/bot"

    # ------------------------------------------------------------------ the world

    def add_user(
        self,
        first_name: str,
        last_name: str | None = None,
        *,
        username: str | None = None,
        language_code: str | None = "fr",
    ) -> FakeUser:
        """A person with a private chat with the bot (chat id = user id, like Telegram)."""
        user = FakeUser(next(self._ids), first_name, last_name, username, language_code)
        self.users[user.id] = user
        self.chats[user.id] = FakeChat(user.id, "private", user=user)
        return user

    def add_group(
        self,
        title: str = "Support agents",
        *,
        forum: bool = True,
        members: tuple[FakeUser, ...] | list[FakeUser] = (),
        admins: tuple[FakeUser, ...] | list[FakeUser] = (),
    ) -> FakeChat:
        """A supergroup (a forum by default) where the bot is an administrator."""
        chat = FakeChat(-next(self._group_ids), "supergroup", title=title, is_forum=forum)
        chat.last_message_id = 1  # in a forum, thread id 1 is the General topic
        chat.members[self.bot.id] = "administrator"
        for user in members:
            chat.members[user.id] = "member"
        for user in admins:
            chat.members[user.id] = "administrator"
        self.chats[chat.id] = chat
        if forum and self.forum is None:
            self.forum = chat
        return chat

    def set_member(self, chat: FakeChat, user: FakeUser, status: str = "member") -> None:
        """``status``: creator | administrator | member | left | kicked."""
        chat.members[user.id] = status

    def messages_in(self, chat: FakeChat | int, thread: int | None = None) -> list[JSON]:
        """The chat's messages in order (service messages included), optionally one topic."""
        found = self._chat_obj(chat).messages.values()
        if thread is None:
            return list(found)
        return [m for m in found if m.get("message_thread_id") == thread]

    def sent_by_bot(self, chat: FakeChat | int, thread: int | None = None) -> list[JSON]:
        """What the bot sent to a chat (or one topic), current state after edits."""
        return [
            m
            for m in self.messages_in(chat, thread)
            if m["from"]["id"] == self.bot.id and not _is_service(m)
        ]

    def message(self, chat: FakeChat | int, message_id: int) -> JSON:
        return self._chat_obj(chat).messages[message_id]

    def topic(self, chat: FakeChat | int, thread_id: int) -> Topic:
        return self._chat_obj(chat).topics[thread_id]

    # ------------------------------------------------------------------ users act

    async def customer_sends(self, user: FakeUser, text: str) -> JSON:
        """The user writes ``text`` to the bot in their private chat; returns the update."""
        return await self.enqueue({"message": self.build_text(user, text)})

    async def customer_sends_photo(
        self, user: FakeUser, caption: str | None = None, data: bytes = b"\x89PNG fake"
    ) -> JSON:
        return await self.customer_sends_media(user, "photo", caption=caption, data=data)

    async def customer_sends_media(
        self,
        user: FakeUser,
        kind: str,
        *,
        caption: str | None = None,
        name: str | None = None,
        data: bytes = b"fake file content",
    ) -> JSON:
        """A photo, document, voice, audio, video, video_note, sticker or animation."""
        assert kind in _MEDIA_KINDS, kind
        chat = self.chats[user.id]
        content = self._media_content(kind, data, name)
        if caption:
            content["caption"] = caption
            content["caption_entities"] = plain_entities(caption)
        return await self.enqueue({"message": self._new_message(chat, user, content)})

    async def press_button(self, user: FakeUser, message: JSON, data: str) -> JSON:
        """The user presses the inline button ``data`` of a message the bot sent."""
        chat_id = message["chat"]["id"]
        current = self.chats[chat_id].messages[message["message_id"]]
        buttons = [
            b.get("callback_data")
            for row in current.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row
        ]
        assert data in buttons, f"message {current['message_id']} has no button {data!r}: {buttons}"
        query_id = str(next(self._query_ids))
        self._open_queries[query_id] = (chat_id, current["message_id"])
        query = {
            "id": query_id,
            "from": user.json(),
            "message": copy.deepcopy(current),
            "chat_instance": str(abs(chat_id) * 7919 % 10**12),
            "data": data,
        }
        return await self.enqueue({"callback_query": query})

    async def agent_writes(
        self,
        user: FakeUser,
        topic_id: int | None,
        text: str,
        *,
        reply_to: int | None = None,
        chat: FakeChat | None = None,
        entities: list[JSON] | None = None,
    ) -> JSON:
        """A group member writes in a forum topic (or, with ``topic_id=None``, outside topics,
        replying to ``reply_to`` if given)."""
        group = self._group(chat)
        assert group.members.get(user.id) in MEMBER_STATUSES, f"{user.full_name} is not a member"
        content: JSON = {"text": text, "entities": plain_entities(text) + (entities or [])}
        reply = group.messages[reply_to] if reply_to is not None else None
        message = self._new_message(group, user, content, thread=topic_id, reply_to=reply)
        return await self.enqueue({"message": message})

    async def agent_sends_media(
        self, user: FakeUser, topic_id: int, kind: str, *, caption: str | None = None,
        chat: FakeChat | None = None,
    ) -> JSON:  # fmt: skip
        group = self._group(chat)
        content = self._media_content(kind, b"agent file", None)
        if caption:
            content["caption"] = caption
        message = self._new_message(group, user, content, thread=topic_id)
        return await self.enqueue({"message": message})

    async def user_blocks_bot(self, user: FakeUser) -> JSON:
        """Sends ``my_chat_member`` (member → kicked); later sends to the user get 403."""
        self.blocked.add(user.id)
        return await self.enqueue({"my_chat_member": self._member_update(user, "member", "kicked")})

    async def user_unblocks_bot(self, user: FakeUser) -> JSON:
        self.blocked.discard(user.id)
        return await self.enqueue({"my_chat_member": self._member_update(user, "kicked", "member")})

    async def redeliver(self, update: JSON | int) -> JSON:
        """Queue the very same update again (same update_id), as Telegram does when a
        confirmation was lost."""
        update_id = update if isinstance(update, int) else update["update_id"]
        again = copy.deepcopy(self._history[update_id])
        await self._queue_update(again)
        return again

    def build_text(self, user: FakeUser, text: str) -> JSON:
        """A private-chat message from ``user`` (stored in the chat, not queued)."""
        content = {"text": text, "entities": plain_entities(text)}
        return self._new_message(self.chats[user.id], user, content)

    def wrap(self, kind: str, payload: JSON) -> JSON:
        """An update with a fresh update_id around ``payload`` (not queued)."""
        update_id = next(self._update_ids)
        update: JSON = {"update_id": update_id, kind: payload}
        self._history[update_id] = update
        return update

    async def enqueue(self, payload: JSON) -> JSON:
        """Queue an update made of ``payload`` (one key: message, callback_query, ...)."""
        ((kind, body),) = payload.items()
        update = self.wrap(kind, body)
        await self._queue_update(update)
        return update

    # ------------------------------------------------------------------ webhook mode

    async def deliver_webhook(self, url: str, secret: str | None) -> None:
        """Push updates to ``url`` with this secret header instead of being polled."""
        self.webhook_url, self.webhook_secret = url, secret
        if self._push_task is None or self._push_task.done():
            self._push_task = asyncio.create_task(self._push_loop(), name="fake-telegram-push")
        await self._wake_pollers()

    async def post_to_webhook(
        self, update: JSON, *, url: str | None = None, secret: str | None = None
    ) -> int:
        """POST one update to the webhook with any secret (None: no header); the status."""
        assert self._session is not None
        target = url or self.webhook_url
        assert target, "no webhook url"
        headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
        async with self._session.post(target, json=update, headers=headers) as response:
            await response.read()
            return response.status

    async def _push_loop(self) -> None:
        backoff = 0.02
        while not self._closing and self.webhook_url:
            async with self._updates:
                await self._updates.wait_for(
                    lambda: bool(self._queue) or self._closing or not self.webhook_url
                )
            if self._closing or not self.webhook_url:
                return
            pending = self._queue[0]
            try:
                status: int | None = await self.post_to_webhook(
                    pending.update, secret=self.webhook_secret
                )
            except aiohttp.ClientError:
                status = None
            self.webhook_deliveries.append((pending.update["update_id"], status))
            if status is not None and 200 <= status < 300:
                if self._queue and self._queue[0] is pending:
                    self._queue.popleft()
                await self._confirmed([pending])
                backoff = 0.02
            else:  # Telegram retries with a growing delay
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.5)

    # ------------------------------------------------------------------ faults

    def fail(
        self,
        method: str,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: int | None = None,
        description: str | None = None,
    ) -> None:
        """The next ``times`` calls of ``method`` ("*": any but getUpdates) fail with ``status``
        (429 carries ``parameters.retry_after``)."""
        if status == 429:
            retry_after = 1 if retry_after is None else retry_after
            description = description or f"Too Many Requests: retry after {retry_after}"
        text = description or _STATUS_TEXT.get(status, "Error")
        self._faults.setdefault(method.lower(), deque()).append(
            _Fault(status, text, retry_after, times)
        )

    def set_down(self, status: int | None = 502) -> None:
        """Answer every call (getUpdates included) with ``status`` until ``set_down(None)``."""
        self._down_status = status

    @contextlib.contextmanager
    def down(self, status: int = 502) -> Iterator[None]:
        self.set_down(status)
        try:
            yield
        finally:
            self.set_down(None)

    def clear_faults(self) -> None:
        self._faults.clear()
        self._down_status = None

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method.lower(), "*" if method.lower() != "getupdates" else None):
            queue = self._faults.get(key) if key else None
            if queue:
                fault = queue[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.popleft()
                return fault
        return None

    # ------------------------------------------------------------------ waiting

    def mark(self) -> int:
        """A position in the call log: pass it as ``since=`` to see only later calls."""
        return len(self.calls)

    def calls_to(self, method: str, *, since: int = 0, ok: bool | None = None) -> list[Call]:
        calls = self._by_method.get(method.lower(), [])
        start = bisect.bisect_left(calls, since, key=lambda c: c.seq)
        return [c for c in calls[start:] if ok is None or c.ok == ok]

    async def wait_until(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,  # noqa: ASYNC109 - the brief's test API: wait_for(..., timeout=5)
        what: str = "a condition",
    ) -> T:
        """Wait until ``predicate()`` is truthy, re-checked whenever the server changes (a call
        starts or is answered, an update is queued or confirmed)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result
        except TimeoutError:
            recent = ", ".join(f"{c.method}:{c.status}" for c in self.calls[-10:])
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last calls: [{recent}]"
            ) from None

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for the condition, not the I/O
        *,
        since: int = 0,
        count: int = 1,
        ok: bool | None = True,
    ) -> Call:
        """The ``count``-th answered call of ``method`` made at or after ``since`` that
        matches ``predicate`` (by default only successful calls count)."""
        calls = self._by_method.setdefault(method.lower(), [])
        cursor = bisect.bisect_left(calls, since, key=lambda c: c.seq)
        hits: list[Call] = []

        def found() -> Call | None:
            nonlocal cursor
            while cursor < len(calls) and len(hits) < count:
                call = calls[cursor]
                if call.status is None:  # not answered yet: look again later
                    break
                cursor += 1
                if (ok is None or call.ok == ok) and (predicate is None or predicate(call)):
                    hits.append(call)
            return hits[-1] if len(hits) >= count else None

        return await self.wait_until(found, timeout, what=f"{count} call(s) of {method}")

    async def wait_delivered(
        self,
        update: JSON | int,
        times: int = 1,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for the condition, not the I/O
    ) -> None:
        """Until the bot confirmed this update (polling offset, or webhook 2xx)."""
        update_id = update if isinstance(update, int) else update["update_id"]
        await self.wait_until(
            lambda: self._delivered.get(update_id, 0) >= times, timeout, f"update {update_id}"
        )

    def pending_updates(self) -> int:
        return len(self._queue)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wake_pollers(self) -> None:
        async with self._updates:
            self._updates.notify_all()

    async def _confirmed(self, pendings: list[_Pending]) -> None:
        for pending in pendings:
            update_id = pending.update["update_id"]
            self._delivered[update_id] = self._delivered.get(update_id, 0) + 1
        await self._notify()

    # ------------------------------------------------------------------ HTTP

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params, uploads = await _read_params(request)
        for name, value in list(params.items()):  # "attach://x" names a multipart part
            if isinstance(value, str) and value.startswith("attach://"):
                params[name] = uploads.get(value[len("attach://") :])
        for name, upload in uploads.items():
            params.setdefault(name, upload)
        call = Call(len(self.calls), method, params, time.monotonic(), host=request.host)
        self.calls.append(call)
        self._by_method.setdefault(method.lower(), []).append(call)
        await self._notify()  # lets a test see that a (long) call is in progress
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(401, "Unauthorized")
            if self._down_status is not None:
                raise ApiError(self._down_status, _STATUS_TEXT.get(self._down_status, "Error"))
            fault = self._take_fault(method)
            if fault is not None:
                extra = {"retry_after": fault.retry_after} if fault.retry_after else None
                raise ApiError(fault.status, fault.description, extra)
            handler = self._methods.get(method.lower())
            if handler is None:
                raise ApiError(404, "Not Found")
            result = handler(params)
            if asyncio.iscoroutine(result):
                result = await result
            call.status, call.result = 200, result
            body: JSON = {"ok": True, "result": result}
        except ApiError as exc:
            call.status, call.error = exc.status, exc.description
            body = {"ok": False, "error_code": exc.status, "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
        await self._notify()
        return web.json_response(body, status=call.status)

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        path = request.match_info["path"]
        for file_id, (file_path, _) in self._file_meta.items():
            if file_path == path:
                return web.Response(body=self.files[file_id])
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    # ------------------------------------------------------------------ methods: bot & updates

    def _m_get_me(self, p: JSON) -> JSON:
        return self.bot.json() | {
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    async def _m_delete_webhook(self, p: JSON) -> bool:
        self.webhook_url = self.webhook_secret = None
        if p.get("drop_pending_updates"):
            self._queue.clear()
        await self._wake_pollers()
        return True

    async def _m_set_webhook(self, p: JSON) -> bool:
        url = p.get("url") or ""
        if not url:
            return await self._m_delete_webhook(p)
        if not url.startswith(("http://", "https://")):
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        self._subscribe(p.get("allowed_updates"))
        if p.get("drop_pending_updates"):
            self._queue.clear()
        await self.deliver_webhook(url, p.get("secret_token"))
        return True

    def _m_get_webhook_info(self, p: JSON) -> JSON:
        info: JSON = {
            "url": self.webhook_url or "",
            "has_custom_certificate": False,
            "pending_update_count": len(self._queue),
        }
        if self.webhook_url:
            info["allowed_updates"] = sorted(self._allowed)
        return info

    async def _m_get_updates(self, p: JSON) -> list[JSON]:
        if self.webhook_url:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                           "use deleteWebhook to delete the webhook first")  # fmt: skip
        self._subscribe(p.get("allowed_updates"))
        limit = min(max(int(p.get("limit") or 100), 1), 100)
        timeout = max(float(p.get("timeout") or 0), 0.0)
        offset = p.get("offset")
        if offset:
            await self._confirm(int(offset))
        self._polls += 1
        mine = self._polls
        async with self._updates:
            self._updates.notify_all()  # a poll still waiting is terminated by this one
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._updates.wait_for(
                        lambda: (
                            bool(self._queue)
                            or self._closing
                            or bool(self.webhook_url)
                            or self._polls != mine
                        )
                    )
        if self.webhook_url:
            raise ApiError(409, "Conflict: terminated by setWebhook request")
        if self._polls != mine:  # Telegram: one poller per bot at a time
            raise ApiError(409, CONFLICT)
        batch: list[JSON] = []
        for pending in itertools.islice(self._queue, limit):
            pending.returned = True
            batch.append(pending.update)
        return batch

    def _wanted(self, update: JSON) -> bool:
        return any(kind in self._allowed for kind in update if kind != "update_id")

    def _subscribe(self, allowed: list[str] | None) -> None:
        """``allowed_updates`` of getUpdates/setWebhook: kinds outside it are dropped, as
        Telegram never sends them (checked once here and at queueing, not per poll)."""
        if allowed is None:
            return
        self._allowed = frozenset(allowed) or DEFAULT_UPDATES
        if not all(self._wanted(p.update) for p in self._queue):
            self._queue = deque(p for p in self._queue if self._wanted(p.update))

    async def _queue_update(self, update: JSON) -> None:
        if not self._wanted(update):
            return
        async with self._updates:
            self._queue.append(_Pending(update))
            self._updates.notify_all()
        await self._notify()

    async def _confirm(self, offset: int) -> None:
        """Drop the updates that an offset confirms. Updates are returned oldest first, so
        an offset past the last returned one confirms the whole batch even after a
        redelivery put an older update_id at its end."""
        returned = [p for p in itertools.takewhile(lambda p: p.returned, self._queue)]
        if not returned:
            return
        if offset > returned[-1].update["update_id"]:
            done = returned
        else:
            done = list(itertools.takewhile(lambda p: p.update["update_id"] < offset, returned))
        for _ in done:
            self._queue.popleft()
        if done:
            await self._confirmed(done)

    # ------------------------------------------------------------------ methods: messages

    def _m_send_message(self, p: JSON) -> JSON:
        chat = self._target(p)
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        content = self._formatted(text, p.get("parse_mode"), p.get("entities"), MAX_TEXT,
                                  "message is too long")  # fmt: skip
        return self._bot_message(chat, p, content)

    def _m_send_photo(self, p: JSON) -> JSON:
        return self._send_file(p, "photo")

    def _m_send_document(self, p: JSON) -> JSON:
        return self._send_file(p, "document")

    def _send_file(self, p: JSON, kind: str) -> JSON:
        chat = self._target(p)
        source = p.get(kind)
        if isinstance(source, Upload):
            content = self._media_content(kind, source.data, source.filename)
        elif isinstance(source, str) and source in self._file_meta:
            content = self._media_content(kind, self.files[source], None, file_id=source)
        elif isinstance(source, str) and source.startswith(("http://", "https://")):
            content = self._media_content(kind, b"", source.rsplit("/", 1)[-1])
        else:
            raise bad_request(f"there is no {kind} in the request")
        if p.get("caption"):
            content |= self._caption(p)
        return self._bot_message(chat, p, content)

    def _m_copy_message(self, p: JSON) -> JSON:
        source_chat = self._chat_obj(p.get("from_chat_id"))
        source = source_chat.messages.get(p.get("message_id") or 0)
        if source is None or _is_service(source):
            raise bad_request("message to copy not found")
        chat = self._target(p)
        content = {k: copy.deepcopy(v) for k, v in source.items() if k in _COPIED}
        if "caption" in p:
            content.pop("caption", None)
            content.pop("caption_entities", None)
            if p["caption"]:
                content |= self._caption(p)
        message = self._bot_message(chat, p, content)
        return {"message_id": message["message_id"]}

    def _m_edit_message_text(self, p: JSON) -> JSON:
        chat, message = self._own_message(p)
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad_request("message text is empty")
        content = self._formatted(text, p.get("parse_mode"), p.get("entities"), MAX_TEXT,
                                  "MESSAGE_TOO_LONG")  # fmt: skip
        markup = self._markup(p.get("reply_markup"))
        same = (
            message.get("text") == content["text"]
            and message.get("entities", []) == content.get("entities", [])
            and message.get("reply_markup") == markup
        )
        if same:
            raise bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        message["text"] = content["text"]
        message.pop("entities", None)
        if content.get("entities"):
            message["entities"] = content["entities"]
        _set_markup(message, markup)
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _m_edit_message_reply_markup(self, p: JSON) -> JSON:
        chat, message = self._own_message(p)
        markup = self._markup(p.get("reply_markup"))
        if message.get("reply_markup") == markup:
            raise bad_request(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        _set_markup(message, markup)
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _m_answer_callback_query(self, p: JSON) -> bool:
        query_id = str(p.get("callback_query_id"))
        if query_id not in self._open_queries:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        text = p.get("text") or ""
        if utf16_len(text) > MAX_CALLBACK_ANSWER:
            raise bad_request("MESSAGE_TOO_LONG")
        del self._open_queries[query_id]
        self.callback_answers[query_id] = {
            "text": text or None,
            "show_alert": bool(p.get("show_alert")),
        }
        return True

    def _m_set_message_reaction(self, p: JSON) -> bool:
        chat = self._chat_obj(p.get("chat_id"))
        message_id = p.get("message_id")
        if message_id not in chat.messages:
            raise bad_request("MESSAGE_ID_INVALID")
        emojis: list[str] = []
        for reaction in p.get("reaction") or []:
            if reaction.get("type") != "emoji" or reaction.get("emoji") not in ALLOWED_REACTIONS:
                raise bad_request("REACTION_INVALID")
            emojis.append(reaction["emoji"])
        if len(emojis) > 1:
            raise bad_request("REACTIONS_TOO_MANY")
        self.reactions[(chat.id, message_id)] = emojis
        return True

    # ------------------------------------------------------------------ methods: forum topics

    def _m_create_forum_topic(self, p: JSON) -> JSON:
        chat = self._chat_obj(p.get("chat_id"))
        if not chat.is_forum:
            raise bad_request("the chat is not a forum")
        name = p.get("name") or ""
        if not 1 <= utf16_len(name) <= 128:
            raise bad_request("TOPIC_TITLE_EMPTY" if not name else "TOPIC_TITLE_INVALID")
        thread_id = chat.last_message_id + 1
        topic = Topic(thread_id, name, int(p.get("icon_color") or 7322096))
        chat.topics[thread_id] = topic
        content = {"forum_topic_created": {"name": name, "icon_color": topic.icon_color}}
        created = self._new_message(chat, self.bot, content, thread=thread_id)
        assert created["message_id"] == thread_id
        return {"message_thread_id": thread_id, "name": name, "icon_color": topic.icon_color}

    def _m_close_forum_topic(self, p: JSON) -> bool:
        return self._set_topic_closed(p, closed=True)

    def _m_reopen_forum_topic(self, p: JSON) -> bool:
        return self._set_topic_closed(p, closed=False)

    def _set_topic_closed(self, p: JSON, *, closed: bool) -> bool:
        chat = self._chat_obj(p.get("chat_id"))
        if not chat.is_forum:
            raise bad_request("the chat is not a forum")
        topic = chat.topics.get(p.get("message_thread_id") or 0)
        if topic is None:
            raise bad_request("TOPIC_ID_INVALID")
        if topic.closed == closed:
            raise bad_request("TOPIC_NOT_MODIFIED")
        topic.closed = closed
        kind = "forum_topic_closed" if closed else "forum_topic_reopened"
        self._new_message(chat, self.bot, {kind: {}}, thread=topic.thread_id)
        return True

    # ------------------------------------------------------------------ methods: chats & files

    def _m_get_chat(self, p: JSON) -> JSON:
        chat = self._chat_obj(p.get("chat_id"))
        return chat.json() | {
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": False,
                "limited_gifts": False,
                "unique_gifts": False,
                "premium_subscription": False,
                "gifts_from_channels": False,
            },
        }

    def _m_get_chat_member(self, p: JSON) -> JSON:
        chat = self._chat_obj(p.get("chat_id"))
        user_id = p.get("user_id")
        user = self.bot if user_id == self.bot.id else self.users.get(user_id)  # type: ignore[arg-type]
        if user is None:
            raise bad_request("PARTICIPANT_ID_INVALID")
        status = "member" if chat.type == "private" else chat.members.get(user.id, "left")
        member: JSON = {"status": status, "user": user.json()}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            member |= {name: True for name in _ADMIN_RIGHTS} | {"is_anonymous": False}
        elif status == "kicked":
            member["until_date"] = 0
        return member

    def _m_get_file(self, p: JSON) -> JSON:
        file_id = p.get("file_id")
        if file_id not in self._file_meta:
            raise bad_request("invalid file_id")
        path, size = self._file_meta[file_id]
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": size,
                "file_path": path}  # fmt: skip

    # ------------------------------------------------------------------ helpers

    def _chat_obj(self, chat: FakeChat | int | str | None) -> FakeChat:
        if isinstance(chat, FakeChat):
            return chat
        try:
            return self.chats[int(chat)]  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            raise bad_request("chat not found") from None

    def _group(self, chat: FakeChat | None) -> FakeChat:
        group = chat or self.forum or next(c for c in self.chats.values() if c.type != "private")
        assert group is not None
        return group

    def _target(self, p: JSON) -> FakeChat:
        """The chat a send goes to, refusing the way Telegram does."""
        chat = self._chat_obj(p.get("chat_id"))
        if chat.type == "private" and chat.id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        if chat.type != "private" and chat.members.get(self.bot.id) not in MEMBER_STATUSES:
            raise ApiError(403, "Forbidden: bot is not a member of the supergroup chat")
        thread = p.get("message_thread_id")
        if thread is not None and (not chat.is_forum or thread not in chat.topics):
            raise bad_request("message thread not found")
        return chat

    def _own_message(self, p: JSON) -> tuple[FakeChat, JSON]:
        chat = self._chat_obj(p.get("chat_id"))
        message = chat.messages.get(p.get("message_id") or 0)
        if message is None:
            raise bad_request("message to edit not found")
        if message["from"]["id"] != self.bot.id:
            raise bad_request("message can't be edited")
        return chat, message

    def _formatted(
        self, text: str, parse_mode: str | None, entities: list[JSON] | None, limit: int,
        too_long: str,
    ) -> JSON:  # fmt: skip
        if parse_mode and parse_mode.upper() == "HTML":
            visible, found = parse_html(text)
        elif parse_mode:
            raise bad_request(f"unsupported parse_mode {parse_mode!r} in this fake")
        else:
            visible, found = text, list(entities or [])
        if not visible.strip():
            raise bad_request("message text is empty")
        if utf16_len(visible) > limit:
            raise bad_request(too_long)
        content: JSON = {"text": visible}
        if found:
            content["entities"] = found
        return content

    def _caption(self, p: JSON) -> JSON:
        formatted = self._formatted(p["caption"], p.get("parse_mode"), p.get("caption_entities"),
                                    MAX_CAPTION, "message caption is too long")  # fmt: skip
        caption: JSON = {"caption": formatted["text"]}
        if formatted.get("entities"):
            caption["caption_entities"] = formatted["entities"]
        return caption

    def _markup(self, markup: Any) -> JSON | None:
        if not markup:
            return None
        rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
        if not isinstance(rows, list):
            raise bad_request("can't parse reply keyboard markup JSON object")
        for row in rows:
            for button in row:
                if not button.get("text"):
                    raise bad_request("BUTTON_TEXT_INVALID")
                data = button.get("callback_data")
                if data is not None and not 1 <= len(data.encode()) <= 64:
                    raise bad_request("BUTTON_DATA_INVALID")
        return markup if any(rows) else None

    def _bot_message(self, chat: FakeChat, p: JSON, content: JSON) -> JSON:
        reply: JSON | None = None
        params = p.get("reply_parameters") or {}
        reply_id = params.get("message_id") or p.get("reply_to_message_id")
        if reply_id:
            reply = chat.messages.get(int(reply_id))
            allow = params.get("allow_sending_without_reply", p.get("allow_sending_without_reply"))
            if reply is None and not allow:
                raise bad_request("message to be replied not found")
        markup = self._markup(p.get("reply_markup"))
        if markup:
            content["reply_markup"] = markup
        message = self._new_message(
            chat, self.bot, content, thread=p.get("message_thread_id"), reply_to=reply
        )
        return copy.deepcopy(message)

    def _new_message(
        self,
        chat: FakeChat,
        sender: FakeUser,
        content: JSON,
        *,
        thread: int | None = None,
        reply_to: JSON | None = None,
    ) -> JSON:
        """Store a message like Telegram shapes it; topic messages carry their thread and,
        when not a reply, reply to the topic's creation message."""
        if thread is None and reply_to is not None and reply_to.get("is_topic_message"):
            thread = reply_to.get("message_thread_id")
        message: JSON = {
            "message_id": chat.next_message_id(),
            "date": int(time.time()),
            "chat": chat.json(),
            "from": sender.json(),
        }
        if chat.is_forum and thread is not None:
            if thread not in chat.topics:
                raise bad_request("message thread not found")
            message["message_thread_id"] = thread
            message["is_topic_message"] = True
            if reply_to is None and thread in chat.messages:
                reply_to = chat.messages[thread]
        if reply_to is not None:
            message["reply_to_message"] = {
                k: copy.deepcopy(v) for k, v in reply_to.items() if k != "reply_to_message"
            }
        message.update(content)
        chat.messages[message["message_id"]] = message
        return message

    def _media_content(
        self, kind: str, data: bytes, name: str | None, *, file_id: str | None = None
    ) -> JSON:
        def new_file(ext: str) -> JSON:
            fid = file_id or f"{kind}-{next(self._file_ids)}"
            self.files[fid] = data
            self._file_meta[fid] = (f"{kind}s/file_{len(self._file_meta)}.{ext}", len(data))
            return {"file_id": fid, "file_unique_id": f"u{fid}", "file_size": len(data)}

        if kind == "photo":
            big = new_file("jpg")
            small = new_file("jpg") if file_id is None else dict(big)
            return {"photo": [small | {"width": 90, "height": 60},
                              big | {"width": 1280, "height": 853}]}  # fmt: skip
        info = new_file("bin")
        if kind in ("document", "audio", "video", "animation") and name:
            info["file_name"] = name
        if kind in ("voice", "audio", "video", "video_note", "animation"):
            info["duration"] = 3
        if kind in ("video", "animation", "sticker"):
            info |= {"width": 512, "height": 512}
        if kind == "video_note":
            info["length"] = 240
        if kind == "sticker":
            info |= {"type": "regular", "is_animated": False, "is_video": False, "emoji": "👍"}
        content: JSON = {kind: info}
        if kind == "animation":  # Telegram sends animations as documents too
            content["document"] = dict(info)
        return content

    def _member_update(self, user: FakeUser, old: str, new: str) -> JSON:
        def member(status: str) -> JSON:
            data: JSON = {"status": status, "user": self.bot.json()}
            if status == "kicked":
                data["until_date"] = 0
            return data

        return {
            "chat": self.chats[user.id].json(),
            "from": user.json(),
            "date": int(time.time()),
            "old_chat_member": member(old),
            "new_chat_member": member(new),
        }


_COPIED = frozenset(
    {"text", "entities", "caption", "caption_entities", *_MEDIA_KINDS, "location", "contact"}
)
_ADMIN_RIGHTS = (
    "can_be_edited", "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
    "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users",
    "can_post_stories", "can_edit_stories", "can_delete_stories", "can_pin_messages",
    "can_manage_topics",
)  # fmt: skip


def _is_service(message: JSON) -> bool:
    return not any(k in message for k in _COPIED)


def _set_markup(message: JSON, markup: JSON | None) -> None:
    if markup:
        message["reply_markup"] = markup
    else:
        message.pop("reply_markup", None)


async def _read_params(request: web.Request) -> tuple[JSON, dict[str, Upload]]:
    """Query string plus a JSON, urlencoded or multipart body; PTB sends form fields whose
    non-string values are JSON-encoded, so known fields are decoded back to their types."""
    params: JSON = {k: _coerce(k, v) for k, v in request.query.items()}
    uploads: dict[str, Upload] = {}
    if request.content_type == "application/json":
        body = await request.json()
        if isinstance(body, dict):
            params.update(body)
    elif request.can_read_body:
        form = await request.post()
        for name, value in form.items():
            if isinstance(value, web.FileField):
                uploads[name] = Upload(value.filename, value.content_type, value.file.read())
            else:
                params[name] = _coerce(name, str(value))
    return params, uploads


def _coerce(name: str, value: str) -> Any:
    if name in _JSON_FIELDS:
        try:
            return json.loads(value)
        except ValueError:
            return value
    if name in _INT_FIELDS and re.fullmatch(r"-?\d+", value):
        return int(value)
    if name in _BOOL_FIELDS:
        return value.lower() == "true"
    return value


# ---------------------------------------------------------------------- fixtures


@contextlib.asynccontextmanager
async def running_server(**kwargs: Any) -> AsyncIterator[TelegramServer]:
    """A started server, stopped on exit."""
    server = TelegramServer(**kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def telegram_server() -> AsyncIterator[TelegramServer]:
    """A fresh fake Telegram per test (import this fixture into a test module to use it)."""
    async with running_server() as server:
        yield server
