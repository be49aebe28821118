"""The ipush wire format, with no I/O: messages (JSON and MessagePack), chunk framing, SSE
parsing and HTTP response heads. Everything here is fed bytes and returns values, so it is
tested against the shared vectors without a server.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import msgpack

from .errors import ProtocolError

__all__ = [
    "MsgType",
    "Message",
    "ServerError",
    "encode_json",
    "encode_msgpack",
    "decode_json",
    "decode_msgpack",
    "decode_payload",
    "encode_chunk",
    "LAST_CHUNK",
    "ChunkDecoder",
    "SseEvent",
    "SseParser",
    "ResponseHead",
    "parse_response_head",
]

# The order the server writes keys in; the encoders follow it so that a server-to-client
# message encodes to the server's exact bytes.
_KEY_ORDER = ("y", "f", "t", "c", "u", "b", "s")
_STR_KEYS = ("f", "t", "u", "c", "b")


class MsgType(enum.IntEnum):
    """The ``y`` of a message."""

    HEARTBEAT = 0
    SUBSCRIBE = 1
    UNSUBSCRIBE = 2
    USER = 3
    CHANNEL = 4
    ACK = 5


@dataclass(frozen=True)
class Message:
    """One protocol message. Attribute names spell out the wire keys:
    ``type`` = y, ``sender`` = f, ``to`` = t, ``seq`` = s, ``user`` = u, ``channel`` = c,
    ``body`` = b. ``seq`` is None for a message published with ttl 0 (not stored)."""

    type: int
    sender: Optional[str] = None
    to: Optional[str] = None
    seq: Optional[int] = None
    user: Optional[str] = None
    channel: Optional[str] = None
    body: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Message:
        """Builds a message from its wire keys; raises ProtocolError on a wrong type."""
        y = d.get("y")
        if not isinstance(y, int) or isinstance(y, bool):
            raise ProtocolError(f"message without an integer 'y': {d!r}")
        s = d.get("s")
        if s is not None and (not isinstance(s, int) or isinstance(s, bool) or s < 0):
            raise ProtocolError(f"message with a bad 's': {d!r}")
        vals: Dict[str, Optional[str]] = {}
        for k in _STR_KEYS:
            v = d.get(k)
            if isinstance(v, bytes):
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError(f"key {k!r} is not UTF-8") from None
            if v is not None and not isinstance(v, str):
                raise ProtocolError(f"key {k!r} is not a string: {d!r}")
            vals[k] = v
        return cls(
            type=y,
            sender=vals["f"],
            to=vals["t"],
            seq=s,
            user=vals["u"],
            channel=vals["c"],
            body=vals["b"],
        )

    def to_dict(self) -> Dict[str, Any]:
        """The wire keys of the message, in the server's order, absent keys left out."""
        full: Dict[str, Any] = {
            "y": int(self.type),
            "f": self.sender,
            "t": self.to,
            "u": self.user,
            "c": self.channel,
            "b": self.body,
            "s": self.seq,
        }
        return {k: full[k] for k in _KEY_ORDER if full[k] is not None}


@dataclass(frozen=True)
class ServerError:
    """A stream-ending ``{"error": reason[, "location": url]}`` from the server."""

    reason: str
    location: Optional[str] = None


def _ordered(value: Union[Message, Dict[str, Any]]) -> Dict[str, Any]:
    d = value.to_dict() if isinstance(value, Message) else value
    out = {k: d[k] for k in _KEY_ORDER if k in d and d[k] is not None}
    for k, v in d.items():  # keys we do not know keep their place after ours
        if k not in out and v is not None:
            out[k] = v
    return out


_CONTROL = re.compile("[\x00-\x1f]")


def _json_str(v: str) -> str:
    # The server's escaping: '"' and '\\' escaped, other characters below 0x20 as \u00XX,
    # everything else (non-ASCII and DEL included) as itself.
    v = v.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", v) + '"'


