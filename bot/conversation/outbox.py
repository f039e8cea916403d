"""Delivers outbox items through the channels, in order per lane, retrying until done.

A lane is one conversation's customer side or desk side: items in a lane go out one
after another (a thread must exist before posts into it), lanes run in parallel.
Transient failures (platform down, 429) wait and retry — the wait is stored, so a
restart resumes it; permanent ones are recorded as failed and never block the lane.

On a database other processes share, an item is delivered by the process that claimed
it (its lease renewed before each attempt but a fresh item's first, which uses the claim
made when it was enqueued); ``resume`` claims what a dead process left
once its lease ran out. An item whose lane has an earlier undelivered item of another
process is let go and taken, in lane order, by a later ``resume``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from bot.clock import Clock, to_ms
from bot.conversation import payloads as P
from bot.conversation.busy import WAIT_OUT, patiently
from bot.conversation.model import ThreadRef
from bot.conversation.ports import (
    AgentDesk,
    AlertBoard,
    AuthorAwareChannel,
    ChoiceDesk,
    CustomerChannel,
    MentioningDesk,
    RecordingChannel,
)
from bot.conversation.store import Delivery, NewOutbox, OutboxItem, Store
from bot.errors import (
    PermanentDeliveryError,
    RecipientGoneError,
    TransientDeliveryError,
)
from bot.logs import conversation_id as log_conversation

log = logging.getLogger(__name__)

GoneCallback = Callable[[OutboxItem], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Recorded:
    """A delivery that its channel recorded in its own write (``RecordingChannel``)."""

    follow_up: tuple[OutboxItem, ...]


MAX_UNEXPECTED_ATTEMPTS = 5
# An item's first attempt uses the claim made when it was enqueued while at least this much
# of its lease (storage.conversations.CLAIM_LEASE, 60 s) is left; else it claims anew.
FRESH_CLAIM_LEFT_S = 30.0
THREAD_CACHE = 10_000


class Dispatcher:
    """Runs one task per busy lane; ``drain`` waits until everything queued is delivered."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        customers: Mapping[str, CustomerChannel],
        desk: AgentDesk | None,
        boards: Sequence[AlertBoard] = (),
        on_gone: GoneCallback | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 600.0,
        parallel: int = 64,
    ) -> None:
        self.store = store
        self.clock = clock
        self.customers = dict(customers)
        self.desk = desk
        self.boards = tuple(boards)
        self.on_gone = on_gone
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._lanes: dict[str, deque[OutboxItem]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._threads: OrderedDict[int, ThreadRef] = OrderedDict()  # small LRU
        self._ports: dict[tuple[type, type], bool] = {}  # (channel class, port): is it one
        self._slots = asyncio.Semaphore(parallel)
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._held = False
        self._queued: set[int] = set()  # ids in the lanes: a resume never queues one twice
        self._claims = bool(getattr(store, "shared", False))

    async def start(self, *, hold: bool = False) -> int:
        """Queue everything a previous run left undelivered.

        With ``hold``, nothing is sent until ``release()`` (the channels are not up yet);
        items submitted meanwhile queue behind the old ones, so lane order is kept.
        """
        self._held = hold
        pending = await self.store.pending_outbox()
        self.submit(pending)
        if pending:
            log.info("resuming %d undelivered outbox item(s)", len(pending))
        return len(pending)

    async def resume(self) -> int:
        """Claim and queue the undelivered items nobody holds any more (a dead process's,
        or let go to keep a lane's order); how many were new here. Called by the sweeper
        on a shared database."""
        fresh = [i for i in await self.store.pending_outbox() if i.id not in self._queued]
        self.submit(fresh)
        if fresh:
            log.info("took over %d undelivered outbox item(s)", len(fresh))
        return len(fresh)

    def submit(self, items: Sequence[OutboxItem]) -> None:
        if self._closing:
            return
        for item in items:
            if item.id in self._queued:
                continue
            self._queued.add(item.id)
            queue = self._lanes.setdefault(item.lane, deque())
            queue.append(item)
            self._idle.clear()
            if not self._held and item.lane not in self._tasks:
                self._idle.clear()
                self._tasks[item.lane] = asyncio.create_task(
                    self._run(item.lane), name=f"outbox:{item.lane}"
                )

    def release(self) -> None:
        """Start delivering what ``start(hold=True)`` queued."""
        self._held = False
        for lane in list(self._lanes):
            if lane not in self._tasks:
                self._tasks[lane] = asyncio.create_task(self._run(lane), name=f"outbox:{lane}")

    async def drain(self) -> None:
        """Wait until every lane is empty (wrap in ``asyncio.timeout`` to bound it)."""
        await self._idle.wait()

    async def stop(self) -> None:
        self._closing = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, lane: str) -> None:
        queue = self._lanes[lane]
        try:
            while queue:
                async with self._slots:
                    await self._deliver_until_done(queue[0])
                self._queued.discard(queue.popleft().id)
        finally:
            for item in self._lanes.get(lane, ()):
                self._queued.discard(item.id)
            self._lanes.pop(lane, None)
            self._tasks.pop(lane, None)
            if not self._tasks and not self._lanes:
                self._idle.set()

    async def _wait_until(self, at_ms: int | None) -> None:
        if at_ms is None:
            return
        delay = (at_ms - to_ms(self.clock.now())) / 1000
        if delay > 0:
            await asyncio.sleep(min(delay, self.backoff_max))

    async def _deliver_until_done(self, item: OutboxItem) -> None:
        log_conversation.set(item.conversation_id)  # this lane's task: its log lines
        await self._wait_until(item.next_attempt_at)
        attempts = item.attempts
        fresh = item.claimed_until  # claimed when enqueued: the first attempt may use it
        while True:
            if self._claims and not self._still_ours(fresh) and not await self._mine(item):
                return
            fresh = None
            try:
                effects = await self._deliver(item)
            except (TransientDeliveryError, *WAIT_OUT) as exc:
                # WAIT_OUT: the channel's own write (the web channel's line) met a database
                # to wait out: retried like a platform that is down
                attempts += 1
                retry_after = exc.retry_after if isinstance(exc, TransientDeliveryError) else None
                delay = self._backoff(attempts, retry_after)
                log.warning("%s #%d: %s; retry %d in %.1fs", item.op, item.id, exc, attempts, delay)
                await self._record(self.store.outbox_retry, item, self._in(delay), str(exc))
                await asyncio.sleep(delay)
                continue
            except PermanentDeliveryError as exc:
                log.warning("%s #%d failed for good: %s", item.op, item.id, exc)
                await self._record(self.store.outbox_failed, item, self._in(0), str(exc))
                if isinstance(exc, RecipientGoneError) and self.on_gone is not None:
                    await self.on_gone(item)
                return
            except Exception as exc:  # an adapter bug: retry a few times, then give up
                attempts += 1
                log.exception("%s #%d: unexpected error (attempt %d)", item.op, item.id, attempts)
                if attempts >= MAX_UNEXPECTED_ATTEMPTS:
                    await self._record(self.store.outbox_failed, item, self._in(0), repr(exc))
                    return
                delay = self._backoff(attempts, None)
                await self._record(self.store.outbox_retry, item, self._in(delay), repr(exc))
                await asyncio.sleep(delay)
                continue
            if isinstance(effects, Recorded):  # the channel's own write recorded it
                follow_up = effects.follow_up
            else:
                follow_up = await self._record(self.store.outbox_sent, item, self._in(0), effects)
            if follow_up:
                self.submit(follow_up)
            return

    async def _record(
        self, write: Callable[..., Awaitable[tuple[OutboxItem, ...] | None]], *args: Any
    ) -> tuple[OutboxItem, ...]:
        """Write a delivery result, waiting out a locked database rather than losing it."""
        return await patiently(lambda: write(*args), "outbox", give_up_after=math.inf) or ()

    async def _mine(self, item: OutboxItem) -> bool:
        """Claim (renew) ``item`` for this attempt; False: not ours to deliver (done, held
        by another live process, or let go behind an earlier item of its lane)."""
        state = await patiently(
            lambda: self.store.claim_outbox(item, self._in(0)), "outbox", give_up_after=math.inf
        )
        if state != "mine":
            log.debug("%s #%d not delivered here (%s)", item.op, item.id, state)
        return state == "mine"

    def _still_ours(self, claimed_until: int | None) -> bool:
        """Is the claim made when the item was enqueued good for a whole attempt? Then
        the attempt needs no claim of its own (one database round trip fewer)."""
        return claimed_until is not None and self._in(FRESH_CLAIM_LEFT_S) <= claimed_until

    def _in(self, seconds: float) -> int:
        return to_ms(self.clock.now()) + int(seconds * 1000)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_max)
        base: float = self.backoff_base * 2.0 ** min(attempts - 1, 16)
        return min(base * (0.5 + random.random() / 2), self.backoff_max)

    # ------------------------------------------------------------------ one delivery

    async def _deliver(self, item: OutboxItem) -> Delivery | Recorded:
        payload = item.payload
        if item.op in P.CUSTOMER_OPS:
            to = P.address_from(payload["to"])
            channel = self.customers.get(to.channel)
            if channel is None:
                raise PermanentDeliveryError(f"the {to.channel} channel is not enabled")
            agent = payload.get("author") == "agent"
            follow: tuple[NewOutbox, ...] = ()
            relayed = payload.get("relayed")
            if relayed and item.conversation_id is not None:
                lane = P.desk_lane(item.conversation_id)
                follow = (NewOutbox(lane, P.MARK_RELAYED, {"ref": relayed}),)
            effects = Delivery(customer_response=True, agent_response=agent, follow_up=follow)
            if item.op == P.SEND:
                choices = P.choices_from(payload.get("choices", []))
                author = str(payload.get("author", "bot"))
                name = str(payload.get("name", ""))
                if self._recording(channel):
                    record = self.store.sent_record(item, self._in(0), effects)
                    follow_up = await channel.send_recorded(
                        to, payload["text"], choices, author, name, record
                    )
                    return Recorded(tuple(follow_up))
                if self._author_aware(channel):
                    await channel.send_as(to, payload["text"], choices, author, name)
                else:
                    await channel.send(to, payload["text"], choices)
            else:
                media = P.media_from(payload["media"])
                await channel.send_media(to, media, payload.get("caption", ""))
            return effects
        if item.op == P.ALERT:
            await self._alert(item)
            return Delivery()
        if item.op == P.MENTION:
            await self._mention(item)
            return Delivery()
        desk = self.desk
        if desk is None:
            raise PermanentDeliveryError("no agents' desk is configured")
        if item.op == P.OPEN_THREAD:
            header = P.header_from(payload["header"])
            opened = await desk.open_thread(header, payload.get("previous"))
            if item.conversation_id is not None:
                self._remember(item.conversation_id, opened)
            return Delivery(thread=opened.thread, header_message=opened.header_message)
        ref = await self._thread(item)
        if ref is None:
            raise PermanentDeliveryError(f"conversation #{item.conversation_id} has no thread")
        if item.op == P.UPDATE_HEADER:
            await desk.update_header(ref, P.header_from(payload["header"]))
        elif item.op == P.POST:
            await desk.post(ref.thread, payload["text"], payload["author"], payload.get("name", ""))
        elif item.op == P.POST_MEDIA:
            await desk.post_media(ref.thread, P.media_from(payload["media"]), payload["caption"])
        elif item.op == P.MARK_RELAYED:
            await desk.mark_relayed(ref.thread, payload["ref"])
        elif item.op == P.CLOSE_THREAD:
            await desk.close_thread(ref.thread)
        elif item.op == P.REOPEN_THREAD:
            await desk.reopen_thread(ref.thread)
        elif item.op == P.POST_CHOICES:
            choices = P.choices_from(payload["choices"])
            if isinstance(desk, ChoiceDesk):
                await desk.post_choices(ref.thread, payload["text"], choices)
            else:  # a desk without buttons: the menu's labels, for /resolve cause=…
                labels = "\n".join(" · ".join(c.label for c in row) for row in choices)
                await desk.post(ref.thread, f"{payload['text']}\n{labels}", "system", "")
        else:
            raise PermanentDeliveryError(f"unknown outbox operation {item.op!r}")
        return Delivery()

    def _recording(self, channel: CustomerChannel) -> TypeGuard[RecordingChannel]:
        return self._is(channel, RecordingChannel)

    def _author_aware(self, channel: CustomerChannel) -> TypeGuard[AuthorAwareChannel]:
        return self._is(channel, AuthorAwareChannel)

    def _is(self, channel: CustomerChannel, port: type) -> bool:
        """``isinstance`` against a runtime Protocol inspects the class's attributes each
        time; a channel's class does not change, so the answer is kept per class."""
        key = (type(channel), port)
        answer = self._ports.get(key)
        if answer is None:
            answer = self._ports[key] = isinstance(channel, port)
        return answer

    async def _alert(self, item: OutboxItem) -> None:
        """To the boards first: they keep one copy per item, so when the desk fails and
        the item is retried, the console still shows the alert once."""
        if self.desk is None and not self.boards:
            raise PermanentDeliveryError("no agents' desk or console is configured")
        text = str(item.payload["text"])
        for board in self.boards:
            await board.post_alert(item.id, item.conversation_id, text)
        if self.desk is not None:
            ref = await self._thread(item)
            in_thread = ref.thread if ref is not None and item.payload.get("in_thread") else None
            buttons = P.choices_from(item.payload.get("buttons") or [])
            await self.desk.alert(text, in_thread, buttons=buttons)

    async def _mention(self, item: OutboxItem) -> None:
        """Call one person or group: in the conversation's thread (an assignment), or to
        the whole desk (an escalation, which the console keeps as an alert too)."""
        payload = item.payload
        text, who = str(payload["text"]), payload.get("who")
        name = str(payload.get("name") or who or "")
        in_thread = bool(payload.get("in_thread"))
        if not in_thread:
            for board in self.boards:
                await board.post_alert(item.id, item.conversation_id, f"{name} : {text}")
        if self.desk is None:
            if self.boards and not in_thread:
                return
            raise PermanentDeliveryError("no agents' desk is configured")
        ref = await self._thread(item)
        thread = ref.thread if ref is not None and in_thread else None
        if in_thread and thread is None:
            raise PermanentDeliveryError(f"conversation #{item.conversation_id} has no thread")
        if who and isinstance(self.desk, MentioningDesk):
            await self.desk.mention(str(who), name, text, thread)
        elif thread is not None:
            await self.desk.post(thread, f"{name} : {text}", "system", "")
        else:
            await self.desk.alert(f"{name} : {text}", None)

    async def _thread(self, item: OutboxItem) -> ThreadRef | None:
        cid = item.conversation_id
        if cid is None:
            return None
        ref = self._threads.get(cid)
        if ref is None:
            conv = await self.store.load(cid)
            if conv is None or conv.desk_thread is None:
                return None
            ref = ThreadRef(conv.desk_thread, conv.desk_header or conv.desk_thread)
            self._remember(cid, ref)
        return ref

    def _remember(self, conversation_id: int, ref: ThreadRef) -> None:
        self._threads[conversation_id] = ref
        self._threads.move_to_end(conversation_id)
        while len(self._threads) > THREAD_CACHE:
            self._threads.popitem(last=False)
