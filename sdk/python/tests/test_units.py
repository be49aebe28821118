"""Pure parts without a server: backoff, the chunk decoder and SSE parser fed in fragments,
URLs, option checks."""

from __future__ import annotations

import random

import pytest

from ipush import Client, backoff_delay
from ipush._transport import Target
from ipush.errors import ProtocolError
from ipush.protocol import ChunkDecoder, SseParser, encode_chunk, parse_response_head


def test_backoff_full_jitter_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        draws = [backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in draws)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(draws) < ceiling * 0.1 and max(draws) > ceiling * 0.9
    assert backoff_delay(10_000, 0.5, 30.0, rng) <= 30.0
    with pytest.raises(ValueError):
        backoff_delay(-1)


def test_chunk_decoder_every_split_and_pipelined() -> None:
    payloads = [b'{"y":0}', b"x" * 300, "é😀".encode(), b"y" * 4096]
    stream = b"".join(encode_chunk(p) for p in payloads) + b"0\r\n\r\n"
    for cut in range(len(stream) + 1):
        d = ChunkDecoder()
        assert d.feed(stream[:cut]) + d.feed(stream[cut:]) == payloads
        assert d.done
    d = ChunkDecoder()
    out = []
    for i in range(len(stream)):  # one byte at a time
        out += d.feed(stream[i : i + 1])
    assert out == payloads and d.done
    # Upper-case hex, an extension, trailers.
    d = ChunkDecoder()
    assert d.feed(b"A;ext=1\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n") == [b"0123456789"]
    assert d.done


def test_chunk_decoder_limits() -> None:
    with pytest.raises(ProtocolError):
        ChunkDecoder(max_size=10).feed(b"b\r\n")
    with pytest.raises(ProtocolError):
        ChunkDecoder().feed(b"1" * 2000)
    with pytest.raises(ProtocolError):
        d = ChunkDecoder()
        d.feed(b"0\r\n\r\n1")
    with pytest.raises(ValueError):
        encode_chunk(b"")


def test_sse_parser_line_ends_split_anywhere() -> None:
    text = (
        b"\xef\xbb\xbf: comment\r\nid: 7\rdata: a\ndata:b\r\n\r\n"
        b"event: moved\ndata: {}\n\nretry: 5\n\n"
    )
    for cut in range(len(text) + 1):
        p = SseParser()
        evs = p.feed(text[:cut]) + p.feed(text[cut:])
        assert [(e.id, e.event, e.data) for e in evs] == [
            ("7", None, "a\nb"),
            (None, "moved", "{}"),
        ]
        assert p.last_event_id == "7"


def test_response_head() -> None:
    h = parse_response_head(
        b"HTTP/1.1 303 See Other\r\nLocation: http://h:1/connect?x\r\nA: 1\r\na: 2\r\n\r\n"
    )
    assert (
        h.status == 303
        and h.header("location") == "http://h:1/connect?x"
        and h.header("A") == "1, 2"
    )
    with pytest.raises(ProtocolError):
        parse_response_head(b"SPDY 200\r\n\r\n")


def test_locations() -> None:
    base = Target.from_location("http://127.0.0.1:9000/connect?uid=a&password=b")
    assert (base.endpoint.host, base.endpoint.port, base.path) == ("127.0.0.1", 9000, "/connect")
    t = Target.from_location("/connect?uid=a", base)  # relative: same node
    assert t.endpoint == base.endpoint
    v6 = Target.from_location("http://[::1]:9100/connect")
    assert v6.endpoint.host == "::1" and v6.node_url == "http://[::1]:9100"


def test_client_options_checked() -> None:
    for bad in (
        dict(uid=""),
        dict(codec="xml"),
        dict(transport="carrier-pigeon"),
        dict(transport=[]),
        dict(heartbeat_interval=0),
        dict(backoff_base=0),
        dict(last_seq=-1),
    ):
        kw = dict(uid="u")
        kw.update(bad)  # type: ignore[arg-type]
        uid = kw.pop("uid")
        with pytest.raises((ValueError, TypeError)):
            Client("http://127.0.0.1:9000", uid, "pw", **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Client("ftp://x", "u", "pw")
