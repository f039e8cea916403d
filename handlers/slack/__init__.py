"""Slack: customers (DMs, shared support channels), the agents' desk, and KPI digests.

``transport`` owns the slack-bolt app's lifecycle and joins ``api`` (the Web API client,
identity and people), ``inbound`` (Bolt listeners: updates in) and ``outbound`` (the
ports: actions out); ``translate`` turns Slack payloads into our events; ``render`` turns
our texts into escaped Slack text and Block Kit; ``limits`` keeps Slack's rate limits and
maps its errors onto ``bot.errors``.
"""

from handlers.slack.api import Identity
from handlers.slack.transport import SlackTransport

__all__ = ["Identity", "SlackTransport"]
