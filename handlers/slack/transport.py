"""SlackTransport: one slack-bolt app inside our event loop, for customers, agents and digests.

Inbound: Slack (Socket Mode or the HTTP Events API; over HTTP, signature and timestamp
checked, the request stored, then acked: ``events_http``) → Bolt → one translate
function → ``on_event`` → the Outcome shown back (message edited, ephemeral notice).
Outbound: the engine's actions through ``CustomerChannel`` / ``AgentDesk`` /
``DigestPublisher``, paced per channel, with Slack failures turned into the
``DeliveryError`` family.

Slack redelivers events it thinks were not acked; the engine drops them by ``dedup_key``
(``slack:<event_id>``), so redeliveries are processed like first deliveries, never twice.

This class owns the lifecycle (Socket Mode or HTTP); the halves are ``inbound`` (with the
HTTP endpoint of ``events_http``) and ``outbound``, over the shared Web API client of ``api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.errors import ConfigError, DeliveryError, PermanentDeliveryError
from handlers.slack.api import library_logger
from handlers.slack.events_http import SlackHttpEvents
from handlers.slack.outbound import SlackOutbound

log = logging.getLogger(__name__)


class SlackTransport(SlackHttpEvents, SlackOutbound):
    """Slack as a customer channel ("slack"), the agents' desk ("slack") and a digest target."""

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

    @property
    def ready(self) -> bool:
        """Receiving events: the Socket Mode session is open, or the HTTP endpoint served."""
        if self._runner is not None:
            return True
        client = self._socket.client if self._socket is not None else None
        session = getattr(client, "current_session", None)
        return (
            client is not None and not client.closed and session is not None and not session.closed
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Learn who we are, then listen (Socket Mode connection or HTTP endpoint)."""
        if not self._receives:
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
            logger=library_logger("handlers.slack.socket"),
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
        await self._finish_replays(within=5.0)
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=5.0)
        if self.client.session is not None:
            await self.client.session.close()
