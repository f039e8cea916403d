"""The HTTP Events API endpoint: verify, store, acknowledge, then handle.

Slack considers an event delivered once we answer 200 (within 3 s), so an event held only
in memory at that moment is lost when the process dies. Here the signature is checked
(slack_sdk's ``SignatureVerifier``, the secret Bolt uses), the raw request is written to
the inbound queue, the 200 goes out with an empty body, and only then is the stored
request dispatched through Bolt (``AsyncBoltRequest`` → ``app.async_dispatch``), so the
listeners run unchanged. The row is marked handled when the listener is done; a row a
killed process left is replayed by the app's sweep (``replay_inbound``).

Not stored, answered by Bolt as before: ``url_verification`` (its answer is the
challenge) and slash commands (their answer is the ack's body); both have no effect to
lose.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.config import SlackSettings
from bot.errors import StorageError
from handlers.slack.inbound import MALFORMED, SlackInbound, reject_malformed

if TYPE_CHECKING:
    from storage.inbound_queue import InboundQueue, StoredDelivery

log = logging.getLogger(__name__)

# Longer than any legitimate listener run (a locked database is waited out for minutes):
# past it the row is left to a later sweep rather than waited on for good.
LISTENER_LIMIT_S = 900.0
RETRY_LATER = 503  # what Bolt answers while Slack's API is down: keep the row for a sweep
# Slack wants the 200 within 3 s: a database slower than this to take the row gets a 503
# (Slack sends the event again; a row committed meanwhile is handled once all the same).
STORE_BUDGET_S = 2.5


@dataclass
class _Replay:
    """One stored request going through Bolt: its listener reports here when done."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    ok: bool = False


# Set around a stored request's dispatch; Bolt starts the listener as a task, which
# inherits it (asyncio copies the context), so ``_listening`` finds whom to tell.
_REPLAY: contextvars.ContextVar[_Replay | None] = contextvars.ContextVar(
    "slack_replay", default=None
)


def delivery_key(raw: str, content_type: str) -> str | None:
    """The key a redelivery shares with the first copy, or None for a request that is not
    stored (url_verification, slash commands, anything unreadable: Bolt answers those)."""
    try:
        if content_type.startswith("application/json"):
            body = json.loads(raw)
            event_id = body.get("event_id") if isinstance(body, dict) else None
            if body.get("type") == "event_callback" and isinstance(event_id, str) and event_id:
                return f"slack:event:{event_id}"
            return None
        fields = urllib.parse.parse_qs(raw, strict_parsing=False)
    except (ValueError, AttributeError):
        return None
    payload = fields.get("payload")
    if payload and "command" not in fields:  # interactivity: Slack never retries it
        return f"slack:interaction:{hashlib.sha256(payload[0].encode()).hexdigest()}"
    return None


