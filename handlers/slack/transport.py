"""SlackTransport: one slack-bolt app inside our event loop, for customers, agents and digests.

Inbound: Slack (Socket Mode or the HTTP Events API) → Bolt (signature and timestamp
checked in HTTP mode, ack within 3 s) → one translate function → ``on_event`` → the
Outcome shown back (message edited, ephemeral notice). Outbound: the engine's actions
through ``CustomerChannel`` / ``AgentDesk`` / ``DigestPublisher``, paced per channel,
with Slack failures turned into the ``DeliveryError`` family.

Slack redelivers events it thinks were not acked; the engine drops them by ``dedup_key``
(``slack:<event_id>``), so redeliveries are processed like first deliveries, never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.config import SlackSettings
from bot.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from bot.model import (
    Address,
    AgentAction,
    AgentMessage,
    Choice,
    InboundEvent,
    Media,
    Outcome,
    Sent,
    ThreadHeader,
    ThreadRef,
)
from bot.ports import EventSink
from bot.texts import Texts
from handlers.slack import render, translate
from handlers.slack.limits import Pacer, delivery_error, retry_handlers, slack_error
from handlers.slack.translate import Person

log = logging.getLogger(__name__)

RELAYED_REACTION = "white_check_mark"
_ANY = re.compile(r".*")
_OUR_BUTTONS = re.compile(r"^sb_")
# What reading a payload with a missing or mistyped field raises (Slack never sends one).
MALFORMED = (AttributeError, KeyError, IndexError, TypeError, ValueError)


def _rejected(error: Exception, body: Mapping[str, Any] | None) -> None:
    kind = body.get("type") if isinstance(body, Mapping) else None
    log.warning(
        "slack: %s request rejected: malformed payload (%s: %s)",
        kind if isinstance(kind, str) else "a",
        type(error).__name__,
        error,
    )


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the app is in the workspace, from ``auth.test``."""

    user_id: str
    bot_id: str
    team_id: str
    url: str


