"""What a widget may send over its socket: one JSON object a frame, with a type and an id.

Parsed here, apart from the transport, so that a bad frame is named (never echoed: it may
hold a customer's text) and the transport closes the socket with 1003.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bot.errors import StorageError

MAX_FRAME = 64 * 1024
MAX_CLIENT_ID = 64
MAX_SEQ = 2**53  # a line number beyond this is not one we gave (and JSON numbers end there)
COMMAND = re.compile(r"^/([a-z]+)\b\s*(.*)$", re.DOTALL)


class BadFrame(ValueError):
    """A widget frame we cannot use: the socket is closed with 1003."""


class LineNotStored(StorageError):
    """A visitor's message that storage refused before its line was written: nothing of it
    is kept, so the widget gets the text back (``"stored": false``). After the line, a
    failure leaves the line shown and the text is not given back: sent again, it would
    show twice."""


def parse_frame(data: str) -> tuple[dict[str, Any], str, str]:
    """A frame's fields, or ``BadFrame`` saying what is wrong (never the text itself)."""
    try:
        frame = json.loads(data)
    except RecursionError:
        raise BadFrame("JSON nested too deep") from None
    except ValueError:
        raise BadFrame(f"not JSON ({len(data)} characters)") from None
    if not isinstance(frame, dict) or "type" not in frame or "id" not in frame:
        raise BadFrame("not an object with a type and an id")
    if not isinstance(frame["type"], str) or not isinstance(frame["id"], str | int):
        raise BadFrame("type or id of the wrong kind")
    return frame, frame["type"], str(frame["id"])[:MAX_CLIENT_ID]
