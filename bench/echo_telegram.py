"""The ceiling: a bare python-telegram-bot echo bot on the same local Bot API server.

It polls like supportbot does, processes updates concurrently and answers every text with
itself; nothing is stored. ``TELEGRAM_BOT_TOKEN`` and ``--api-url`` as for the product.
"""

from __future__ import annotations

import argparse
import os

from telegram import Update
from telegram.ext import Application, ContextTypes, MessageHandler, filters


async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    if message is not None and message.text:
        await message.reply_text(message.text, do_quote=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--api-url", required=True)
    args = parser.parse_args()
    api = args.api_url.rstrip("/")
    app = (
        Application.builder()
        .token(os.environ["TELEGRAM_BOT_TOKEN"])
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .concurrent_updates(256)
        .build()
    )
    app.add_handler(MessageHandler(filters.TEXT, echo))
    app.run_polling(poll_interval=0.0, timeout=10, allowed_updates=["message"])


if __name__ == "__main__":
    main()
