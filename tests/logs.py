"""Log helpers for tests that check what the product writes to its logs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import pytest


@contextlib.contextmanager
def loggers_at_debug(names: Sequence[str]) -> Iterator[None]:
    """Turn these loggers to DEBUG (an operator debugging HTTP), restoring them after."""
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture, secrets: Sequence[str]) -> None:
    """No record, formatted as a handler would, shows any of ``secrets``."""
    leaks = [
        f"{r.name}: {r.getMessage()[:200]}"
        for r in caplog.records
        if any(secret in logging.Formatter().format(r) for secret in secrets)
    ]
    assert leaks == []
    assert not any(secret in caplog.text for secret in secrets)
