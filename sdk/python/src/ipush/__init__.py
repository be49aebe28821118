"""ipush client SDK for Python (asyncio): a push client and an admin API client."""

from .admin import AdminClient, BatchItem, BatchResult, SyncAdminClient
from .client import EVENTS, Client, backoff_delay
from .errors import (
    AdminError,
    ConnectError,
    HttpStatusError,
    IpushError,
    NotConnectedError,
    ProtocolError,
    StreamEnded,
    TransportUnavailable,
)
from .protocol import Message, MsgType

__version__ = "0.1.0"

__all__ = [
    "AdminClient",
    "AdminError",
    "BatchItem",
    "BatchResult",
    "Client",
    "ConnectError",
    "EVENTS",
    "HttpStatusError",
    "IpushError",
    "Message",
    "MsgType",
    "NotConnectedError",
    "ProtocolError",
    "StreamEnded",
    "SyncAdminClient",
    "TransportUnavailable",
    "backoff_delay",
]
