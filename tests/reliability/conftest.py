"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.fakes.telegram_server import TelegramServer, running_server
from tests.reliability.inprocess import Recorder


@pytest.fixture
async def tg() -> AsyncIterator[TelegramServer]:
    """A fresh local Bot API server."""
    async with running_server() as server:
        yield server


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    """Every log record of the module's tests, from every thread."""
    with Recorder().installed() as r:
        yield r