class SlackTransport:
    """Slack as a customer channel ("slack"), the agents' desk ("slack") and a digest target."""

    def __init__(
        self,
        settings: SlackSettings,
        *,
        bot_token: str,
        signing_secret: str | None = None,
        app_token: str | None = None,
        on_event: EventSink,
        language: str = "fr",
        kpi_summary: Callable[[], Awaitable[str]] | None = None,
        pace: float = 1.0,
        max_retry_wait: float = 5.0,
        members_ttl: float = 60.0,
        people_ttl: float = 3600.0,
        ack_budget: float = 2.0,
        connect_timeout: float = 10.0,
        listen: bool = True,
    ) -> None:
        """``listen=False``: only ``connect`` and post (``supportbot digest``), for which
        the bot token is enough."""
        if listen and settings.mode == "http" and not signing_secret:
            raise ConfigError("slack.mode", "http mode needs SLACK_SIGNING_SECRET")
        if listen and settings.mode == "socket" and not app_token:
            raise ConfigError("slack.mode", "socket mode needs SLACK_APP_TOKEN (xapp-…)")
        self._listen = listen
        self.settings = settings
        self.language = language if language in render.LABELS else "en"
        self._texts = Texts(self.language)
        self._on_event = on_event
        self._kpi_summary = kpi_summary
        self._app_token = app_token
        self._ack_budget = ack_budget
        self._connect_timeout = connect_timeout
        self._members_ttl = members_ttl
        self._people_ttl = people_ttl
        self._pacer = Pacer(pace)
        self.client = AsyncWebClient(
            token=bot_token,
            base_url=settings.api_url,
            retry_handlers=retry_handlers(max_retry_wait),
            logger=logging.getLogger("handlers.slack.sdk"),
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret or "",
            name="supportbot",
            logger=logging.getLogger("handlers.slack.bolt"),
            # Bolt's own auth.test is called on the first request and, when Slack's API is
            # down then, drops that request with a 200 (Slack never retries it): authorize
            # from our cached identity instead, which answers 503 (Slack retries) meanwhile.
            authorize=self._authorizer(),
            # our translation ignores the app's own messages itself, so every event reaches
            # one listener (and is counted in ``handled``)
            ignoring_self_events_enabled=False,
        )
        self.app.event(_ANY)(self._on_slack_event)
        self.app.action(_OUR_BUTTONS)(self._on_block_action)
        self.app.command(settings.kpi_command)(self._on_kpi_command)
        self.app.error(self._on_bolt_side_error)

        self._identity_value: Identity | None = None
        self._identity_lock = asyncio.Lock()
        self._people: dict[str, tuple[float, Person]] = {}
        self._members: tuple[float, frozenset[str]] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._socket: AsyncSocketModeHandler | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.errors: list[BaseException] = []  # what reached the central error handler
        self.handled = 0  # listener runs finished (events, buttons, commands), ignored or not
        self._handled_changed: asyncio.Condition | None = None

    # ------------------------------------------------------------------ the three ports

    @property
    def channel(self) -> str:
        return "slack"

    @property
    def desk(self) -> str:
        return "slack"

    @property
    def platform(self) -> str:
        return "slack"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Learn who we are, then listen (Socket Mode connection or HTTP endpoint)."""
        if not self._listen:
            raise RuntimeError("built with listen=False: connect() and post only")
        await self.connect()
        if self.settings.mode == "socket":
            await self._start_socket()
        else:
            await self._start_http()

    async def connect(self) -> None:
        """The Web API client and our identity (auth.test): enough to post (``supportbot
        digest`` needs no more), while nothing is received until ``start`` listens."""
        if self.client.session is None or self.client.session.closed:
            # slack_sdk opens a new HTTP connection per call unless given a session: one
            # kept-alive session instead (half again as many replies a second under load: bench/).
            # Once closed by ``stop``, late calls fall back to a session each.
            timeout = aiohttp.ClientTimeout(total=self.client.timeout)
            self.client.session = aiohttp.ClientSession(timeout=timeout)
        try:
            ident = await self.identity()
            log.info("slack: connected as %s to %s", ident.user_id, ident.url)
        except PermanentDeliveryError as exc:
            raise ConfigError("SLACK_BOT_TOKEN", f"Slack refused the bot token ({exc})") from None
        except DeliveryError as exc:
            log.warning("slack: auth.test failed (%s); will retry on the first event", exc)

    async def _start_socket(self) -> None:
        app_token = self._app_token or ""
        try:  # the first WebSocket URL, asked here so that a refused app token stops start()
            opened = await self._must(
                lambda: self.client.apps_connections_open(app_token=app_token),
                what="apps.connections.open",
                customer=False,
            )
            first_url: str | None = str(opened["url"])
        except PermanentDeliveryError as exc:
            raise ConfigError("SLACK_APP_TOKEN", f"Slack refused the app token ({exc})") from None
        except DeliveryError as exc:
            log.warning("slack: apps.connections.open failed (%s); retrying", exc)
            first_url = None
        self._socket = AsyncSocketModeHandler(
            self.app,
            app_token,
            web_client=self.client,
            logger=logging.getLogger("handlers.slack.socket"),
        )
        if first_url is not None:
            self._socket.client.wss_uri = first_url
        self._connect_task = asyncio.create_task(
            self._socket.connect_async(),  # type: ignore[no-untyped-call]  # untyped in bolt
            name="slack-socket",
        )
        done, _ = await asyncio.wait({self._connect_task}, timeout=self._connect_timeout)
        if not done:
            log.warning("slack: Socket Mode not connected yet; still trying in the background")
        else:
            self._connect_task.result()
            log.info("slack: Socket Mode connected")

    async def _start_http(self) -> None:
        web_app = web.Application()
        web_app.router.add_post(self.settings.http_path, self._http_endpoint)
        self._runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.http_listen, self.settings.http_port)
        await site.start()
        log.info("slack: Events API endpoint listening on %s", self.http_url)

    @property
    def http_url(self) -> str:
        """The Events API / interactivity URL actually served (the port may be ephemeral)."""
        assert self._runner is not None, "HTTP mode not started"
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}{self.settings.http_path}"

    async def _http_endpoint(self, request: web.Request) -> web.Response:
        """Bolt checks the signature and the 5-minute timestamp window (401 otherwise)."""
        try:
            bolt_response = await self.app.async_dispatch(await to_bolt_request(request))
        except MALFORMED as exc:  # Bolt parsing a body Slack would never send
            _rejected(exc, None)
            return web.Response(status=400)
        return await to_aiohttp_response(bolt_response)

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]  # untyped in bolt
            self._socket = None
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connect_task
            self._connect_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=5.0)
        if self.client.session is not None:
            await self.client.session.close()

    @contextlib.asynccontextmanager
    async def _listening(self, body: Mapping[str, Any]) -> AsyncIterator[None]:
        """Run a listener's work after its ack: tracked (``stop`` lets it finish), counted,
        and its failure handed to the central error handler.

        A listener must not raise after ``ack()``: Bolt would replace the ack with its error
        response (Slack then sees a failure, or a 404), so the error is reported from here.
        """
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            yield
        except Exception as exc:
            await self._on_bolt_error(exc, dict(body))
        finally:
            if task is not None:
                self._inflight.discard(task)
            self.handled += 1
            async with self._condition():
                self._condition().notify_all()

    def _condition(self) -> asyncio.Condition:
        if self._handled_changed is None:
            self._handled_changed = asyncio.Condition()
        return self._handled_changed

    async def wait_handled(self, count: int, within: float = 5.0) -> None:
        """Wait until ``count`` listener runs have finished (for tests and benchmarks)."""
        cond = self._condition()
        async with asyncio.timeout(within), cond:
            await cond.wait_for(lambda: self.handled >= count)

    # ------------------------------------------------------------------ Slack API calls

    async def _api(
        self,
        call: Callable[[], Awaitable[AsyncSlackResponse]],
        *,
        what: str,
        customer: bool = False,
        ignore: Sequence[str] = (),
    ) -> AsyncSlackResponse | None:
        """Run one API call; Slack's failures become DeliveryErrors (``ignore``: no error)."""
        try:
            return await call()
        except SlackApiError as exc:
            if slack_error(exc) in ignore:
                return None
            error = delivery_error(exc, customer=customer, what=what)
            assert error is not None
            raise error from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = delivery_error(exc, customer=customer, what=what)
            assert error is not None
            raise error from None

    async def _must(
        self, call: Callable[[], Awaitable[AsyncSlackResponse]], *, what: str, customer: bool
    ) -> AsyncSlackResponse:
        response = await self._api(call, what=what, customer=customer)
        assert response is not None
        return response

    async def _post(self, channel: str, *, customer: bool = False, **kwargs: Any) -> Sent:
        """chat.postMessage, paced to about one message per second in each channel."""
        async with self._pacer.slot(channel):
            response = await self._must(
                lambda: self.client.chat_postMessage(channel=channel, **kwargs),
                what="chat.postMessage",
                customer=customer,
            )
        return Sent(str(response["ts"]), {"channel": str(response["channel"])})

    async def identity(self) -> Identity:
        """``auth.test``, once: our bot user, bot id and workspace."""
        if self._identity_value is None:
            async with self._identity_lock:
                if self._identity_value is None:
                    r = await self._must(self.client.auth_test, what="auth.test", customer=False)
                    self._identity_value = Identity(
                        str(r["user_id"]),
                        str(r.get("bot_id") or ""),
                        str(r["team_id"]),
                        str(r.get("url") or ""),
                    )
        return self._identity_value

    def _authorizer(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        """Bolt's ``authorize``: a plain function, as Bolt passes arguments by name."""

        async def authorize(
            enterprise_id: str | None, team_id: str | None, user_id: str | None
        ) -> AuthorizeResult:
            ident = await self.identity()
            return AuthorizeResult(
                enterprise_id=enterprise_id,
                team_id=team_id or ident.team_id,
                bot_user_id=ident.user_id,
                bot_id=ident.bot_id,
                bot_token=self.client.token,
                user_id=user_id,
            )

        return authorize

    async def person(self, user_id: str, hint_team: str | None = None) -> Person:
        """Name, locale and workspace of a user (``users.info``, cached); an id if it fails."""
        now = time.monotonic()
        cached = self._people.get(user_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            response = await self._must(
                lambda: self.client.users_info(user=user_id, include_locale=True),
                what="users.info",
                customer=False,
            )
        except DeliveryError as exc:
            log.warning("slack: no profile for %s (%s)", user_id, exc)
            return cached[1] if cached else Person(user_id, team_id=hint_team)
        found = translate.person_from_user(response["user"], hint_team)
        if len(self._people) >= 5000:
            for key in list(self._people)[:1000]:
                del self._people[key]
        self._people[user_id] = (now + self._people_ttl, found)
        return found

    async def _agent_members(self) -> frozenset[str]:
        """Members of the agents' channel (``conversations.members``, all pages, cached)."""
        channel = self.settings.agents_channel
        if not channel:
            return frozenset()
        now = time.monotonic()
        if self._members is not None and self._members[0] > now:
            return self._members[1]
        members: set[str] = set()
        try:
            pages = await self._must(
                lambda: self.client.conversations_members(channel=channel, limit=200),
                what="conversations.members",
                customer=False,
            )
            async for page in pages:
                members.update(page["members"])
        except (DeliveryError, SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("slack: cannot list the agents' channel members (%s)", exc)
            return self._members[1] if self._members else frozenset()
        self._members = (now + self._members_ttl, frozenset(members))
        return self._members[1]

    async def _is_staff(self, person: Person) -> bool:
        """People of the business: its own workspace, listed agents, the agents' channel."""
        ident = await self.identity()
        if person.team_id and person.team_id == ident.team_id:
            return True
        if person.user_id in self.settings.agent_ids:
            return True
        return person.user_id in await self._agent_members()

    # ------------------------------------------------------------------ inbound: events

    async def _on_slack_event(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """Every Events API event (Bolt has already acked it)."""
        async with self._listening(body):
            inbound = await self._read(body, self._translate_event(body, event))
            if inbound is None:
                return
            outcome = await self._on_event(inbound)
            if isinstance(inbound, AgentMessage | AgentAction) and outcome.notice:
                if isinstance(inbound, AgentMessage) and outcome.ok:
                    return  # a relayed message needs no notice
                thread = inbound.thread
                await self._ephemeral(str(event["channel"]), inbound.agent.user_id,
                                      outcome.notice, thread)  # fmt: skip

    async def _read(
        self, body: Mapping[str, Any], translating: Awaitable[InboundEvent | None]
    ) -> InboundEvent | None:
        """Our event for a payload, or None (and a warning) when a field is missing or
        mistyped: Slack never sends such a body, so it is refused rather than a crash."""
        try:
            return await translating
        except MALFORMED as exc:
            _rejected(exc, body)
            return None

    async def _translate_event(
        self, body: Mapping[str, Any], event: Mapping[str, Any]
    ) -> InboundEvent | None:
        dedup_key = f"slack:{body.get('event_id')}"
        kind = event.get("type")
        if kind == "message":
            return await self._translate_message(event, dedup_key)
        if kind in ("member_left_channel", "member_joined_channel"):
            return await self._translate_membership(event, dedup_key)
        log.debug("slack: %s event ignored", kind)
        return None

    async def _translate_message(
        self, event: Mapping[str, Any], dedup_key: str
    ) -> InboundEvent | None:
        ident = await self.identity()
        if not translate.is_person_message(event, ident.user_id):
            return None
        channel = str(event.get("channel", ""))
        user = str(event["user"])
        hint = event.get("user_team") or event.get("team")
        thread = translate.thread_of(event)
        parent = event.get("parent_user_id")
        if channel == self.settings.agents_channel:
            if thread is None or (parent and parent != ident.user_id):
                return None  # agents talking among themselves, not in a conversation thread
            return translate.agent_message(event, await self.person(user, hint), dedup_key)
        if translate.is_dm(event):
            person = await self.person(user, hint)
            return translate.customer_message(event, person, dedup_key, shared_channel=False)
        if channel in self.settings.support_channels:
            if thread is not None and parent and parent != user:
                return None  # a reply in someone else's conversation
            person = await self.person(user, hint)
            if await self._is_staff(person):
                return None
            return translate.customer_message(event, person, dedup_key, shared_channel=True)
        return None

    async def _translate_membership(
        self, event: Mapping[str, Any], dedup_key: str
    ) -> InboundEvent | None:
        channel = str(event.get("channel", ""))
        user = str(event.get("user", ""))
        if channel not in self.settings.support_channels or not user:
            return None
        if user == (await self.identity()).user_id:
            return None
        person = await self.person(user, event.get("team"))
        if await self._is_staff(person):
            return None
        return translate.membership(event, person, dedup_key)

    # ------------------------------------------------------------------ inbound: buttons

    async def _on_block_action(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        """A button of ours was pressed: ack at once, then translate and show the Outcome."""
        await ack()
        async with self._listening(body):
            inbound = await self._read(body, self._translate_action(body, action))
            if inbound is None:
                return
            outcome = await self._on_event(inbound)
            await self._show_outcome(body, inbound, outcome, respond)

    async def _translate_action(
        self, body: Mapping[str, Any], action: Mapping[str, Any]
    ) -> InboundEvent | None:
        channel = translate.action_channel(body)
        user = body.get("user") or {}
        person = await self.person(str(user.get("id", "")), user.get("team_id"))
        if channel == self.settings.agents_channel:
            return translate.agent_action(body, action, person)
        if channel.startswith("D"):
            return translate.customer_choice(body, action, person, shared_channel=False)
        if channel in self.settings.support_channels:
            return translate.customer_choice(body, action, person, shared_channel=True)
        log.debug("slack: button pressed in unknown channel %s ignored", channel)
        return None

    async def _show_outcome(
        self,
        body: Mapping[str, Any],
        inbound: InboundEvent,
        outcome: Outcome,
        respond: AsyncRespond | None = None,
    ) -> None:
        """Edit the answered question (buttons → the choice), or tell the presser why not.

        A header button's message is re-rendered by the engine (``update_header``), so it
        is not edited here.
        """
        if outcome.duplicate:
            return
        channel = translate.action_channel(body)
        user = str(translate.part(body, "user").get("id", ""))
        thread = translate.action_thread(body)
        is_header = isinstance(inbound, AgentAction) and thread is None
        if outcome.ok and outcome.chosen and not is_header:
            message = translate.part(body, "message")
            chosen = outcome.chosen
            blocks = render.chosen_blocks(message.get("blocks") or [], chosen)
            try:
                await self._api(
                    lambda: self.client.chat_update(
                        channel=channel,
                        ts=translate.action_message_ts(body),
                        text=message.get("text") or render.fallback(chosen),
                        blocks=blocks,
                    ),
                    what="chat.update",
                )
            except DeliveryError as exc:
                log.warning("slack: could not show the choice made (%s)", exc)
        elif outcome.notice:
            shown = await self._ephemeral(channel, user, outcome.notice, thread)
            if not shown and respond is not None:  # not a member: the response_url still works
                try:
                    await respond(
                        text=render.escape(outcome.notice),
                        response_type="ephemeral",
                        replace_original=False,
                    )
                except Exception as exc:
                    log.warning("slack: could not show a notice to %s (%s)", user, exc)

    async def _ephemeral(self, channel: str, user: str, text: str, thread: str | None) -> bool:
        """A note only ``user`` sees (refusals, confirmations)."""
        kwargs: dict[str, Any] = {"channel": channel, "user": user, "text": render.escape(text)}
        if thread:
            kwargs["thread_ts"] = thread
        try:
            await self._api(lambda: self.client.chat_postEphemeral(**kwargs), what="ephemeral")
        except DeliveryError as exc:
            log.warning("slack: could not show a notice to %s (%s)", user, exc)
            return False
        return True

    # ------------------------------------------------------------------ inbound: /support-kpi

    async def _on_kpi_command(
        self, ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond
    ) -> None:
        """Answer the KPI command with the summary, visible only to the person who asked."""
        async with self._listening(command):
            refusal = await self._kpi_refusal(command)
            if refusal is not None:
                await ack(text=render.escape(refusal), response_type="ephemeral")
                return
            assert self._kpi_summary is not None
            task = asyncio.ensure_future(self._kpi_summary())
            done, _ = await asyncio.wait({task}, timeout=self._ack_budget)
            slow = task not in done
            if slow:  # Slack wants an answer within 3 s: say so, then follow up
                working = render.label(self.language, "working")
                await ack(text=render.escape(working), response_type="ephemeral")
            failure: Exception | None = None
            try:
                text = await task
            except Exception as exc:
                text, failure = render.label(self.language, "unavailable"), exc
            if slow:
                await respond(text=render.escape(text), response_type="ephemeral",
                              replace_original=True)  # fmt: skip
            else:
                await ack(text=render.escape(text), response_type="ephemeral")
            if failure is not None:
                raise failure

    async def _kpi_refusal(self, command: Mapping[str, Any]) -> str | None:
        """Why this person may not see the KPIs (None: they may): the business's people only."""
        if self._kpi_summary is None:
            return render.label(self.language, "unavailable")
        person = await self.person(str(command.get("user_id", "")), command.get("team_id"))
        if not await self._is_staff(person):
            return self._texts.get(self.language, "agents_only")
        return None

    async def _on_bolt_side_error(
        self, error: Exception, body: dict[str, Any]
    ) -> BoltResponse | None:
        """What Bolt itself hits while matching a request (our listeners report their own
        failures through ``_listening``): a malformed payload is refused with a 400."""
        if isinstance(error, MALFORMED):
            _rejected(error, body)
            return BoltResponse(status=400, body="")
        if isinstance(error, TransientDeliveryError):  # auth.test while Slack is down
            log.warning("slack: request not handled yet (%s); Slack will send it again", error)
            return BoltResponse(status=503, body="")
        await self._on_bolt_error(error, body)
        return None

    async def _on_bolt_error(self, error: Exception, body: dict[str, Any]) -> None:
        """The one place where a failed Slack listener ends up: logged with its traceback."""
        self.errors.append(error)
        event = body.get("event") or {}
        log.error(
            "slack: error while handling %s %s",
            body.get("type") or "request",
            body.get("event_id") or event.get("type") or body.get("command") or "",
            exc_info=error,
        )

    # ------------------------------------------------------------------ CustomerChannel

    async def send(self, to: Address, text: str, choices: Sequence[Sequence[Choice]] = ()) -> Sent:
        """A message to a customer (DM, or their thread in a support channel), with buttons."""
        rows = [list(row) for row in choices if row]
        kwargs: dict[str, Any] = {"text": render.message_text(text)}
        if rows:
            kwargs["text"] = render.fallback(text)
            kwargs["blocks"] = render.customer_blocks(text, rows, self.language)
        if to.thread_id:
            kwargs["thread_ts"] = to.thread_id
        return await self._post(to.chat_id, customer=True, **kwargs)

    async def send_media(self, to: Address, media: Media, caption: str) -> Sent:
        """An agent's attachment: its name and link (files are not copied)."""
        kwargs: dict[str, Any] = {
            "text": render.fallback(f"📎 {media.name or media.kind} {caption}".strip()),
            "blocks": render.media_blocks(
                media, caption, caption_plain=False, language=self.language
            ),
        }
        if to.thread_id:
            kwargs["thread_ts"] = to.thread_id
        return await self._post(to.chat_id, customer=True, **kwargs)

    # ------------------------------------------------------------------ AgentDesk

    def _agents_channel(self) -> str:
        if not self.settings.agents_channel:
            raise PermanentDeliveryError("slack.agents_channel is not set")
        return self.settings.agents_channel

    async def open_thread(self, header: ThreadHeader, previous: str | None) -> ThreadRef:
        """The header message; its ts is the thread (Slack keeps one thread per conversation)."""
        sent = await self._post(
            self._agents_channel(),
            text=render.header_fallback(header),
            blocks=render.header_blocks(header),
        )
        assert sent.message_id is not None
        return ThreadRef(thread=sent.message_id, header_message=sent.message_id)

    async def update_header(self, ref: ThreadRef, header: ThreadHeader) -> None:
        channel = self._agents_channel()
        await self._api(
            lambda: self.client.chat_update(
                channel=channel,
                ts=ref.header_message,
                text=render.header_fallback(header),
                blocks=render.header_blocks(header),
            ),
            what="chat.update",
        )

    async def post(self, thread: str, text: str, author: str, name: str) -> Sent:
        return await self._post(
            self._agents_channel(),
            thread_ts=thread,
            text=render.post_fallback(text, author, name),
            blocks=render.post_blocks(text, author, name, self.language),
        )

    async def post_media(self, thread: str, media: Media, caption: str) -> Sent:
        return await self._post(
            self._agents_channel(),
            thread_ts=thread,
            text=render.fallback(f"📎 {media.name or media.kind} {caption}".strip()),
            blocks=render.media_blocks(media, caption, caption_plain=True, language=self.language),
        )

    async def mark_relayed(self, thread: str, message_ref: str) -> None:
        channel = self._agents_channel()
        await self._api(
            lambda: self.client.reactions_add(
                channel=channel, timestamp=message_ref, name=RELAYED_REACTION
            ),
            what="reactions.add",
            ignore=("already_reacted",),
        )

    async def _thread_note(self, thread: str, key: str) -> None:
        text = render.label(self.language, key)
        block = {"type": "context", "elements": [render.plain(text)]}
        await self._post(
            self._agents_channel(), thread_ts=thread, text=render.escape(text), blocks=[block]
        )

    async def close_thread(self, thread: str) -> None:
        """Slack threads cannot be closed: say it in the thread."""
        await self._thread_note(thread, "closed")

    async def reopen_thread(self, thread: str) -> None:
        await self._thread_note(thread, "reopened")

    async def alert(self, text: str, thread: str | None = None) -> Sent:
        kwargs: dict[str, Any] = {
            "text": render.fallback(text),
            "blocks": render.plain_sections(text, self.language),
        }
        if thread:
            kwargs["thread_ts"] = thread
        return await self._post(self._agents_channel(), **kwargs)

    async def is_agent(self, user_id: str) -> bool:
        """``agent_ids`` when set, else membership of the agents' channel."""
        if self.settings.agent_ids:
            return user_id in self.settings.agent_ids
        if self._identity_value is not None and user_id == self._identity_value.user_id:
            return False
        return user_id in await self._agent_members()

    # ------------------------------------------------------------------ DigestPublisher

    async def publish(self, chat: str, text: str, image: bytes | None, filename: str) -> Sent:
        """The digest text, then its chart (files upload v2) in the same channel."""
        sent = await self._post(
            chat, text=render.fallback(text), blocks=render.plain_sections(text, self.language)
        )
        if image:
            async with self._pacer.slot(chat):
                uploaded = await self._must(
                    lambda: self.client.files_upload_v2(
                        channel=sent.extra.get("channel", chat),
                        content=image,
                        filename=filename,
                        title=filename,
                    ),
                    what="files.upload",
                    customer=False,
                )
            file_info = uploaded.get("file") or {}
            sent.extra["file_id"] = str(file_info.get("id", ""))
        return sent
