"""Slack: customers (DMs, shared support channels), the agents' desk, and KPI digests.

``transport`` owns the slack-bolt app and implements the ports; ``translate`` turns Slack
payloads into our events; ``render`` turns our texts into escaped Slack text and Block Kit;
``limits`` keeps Slack's rate limits and maps its errors onto ``bot.errors``.
"""

from handlers.slack.transport import Identity, SlackTransport

__all__ = ["Identity", "SlackTransport"]