class SlackHttpEvents(SlackInbound):
    """The Events API / interactivity endpoint over the inbound queue."""

    def __init__(
        self, settings: SlackSettings, *, signing_secret: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(settings, signing_secret=signing_secret, **kwargs)
        self._verifier = SignatureVerifier(signing_secret) if signing_secret else None
        self._inbound: InboundQueue | None = None
        self._replays: set[asyncio.Task[None]] = set()
        self._replaying: set[int] = set()  # rows being handled here (not to start twice)

    def keep_inbound(self, queue: InboundQueue) -> None:
        """Store HTTP events in ``queue`` before acknowledging them (SupportApp)."""
        self._inbound = queue

    async def _http_endpoint(self, request: web.Request) -> web.Response:
        """Signature and 5-minute window checked (401 otherwise); then stored and acked."""
        raw = await request.text()
        headers = dict(request.headers.items())
        if self._verifier is None or not self._verifier.is_valid_request(raw, headers):
            log.warning("slack: request from %s without a valid signature", request.remote)
            return web.Response(status=401)
        content_type = request.headers.get("Content-Type", "")
        key = delivery_key(raw, content_type) if self._inbound is not None else None
        if self._inbound is None or key is None:
            return await self._dispatch_now(request)
        try:
            async with asyncio.timeout(STORE_BUDGET_S):
                stored = await self._inbound.store(
                    "slack", key, raw, {"content-type": content_type}
                )
        except (StorageError, TimeoutError) as exc:
            log.warning("slack: %s not stored (%s); 503, Slack sends it again", key, exc)
            return web.Response(status=503)
        if stored is not None:  # else a redelivery: the first copy is handled (or will be)
            self._spawn_replay(stored)
        return web.Response(status=200)

    async def _dispatch_now(self, request: web.Request) -> web.Response:
        """What is not stored goes through Bolt in the request (its answer is the body)."""
        try:
            bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        except MALFORMED as exc:  # Bolt parsing a body Slack would never send
            reject_malformed(exc, None)
            return web.Response(status=400)
        return await to_aiohttp_response(bolt_response)

    async def replay_inbound(self, delivery: StoredDelivery) -> None:
        """Handle a stored request that nobody finished (claimed by the app's sweep)."""
        log.info("slack: %s resumed from the inbound queue", delivery.key)
        self._spawn_replay(delivery)

    def _spawn_replay(self, delivery: StoredDelivery) -> None:
        if delivery.id in self._replaying:
            return  # its lease ran out while its listener still runs here
        self._replaying.add(delivery.id)
        task = asyncio.create_task(self._replay(delivery), name=f"slack-{delivery.key}")
        self._replays.add(task)
        task.add_done_callback(self._replays.discard)

    async def _replay(self, delivery: StoredDelivery) -> None:
        """Dispatch a stored request through Bolt, wait for its listener, record the end."""
        assert self._inbound is not None
        replay = _Replay()
        token = _REPLAY.set(replay)
        try:
            status = await self._dispatch_stored(delivery)
            if status == 200:  # a listener was started: it reports through ``_listening``
                async with asyncio.timeout(LISTENER_LIMIT_S):
                    await replay.done.wait()
            else:  # nothing will run (no listener, malformed), or Slack's API is down
                replay.ok = status != RETRY_LATER
        except TimeoutError:
            log.warning("slack: %s still running after %.0fs", delivery.key, LISTENER_LIMIT_S)
        finally:
            _REPLAY.reset(token)
            self._replaying.discard(delivery.id)
        try:
            if replay.ok:
                await self._inbound.handled(delivery.id)
            else:
                await self._inbound.failed(delivery.id, "not handled (see the log)")
        except StorageError as exc:  # stays unfinished: replayed later, harmlessly
            log.warning("slack: %s not marked handled (%s)", delivery.key, exc)

    async def _dispatch_stored(self, delivery: StoredDelivery) -> int:
        """Bolt's status for the stored request, signed afresh: Bolt checks the signature
        and a 5-minute window, which a replay after a restart would be outside of. The
        signature was verified on arrival; the timestamp is Slack's protocol time, so the
        machine's (as Bolt's own check uses), not the app clock."""
        headers: dict[str, str] = dict(delivery.headers)
        mode = "http"
        if self._verifier is not None:
            stamp = str(int(time.time()))
            signature = self._verifier.generate_signature(timestamp=stamp, body=delivery.body)
            headers["x-slack-request-timestamp"] = stamp
            headers["x-slack-signature"] = signature or ""
        else:  # stored in HTTP mode, resumed in Socket Mode: Bolt checks no signature there
            mode = "socket_mode"
        try:
            response = await self.app.async_dispatch(
                AsyncBoltRequest(body=delivery.body, headers=headers, mode=mode)  # type: ignore[arg-type]
            )
        except MALFORMED as exc:
            reject_malformed(exc, None)
            return 400
        return response.status

    @contextlib.asynccontextmanager
    async def _listening(self, body: Mapping[str, Any]) -> AsyncIterator[None]:
        """The listener's run (``SlackInbound._listening``), reported to a stored request's
        replay when it is one: done, and whether it ended without an error."""
        replay = _REPLAY.get()
        ok = False
        try:
            async with super()._listening(body):
                yield
                ok = True
        finally:
            if replay is not None:
                replay.ok = ok
                replay.done.set()

    async def wait_idle(self, within: float = 5.0) -> None:
        """Until every stored request taken so far and every listener run has ended (for
        tests and benchmarks: over HTTP the 200 no longer says that a listener ran)."""
        async with asyncio.timeout(within):
            while busy := self._replays | self._inflight:
                await asyncio.wait(busy)

    async def _finish_replays(self, within: float) -> None:
        """On stop: let running replays end (what does not is resumed at the next start)."""
        if self._replays:
            await asyncio.wait(set(self._replays), timeout=within)
