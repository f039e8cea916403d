"""The ceiling on Slack: a bare slack-bolt AsyncApp that acknowledges and posts.

It answers every DM with its own text through ``chat.postMessage``; nothing is stored. Like
supportbot, it keeps one HTTP session for its Web API calls (slack_sdk would otherwise open
a connection per call), so that it stays a fair ceiling.
``SLACK_BOT_TOKEN``, ``SLACK_SIGNING_SECRET``, ``--api-url`` and ``--port`` as for the product.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncApp, AsyncSay
from slack_sdk.web.async_client import AsyncWebClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    token = os.environ["SLACK_BOT_TOKEN"]
    client = AsyncWebClient(token=token, base_url=args.api_url)
    app = AsyncApp(
        client=client,
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
    )

    @app.event("message")
    async def echo(event: dict[str, Any], say: AsyncSay) -> None:
        if client.session is None:  # created on the server's running loop
            client.session = aiohttp.ClientSession()
        if not event.get("bot_id") and event.get("text"):
            await say(event["text"])

    app.start(port=args.port, path="/slack/events", host="127.0.0.1")


if __name__ == "__main__":
    main()
