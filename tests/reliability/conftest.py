"""Fixtures shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.inprocess import Recorder


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    """Every log record of the module's tests, from every thread."""
    with Recorder().installed() as r:
        yield r
