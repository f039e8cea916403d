"""Reading the YAML files people write (knowledge.yaml, replies.yaml): the data, and the
line of every key path, so that a mistake is reported where it is ("entries[3].answer.fr",
line 42). Duplicate keys are refused: YAML would silently keep the last one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bot.errors import SupportbotError

# libyaml's loader is ten times faster than the pure-Python one; same safe semantics.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Fail = Callable[[str, str], SupportbotError]
"""The error to raise: ``fail(where, reason)``."""


def read_yaml(
    path: Path, fail: Fail, missing: str = "file not found"
) -> tuple[Any, dict[str, int]]:
    """The document at ``path`` and the line of each key path; ``fail(where, why)`` otherwise."""
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail(str(path), missing) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(str(path), f"cannot read: {exc}") from None
    try:
        node = yaml.compose(source, Loader=_LOADER)
        data = yaml.load(source, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise fail(where, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise fail(str(path), f"YAML error: {exc}") from None
    lines: dict[str, int] = {}
    if node is not None:
        _collect_lines(node, "", lines, fail)
    return data, lines


def _collect_lines(node: yaml.Node, where: str, lines: dict[str, int], fail: Fail) -> None:
    """Map each key path ("entries[3].answer.fr") to its line; refuse duplicate keys."""
    lines[where] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{where}.{key}" if where else key
            if key in seen:
                raise fail(child, f"duplicate key (line {key_node.start_mark.line + 1})")
            seen.add(key)
            _collect_lines(value_node, child, lines, fail)
    elif isinstance(node, yaml.SequenceNode):
        for number, item in enumerate(node.value):
            _collect_lines(item, f"{where}[{number}]", lines, fail)
