"""The Slack Web API side of the transport: the client, paced and retried calls with
Slack failures mapped onto ``bot.errors``, who the app is, and who people are.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.config import SlackSettings
from bot.conversation.model import Sent
from bot.conversation.ports import EventSink
from bot.errors import ConfigError, DeliveryError
from bot.texts import Texts
from handlers.slack import render, translate
from handlers.slack.limits import Pacer, delivery_error, retry_handlers, slack_error
from handlers.slack.translate import Person

log = logging.getLogger(__name__)


def library_logger(name: str) -> logging.Logger:
    """One of our loggers for slack_sdk / slack_bolt, its level set to the logging level in
    force now (each time a transport is made: the one of a previous transport may be stale).

    Both test ``logger.level <= DEBUG`` (the logger's own level, 0 while unset) rather than
    ``isEnabledFor`` before building their debug lines: left unset, every API call formats
    its whole request (blocks included) and response, and every event its middleware names,
    to be dropped at INFO. Set to the level in force, DEBUG still shows them."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.NOTSET)
    logger.setLevel(logger.getEffectiveLevel())
    return logger


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the app is in the workspace, from ``auth.test``."""

    user_id: str
    bot_id: str
    team_id: str
    url: str


class SlackApi(ABC):
    """State and Slack API calls shared by the inbound and outbound halves."""

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
        self._receives = listen
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
            logger=library_logger("handlers.slack.sdk"),
        )
        self.app = AsyncApp(
            client=self.client,
            signing_secret=signing_secret or "",
            name="supportbot",
            logger=library_logger("handlers.slack.bolt"),
            # Bolt's own auth.test is called on the first request and, when Slack's API is
            # down then, drops that request with a 200 (Slack never retries it): authorize
            # from our cached identity instead, which answers 503 (Slack retries) meanwhile.
            authorize=self._authorizer(),
            # our translation ignores the app's own messages itself, so every event reaches
            # one listener (and is counted in ``handled``)
            ignoring_self_events_enabled=False,
            # the assistant/say_stream/set_status helpers it attaches to every event: our
            # listeners use none of them (they post through the outbox)
            attaching_conversation_kwargs_enabled=False,
        )
        self._listen()

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

    @abstractmethod
    def _listen(self) -> None:
        """Register the Bolt listeners (``SlackInbound``)."""

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
