"""The ceiling on the web channel: a bare aiohttp WebSocket server that echoes widget frames.

It speaks the widget's side of the protocol the benchmark drives (``POST /api/web/session``
gives a token, ``/ws/widget?token=…`` takes ``{"type": "message", "id", "text"}`` frames and
answers each with a ``line`` frame carrying the text back and a growing ``seq``), parses and
writes JSON as supportbot does; nothing is stored, nothing is checked. ``--port`` as for the
product's ``web.port``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets

from aiohttp import WSMsgType, web


def dumps(frame: object) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


async def session(request: web.Request) -> web.StreamResponse:
    return web.json_response({"token": secrets.token_urlsafe(16)})


async def widget(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(max_msg_size=64 * 1024, heartbeat=30)
    await ws.prepare(request)
    seq = itertools.count(1)
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        frame = json.loads(msg.data)
        if frame.get("type") == "message":
            line = {"type": "line", "seq": next(seq), "at": 0, "author": "bot",
                    "text": frame.get("text", ""), "choices": [], "chosen": None}  # fmt: skip
            await ws.send_str(dumps(line))
    return ws


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/api/web/session", session)
    app.router.add_get("/ws/widget", widget)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
