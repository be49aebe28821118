"""The three client transports behind one interface: ``open_stream`` follows 303s and returns
a Stream whose ``recv()`` gives Messages and raises StreamEnded at the end (with the reason,
and the location of a ``moved``), ProtocolError on malformed input."""

from __future__ import annotations

import abc
import asyncio
import json
import ssl
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Optional, Tuple

from . import _http
from ._http import Endpoint
from .errors import (
    ConnectError,
    HttpStatusError,
    ProtocolError,
    StreamEnded,
    TransportUnavailable,
)
from .protocol import (
    ChunkDecoder,
    Message,
    ResponseHead,
    ServerError,
    SseParser,
    decode_json,
    decode_msgpack,
    decode_payload,
    encode_chunk,
    encode_json,
    encode_msgpack,
    error_reason,
)

TRANSPORTS = ("websocket", "sse", "chunked")
MAX_REDIRECTS = 8
CONNECT_PATH = "/connect"
SEND_PATH = "/send"
# Statuses that mean "this server speaks ipush but refused": not a reason to try another
# transport. Anything else on a WebSocket upgrade (404, 405, 426, a 200 from a proxy...)
# means the transport is unavailable on this path.
_IPUSH_REFUSALS = (400, 401, 408, 413, 429, 431, 500, 502, 503, 504)


@dataclass(frozen=True)
class Target:
    endpoint: Endpoint
    path: str = CONNECT_PATH

    @classmethod
    def from_location(cls, location: str, base: Optional[Target] = None) -> Target:
        """The host, port and path of a 303 Location or a ``moved`` location (relative ones
        resolved against ``base``). Its query is dropped: the client writes its own, with
        the same uid and fresh credentials."""
        if base is not None:
            location = urllib.parse.urljoin(base.endpoint.url + base.path, location)
        u = urllib.parse.urlsplit(location)
        return cls(Endpoint.parse(location), u.path or CONNECT_PATH)

    @property
    def node_url(self) -> str:
        return self.endpoint.url


@dataclass(frozen=True)
class ConnectParams:
    uid: str
    password: str
    codec: str = "json"
    last_event_id: int = 0
    timeout: float = 10.0
    max_message_bytes: int = 16 * 1024 * 1024
    ssl_context: Optional[ssl.SSLContext] = None

    def query(self) -> str:
        q = [("uid", self.uid), ("password", self.password)]
        if self.codec == "msgpack":
            q.append(("codec", "msgpack"))
        return urllib.parse.urlencode(q)


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def _encode(obj: Dict[str, Any], codec: str) -> bytes:
    return encode_msgpack(obj) if codec == "msgpack" else encode_json(obj)


def _ended(item: ServerError) -> StreamEnded:
    return StreamEnded(item.reason, item.location)


class Stream(abc.ABC):
    transport: str
    target: Target
    codec: str

    @abc.abstractmethod
    async def recv(self) -> Message:
        """The next message (heartbeats included); raises StreamEnded or ProtocolError."""

    @abc.abstractmethod
    async def send(self, obj: Dict[str, Any]) -> None:
        """Sends one client message (``f`` is filled in by the server)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Closes the connection; never raises."""

    @property
    def one_way(self) -> bool:
        return False


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), 2)
    except (OSError, ssl.SSLError, asyncio.TimeoutError):
        pass


async def _http_open(
    target: Target, params: ConnectParams, extra: Dict[str, str]
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter, ResponseHead]:
    """Sends the ``GET /connect`` head and reads the answer's head; 303 raises _Redirect,
    other non-200 statuses HttpStatusError."""
    ep = target.endpoint
    try:
        reader, writer = await _http.open_stream(ep, params.timeout, params.ssl_context)
    except (OSError, asyncio.TimeoutError) as e:
        raise ConnectError(f"cannot connect to {ep.url}: {e!r}") from e
    try:
        writer.write(_http.request_bytes("GET", ep, f"{target.path}?{params.query()}", extra))
        await writer.drain()
        head = await asyncio.wait_for(_http.read_head(reader), params.timeout)
        if head.status == 200:
            return reader, writer, head
        body = b""
        try:
            body = await asyncio.wait_for(_http.read_body(reader, head, 65536), params.timeout)
        except (ProtocolError, OSError, asyncio.TimeoutError):
            pass
        if head.status in (301, 302, 303, 307, 308) and head.header("location"):
            raise _Redirect(head.header("location") or "")
        reason = error_reason(body, head.reason)
        if head.status in _IPUSH_REFUSALS:
            raise HttpStatusError(head.status, reason, body)
        raise TransportUnavailable(f"HTTP {head.status}: {reason}")
    except BaseException:
        await _close_writer(writer)
        raise


# ---- chunked ---------------------------------------------------------------------------


