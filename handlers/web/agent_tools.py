"""The console's agent tools: saved replies, the customer's history, conversation search,
and the complaint lists and record (the selects shown at resolution).

Mounted under ``/api/agent`` so ``Console.guard`` covers them (an agent key or session);
sending a saved reply is a console action (``POST …/conversations/{id}/saved``) like the
others, decided by the engine.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta

from aiohttp import web

from bot.clock import to_ms
from bot.config import Settings
from bot.config_complaints import SOLUTIONS
from bot.replies import SavedReplies
from bot.texts import Texts
from storage import customer_history
from storage.complaints import load_complaint
from storage.database import Database

log = logging.getLogger(__name__)

MAX_QUERY = 200  # characters of a search text
MAX_ID = 2**53


def _bad(error: str, parameter: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(
        text=f'{{"error": "{error}", "parameter": "{parameter}"}}', content_type="application/json"
    )


class AgentTools:
    """Reads for the console's picker, history panel and search box."""

    def __init__(self, db: Database, settings: Settings, replies: SavedReplies) -> None:
        self.db = db
        self.settings = settings
        self.replies = replies

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/agent/replies", self._replies)
        app.router.add_get("/api/agent/conversations/{id:\\d+}/history", self._history)
        app.router.add_get("/api/agent/search", self._search)
        app.router.add_get("/api/agent/complaint-options", self._complaint_options)
        app.router.add_get("/api/agent/conversations/{id:\\d+}/complaint", self._complaint)

    async def _replies(self, request: web.Request) -> web.StreamResponse:
        """Every saved reply with its text per language (the picker shows the customer's)."""
        listed = [
            {"shortcut": r.shortcut, "title": r.title, "text": dict(r.texts)} for r in self.replies
        ]
        return web.json_response({"replies": listed})

    @staticmethod
    def _conversation_id(request: web.Request) -> int:
        digits = request.match_info["id"]
        if len(digits) > 16 or int(digits) > MAX_ID:
            raise _bad("bad_id", "id")
        return int(digits)

    async def _history(self, request: web.Request) -> web.StreamResponse:
        """The customer's conversations, newest first, this one included (``current``)."""
        cid = self._conversation_id(request)
        customer = await customer_history.customer_of(self.db, cid)
        if customer is None:
            raise web.HTTPNotFound(text='{"error": "unknown"}', content_type="application/json")
        past = await customer_history.history(self.db, customer["id"])
        for item in past:
            item["current"] = item["id"] == cid
        followup = await customer_history.open_followup(self.db, customer["id"])
        return web.json_response(
            {
                "customer": {"key": customer["key"], "name": customer["name"]},
                "conversations": past,
                "followup": followup,
            }
        )

    def _day(self, request: web.Request, name: str) -> date | None:
        raw = request.query.get(name, "").strip()
        if not raw:
            return None
        try:
            return date.fromisoformat(raw)
        except ValueError:
            raise _bad("expected a date like 2026-03-01", name) from None

    def _ms(self, day: date) -> int:
        return to_ms(datetime.combine(day, time.min, tzinfo=self.settings.tz))

    async def _search(self, request: web.Request) -> web.StreamResponse:
        """``?q=text&topic=livraison&from=2026-03-01&to=2026-03-31`` (dates inclusive, in
        the configured time zone); at least one criterion."""
        text = request.query.get("q", "").strip()
        topic = request.query.get("topic", "").strip()
        if len(text) > MAX_QUERY or len(topic) > MAX_QUERY:
            raise _bad("too long", "q" if len(text) > MAX_QUERY else "topic")
        start, end = self._day(request, "from"), self._day(request, "to")
        if start and end and end < start:
            raise _bad("'to' is before 'from'", "to")
        if not (text or topic or start or end):
            raise _bad("give q, topic, from or to", "q")
        found = await customer_history.search(
            self.db,
            text=text,
            topic=topic,
            since=self._ms(start) if start else None,
            until=self._ms(end + timedelta(days=1)) if end else None,
        )
        return web.json_response({"conversations": found})

    async def _complaint_options(self, request: web.Request) -> web.StreamResponse:
        """What the console's selects offer: the configured causes and categories, and the
        fixed solutions with their label in the desk's language (the key is what is sent)."""
        texts = Texts(self.settings.language, dict(self.settings.messages.items()))
        lang = self.settings.language
        solutions = [{"key": key, "label": texts.get(lang, f"solution_{key}")} for key in SOLUTIONS]
        return web.json_response(
            {
                "causes": list(self.settings.complaints.causes),
                "categories": list(self.settings.complaints.categories),
                "solutions": solutions,
            }
        )

    async def _complaint(self, request: web.Request) -> web.StreamResponse:
        """The conversation's complaint record, or ``null`` when it is not a complaint."""
        record = await load_complaint(self.db, self._conversation_id(request))
        if record is None:
            return web.json_response({"complaint": None})
        fields = ("opened_by", "category", "cause", "solution", "note")
        body = {name: getattr(record, name) for name in fields}
        return web.json_response({"complaint": {**body, "opened_at": record.opened_at}})
