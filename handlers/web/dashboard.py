"""HTTP routes of the KPI dashboard: the page, its assets, and the JSON / CSV reads.

No authentication here: the web server mounts these routes behind its agent-key
middleware. Everything the page shows comes from ``bot.insights.dashboard``; these handlers
only turn query strings into a period and results into HTTP responses. The page is
a static file with no inline script, so it works under a strict CSP.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import date
from functools import partial

from aiohttp import web

from bot.clock import Clock
from bot.config import Settings
from bot.errors import InvalidParameterError, StorageError
from bot.insights.dashboard import (
    csv_filename,
    dashboard_csv,
    dashboard_data,
    requested_breakdown,
    requested_period,
)
from bot.insights.gaps import dashboard_gaps
from handlers.web.site import static_dir
from storage.database import Database

log = logging.getLogger(__name__)

# The only files served, with their types: no path from the URL reaches the filesystem.
ASSETS = {
    "dashboard.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_dumps = partial(json.dumps, ensure_ascii=False)


def _error(status: int, message: str, parameter: str | None = None) -> web.Response:
    body = {"error": message, **({"parameter": parameter} if parameter else {})}
    return web.json_response(body, status=status, dumps=_dumps)


def _guarded(handler: Handler) -> Handler:
    """Bad parameters → 400 naming the parameter; an unusable database → 503."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except InvalidParameterError as exc:
            return _error(400, str(exc), exc.parameter)
        except StorageError as exc:
            log.warning("dashboard read failed: %s", exc)
            return _error(503, "the database is not available, try again")

    return guarded


def dashboard_routes(db: Database, settings: Settings, clock: Clock) -> list[web.RouteDef]:
    """The dashboard's routes, to be mounted behind the agents' authentication."""
    assets = {
        name: (static_dir().joinpath(name).read_bytes(), content_type)
        for name, content_type in ASSETS.items()
    }

    def asset(name: str) -> web.Response:
        body, content_type = assets[name]
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    def today() -> date:
        return clock.now().astimezone(settings.tz).date()

    async def page(request: web.Request) -> web.StreamResponse:
        return asset("dashboard.html")

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return asset(name)

    async def kpi(request: web.Request) -> web.StreamResponse:
        day = today()
        period = requested_period(settings, request.query, day)
        data = await dashboard_data(settings, db, period, day)
        return web.json_response(data, dumps=_dumps, headers={"Cache-Control": "no-store"})

    async def kb_gaps(request: web.Request) -> web.StreamResponse:
        period = requested_period(settings, request.query, today())
        data = await dashboard_gaps(settings, db, period)
        return web.json_response(data, dumps=_dumps, headers={"Cache-Control": "no-store"})

    async def kpi_csv(request: web.Request) -> web.StreamResponse:
        period = requested_period(settings, request.query, today())
        by = requested_breakdown(request.query)
        text = await dashboard_csv(settings, db, period, by)
        return web.Response(
            text=text,
            content_type="text/csv",
            charset="utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{csv_filename(period, by)}"',
                "Cache-Control": "no-store",
            },
        )

    return [
        web.get("/dashboard", page),
        web.get("/dashboard/static/{name}", static),
        web.get("/api/kpi", _guarded(kpi)),
        web.get("/api/kpi.csv", _guarded(kpi_csv)),
        web.get("/api/kb-gaps", _guarded(kb_gaps)),
    ]
