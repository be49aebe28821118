"""The shared vectors (sdk/vectors/): every vector decoded by the SDK's parsers, and the
SDK's encoders producing the vectors' values (byte for byte where the server's bytes are
given)."""

from __future__ import annotations

from typing import Any, Dict, List

import msgpack
import pytest
from conftest import load_vectors
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from ipush._transport import WebSocketStream
from ipush.errors import ProtocolError, StreamEnded
from ipush.protocol import (
    ChunkDecoder,
    Message,
    ServerError,
    SseParser,
    decode_json,
    decode_msgpack,
    encode_chunk,
    encode_json,
    encode_msgpack,
)


def _as_value(item: Any) -> Dict[str, Any]:
    if isinstance(item, ServerError):
        d: Dict[str, Any] = {"error": item.reason}
        if item.location is not None:
            d["location"] = item.location
        return d
    assert isinstance(item, Message)
    return item.to_dict()


MESSAGES = load_vectors("messages.json")["messages"]


@pytest.mark.parametrize("v", MESSAGES, ids=[m["name"] for m in MESSAGES])
def test_message_vector(v: Dict[str, Any]) -> None:
    value = v["value"]
    json_bytes = v["json_text"].encode("utf-8")
    mp = bytes.fromhex(v["msgpack_hex"])
    # Decoding both encodings gives the value.
    assert _as_value(decode_json(json_bytes)) == value
    assert _as_value(decode_msgpack(mp)) == value
    # Encoding the value (as a dict and as a Message) decodes back to it...
    msg = Message.from_dict(value)
    for enc in (encode_json(value), encode_json(msg)):
        assert _as_value(decode_json(enc)) == value
    for enc in (encode_msgpack(value), encode_msgpack(msg)):
        assert msgpack.unpackb(enc, raw=False) == value
    # ... and the server's own bytes exactly when the vector gives them (same key order).
    if v["direction"] == "server_to_client":
        assert encode_json(msg) == json_bytes
        assert encode_msgpack(msg) == mp
    # The keys the vector lists, in the vector's order, encode to its bytes too.
    assert encode_json(dict(value)) == json_bytes or v["direction"] == "client_to_server"


CHUNKED = load_vectors("chunked.json")


