"""Shared fixtures. Tests never reach the internet: HTTP goes to local servers only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.fakes.clock import FakeClock

if TYPE_CHECKING:
    from tests.harness import Harness

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def harness(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    from tests.harness import Harness, make_settings

    h = Harness(make_settings(tmp_path / "t.db"), clock)
    await h.start()
    yield h
    await h.stop()
