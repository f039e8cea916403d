"""A coroutine method that fails once: a storage error at a chosen point of a real flow."""

from __future__ import annotations

from typing import Any

import pytest


def fail_once(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, error: Exception) -> None:
    """``owner.name`` (an async method) raises ``error`` on its next call, then works."""
    real = getattr(owner, name)
    failures = iter([error])

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing_once)
