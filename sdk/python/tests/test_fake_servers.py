"""Behaviour only a misbehaving or future server shows, driven by a tiny fake server: malformed
chunks / frames / events (error, then reconnect), the ``moved`` signal on each transport
(reconnect at once to the real server), heartbeat death, and transport fallback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from typing import Any, Awaitable, Callable, Dict, List, Optional

import pytest
from conftest import Recorder, Server, load_vectors, wait_until

from ipush import AdminClient, Client, ProtocolError

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
GOOD = b'{"y":3,"f":"op","t":"fk","b":"good","s":1}'

Behaviour = Callable[
    [int, Dict[str, str], asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]
]


class FakeServer:
    """Accepts connections; each request head goes to ``behaviour(n, headers, r, w)`` with n
    the connection's number (0, 1, ...)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.count = 0
        self.requests: List[Dict[str, str]] = []
        self.received: List[bytes] = []
        self._srv: Optional[asyncio.base_events.Server] = None
        self.port = 0

    async def __aenter__(self) -> FakeServer:
        self._srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._srv.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._srv is not None
        self._srv.close()
        await self._srv.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = self.count
        self.count += 1
        try:
            head = (await r.readuntil(b"\r\n\r\n")).decode("latin-1")
            lines = head.split("\r\n")
            headers = {"_line": lines[0]}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            self.requests.append(headers)
            await self.behaviour(n, headers, r, w)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def drain_into(self, r: asyncio.StreamReader, limit_s: float = 10) -> None:
        """Keeps reading what the client sends until it closes."""
        try:
            while True:
                d = await asyncio.wait_for(r.read(4096), limit_s)
                if not d:
                    return
                self.received.append(d)
        except (asyncio.TimeoutError, ConnectionError):
            return


def chunk(p: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(p), p)


CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"


def ws_accept(headers: Dict[str, str]) -> bytes:
    key = headers["sec-websocket-key"]
    acc = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {acc}\r\n\r\n"
    ).encode()


def ws_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


async def read_client_close_code(r: asyncio.StreamReader) -> Optional[int]:
    """Reads client frames until a close; returns its code (None if the client just left)."""
    try:
        while True:
            b0, b1 = await asyncio.wait_for(r.readexactly(2), 10)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await r.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await r.readexactly(8), "big")
            mask = await r.readexactly(4) if b1 & 0x80 else b"\0\0\0\0"
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(await r.readexactly(n)))
            if b0 & 0x0F == 8:
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
        return None


def fast(url: str, uid: str = "fk", **kw: Any) -> Client:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_cap", 0.05)
    return Client(url, uid, "pw", **kw)


async def good_chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(CHUNKED_HEAD + chunk(GOOD))
    await w.drain()
    await r.read()  # until the client closes


CHUNKED_BAD = load_vectors("chunked.json")["malformed"]


@pytest.mark.parametrize("m", CHUNKED_BAD, ids=[m["name"] for m in CHUNKED_BAD])
async def test_malformed_chunked_stream(m: Dict[str, Any]) -> None:
    async def behaviour(n: int, h: Dict[str, str], r: Any, w: Any) -> None:
        if n == 0:
            w.write(CHUNKED_HEAD + bytes.fromhex(m["bytes_hex"]))
            await w.drain()
            return  # and close: a truncated chunk ends in EOF
        await good_chunked(r, w)

    async with FakeServer(behaviour) as fake:
        c = fast(fake.url, transport="chunked")
        rec = Recorder(c)
        await c.connect(timeout=10)
        try:
            await wait_until(lambda: rec.bodies() == ["good"], what="the message after reconnect")
            assert fake.count >= 2
            errors = [e[1] for e in rec.of("error")]
            if "eof" in m["name"]:
                assert not errors  # a lost connection, not a protocol error
                assert "lost" in rec.of("disconnected")[0][1]
            else:
                assert errors and isinstance(errors[0], ProtocolError), rec.events
                assert rec.of("disconnected")[0] == ("disconnected", "protocol error")
        finally:
            await c.close()


WS_BAD = load_vectors("websocket.json")["malformed"]


@pytest.mark.parametrize("m", WS_BAD, ids=[m["name"] for m in WS_BAD])
async def test_malformed_websocket_frame(m: Dict[str, Any]) -> None:
    codes: List[Optional[int]] = []

    async def behaviour(n: int, h: Dict[str, str], r: Any, w: Any) -> None:
        w.write(ws_accept(h))
        if n == 0:
            w.write(bytes.fromhex(m["hex"]))
            await w.drain()
            codes.append(await read_client_close_code(r))
            return
        w.write(ws_frame(1, GOOD))
        await w.drain()
        await read_client_close_code(r)

    async with FakeServer(behaviour) as fake:
        c = fast(fake.url, transport="websocket")
        rec = Recorder(c)
        await c.connect(timeout=10)
        try:
            await wait_until(lambda: rec.bodies() == ["good"], what="the message after reconnect")
            errors = [e[1] for e in rec.of("error")]
            assert errors and isinstance(errors[0], ProtocolError), rec.events
            assert codes == [m["expect_close_code"]]
        finally:
            await c.close()


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1,2]", b'{"y":"3"}', b'{"y":3,"s":-1}'],
    ids=["not-json", "not-object", "y-not-int", "negative-seq"],
)
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_bad_payload_on_websocket_and_sse(payload: bytes, transport: str) -> None:
    async def behaviour(n: int, h: Dict[str, str], r: Any, w: Any) -> None:
        sse = "text/event-stream" in h.get("accept", "")
        if sse:
            w.write(SSE_HEAD + b"data: " + (payload if n == 0 else GOOD) + b"\n\n")
            await w.drain()
            await r.read()
            return
        w.write(ws_accept(h) + ws_frame(1, payload if n == 0 else GOOD))
        await w.drain()
        await read_client_close_code(r)

    async with FakeServer(behaviour) as fake:
        c = fast(fake.url, transport=transport)
        rec = Recorder(c)
        await c.connect(timeout=10)
        try:
            await wait_until(lambda: rec.bodies() == ["good"], what="the message after reconnect")
            errors = [e[1] for e in rec.of("error")]
            assert errors and isinstance(errors[0], ProtocolError), rec.events
        finally:
            await c.close()