def _json_value(v: Any) -> str:
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def encode_json(value: Union[Message, Dict[str, Any]]) -> bytes:
    """Compact JSON in UTF-8, keys in the server's order, strings escaped as the server does
    (so a server-to-client message encodes to the server's exact bytes)."""
    d = _ordered(value)
    parts = [_json_str(k) + ":" + _json_value(v) for k, v in d.items()]
    return ("{" + ",".join(parts) + "}").encode("utf-8")


def encode_msgpack(value: Union[Message, Dict[str, Any]]) -> bytes:
    """A MessagePack map with the same keys; strings as str, integers in their smallest form."""
    out: bytes = msgpack.packb(_ordered(value), use_bin_type=True)
    return out


def _classify(obj: Any) -> Union[Message, ServerError]:
    if not isinstance(obj, dict):
        raise ProtocolError(f"payload is not an object: {obj!r}")
    obj = {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    if "error" in obj:
        reason = obj["error"]
        loc = obj.get("location")
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        if isinstance(loc, bytes):
            loc = loc.decode("utf-8", "replace")
        if not isinstance(reason, str) or (loc is not None and not isinstance(loc, str)):
            raise ProtocolError(f"bad error object: {obj!r}")
        return ServerError(reason, loc)
    return Message.from_dict(obj)


def decode_json(payload: Union[bytes, str]) -> Union[Message, ServerError]:
    """One server payload in JSON: a Message, or the stream's final ServerError."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise ProtocolError(f"invalid JSON payload: {e}") from None
    return _classify(obj)


def decode_msgpack(payload: bytes) -> Union[Message, ServerError]:
    """One server payload in MessagePack (exactly one object, nothing after it)."""
    try:
        obj = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types (ExtraData, ValueError, ...)
        raise ProtocolError(f"invalid MessagePack payload: {e}") from None
    return _classify(obj)


def decode_payload(payload: bytes, codec: str) -> Union[Message, ServerError]:
    return decode_msgpack(payload) if codec == "msgpack" else decode_json(payload)


# ---- chunked transfer coding ------------------------------------------------------------

LAST_CHUNK = b"0\r\n\r\n"
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_SIZE_LINE = 1024
_MAX_TRAILER = 8192


def encode_chunk(payload: bytes) -> bytes:
    """``<hex len>\\r\\n<payload>\\r\\n``. An empty payload would end the stream: refused."""
    if not payload:
        raise ValueError("an empty chunk ends the stream; refusing to send one")
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class ChunkDecoder:
    """Incremental decoder of a chunked body: ``feed(bytes)`` returns the chunks completed so
    far (each one message); ``done`` turns True at the last chunk. Malformed input raises
    ProtocolError; a chunk larger than ``max_size`` too."""

    def __init__(self, max_size: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_size
        self.done = False

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole chunk."""
        return len(self._buf)

    def feed(self, data: bytes) -> List[bytes]:
        if self.done:
            if data:
                raise ProtocolError("bytes after the last chunk")
            return []
        self._buf += data
        out: List[bytes] = []
        buf = self._buf
        pos = 0
        while not self.done:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > _MAX_SIZE_LINE:
                    raise ProtocolError("chunk size line too long")
                if b"\n" in buf[pos:]:
                    raise ProtocolError("chunk size line not ended by CRLF")
                break
            line = bytes(buf[pos:eol])
            digits = line.split(b";", 1)[0]
            if not digits or len(digits) > 16 or any(ch not in _HEX for ch in digits):
                raise ProtocolError(f"bad chunk size {line[:40]!r}")
            size = int(digits, 16)
            if size > self._max:
                raise ProtocolError(f"chunk of {size} bytes is over the limit {self._max}")
            start = eol + 2
            if size == 0:
                # Optional trailer fields, then an empty line.
                if len(buf) - start < 2:
                    break
                if buf[start : start + 2] == b"\r\n":
                    pos = start + 2
                    self.done = True
                    break
                end = buf.find(b"\r\n\r\n", start)
                if end < 0:
                    if len(buf) - start > _MAX_TRAILER:
                        raise ProtocolError("trailer too long")
                    break
                pos = end + 4
                self.done = True
                break
            if len(buf) - start < size + 2:
                break
            if buf[start + size : start + size + 2] != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF")
            out.append(bytes(buf[start : start + size]))
            pos = start + size + 2
        del buf[:pos]
        if self.done and buf:
            raise ProtocolError("bytes after the last chunk")
        return out


# ---- Server-Sent Events -----------------------------------------------------------------


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: ``id`` and ``event`` are None when the event had no such field."""

    id: Optional[str]
    event: Optional[str]
    data: str


class SseParser:
    """Incremental ``text/event-stream`` parser (the WHATWG rules: CRLF, LF or CR line ends,
    ``:`` comments, ``data`` lines joined by LF, an event dispatched at a blank line, an event
    with no data dropped). ``last_event_id`` keeps the last ``id`` seen."""

    def __init__(self, max_event: int = 16 * 1024 * 1024) -> None:
        self._buf = b""
        self._data: List[str] = []
        self._event: Optional[str] = None
        self._id: Optional[str] = None
        self._max = max_event
        self._size = 0
        self._first = True
        self.last_event_id: Optional[str] = None

    def feed(self, data: bytes) -> List[SseEvent]:
        buf = self._buf + data
        out: List[SseEvent] = []
        pos = 0
        n = len(buf)
        while pos < n:
            i = pos
            while i < n and buf[i] not in (10, 13):
                i += 1
            if i == n:
                break
            if buf[i] == 13:
                if i + 1 == n:
                    break  # a CR at the end: wait to see whether LF follows
                end = i + 2 if buf[i + 1] == 10 else i + 1
            else:
                end = i + 1
            self._line(buf[pos:i], out)
            pos = end
        self._buf = buf[pos:]
        if len(self._buf) + self._size > self._max:
            raise ProtocolError("SSE event too large")
        return out

    def _line(self, raw: bytes, out: List[SseEvent]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("SSE line is not UTF-8") from None
        if self._first:
            self._first = False
            line = line.lstrip("\ufeff")
        if line == "":
            if self._data:
                out.append(SseEvent(self._id, self._event, "\n".join(self._data)))
            self._data, self._event, self._id, self._size = [], None, None, 0
            return
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > self._max:
                raise ProtocolError("SSE event too large")
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self.last_event_id = value
        # "retry" and unknown fields are ignored, as the standard says.


# ---- HTTP/1.1 response heads ------------------------------------------------------------


@dataclass(frozen=True)
class ResponseHead:
    status: int
    reason: str
    headers: Dict[str, str]  # names lower-cased; a repeated header's values joined by ", "

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())


def parse_response_head(raw: bytes) -> ResponseHead:
    """Parses ``HTTP/1.x NNN reason\\r\\n(name: value\\r\\n)*\\r\\n`` (the final CRLF optional)."""
    try:
        text = raw.decode("latin-1")
    except Exception:  # pragma: no cover - latin-1 decodes anything
        raise ProtocolError("undecodable response head") from None
    lines = text.split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ProtocolError("empty response head")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}")
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line[:80]!r}")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return ResponseHead(status, reason, headers)


def error_reason(body: bytes, fallback: str) -> str:
    """The ``error`` of a ``{"error": ...}`` body, else the body text, else ``fallback``."""
    try:
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return str(obj["error"])
    except (ValueError, UnicodeDecodeError):
        pass
    text = body.decode("utf-8", "replace").strip()
    return text or fallback


def split_host_port(netloc: str, default_port: int) -> Tuple[str, int]:
    """``host[:port]`` or ``[v6]:port`` -> (host, port)."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise ValueError(f"bad address {netloc!r}")
        host = netloc[1:end]
        rest = netloc[end + 1 :]
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = netloc.rpartition(":")
    if not sep:
        return netloc, default_port
    return host, int(port)