def _split_points(n: int) -> List[int]:
    if n <= 64:
        return list(range(n + 1))
    return sorted({0, 1, 2, 3, n // 3, n // 2, n - 3, n - 2, n - 1, n})


@pytest.mark.parametrize("s", CHUNKED["streams"], ids=[s["name"] for s in CHUNKED["streams"]])
def test_chunked_stream_vector(s: Dict[str, Any]) -> None:
    data = bytes.fromhex(s["bytes_hex"])
    if s.get("bytes_text") is not None:
        assert data == s["bytes_text"].encode("utf-8")
    codec = s.get("codec", "json")
    for cut in _split_points(len(data)):
        dec = ChunkDecoder()
        payloads = dec.feed(data[:cut]) + dec.feed(data[cut:])
        assert dec.done, "the stream's last chunk was not seen"
        items = [decode_json(p) if codec == "json" else decode_msgpack(p) for p in payloads]
        assert [_as_value(i) for i in items] == s["messages"]
    # What ends the stream is what the vector says.
    last = items[-1] if items else None
    if s["end"] == "error":
        assert isinstance(last, ServerError) and last.reason == s["error"]
        if last.reason == "moved":
            assert last.location and last.location.startswith("http://")
    else:
        assert not isinstance(last, ServerError)
    # Our encoder frames each payload the way the server did.
    assert b"".join(encode_chunk(p) for p in payloads) + b"0\r\n\r\n" == data


@pytest.mark.parametrize("m", CHUNKED["malformed"], ids=[m["name"] for m in CHUNKED["malformed"]])
def test_chunked_malformed_vector(m: Dict[str, Any]) -> None:
    data = bytes.fromhex(m["bytes_hex"])
    for cut in _split_points(len(data)):
        dec = ChunkDecoder()
        try:
            payloads = dec.feed(data[:cut]) + dec.feed(data[cut:])
            for p in payloads:
                decode_json(p)
        except ProtocolError:
            continue
        # Not rejected by the bytes alone: only a stream cut inside a chunk is allowed here,
        # and it must not look like a clean end.
        assert "eof" in m["name"] or "ends inside" in m["why"], f"accepted at cut {cut}"
        assert not dec.done and dec.pending > 0


WS = load_vectors("websocket.json")


def _client_protocol() -> ClientProtocol:
    return ClientProtocol(parse_uri("ws://127.0.0.1/connect"), state=State.OPEN, max_size=None)


@pytest.mark.parametrize(
    "f", WS["frames"], ids=[f"{f['name']}-{i}" for i, f in enumerate(WS["frames"])]
)
def test_websocket_frame_vector(f: Dict[str, Any]) -> None:
    raw = bytes.fromhex(f["hex"])
    proto: Any
    if f["direction"] == "server_to_client":
        proto = _client_protocol()
    else:
        proto = ServerProtocol(state=State.OPEN, max_size=None)
    # Fragments and continuations are valid only in sequence; feed a continuation after a
    # fragment start so the parser sees it in context.
    if f["opcode"] == 0:
        proto.receive_data(_fragment_start(f["direction"]))
        proto.events_received()
    proto.receive_data(raw)
    events = proto.events_received()
    assert len(events) == 1, f"{proto.close_sent!r}"
    frame = events[0]
    assert frame.fin == f["fin"]
    assert int(frame.opcode) == f["opcode"]
    assert frame.data == bytes.fromhex(f["payload_hex"])
    if f["payload_text"] is not None:
        assert frame.data.decode("utf-8") == f["payload_text"]
    if frame.opcode == Opcode.CLOSE:
        close = Close.parse(frame.data)
        assert close.code == f["close_code"]
        assert close.reason == f["close_reason"]
        if f["direction"] == "server_to_client":
            ended = WebSocketStream._closed(ConnectionClosedError(close, None))
            assert isinstance(ended, StreamEnded)
            if close.code == 1012:
                assert ended.reason == "moved"
                assert ended.location and ended.location.startswith("http://")
            elif close.reason:
                assert ended.reason == close.reason
    elif frame.opcode in (Opcode.TEXT, Opcode.BINARY) and frame.fin:
        item = (
            decode_json(frame.data) if frame.opcode == Opcode.TEXT else decode_msgpack(frame.data)
        )
        # The SDK's encoder gives the same payload bytes.
        if isinstance(item, Message) and f["direction"] == "server_to_client":
            enc = encode_json(item) if frame.opcode == Opcode.TEXT else encode_msgpack(item)
            assert enc == frame.data


def _fragment_start(direction: str) -> bytes:
    if direction == "server_to_client":
        return bytes.fromhex("010178")  # unmasked text fragment "x"
    return bytes.fromhex("018100000000") + b"x"  # masked with a zero key


@pytest.mark.parametrize("m", WS["malformed"], ids=[m["name"] for m in WS["malformed"]])
def test_websocket_malformed_vector(m: Dict[str, Any]) -> None:
    proto = _client_protocol()
    proto.receive_data(bytes.fromhex(m["hex"]))
    events = proto.events_received()
    for ev in events:
        # The frame parser leaves UTF-8 to the connection, whose recv() fails a text message
        # that does not decode with 1007 (test_fake_servers drives the real connection).
        if ev.opcode == Opcode.TEXT and ev.fin:
            try:
                ev.data.decode("utf-8")
            except UnicodeDecodeError:
                proto.fail(1007, "invalid UTF-8")
    assert proto.close_sent is not None, f"accepted: {events!r}"
    assert proto.close_sent.code == m["expect_close_code"]
    assert proto.state in (State.CLOSING, State.CLOSED)


SSE = load_vectors("sse.json")


@pytest.mark.parametrize("s", SSE["streams"], ids=[s["name"] for s in SSE["streams"]])
def test_sse_vector(s: Dict[str, Any]) -> None:
    data = s["text"].encode("utf-8")
    for cut in _split_points(len(data)):
        p = SseParser()
        evs = p.feed(data[:cut]) + p.feed(data[cut:])
        got = [{"id": e.id, "event": e.event, "data": e.data} for e in evs]
        assert got == s["events"]
    for e in evs:
        item = decode_json(e.data)
        if e.event == "moved":
            assert isinstance(item, ServerError) and item.location
        if e.id is not None:
            assert isinstance(item, Message) and str(item.seq) == e.id
    # The same events with CRLF line ends parse alike.
    p = SseParser()
    got = p.feed(data.replace(b"\n", b"\r\n"))
    assert [{"id": e.id, "event": e.event, "data": e.data} for e in got] == s["events"]


ERRORS = load_vectors("errors.json")


@pytest.mark.parametrize("e", ERRORS["stream"], ids=[e["name"] for e in ERRORS["stream"]])
def test_error_stream_vector(e: Dict[str, Any]) -> None:
    item = decode_json(e["json_text"])
    assert isinstance(item, ServerError)
    if e.get("msgpack_hex"):
        item2 = decode_msgpack(bytes.fromhex(e["msgpack_hex"]))
        assert item2 == item
    if item.reason == "moved":
        assert item.location and item.location.startswith("http://")


@pytest.mark.parametrize("e", ERRORS["http"], ids=[e["name"] for e in ERRORS["http"]])
def test_error_http_vector(e: Dict[str, Any]) -> None:
    from ipush.protocol import error_reason

    body = e["body_text"].encode("utf-8")
    if e["status"] >= 400 and body.startswith(b"{"):
        import json

        assert error_reason(body, "?") == json.loads(body)["error"]
    if e["status"] == 303:
        from ipush._transport import Target

        t = Target.from_location(e["location"])
        assert t.path == "/connect" and t.endpoint.port > 0


@pytest.mark.parametrize(
    "r", WS["rejected_by_server"], ids=[r["name"] for r in WS["rejected_by_server"]]
)
def test_websocket_rejection_answer_vector(r: Dict[str, Any]) -> None:
    # The client side of a refusal: a text frame {"error": reason}, then a close with the code.
    proto = _client_protocol()
    proto.receive_data(bytes.fromhex(r["response_hex"]))
    events = proto.events_received()
    assert [int(e.opcode) for e in events] == [int(Opcode.TEXT), int(Opcode.CLOSE)]
    item = decode_json(events[0].data)
    assert isinstance(item, ServerError) and item.reason == r["reason"]
    close = Close.parse(events[1].data)
    assert (close.code, close.reason) == (r["close_code"], r["reason"])
