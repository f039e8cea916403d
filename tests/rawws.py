"""A WebSocket client that never reads: a plain TCP socket with a tiny receive buffer.

aiohttp's client reads everything the server sends into memory, so it cannot play a
visitor whose browser stopped reading. This one speaks just enough of RFC 6455 to open
the widget socket and send text frames, and never calls ``recv`` after the handshake.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any


class StalledSocket:
    """An open widget socket whose reader has stopped (a frozen tab, a hostile script)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @classmethod
    async def open(
        cls, port: int, path: str, *, source: str = "127.0.0.1", rcvbuf: int = 2048
    ) -> StalledSocket:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        sock.bind((source, 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await loop.sock_recv(sock, 1)  # byte by byte: read nothing past the head
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += chunk
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            sock.close()
            raise ConnectionError(status.decode(errors="replace"))
        return cls(sock)

    async def send_json(self, frame: dict[str, Any]) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, text_frame(json.dumps(frame)))

    def close(self) -> None:
        self.sock.close()


def text_frame(text: str) -> bytes:
    """One masked client text frame (clients must mask, RFC 6455 §5.3)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x81, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
