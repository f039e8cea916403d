"""The console's follow-ups ("Suivis"): the list, and the agents' steps on one.

``GET /api/agent/followups[?open=1]`` → ``{"followups": [...]}`` (the objects of
``supportbot followups --format json``), newest first. ``POST
/api/agent/followups/{id}/{step}`` with ``{"id": client id, "note": "..."}`` (step: take |
contacted | resolved | unreachable | note) → ``{"ok", "notice"}``, 409 when refused.
Both sit under ``/api/agent``, so ``Console.guard`` checks the agent first; the step
becomes a ``FollowupAction`` of ``Agent("web", name)`` for the engine.
"""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path

from aiohttp import web

from bot.clock import to_ms
from bot.conversation.followup_types import FollowupStore
from bot.conversation.model import Agent, FollowupAction
from handlers.web.console import AGENT, Console
from handlers.web.site import file_handler

NOTE_LIMIT = 2000
MAX_ID = 2**53


class FollowupRoutes:
    """Follow-up routes beside the console's, sharing its login, clock and event sink."""

    def __init__(self, console: Console, followups: FollowupStore, tz: tzinfo) -> None:
        self.console = console
        self.followups = followups
        self.tz = tz

    def add_routes(self, app: web.Application, files: Path) -> None:
        app.router.add_get("/agent/agent-followups.js", file_handler(files / "agent-followups.js"))
        app.router.add_get("/api/agent/followups", self._list)
        app.router.add_post("/api/agent/followups/{id:\\d{1,16}}/{step}", self._act)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        open_only = request.query.get("open", "") in ("1", "true")
        now = to_ms(self.console.site.clock.now())
        records = await self.followups.listing(open_only=open_only, limit=500)
        return web.json_response({"followups": [r.json(now, self.tz) for r in records]})

    async def _act(self, request: web.Request) -> web.StreamResponse:
        me = request[AGENT]
        fid = int(request.match_info["id"])
        if fid > MAX_ID:
            raise web.HTTPBadRequest(text='{"error": "bad_id"}', content_type="application/json")
        body = await self.console.site.json_body(request, "follow-up step")
        client_id = str(body.get("id", ""))[:64]
        if not client_id:
            raise web.HTTPBadRequest(
                text='{"error": "id required"}', content_type="application/json"
            )
        note = str(body.get("note", "")).strip()
        if len(note) > NOTE_LIMIT:
            raise web.HTTPRequestEntityTooLarge(max_size=NOTE_LIMIT, actual_size=len(note))
        event = FollowupAction(Agent("web", me, me), fid, request.match_info["step"],
                               f"console:{me}:{client_id}", note or None)  # fmt: skip
        outcome = await self.console.on_event(event)
        return web.json_response(
            {"ok": outcome.ok, "notice": outcome.notice}, status=200 if outcome.ok else 409
        )
