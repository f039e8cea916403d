"""What the widget, the agent console and the dashboard share on one web server.

Where the static files are, who the client really is (behind a trusted reverse proxy),
which origin is the server's own, reading a request body within limits, and the
security headers every response carries, errors and redirects included. The transport
composes the console and the dashboard; both import this module and nothing of each
other or of the transport, so the web package has no import cycle.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.clock import Clock
from bot.config import WebSettings
from handlers.web.limits import RateLimiter, SocketCounts, client_group

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STRICT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src {connect}; frame-ancestors {ancestors}; "
    "base-uri 'none'; form-action 'self'"
)
# A Host header we are willing to repeat in a policy: a name or [IPv6], and a port.
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$")
JSON = "application/json"


def static_dir() -> Path:
    return Path(str(resources.files("handlers.web") / "static"))


def file_handler(path: Path) -> Handler:
    """Serve one static file, revalidated on every load."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.FileResponse(path)
        response.headers["Cache-Control"] = "no-cache"
        if path.suffix == ".js":
            # The widget is embedded by other sites: they may load the script itself.
            response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    return handler


DEMO_ORIGIN = "http://127.0.0.1:8080"  # in index.html's snippet, replaced by the real one
WIDGET_LIMIT = "var MAX_LENGTH = 4000;"  # in widget.js, replaced by web.max_message_length


def demo_page(path: Path) -> Handler:
    """The demo page, its embed snippet showing the address the visitor used."""
    page = path.read_text(encoding="utf-8")

    async def handler(request: web.Request) -> web.StreamResponse:
        here = html.escape(f"{request.scheme}://{request.host}", quote=True)
        body = page.replace(DEMO_ORIGIN, here)
        return web.Response(
            text=body, content_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    return handler


def widget_script(path: Path, max_length: int) -> Handler:
    """widget.js, told the longest message the server accepts (its box stops there)."""
    script = path.read_text(encoding="utf-8")
    assert WIDGET_LIMIT in script, f"{path.name} lost its line {WIDGET_LIMIT!r}"
    body = script.replace(WIDGET_LIMIT, f"var MAX_LENGTH = {max_length};")

    async def handler(request: web.Request) -> web.StreamResponse:
        # The widget is embedded by other sites: they may load the script itself.
        return web.Response(
            text=body,
            content_type="text/javascript",
            headers={"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"},
        )

    return handler


def bad_request(error: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=f'{{"error": "{error}"}}', content_type=JSON)


class Proxies:
    """The reverse proxies (``web.trusted_proxies``) whose X-Forwarded-* headers we believe."""

    def __init__(self, networks: Sequence[str]) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def trusts(self, address: str | None) -> bool:
        if not self._networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The nearest address in X-Forwarded-For that is not one of our proxies.

        Read from the right: each trusted proxy appended the address it saw, so every
        entry left of the first untrusted one may have been written by the client.
        """
        client = peer
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # not an address: believe nothing further left
            client = hop
            if not self.trusts(hop):
                break
        return client

    @staticmethod
    def scheme(forwarded_proto: str) -> str | None:
        """The scheme the nearest proxy says the client used (http or https), if it says."""
        value = forwarded_proto.rsplit(",", 1)[-1].strip().lower()
        return value if value in ("http", "https") else None


class Site:
    """Per-server state and request helpers shared by widget, console and dashboard."""

    def __init__(self, config: WebSettings, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        capacity, period = config.rate_limit
        self.limiter = RateLimiter(capacity, period)
        self.sockets = SocketCounts()
        self.proxies = Proxies(config.trusted_proxies)

    @property
    def middlewares(self) -> list[Any]:
        """Outermost first: the real client is known before anything else looks."""
        return [self._forwarded, self._headers]

    # ------------------------------------------------------------------ who is asking

    @web.middleware
    async def _forwarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Behind a trusted proxy, the client's address and scheme are the forwarded ones."""
        if self.proxies.trusts(request.remote):
            changes: dict[str, str] = {}
            forwarded_for = request.headers.get("X-Forwarded-For")
            if forwarded_for and request.remote:
                changes["remote"] = self.proxies.client(request.remote, forwarded_for)
            scheme = self.proxies.scheme(request.headers.get("X-Forwarded-Proto", ""))
            if scheme:
                changes["scheme"] = scheme
            if changes:
                request = request.clone(**changes)  # type: ignore[arg-type]
        return await handler(request)

    def client_ip(self, request: web.BaseRequest) -> str:
        """The key rate limits and socket caps count under (an IPv6 client: its /64)."""
        return client_group(request.remote or "?")

    def own_origin(self, request: web.BaseRequest) -> str:
        return f"{request.scheme}://{request.host}".lower()

    def origin_allowed(self, request: web.BaseRequest) -> bool:
        """Same origin always; other sites only when listed in ``web.allowed_origins``."""
        origin = request.headers.get("Origin")
        if origin is None:
            return True  # not a browser: nothing can be forged on a visitor's behalf
        origin = origin.lower()
        return origin == self.own_origin(request) or origin in self.config.allowed_origins

    def same_origin(self, request: web.BaseRequest) -> bool:
        """Agents' routes: the server's own pages only (no Origin: not a browser)."""
        origin = request.headers.get("Origin")
        return origin is None or origin.lower() == self.own_origin(request)

    def cors(self, request: web.BaseRequest, response: web.StreamResponse) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin and origin.lower() in self.config.allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    # ------------------------------------------------------------------ request bodies

    async def json_body(self, request: web.Request, what: str) -> dict[str, Any]:
        """The body's JSON object; else 400 (or 408 when too slow) and one warning line."""
        try:
            async with asyncio.timeout(self.config.idle_timeout.total_seconds()):
                if request.content_type == JSON:
                    data: Any = await request.json()
                else:
                    data = dict(await request.post())
        except TimeoutError:
            log.warning("%s: body too slow from %s", what, request.remote)
            raise web.HTTPRequestTimeout() from None
        except (ValueError, RecursionError, UnicodeError) as exc:
            log.warning(
                "%s: unreadable body from %s (%s)", what, request.remote, type(exc).__name__
            )
            raise bad_request("bad_body") from None
        if not isinstance(data, dict):
            log.warning("%s: body from %s is not an object", what, request.remote)
            raise bad_request("bad_body")
        return data

    # ------------------------------------------------------------------ response headers

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Security headers on every response: errors and redirects are raised, not returned."""
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self.secure(request, exc)
            raise
        self.secure(request, response)
        return response

    def secure(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        if response.prepared:
            return  # a WebSocket's handshake went out with the headers it had
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        if request.path == "/widget.js":
            return  # a script other sites load: framing and CSP do not apply
        connect = self._connect_src(request)
        if request.path == "/":
            # The demo page: framed only by itself and the sites allowed to embed the widget.
            ancestors = " ".join(["'self'", *self.config.allowed_origins])
            policy = PAGE_CSP.format(connect=connect, ancestors=ancestors)
            headers.setdefault("Content-Security-Policy", policy)
            if not self.config.allowed_origins:
                headers.setdefault("X-Frame-Options", "SAMEORIGIN")
            return
        # Agent console, dashboard, APIs, errors: never framed by anyone.
        headers.setdefault("Content-Security-Policy", STRICT_CSP.format(connect=connect))
        headers.setdefault("X-Frame-Options", "DENY")

    def _connect_src(self, request: web.BaseRequest) -> str:
        """The page's own origin, for fetch and for its WebSocket (no other host)."""
        host = request.host
        if not _HOST.match(host):
            return "'self'"
        ws = "wss" if request.secure else "ws"
        return f"'self' {ws}://{host.lower()}"
