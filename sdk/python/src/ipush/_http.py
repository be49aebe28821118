"""A small HTTP/1.1 client over asyncio streams: enough for ``/connect`` (chunked, SSE),
``POST /send`` and the admin API. One request per connection."""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .errors import ProtocolError
from .protocol import ChunkDecoder, ResponseHead, parse_response_head, split_host_port

MAX_HEAD = 16 * 1024
USER_AGENT = "ipush-python/0.1"


@dataclass(frozen=True)
class Endpoint:
    """Where to connect: scheme (http/https), host, port."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https", "ws", "wss"):
            raise ValueError(f"URL scheme must be http or https: {url!r}")
        scheme = {"ws": "http", "wss": "https"}.get(u.scheme, u.scheme)
        if not u.netloc:
            raise ValueError(f"URL has no host: {url!r}")
        host, port = split_host_port(u.netloc.rpartition("@")[2], 443 if scheme == "https" else 80)
        return cls(scheme, host, port)

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def netloc(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"{h}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}"


async def open_stream(
    ep: Endpoint, timeout: float, ssl_context: Optional[ssl.SSLContext] = None
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx: Optional[ssl.SSLContext] = None
    if ep.secure:
        ctx = ssl_context or ssl.create_default_context()
    return await asyncio.wait_for(
        asyncio.open_connection(
            ep.host, ep.port, ssl=ctx, server_hostname=ep.host if ctx else None, limit=1 << 20
        ),
        timeout,
    )


def request_bytes(
    method: str,
    ep: Endpoint,
    target: str,
    headers: Optional[Dict[str, str]] = None,
    body: Optional[bytes] = None,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {ep.netloc}", f"User-Agent: {USER_AGENT}"]
    for k, v in (headers or {}).items():
        if "\r" in v or "\n" in v:
            raise ValueError(f"header {k} holds a line break")
        lines.append(f"{k}: {v}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def read_head(reader: asyncio.StreamReader) -> ResponseHead:
    """Reads up to the blank line ending the head (at most MAX_HEAD bytes)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise ConnectionResetError("connection closed before a response") from None
        raise ProtocolError("connection closed inside the response head") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("response head too large") from None
    if len(raw) > MAX_HEAD:
        raise ProtocolError("response head too large")
    return parse_response_head(raw)


async def read_body(
    reader: asyncio.StreamReader, head: ResponseHead, limit: int = 64 * 1024 * 1024
) -> bytes:
    """A whole body: Content-Length, chunked, or until the peer closes."""
    te = (head.header("transfer-encoding") or "").lower()
    if "chunked" in te:
        dec = ChunkDecoder(limit)
        parts = []
        while not dec.done:
            data = await reader.read(65536)
            if not data:
                raise ProtocolError("connection closed inside a chunked body")
            parts.extend(dec.feed(data))
        return b"".join(parts)
    cl = head.header("content-length")
    if cl is not None:
        if not cl.isdigit():
            raise ProtocolError(f"bad Content-Length {cl!r}")
        n = int(cl)
        if n > limit:
            raise ProtocolError("response body too large")
        try:
            return await reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise ProtocolError("connection closed inside the response body") from None
    if head.status in (204, 304) or 100 <= head.status < 200:
        return b""
    data = await reader.read(limit + 1)
    out = bytearray(data)
    while data:
        if len(out) > limit:
            raise ProtocolError("response body too large")
        data = await reader.read(65536)
        out += data
    return bytes(out)


async def request(
    method: str,
    ep: Endpoint,
    target: str,
    *,
    body: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: float = 10.0,
    ssl_context: Optional[ssl.SSLContext] = None,
) -> Tuple[ResponseHead, bytes]:
    """One request on a fresh connection (``Connection: close``), the whole answer read."""
    h = {"Connection": "close"}
    h.update(headers or {})

    async def run() -> Tuple[ResponseHead, bytes]:
        reader, writer = await open_stream(ep, timeout, ssl_context)
        try:
            writer.write(request_bytes(method, ep, target, h, body))
            await writer.drain()
            head = await read_head(reader)
            while 100 <= head.status < 200:  # 100 Continue and friends
                head = await read_head(reader)
            data = b"" if method == "HEAD" else await read_body(reader, head)
            return head, data
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ssl.SSLError):
                pass

    return await asyncio.wait_for(run(), timeout)
