"""Telegram: customers in private chats, agents in a forum group, the digest in any chat.

``TelegramTransport`` (transport.py) runs the PTB application of ``client.py``, takes
updates in through ``inbound.py`` and implements the ports in ``outbound.py``;
``translate.py`` turns updates into events, ``render.py`` our texts into Telegram's,
``failures.py`` PTB errors into ours, ``limits.py`` paces sends and orders updates.
"""

from handlers.telegram.limits import RateLimits
from handlers.telegram.transport import TelegramTransport

__all__ = ["RateLimits", "TelegramTransport"]
