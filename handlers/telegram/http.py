"""python-telegram-bot's HTTP calls made with aiohttp instead of httpx.

Why: on the 2-core machine of the benchmarks an httpx call costs two to three times the
CPU of the same call with aiohttp (bench/http_client_bench.py), and a busy bot spends
much of its time in these calls: every answer is a ``sendMessage`` plus a share of a
``getUpdates``. PTB lets any ``BaseRequest`` carry its calls; this one keeps PTB's
semantics: form-encoded parameters, multipart uploads, its time-outs and its ``TimedOut``
/ ``NetworkError`` exceptions. aiohttp has no write time-out: a stalled upload ends with
the read time-out instead.
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit

import aiohttp
from telegram._utils.defaultvalue import DefaultValue
from telegram._utils.types import ODVInput
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData


def _given(value: ODVInput[float], default: float | None) -> float | None:
    return default if isinstance(value, DefaultValue) else value


def _plus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


class AiohttpRequest(BaseRequest):
    """One pooled aiohttp session for a PTB ``Bot`` (one for calls, one for getUpdates)."""

    __slots__ = (
        "_connect_timeout",
        "_connections",
        "_pool_timeout",
        "_proxies",
        "_read_timeout",
        "_session",
    )

    def __init__(
        self,
        connections: int,
        *,
        read_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
    ) -> None:
        self._connections = connections
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                headers={"User-Agent": self.USER_AGENT},
                # Not trust_env: it reads ~/.netrc in a thread on every request (a fifth of
                # a busy bot's CPU); proxies from the environment are looked up once a host.
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        write_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        connect_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
        pool_timeout: ODVInput[float] = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("AiohttpRequest is not initialized")
        connect = _given(connect_timeout, self._connect_timeout)
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=_plus(_given(pool_timeout, self._pool_timeout), connect),
            sock_connect=connect,
            sock_read=_given(read_timeout, self._read_timeout),
        )
        try:
            async with session.request(
                method, url, data=_body(request_data), timeout=timeout, proxy=self._proxy(url)
            ) as response:
                return response.status, await response.read()
        except TimeoutError as err:
            raise TimedOut from err
        except aiohttp.ClientError as err:
            # The URL holds the bot token: never let it into a message that gets logged.
            detail = str(err).replace(url, "<Bot API URL>")
            raise NetworkError(f"aiohttp.{type(err).__name__}: {detail}") from err

    def _proxy(self, url: str) -> str | None:
        """HTTPS_PROXY / HTTP_PROXY unless NO_PROXY covers the host, as httpx would."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname or "")
        if key not in self._proxies:
            proxy = urllib.request.getproxies_environment().get(parts.scheme)
            if proxy and urllib.request.proxy_bypass(key[1]):
                proxy = None
            self._proxies[key] = proxy
        return self._proxies[key]


def _body(request_data: RequestData | None) -> aiohttp.FormData | dict[str, str] | None:
    """Form fields as PTB sends them; multipart when there are files."""
    if request_data is None:
        return None
    fields = request_data.json_parameters
    files = request_data.multipart_data
    if not files:
        return fields or None
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for name, (filename, content, mimetype) in files.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form
