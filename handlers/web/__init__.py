"""The web channel: embeddable chat widget, agent console, dashboard host."""

from handlers.web.transport import WebTransport

__all__ = ["WebTransport"]
