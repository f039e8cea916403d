"""The ``followup:`` and ``routing:`` sections of config.yaml: how agents' work is handed
out and followed (issues 16 and 17), beside ``bot.config`` which gains two lines.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from bot.config_types import Duration, Section


class FollowupSettings(Section):
    """Closing the loop: a detractor's survey opens a follow-up for agents."""

    enabled: bool = True
    # Whole days count business days ("2d": the same time two working days later);
    # anything else counts business time ("4h": four working hours).
    due_after: Duration = timedelta(days=2)

    @field_validator("due_after")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0")
        return value


class RoutingSettings(Section):
    """Who gets a handed-off conversation: agents take it themselves (manual), or the bot
    gives it to an available agent under their cap; an untaken one is escalated once."""

    mode: Literal["manual", "round_robin", "least_busy"] = "manual"
    max_open_per_agent: int = Field(default=3, ge=1, le=100)
    escalate_after: Duration = timedelta(minutes=10)  # working time in the queue
    escalate_to: str | None = None  # Slack user (U…) or group (S…); Telegram id or @username

    @field_validator("escalate_to")
    @classmethod
    def _who(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not re.fullmatch(r"@?[A-Za-z0-9_]{2,64}", value):
            raise ValueError(f"{value!r} must be a user or group id (U0123, S0123, 4242) "
                             "or a Telegram @username")  # fmt: skip
        return value