class ChunkedStream(Stream):
    transport = "chunked"

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: Target,
        codec: str,
        max_size: int,
    ) -> None:
        self._r, self._w = reader, writer
        self.target, self.codec = target, codec
        self._dec = ChunkDecoder(max_size)
        self._q: Deque[bytes] = deque()

    @classmethod
    async def open(cls, target: Target, params: ConnectParams) -> ChunkedStream:
        reader, writer, head = await _http_open(target, params, {})
        if "chunked" not in (head.header("transfer-encoding") or "").lower():
            await _close_writer(writer)
            raise TransportUnavailable("200 without Transfer-Encoding: chunked")
        return cls(reader, writer, target, params.codec, params.max_message_bytes + 64)

    async def recv(self) -> Message:
        while not self._q:
            if self._dec.done:
                raise StreamEnded("closed")
            try:
                data = await self._r.read(65536)
            except (OSError, ssl.SSLError) as e:
                raise StreamEnded(f"connection lost: {e!r}") from e
            if not data:
                if self._dec.pending:
                    raise StreamEnded("connection lost inside a chunk")
                raise StreamEnded("connection lost")
            self._q.extend(self._dec.feed(data))
        item = decode_payload(self._q.popleft(), self.codec)
        if isinstance(item, ServerError):
            raise _ended(item)
        return item

    async def send(self, obj: Dict[str, Any]) -> None:
        self._w.write(encode_chunk(_encode(obj, self.codec)))
        await self._w.drain()

    async def close(self) -> None:
        await _close_writer(self._w)


# ---- SSE -------------------------------------------------------------------------------


class SseStream(Stream):
    transport = "sse"

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: Target,
        params: ConnectParams,
        chunked: bool,
    ) -> None:
        self._r, self._w = reader, writer
        self.target, self.codec = target, "json"
        self._params = params
        self._chunks = ChunkDecoder(params.max_message_bytes + 64) if chunked else None
        self._sse = SseParser(params.max_message_bytes + 1024)
        self._q: Deque[Message] = deque()

    @property
    def one_way(self) -> bool:
        return True

    @classmethod
    async def open(cls, target: Target, params: ConnectParams) -> SseStream:
        if params.codec != "json":
            raise ValueError("SSE carries JSON only")
        extra = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if params.last_event_id > 0:
            extra["Last-Event-ID"] = str(params.last_event_id)
        reader, writer, head = await _http_open(target, params, extra)
        ctype = (head.header("content-type") or "").lower()
        if not ctype.startswith("text/event-stream"):
            await _close_writer(writer)
            raise TransportUnavailable(f"200 with Content-Type {ctype!r}, not text/event-stream")
        chunked = "chunked" in (head.header("transfer-encoding") or "").lower()
        return cls(reader, writer, target, params, chunked)

    async def recv(self) -> Message:
        while not self._q:
            try:
                data = await self._r.read(65536)
            except (OSError, ssl.SSLError) as e:
                raise StreamEnded(f"connection lost: {e!r}") from e
            if self._chunks is not None:
                if not data and not self._chunks.done:
                    raise StreamEnded("connection lost")
                data = b"".join(self._chunks.feed(data)) if data else b""
            elif not data:
                raise StreamEnded("closed")
            for ev in self._sse.feed(data):
                self._event(ev.event, ev.data)
            if self._chunks is not None and self._chunks.done and not self._q:
                raise StreamEnded("closed")
        return self._q.popleft()

    def _event(self, name: Optional[str], data: str) -> None:
        if name == "moved":
            loc: Optional[str] = None
            try:
                obj = json.loads(data)
                if isinstance(obj, dict) and isinstance(obj.get("location"), str):
                    loc = obj["location"]
            except ValueError:
                pass
            if loc is None:
                raise ProtocolError(f"'moved' event without a location: {data[:200]!r}")
            raise StreamEnded("moved", loc)
        if name not in (None, "", "message"):
            return  # an event type this SDK does not know: ignored, as EventSource does
        item = decode_json(data)
        if isinstance(item, ServerError):
            raise _ended(item)
        self._q.append(item)

    async def send(self, obj: Dict[str, Any]) -> None:
        await post_send(self.target, self._params, obj)

    async def close(self) -> None:
        await _close_writer(self._w)


async def post_send(target: Target, params: ConnectParams, obj: Dict[str, Any]) -> None:
    """``POST /send`` on the client port: one message, outside any stream."""
    ep = target.endpoint
    path = target.path[: -len(CONNECT_PATH)] if target.path.endswith(CONNECT_PATH) else ""
    head, body = await _http.request(
        "POST",
        ep,
        f"{path}{SEND_PATH}?{params.query()}",
        body=_encode(obj, params.codec),
        headers={
            "Content-Type": (
                "application/msgpack" if params.codec == "msgpack" else "application/json"
            )
        },
        timeout=params.timeout,
        ssl_context=params.ssl_context,
    )
    if head.status != 200:
        raise HttpStatusError(head.status, error_reason(body, head.reason), body)