@pytest.mark.parametrize("transport", ["websocket", "sse", "chunked"])
async def test_moved_signal(server: Server, transport: str) -> None:
    uid = f"mv-{transport}"
    location = f"http://127.0.0.1:{server.client_port}/connect?uid={uid}&password=pw"
    moved = json.dumps({"error": "moved", "location": location}, separators=(",", ":")).encode()

    async def behaviour(n: int, h: Dict[str, str], r: Any, w: Any) -> None:
        if transport == "websocket":
            w.write(ws_accept(h) + ws_frame(8, (1012).to_bytes(2, "big") + moved))
            await w.drain()
            await read_client_close_code(r)
        elif transport == "sse":
            w.write(SSE_HEAD + b"event: moved\ndata: " + moved + b"\n\n")
            await w.drain()
        else:
            w.write(CHUNKED_HEAD + chunk(moved) + b"0\r\n\r\n")
            await w.drain()

    async with FakeServer(behaviour) as fake:
        c = Client(fake.url, uid, "pw", transport=transport, backoff_base=30, backoff_cap=30)
        sleeps: List[int] = []
        real_sleep = c._backoff_sleep

        async def recording_sleep(attempt: int) -> None:
            sleeps.append(attempt)
            await real_sleep(attempt)

        c._backoff_sleep = recording_sleep  # type: ignore[method-assign]
        rec = Recorder(c)
        await c.connect(timeout=10)
        try:
            await wait_until(lambda: len(rec.of("connected")) == 2, what="connect to the target")
            assert rec.of("connected")[0] == ("connected", transport, fake.url)
            assert rec.of("connected")[1] == ("connected", transport, server.client_url)
            assert rec.of("moved") == [("moved", location)]
            assert sleeps == []  # a move reconnects at once
            assert fake.count == 1
            await AdminClient(server.admin_url).publish(uid, "op", "after the move")
            await wait_until(lambda: rec.bodies() == ["after the move"], what="message")
        finally:
            await c.close()


async def test_heartbeat_sent_and_silence_is_death() -> None:
    async def behaviour(n: int, h: Dict[str, str], r: Any, w: Any) -> None:
        w.write(CHUNKED_HEAD)  # then silence: never answers a heartbeat
        await w.drain()
        await fake.drain_into(r)

    async with FakeServer(behaviour) as fake:
        c = fast(fake.url, transport="chunked", heartbeat_interval=0.2)
        rec = Recorder(c)
        await c.connect(timeout=10)
        try:
            await wait_until(
                lambda: ("disconnected", "heartbeat timeout") in rec.events,
                what="declared dead",
            )
            await wait_until(lambda: fake.count >= 2, what="reconnected")
            assert b'7\r\n{"y":0}\r\n' in b"".join(fake.received)
        finally:
            await c.close()


async def test_heartbeats_answered_by_real_server(server: Server) -> None:
    c = Client(server.client_url, "hb1", "pw", heartbeat_interval=0.2)
    rec = Recorder(c)
    await c.connect(timeout=10)
    try:
        await asyncio.sleep(1.5)  # 7 intervals: dead after 3 unless answered
        assert rec.of("disconnected") == []
        assert c.connected
    finally:
        await c.close()


async def test_transport_fallback_to_chunked() -> None:
    async def behaviour(n: int, h: Dict[str, str], r: Any, w: Any) -> None:
        if "upgrade" in h or "text/event-stream" in h.get("accept", ""):
            # A proxy that knows neither WebSocket nor SSE.
            w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await w.drain()
            return
        await good_chunked(r, w)

    async with FakeServer(behaviour) as fake:
        c = fast(fake.url, transport=["websocket", "sse", "chunked"])
        rec = Recorder(c)
        await c.connect(timeout=10)
        try:
            assert rec.of("connected") == [("connected", "chunked", fake.url)]
            await wait_until(lambda: rec.bodies() == ["good"], what="message")
            assert [("upgrade" in q, q.get("accept")) for q in fake.requests][:3] == [
                (True, None),
                (False, "text/event-stream"),
                (False, None),
            ]
        finally:
            await c.close()


async def test_replaced_on_a_fake_chunked_stream_with_reconnect_option() -> None:
    async def behaviour(n: int, h: Dict[str, str], r: Any, w: Any) -> None:
        if n == 0:
            w.write(CHUNKED_HEAD + chunk(b'{"error":"replaced"}') + b"0\r\n\r\n")
            await w.drain()
            return
        await good_chunked(r, w)

    async with FakeServer(behaviour) as fake:
        c = fast(fake.url, transport="chunked", reconnect_on_replaced=True)
        rec = Recorder(c)
        await c.connect(timeout=10)
        try:
            await wait_until(lambda: rec.bodies() == ["good"], what="reconnected")
            assert ("replaced",) in rec.events
        finally:
            await c.close()
