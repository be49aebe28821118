"""The exceptions the SDK raises or hands to ``error`` handlers."""

from __future__ import annotations

from typing import Optional


class IpushError(Exception):
    """Base class of every error raised by this package."""


class ProtocolError(IpushError):
    """The server sent bytes that are not valid ipush protocol (bad chunk, bad JSON, bad frame)."""


class HttpStatusError(IpushError):
    """An HTTP answer other than the one expected, with its status and the server's reason.

    ``reason`` is the ``error`` member of a ``{"error": ...}`` body when there is one, else the
    body text (or the status line's phrase).
    """

    def __init__(self, status: int, reason: str, body: bytes = b"") -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        self.body = body


class AdminError(HttpStatusError):
    """An admin API call answered ``{"error": reason}`` with a 4xx/5xx status."""


class ConnectError(IpushError):
    """A connect attempt failed (network, handshake or HTTP status); the client retries."""


class TransportUnavailable(ConnectError):
    """The transport could not be set up here (e.g. WebSocket upgrade refused): try the next one."""


class NotConnectedError(IpushError):
    """An operation that needs a live stream was called while there is none."""


class StreamEnded(IpushError):
    """The server ended the stream with a final ``{"error": reason}`` (or a close)."""

    def __init__(self, reason: str, location: Optional[str] = None) -> None:
        super().__init__(reason if location is None else f"{reason} -> {location}")
        self.reason = reason
        self.location = location