# ---- WebSocket -------------------------------------------------------------------------


class WebSocketStream(Stream):
    transport = "websocket"

    def __init__(self, ws: Any, target: Target, codec: str) -> None:
        self._ws = ws
        self.target, self.codec = target, codec

    @classmethod
    async def open(cls, target: Target, params: ConnectParams) -> WebSocketStream:
        try:
            from websockets.asyncio.client import connect as ws_connect
            from websockets.exceptions import InvalidHandshake, InvalidStatus
        except ImportError as e:  # pragma: no cover - websockets is a dependency
            raise TransportUnavailable(f"the websockets package is missing: {e}") from e

        class _NoRedirect(ws_connect):
            # The client follows 303s itself: the Location is http://, and it rebuilds the
            # query with fresh credentials.
            def process_redirect(self, exc: Exception) -> Exception:
                return exc

        ep = target.endpoint
        url = f"{'wss' if ep.secure else 'ws'}://{ep.netloc}{target.path}?{params.query()}"
        kwargs: Dict[str, Any] = dict(
            ping_interval=None,  # liveness is the protocol's {"y":0}, watched by the client
            compression=None,
            max_size=params.max_message_bytes + 64,
            open_timeout=params.timeout,
            close_timeout=2,
            user_agent_header=_http.USER_AGENT,
            max_queue=64,
        )
        if ep.secure and params.ssl_context is not None:
            kwargs["ssl"] = params.ssl_context
        try:
            ws = await _NoRedirect(url, **kwargs)
        except InvalidStatus as e:
            resp = e.response
            status = resp.status_code
            loc = resp.headers.get("Location")
            if status in (301, 302, 303, 307, 308) and loc:
                raise _Redirect(loc) from None
            body = bytes(resp.body or b"")
            if status in _IPUSH_REFUSALS:
                reason = error_reason(body, resp.reason_phrase)
                raise HttpStatusError(status, reason, body) from None
            raise TransportUnavailable(f"WebSocket upgrade refused: HTTP {status}") from None
        except InvalidHandshake as e:
            raise TransportUnavailable(f"WebSocket handshake failed: {e}") from None
        except (OSError, asyncio.TimeoutError) as e:
            raise ConnectError(f"cannot connect to {ep.url}: {e!r}") from e
        return cls(ws, target, params.codec)

    async def recv(self) -> Message:
        from websockets.exceptions import ConnectionClosed

        try:
            data = await self._ws.recv()
        except ConnectionClosed as e:
            raise self._closed(e) from None
        if isinstance(data, str):
            item = decode_json(data)
        else:
            item = decode_msgpack(data)
        if isinstance(item, ServerError):
            raise _ended(item)
        return item

    @staticmethod
    def _closed(e: Any) -> Exception:
        rcvd = e.rcvd
        if rcvd is not None:
            reason = rcvd.reason or ""
            obj: Any = None
            if reason.startswith("{"):
                try:
                    obj = json.loads(reason)
                except ValueError:
                    obj = None
            if rcvd.code == 1012 or (isinstance(obj, dict) and obj.get("error") == "moved"):
                loc = obj.get("location") if isinstance(obj, dict) else None
                if isinstance(loc, str):
                    return StreamEnded("moved", loc)
                if rcvd.code == 1012:
                    return StreamEnded("service restart")
            if isinstance(obj, dict) and isinstance(obj.get("error"), str):
                return StreamEnded(obj["error"])
            if reason:
                return StreamEnded(reason)
            return StreamEnded("closed" if rcvd.code in (1000, 1001) else f"close {rcvd.code}")
        sent = e.sent
        if sent is not None and sent.code in (1002, 1003, 1007, 1009):
            return ProtocolError(f"WebSocket protocol error ({sent.code} {sent.reason})")
        return StreamEnded("connection lost")

    async def send(self, obj: Dict[str, Any]) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            if self.codec == "msgpack":
                await self._ws.send(encode_msgpack(obj))
            else:
                await self._ws.send(encode_json(obj).decode("utf-8"))
        except ConnectionClosed as e:
            raise ConnectionResetError(f"WebSocket closed: {e}") from None

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._ws.close(), 3)
        except Exception:  # closing must never raise
            pass


_OPENERS = {"websocket": WebSocketStream, "sse": SseStream, "chunked": ChunkedStream}


async def open_stream(kind: str, target: Target, params: ConnectParams) -> Stream:
    """Opens one transport, following up to MAX_REDIRECTS redirects."""
    opener = _OPENERS[kind]
    for _ in range(MAX_REDIRECTS):
        try:
            stream: Stream = await opener.open(target, params)  # type: ignore[attr-defined]
            return stream
        except _Redirect as r:
            target = Target.from_location(r.location, target)
    raise ConnectError(f"more than {MAX_REDIRECTS} redirects")
