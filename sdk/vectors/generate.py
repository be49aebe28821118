#!/usr/bin/env python3
"""Regenerates sdk/vectors/*.json by capturing what a real ipush_server sends.

Usage (from the repository root):

    IPUSH_SERVER=target/debug/ipush_server python3 sdk/vectors/generate.py

Standard library only. Every server_to_client byte string in the vectors is what the server
wrote on a socket, except a seq above 2^32 (which cannot be reached here) and the `moved`
signal (built here so that its location is a fixed example; tests/moved_signal.rs checks the
same bytes against a live server); those are built here by the same rules, after this script
has checked those rules against every captured byte string.
Every client_to_server encoding is sent to the server, which must accept it.
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TIMEOUT = 15.0

# ---------------------------------------------------------------- encoders (checked below)


def json_str(s):
    """The server's JSON string escaping: `"` and `\\` escaped, other bytes < 0x20 as \\u00XX."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def json_msg(v):
    """A message object in key order, as the server writes it: no spaces."""
    parts = []
    for k, val in v.items():
        if isinstance(val, int):
            parts.append('"%s":%d' % (k, val))
        else:
            parts.append('"%s":%s' % (k, json_str(val)))
    return "{" + ",".join(parts) + "}"


def mp_uint(n):
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return b"\xcc" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xcd" + n.to_bytes(2, "big")
    if n < 0x100000000:
        return b"\xce" + n.to_bytes(4, "big")
    return b"\xcf" + n.to_bytes(8, "big")


def mp_str(s):
    b = s.encode("utf-8")
    n = len(b)
    if n < 32:
        return bytes([0xA0 | n]) + b
    if n < 0x100:
        return b"\xd9" + n.to_bytes(1, "big") + b
    if n < 0x10000:
        return b"\xda" + n.to_bytes(2, "big") + b
    return b"\xdb" + n.to_bytes(4, "big") + b


def mp_msg(v):
    """A message map in key order, smallest encodings (as rmp writes them)."""
    assert len(v) < 16
    out = bytes([0x80 | len(v)])
    for k, val in v.items():
        out += mp_str(k)
        out += mp_uint(val) if isinstance(val, int) else mp_str(val)
    return out


def mp_decode(b):
    """Decodes one MessagePack value (the subset the protocol uses); returns (value, rest)."""
    t = b[0]
    if t < 0x80:
        return t, b[1:]
    if 0x80 <= t <= 0x8F:
        n, rest, d = t & 0x0F, b[1:], {}
        for _ in range(n):
            k, rest = mp_decode(rest)
            val, rest = mp_decode(rest)
            d[k] = val
        return d, rest
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
        return b[1 : 1 + n].decode("utf-8"), b[1 + n :]
    sizes = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}
    if t in sizes:
        n = sizes[t]
        return int.from_bytes(b[1 : 1 + n], "big"), b[1 + n :]
    strs = {0xD9: 1, 0xDA: 2, 0xDB: 4}
    if t in strs:
        w = strs[t]
        n = int.from_bytes(b[1 : 1 + w], "big")
        return b[1 + w : 1 + w + n].decode("utf-8"), b[1 + w + n :]
    raise ValueError("unsupported msgpack type 0x%02x" % t)


def chunk(payload):
    return b"%x\r\n" % len(payload) + payload + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


def ws_frame(opcode, payload, fin=True, mask=None, rsv=0):
    first = (0x80 if fin else 0) | rsv | opcode
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes([first, m | n])
    elif n < 0x10000:
        head = bytes([first, m | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, m | 127]) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    masked = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
    return head + mask + masked


def ws_close_payload(code, reason):
    return code.to_bytes(2, "big") + reason.encode("utf-8")


def ws_parse(buf):
    """Splits server frames; returns (list of dicts, rest)."""
    frames = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        n = b1 & 0x7F
        i = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = int.from_bytes(buf[2:4], "big")
            i = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = int.from_bytes(buf[2:10], "big")
            i = 10
        mask = None
        if b1 & 0x80:
            mask = buf[i : i + 4]
            i += 4
        if len(buf) < i + n:
            break
        payload = buf[i : i + n]
        if mask:
            payload = bytes(c ^ mask[j % 4] for j, c in enumerate(payload))
        frames.append(
            {"raw": buf[: i + n], "fin": bool(b0 & 0x80), "opcode": b0 & 0x0F, "payload": payload, "mask": mask}
        )
        buf = buf[i + n :]
    return frames, buf


def chunks_parse(buf):
    """Splits well-formed chunks; returns (list of payloads, ended, rest). `ended`: the last chunk."""
    out = []
    while True:
        nl = buf.find(b"\r\n")
        if nl < 0:
            return out, False, buf
        size = int(buf[:nl], 16)
        if size == 0:
            if len(buf) >= nl + 4:
                assert buf[nl : nl + 4] == b"\r\n\r\n"
                return out, True, buf[nl + 4 :]
            return out, False, buf
        if len(buf) < nl + 2 + size + 2:
            return out, False, buf
        out.append(buf[nl + 2 : nl + 2 + size])
        assert buf[nl + 2 + size : nl + 4 + size] == b"\r\n"
        buf = buf[nl + 4 + size :]


def sse_parse(text):
    """Events of a complete SSE text (the subset the server writes, parsed by the spec's rules)."""
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        ev = {"id": None, "event": None, "data": None}
        data = []
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                data.append(value)
            elif name in ("id", "event"):
                ev[name] = value
        ev["data"] = "\n".join(data)
        events.append(ev)
    return events


# ---------------------------------------------------------------- a server and raw sockets


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server:
    def __init__(self, binary, *extra, ports=None):
        for _ in range(5):
            self.client_port, self.admin_port, self.bus_port = ports or (free_port(), free_port(), free_port())
            if len({self.client_port, self.admin_port, self.bus_port}) < 3:
                continue
            self.dir = tempfile.mkdtemp(prefix="ipush-vectors-")
            args = [
                binary,
                "--client_host=127.0.0.1",
                "--client_port=%d" % self.client_port,
                "--admin_port=%d" % self.admin_port,
                "--bus_port=%d" % self.bus_port,
                "--pid_file=%s/ipush.pid" % self.dir,
                "--data_dir=%s/data" % self.dir,
                "--storage=memory",
                "--cores=2",
                "--log_level=warn",
            ] + list(extra)
            self.proc = subprocess.Popen(args, cwd=self.dir, stdout=subprocess.DEVNULL)
            end = time.time() + 60
            while time.time() < end and self.proc.poll() is None:
                try:
                    if admin(self, "GET", "/health")[0] == 200:
                        return
                except OSError:
                    pass
                time.sleep(0.05)
            self.kill()
        raise SystemExit("server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def http(port, raw):
    """Sends raw request bytes, reads the whole response (the server closes); returns bytes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.sendall(raw)
    out = b""
    while True:
        try:
            d = s.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        out += d
    s.close()
    return out


def split_response(resp):
    head, _, body = resp.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(": ")
        headers[k.lower()] = v
    return status, headers, body


def admin(srv, method, path, body=b""):
    raw = ("%s %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % (method, path, len(body))).encode()
    status, headers, b = split_response(http(srv.admin_port, raw + body))
    return status, b


def pub_user(srv, to, frm, body, ttl=None):
    q = {"to": to, "from": frm}
    if ttl is not None:
        q["ttl"] = str(ttl)
    st, b = admin(srv, "POST", "/pub?" + urllib.parse.urlencode(q), body.encode("utf-8"))
    assert st == 200, (st, b)


def pub_channel(srv, channel, frm, body, ttl=None):
    q = {"channel": channel, "from": frm}
    if ttl is not None:
        q["ttl"] = str(ttl)
    st, b = admin(srv, "POST", "/pub?" + urllib.parse.urlencode(q), body.encode("utf-8"))
    assert st == 200, (st, b)


class Stream:
    """A raw client connection: request head sent, response head read."""

    def __init__(self, srv, uid, kind="chunked", codec=None, last_event_id=None, password="pw"):
        q = {"uid": uid, "password": password}
        if codec:
            q["codec"] = codec
        self.path = "/connect?" + urllib.parse.urlencode(q)
        head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % (self.path, srv.client_port)
        if kind == "ws":
            self.key = base64.b64encode(os.urandom(16)).decode()
            head += "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n" % self.key
        elif kind == "sse":
            head += "Accept: text/event-stream\r\n"
            if last_event_id is not None:
                head += "Last-Event-ID: %s\r\n" % last_event_id
        head += "\r\n"
        self.sock = socket.create_connection(("127.0.0.1", srv.client_port), timeout=TIMEOUT)
        self.sock.sendall(head.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = self.sock.recv(65536)
            if not d:
                raise RuntimeError("closed before the head: %r" % buf)
            buf += d
        self.head, _, self.buf = buf.partition(b"\r\n\r\n")
        self.status = int(self.head.split(b" ")[1])
        if kind == "ws":
            want = base64.b64encode(hashlib.sha1((self.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            assert b"Sec-WebSocket-Accept: " + want in self.head, self.head
        self.eof = False

    def read_until(self, done):
        """Reads until done(bytes so far) or EOF; returns the bytes read after the head."""
        end = time.time() + TIMEOUT
        while not done(self.buf) and not self.eof:
            if time.time() > end:
                raise RuntimeError("timed out; have %r" % self.buf[:300])
            d = self.sock.recv(1 << 20)
            if not d:
                self.eof = True
            self.buf += d
        return self.buf

    def read_to_eof(self):
        return self.read_until(lambda b: False)

    def take(self):
        b, self.buf = self.buf, b""
        return b

    def send(self, b):
        self.sock.sendall(b)

    def close(self):
        self.sock.close()


def n_chunks(n):
    return lambda b: len(chunks_parse(b)[0]) >= n


def n_frames(n):
    return lambda b: len(ws_parse(b)[0]) >= n


def n_events(n):
    return lambda b: b.count(b"\n\n") >= n


MASK = bytes([0x37, 0xFA, 0x21, 0x3D])  # the masking key of RFC 6455 §5.7's example

# ---------------------------------------------------------------- the vectors


def hexs(b):
    return b.hex()


def text_or_none(b):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return None


LONG_300 = "0123456789" * 30  # str16 in msgpack (> 255 bytes); its first 100 bytes are a str8
LONG_70000 = ("abcdefghij" * 7000)  # str32 in msgpack (> 65535 bytes), 5 hex digits of chunk size

# name, kind, from, body, channel (None = user message)
SERVER_MESSAGES = [
    ("user_message", "user", "user002", "hi", None),
    ("channel_message", "channel", "user002", "hello channel", "channel1"),
    ("body_quotes_backslash", "user", "user002", 'say "hi" \\ back\\slash', None),
    ("body_control_chars", "user", "user002", "tab\tnewline\ncr\rnul\x00unit\x1fdel\x7f", None),
    ("body_non_ascii", "user", "user002", "caf\u00e9 \U0001F600 \u4e2d\u6587", None),
    ("body_empty", "user", "user002", "", None),
    ("body_long_100", "user", "user002", LONG_300[:100], None),
    ("body_long_300", "user", "user002", LONG_300, None),
    ("body_long_70000", "user", "user002", LONG_70000, None),
    ("channel_message_non_ascii", "channel", "op\u00e9rateur", "\u00e9t\u00e9 \U0001F44D\U0001F3FD", "channel1"),
]

RECIPIENT = "user001"


def server_value(kind, frm, body, channel, seq):
    v = {"y": 3 if kind == "user" else 4, "f": frm, "t": RECIPIENT}
    if channel is not None:
        v["c"] = channel
    v["b"] = body
    if seq is not None:
        v["s"] = seq
    return v


def main():
    binary = os.environ.get("IPUSH_SERVER") or os.path.join(ROOT, "target", "debug", "ipush_server")
    if not os.access(binary, os.X_OK):
        raise SystemExit("no server binary at %s (set IPUSH_SERVER)" % binary)
    srv = Server(binary, "--max_message_bytes=262144")
    try:
        vectors = capture(binary, srv)
    finally:
        srv.kill()
    for name, data in vectors.items():
        with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print("wrote", name)


def capture(binary, srv):
    messages = []
    ws_frames = []
    ws_rejected = []
    chunked_streams = []
    sse_streams = []
    http_errors = []
    stream_errors = []

    # ---- server_to_client messages: published while user001 is offline, replayed on connect
    st, _ = admin(srv, "GET", "/sub?uid=%s&cid=channel1" % RECIPIENT)
    assert st == 200
    expected = []
    for seq, (name, kind, frm, body, channel) in enumerate(SERVER_MESSAGES, start=1):
        if kind == "user":
            pub_user(srv, RECIPIENT, frm, body)
        else:
            pub_channel(srv, channel, frm, body)
        expected.append((name, server_value(kind, frm, body, channel, seq)))
    n = len(expected)

    captured = {}
    for label, kind, codec in [
        ("chunked_json", "chunked", None),
        ("chunked_msgpack", "chunked", "msgpack"),
        ("ws_json", "ws", None),
        ("ws_msgpack", "ws", "msgpack"),
        ("sse", "sse", None),
    ]:
        s = Stream(srv, RECIPIENT, kind, codec)
        assert s.status in (101, 200), s.head
        if kind == "chunked":
            payloads = chunks_parse(s.read_until(n_chunks(n)))[0][:n]
            raws = [chunk(p) for p in payloads]
        elif kind == "ws":
            frames = ws_parse(s.read_until(n_frames(n)))[0][:n]
            payloads = [f["payload"] for f in frames]
            raws = [f["raw"] for f in frames]
        else:
            text = s.read_until(n_events(n)).decode("utf-8")
            blocks = [blk + "\n\n" for blk in text.split("\n\n")[:n]]
            payloads = [sse_parse(blk)[0]["data"].encode() for blk in blocks]
            raws = [blk.encode() for blk in blocks]
        captured[label] = (payloads, raws)
        s.close()

    for i, (name, value) in enumerate(expected):
        js = captured["chunked_json"][0][i]
        mp = captured["chunked_msgpack"][0][i]
        assert js == json_msg(value).encode(), (name, js[:200])
        assert json.loads(js) == value
        assert mp == mp_msg(value), (name, mp[:200])
        assert mp_decode(mp) == (value, b"")
        for label in ("ws_json", "sse"):
            assert captured[label][0][i] == js, (label, name)
        assert captured["ws_msgpack"][0][i] == mp
        messages.append(
            {"name": name, "direction": "server_to_client", "value": value, "json_text": js.decode(), "msgpack_hex": hexs(mp)}
        )

    # A message published with ttl=0 while online: no seq.
    for label, kind, codec in [("json", "chunked", None), ("msgpack", "chunked", "msgpack")]:
        s = Stream(srv, "user003", kind, codec)
        pub_user(srv, "user003", "user002", "live only", ttl=0)
        p = chunks_parse(s.read_until(n_chunks(1)))[0][0]
        captured["ttl0_" + label] = p
        s.close()
    v = {"y": 3, "f": "user002", "t": "user003", "b": "live only"}
    assert captured["ttl0_json"] == json_msg(v).encode() and captured["ttl0_msgpack"] == mp_msg(v)
    messages.append(
        {"name": "user_message_ttl0_no_seq", "direction": "server_to_client", "value": v,
         "json_text": json_msg(v), "msgpack_hex": hexs(mp_msg(v))}
    )
    # Seqs above 2^32 are not reachable on a test server: built by the rules checked above
    # (the Rust test checks the server's encoders produce these bytes).
    for name, v in [
        ("user_message_seq_above_2_32", server_value("user", "user002", "big seq", None, 2**32 + 7)),
        ("channel_message_seq_max_u64", server_value("channel", "user002", "max seq", "channel1", 2**64 - 1)),
        ("user_message_seq_255", server_value("user", "user002", "seq 255", None, 255)),
        ("user_message_seq_65536", server_value("user", "user002", "seq 65536", None, 65536)),
    ]:
        messages.append({"name": name, "direction": "server_to_client", "value": v,
                         "json_text": json_msg(v), "msgpack_hex": hexs(mp_msg(v))})

    # The heartbeat: the answer to a client heartbeat.
    s = Stream(srv, "user004")
    s.send(chunk(b'{"y":0}'))
    hb = chunks_parse(s.read_until(n_chunks(1)))[0][0]
    s.close()
    s = Stream(srv, "user004", codec="msgpack")
    s.send(chunk(mp_msg({"y": 0})))
    hb_mp = chunks_parse(s.read_until(n_chunks(1)))[0][0]
    s.close()
    assert hb == b'{"y":0}' and hb_mp == mp_msg({"y": 0}), (hb, hb_mp)
    messages.insert(0, {"name": "heartbeat", "direction": "server_to_client", "value": {"y": 0},
                        "json_text": hb.decode(), "msgpack_hex": hexs(hb_mp)})

    # ---- client_to_server messages: each must be accepted (the server answers the heartbeat
    # that follows it and does not end the stream).
    client_msgs = [
        ("heartbeat", {"y": 0}),
        ("subscribe", {"y": 1, "f": "user001", "c": "channel001"}),
        ("unsubscribe", {"y": 2, "f": "user001", "c": "channel001"}),
        ("user_message", {"y": 3, "f": "user001", "t": "user002", "b": "hi"}),
        ("channel_message", {"y": 4, "f": "user001", "c": "channel1", "b": "hi"}),
        ("ack", {"y": 5, "f": "user001", "s": 1}),
        ("ack_without_from", {"y": 5, "s": 3}),
        ("ack_seq_above_2_32", {"y": 5, "f": "user001", "s": 2**32 + 7}),
        ("user_message_non_ascii", {"y": 3, "f": "user001", "t": "user002", "b": "caf\u00e9 \U0001F600 \"q\" \\ \n"}),
        ("user_message_long_300", {"y": 3, "f": "user001", "t": "user002", "b": LONG_300}),
    ]
    for name, v in client_msgs:
        messages.append({"name": "client_" + name, "direction": "client_to_server", "value": v,
                         "json_text": json_msg(v), "msgpack_hex": hexs(mp_msg(v))})
    st, _ = admin(srv, "GET", "/unsub?uid=%s&cid=channel1" % RECIPIENT)  # no echo of its channel message
    assert st == 200
    for codec in (None, "msgpack"):
        s = Stream(srv, "user001", codec=codec)
        if codec is None:
            s.read_until(n_chunks(n))  # the replay (the acks below then leave nothing unacked)
        s.take()
        enc = mp_msg if codec else (lambda v: json_msg(v).encode())
        for name, v in client_msgs:
            s.send(chunk(enc(v)) + chunk(enc({"y": 0})))
            got = chunks_parse(s.read_until(n_chunks(1 if v["y"] != 0 else 2)))[0]
            want = [enc({"y": 0})] * (2 if v["y"] == 0 else 1)
            assert got == want, (codec, name, got)
            s.take()
        s.close()
    # what the accepted user messages delivered
    st, b = admin(srv, "GET", "/msg?uid=user002")
    assert st == 200
    delivered = [json.loads(m) for m in json.loads(b)["result"]]
    assert any(m.get("b") == "hi" and m.get("f") == "user001" for m in delivered), delivered

    # ---- chunked streams
    # messages, a heartbeat answer, then replaced by a newer connect
    for codec in (None, "msgpack"):
        uid = "user010" if codec is None else "user011"
        pub_user(srv, uid, "user002", "first")
        st, _ = admin(srv, "GET", "/sub?uid=%s&cid=news" % uid)
        assert st == 200
        pub_channel(srv, "news", "editor", "second")
        s = Stream(srv, uid, codec=codec)
        s.read_until(n_chunks(2))
        s.send(chunk(mp_msg({"y": 0}) if codec else b'{"y":0}'))
        s.read_until(n_chunks(3))
        s2 = Stream(srv, uid, codec=codec)
        raw = s.read_to_eof()
        s.close()
        s2.close()
        payloads, ended, rest = chunks_parse(raw)
        assert ended and rest == b"", raw
        dec = (lambda p: mp_decode(p)[0]) if codec else json.loads
        values = [dec(p) for p in payloads]
        assert values[-1] == {"error": "replaced"}, values
        chunked_streams.append({
            "name": "messages_heartbeat_then_replaced" + ("_msgpack" if codec else ""),
            "codec": codec or "json",
            "bytes_hex": hexs(raw), "bytes_text": text_or_none(raw),
            "messages": values, "end": "error", "error": "replaced",
        })
        for p, v in zip(payloads, values):
            assert p == (mp_msg(v) if codec else json_msg(v).encode())
        assert raw == b"".join(chunk(p) for p in payloads) + LAST_CHUNK

    # bad input from the client ends the stream with a reason
    bad_inputs = [
        ("invalid json", b"5\r\nhello\r\n", None),
        ("unknown type", chunk(b'{"y":9}'), None),
        ("missing c", chunk(b'{"y":1}'), None),
        ("invalid t", chunk(b'{"y":3,"t":"a b","b":"x"}'), None),
        ("missing b", chunk(b'{"y":3,"t":"user002"}'), None),
        ("missing s", chunk(b'{"y":5}'), None),
        ("invalid s", chunk(b'{"y":5,"s":-1}'), None),
        ("missing y", chunk(b'{"f":"user001"}'), None),
        ("bad chunk size", b"zz\r\n", None),
        ("bad chunk terminator", b"7\r\n{\"y\":0}XX", None),
        ("message too large", b"%x\r\n" % (262144 + 1), None),
        ("invalid msgpack", chunk(b"\xc1"), "msgpack"),
    ]
    meanings = {
        "invalid json": "a chunk's payload is not one JSON object",
        "invalid msgpack": "a chunk's payload is not one MessagePack map",
        "unknown type": "y is not an integer 0-5",
        "missing y": "the message has no y",
        "missing c": "a subscribe, unsubscribe or channel message without c",
        "invalid t": "t is not a valid uid (1-128 bytes of UTF-8, no whitespace or control characters)",
        "missing b": "a user or channel message without b",
        "missing s": "an ack without s",
        "invalid s": "s is not a non-negative integer",
        "bad chunk size": "the chunk size line is not hex digits followed by CRLF",
        "bad chunk terminator": "a chunk's payload is not followed by CRLF",
        "message too large": "a chunk (or WebSocket message) is over --max_message_bytes",
    }
    for reason, data, codec in bad_inputs:
        s = Stream(srv, "user020", codec=codec)
        s.send(data)
        raw = s.read_to_eof()
        s.close()
        payloads, ended, rest = chunks_parse(raw)
        assert ended and rest == b"", (reason, raw)
        dec = (lambda p: mp_decode(p)[0]) if codec else json.loads
        assert [dec(p) for p in payloads] == [{"error": reason}], (reason, raw)
        if reason in ("invalid json", "invalid msgpack"):
            chunked_streams.append({
                "name": "bad_input_" + reason.replace(" ", "_"),
                "codec": codec or "json",
                "bytes_hex": hexs(raw), "bytes_text": text_or_none(raw),
                "messages": [{"error": reason}], "end": "error", "error": reason,
            })
        stream_errors.append({
            "name": reason.replace(" ", "_"),
            "json_text": json.dumps({"error": reason}, separators=(",", ":")),
            "msgpack_hex": hexs(mp_msg({"error": reason})),
            "meaning": meanings[reason] + "; the server sends this as the stream's last message",
            "client_sent_hex": hexs(data),
        })
        if codec:
            assert payloads[0] == mp_msg({"error": reason})
        else:
            assert payloads[0] == json_msg({"error": reason}).encode()
    stream_errors.insert(0, {
        "name": "replaced",
        "json_text": '{"error":"replaced"}',
        "msgpack_hex": hexs(mp_msg({"error": "replaced"})),
        "meaning": "a newer /connect of the same uid took over; do not reconnect automatically "
                   "(the other connection is the user's), or only after a long delay",
    })

    # the admin API's POST /disconnect
    s = Stream(srv, "user022")
    st, _ = admin(srv, "POST", "/disconnect?uid=user022")
    assert st == 200
    raw = s.read_to_eof()
    s.close()
    assert raw == chunk(b'{"error":"disconnected"}') + LAST_CHUNK, raw
    stream_errors.insert(1, {
        "name": "disconnected",
        "json_text": '{"error":"disconnected"}',
        "msgpack_hex": hexs(mp_msg({"error": "disconnected"})),
        "meaning": "the admin API closed this stream (POST /disconnect); WebSocket: then close 1000 "
                   "with reason disconnected; reconnect with backoff, or stop if the application asked for it",
    })

    # ---- WebSocket
    def ws_entry(name, direction, raw):
        frames, rest = ws_parse(raw)
        assert len(frames) == 1 and rest == b"", (name, raw)
        f = frames[0]
        p = f["payload"]
        close_code = close_reason = None
        if f["opcode"] == 8 and len(p) >= 2:
            close_code = int.from_bytes(p[:2], "big")
            close_reason = p[2:].decode("utf-8")
        return {
            "name": name, "direction": direction, "hex": hexs(raw), "fin": f["fin"], "opcode": f["opcode"],
            "masked": f["mask"] is not None, "mask_hex": hexs(f["mask"]) if f["mask"] else None,
            "payload_hex": hexs(p), "payload_text": text_or_none(p) if f["opcode"] != 2 else None,
            "close_code": close_code, "close_reason": close_reason,
        }

    # data frames of the replay (json text, msgpack binary), short / 16-bit / 64-bit lengths
    picks = {"user_message": "text_user_message", "channel_message": "text_channel_message",
             "body_long_300": "text_length_16bit", "body_long_70000": "text_length_64bit"}
    for i, (name, _) in enumerate(expected):
        if name in picks:
            ws_frames.append(ws_entry(picks[name], "server_to_client", captured["ws_json"][1][i]))
    for i, (name, _) in enumerate(expected):
        if name in ("user_message", "body_long_300"):
            ws_frames.append(ws_entry("binary_msgpack_" + name, "server_to_client", captured["ws_msgpack"][1][i]))
    for i, (name, _) in enumerate(expected):
        raw = captured["ws_json"][1][i]
        assert raw == ws_frame(1, captured["chunked_json"][0][i]), name
        assert captured["ws_msgpack"][1][i] == ws_frame(2, captured["chunked_msgpack"][0][i]), name

    # client frames and what the server answers
    s = Stream(srv, "user030", "ws")
    c_hb = ws_frame(1, b'{"y":0}', mask=MASK)
    c_ping = ws_frame(9, b"hi", mask=MASK)
    c_pong = ws_frame(10, b"hi", mask=MASK)
    c_close = ws_frame(8, ws_close_payload(1000, ""), mask=MASK)
    s.send(c_hb)
    hb_frame = ws_parse(s.read_until(n_frames(1)))[0][0]["raw"]
    s.take()
    s.send(c_pong + c_ping)
    pong = ws_parse(s.read_until(n_frames(1)))[0][0]["raw"]
    s.take()
    s.send(c_close)
    echo = s.read_to_eof()
    s.close()
    ws_frames.append(ws_entry("text_heartbeat", "server_to_client", hb_frame))
    ws_frames.append(ws_entry("pong_answering_ping", "server_to_client", pong))
    ws_frames.append(ws_entry("close_1000_echo", "server_to_client", echo))
    s = Stream(srv, "user031", "ws", "msgpack")
    c_hb_mp = ws_frame(2, mp_msg({"y": 0}), mask=MASK)
    s.send(c_hb_mp)
    hb_mp_frame = ws_parse(s.read_until(n_frames(1)))[0][0]["raw"]
    s.close()
    ws_frames.append(ws_entry("binary_msgpack_heartbeat", "server_to_client", hb_mp_frame))
    c_sub = ws_frame(1, json_msg({"y": 1, "f": "user030", "c": "channel001"}).encode(), mask=MASK)
    c_frag1 = ws_frame(1, b'{"y":', fin=False, mask=MASK)
    c_frag2 = ws_frame(0, b"0}", fin=True, mask=MASK)
    s = Stream(srv, "user030", "ws")
    s.send(c_sub + c_frag1 + c_frag2)
    got = ws_parse(s.read_until(n_frames(1)))[0]
    assert got[0]["payload"] == b'{"y":0}', got
    s.close()
    for name, raw in [("text_heartbeat", c_hb), ("binary_msgpack_heartbeat", c_hb_mp), ("text_subscribe", c_sub),
                      ("text_fragment_start", c_frag1), ("continuation_final", c_frag2),
                      ("ping", c_ping), ("pong", c_pong), ("close_1000", c_close)]:
        ws_frames.append(ws_entry(name, "client_to_server", raw))

    # replaced: a final text message, then close 1000 with the reason
    s = Stream(srv, "user032", "ws")
    s2 = Stream(srv, "user032", "ws")
    raw = s.read_to_eof()
    s.close()
    s2.close()
    frames, rest = ws_parse(raw)
    assert len(frames) == 2 and rest == b"", raw
    ws_frames.append(ws_entry("text_error_replaced", "server_to_client", frames[0]["raw"]))
    ws_frames.append(ws_entry("close_1000_replaced", "server_to_client", frames[1]["raw"]))

    # client frames the server refuses: what it answers
    refused = [
        ("unmasked_client_frame", ws_frame(1, b'{"y":0}'), 1002),
        ("reserved_bit_set", ws_frame(1, b'{"y":0}', mask=MASK, rsv=0x40), 1002),
        ("reserved_opcode", ws_frame(3, b"x", mask=MASK), 1002),
        ("fragmented_ping", ws_frame(9, b"x", fin=False, mask=MASK), 1002),
        ("invalid_utf8_text", ws_frame(1, b"\xff\xfe", mask=MASK), 1007),
        ("invalid_json_text", ws_frame(1, b"hello", mask=MASK), 1008),
        ("unknown_type", ws_frame(1, b'{"y":9}', mask=MASK), 1008),
        ("message_too_large", ws_frame(1, b"x" * (262144 + 1), mask=MASK)[:14], 1009),
        ("unexpected_continuation", ws_frame(0, b"x", mask=MASK), 1002),
    ]
    for name, data, code in refused:
        s = Stream(srv, "user033", "ws")
        s.send(data)
        raw = s.read_to_eof()
        s.close()
        frames, rest = ws_parse(raw)
        assert rest == b"" and len(frames) == 2, (name, raw)
        assert frames[0]["opcode"] == 1 and frames[1]["opcode"] == 8, name
        got_code = int.from_bytes(frames[1]["payload"][:2], "big")
        assert got_code == code, (name, got_code)
        reason = frames[1]["payload"][2:].decode()
        assert frames[0]["payload"] == json_msg({"error": reason}).encode(), name
        ws_rejected.append({"name": name, "hex": hexs(data), "response_hex": hexs(raw),
                            "close_code": code, "reason": reason})
        if name == "invalid_json_text":
            ws_frames.append(ws_entry("text_error_invalid_json", "server_to_client", frames[0]["raw"]))
            ws_frames.append(ws_entry("close_1008_invalid_json", "server_to_client", frames[1]["raw"]))
        if not any(e["name"] == reason.replace(" ", "_") for e in stream_errors):
            stream_errors.append({
                "name": reason.replace(" ", "_"),
                "json_text": json_msg({"error": reason}),
                "msgpack_hex": hexs(mp_msg({"error": reason})),
                "meaning": "WebSocket only: the client sent a frame RFC 6455 forbids; the server sends "
                           "this text message, then closes with %d" % code,
                "client_sent_hex": hexs(data),
            })

    # ---- SSE
    for lei in (None, "1"):
        uid = "user040" if lei is None else "user041"
        pub_user(srv, uid, "user002", "first")
        pub_user(srv, uid, "user002", "second \u00e9")
        s = Stream(srv, uid, "sse", last_event_id=lei)
        s.read_until(n_events(2 if lei is None else 1))
        pub_user(srv, uid, "user002", "live ttl 0", ttl=0)
        s.read_until(n_events(3 if lei is None else 2))
        s2 = Stream(srv, uid, "sse", last_event_id="2")
        text = s.read_to_eof().decode("utf-8")
        s.close()
        s2.close()
        events = sse_parse(text)
        assert events[-1]["data"] == '{"error":"replaced"}', text
        for e in events:
            e["data"] and json.loads(e["data"])
        sse_streams.append({
            "name": "messages_then_replaced" if lei is None else "resumed_with_last_event_id_1",
            "request_headers": {"Accept": "text/event-stream", **({"Last-Event-ID": lei} if lei else {})},
            "text": text, "events": events,
        })
    for p in [s for s in sse_streams]:
        for e in p["events"]:
            if e["id"] is not None:
                assert json.loads(e["data"])["s"] == int(e["id"])

    # ---- graceful shutdown and server heartbeats: a server of their own
    hsrv = Server(binary, "--heartbeat_interval_s=1")
    try:
        c = Stream(hsrv, "user050")
        w = Stream(hsrv, "user051", "ws")
        e = Stream(hsrv, "user052", "sse")
        c.read_until(n_chunks(1))
        w.read_until(n_frames(1))
        e.read_until(n_events(1))
        hsrv.proc.send_signal(signal.SIGTERM)
        craw, wraw, eraw = c.read_to_eof(), w.read_to_eof(), e.read_to_eof()
        hsrv.proc.wait(timeout=20)
    finally:
        hsrv.kill()
    payloads, ended, rest = chunks_parse(craw)
    assert ended and rest == b"" and set(payloads) == {b'{"y":0}'}, craw
    chunked_streams.append({
        "name": "server_heartbeats_then_shutdown", "codec": "json",
        "bytes_hex": hexs(craw), "bytes_text": craw.decode(),
        "messages": [json.loads(p) for p in payloads], "end": "clean", "error": None,
    })
    frames, rest = ws_parse(wraw)
    assert rest == b"" and frames[-1]["opcode"] == 8, wraw
    ws_frames.append(ws_entry("close_1001_shutdown", "server_to_client", frames[-1]["raw"]))
    etext = eraw.decode()
    sse_streams.append({"name": "server_heartbeats_then_shutdown", "request_headers": {"Accept": "text/event-stream"},
                        "text": etext, "events": sse_parse(etext)})
    assert all(ev["data"] == '{"y":0}' for ev in sse_parse(etext)), etext

    # ---- the move signal (the dynamic cluster's, or an operator's `POST /disconnect?uid=U&location=
    # ORIGIN`; tests/moved_signal.rs checks these bytes against a live server). The location
    # names the user only: the client reconnects there with its own password and options.
    location = "http://127.0.0.1:9100/connect?uid=user001"
    moved = json_msg({"error": "moved", "location": location})
    chunked_streams.append({
        "name": "moved", "codec": "json",
        "bytes_hex": hexs(chunk(moved.encode()) + LAST_CHUNK), "bytes_text": (chunk(moved.encode()) + LAST_CHUNK).decode(),
        "messages": [{"error": "moved", "location": location}], "end": "error", "error": "moved",
    })
    mp_moved = mp_msg({"error": "moved", "location": location})
    chunked_streams.append({
        "name": "moved_msgpack", "codec": "msgpack",
        "bytes_hex": hexs(chunk(mp_moved) + LAST_CHUNK), "bytes_text": None,
        "messages": [{"error": "moved", "location": location}], "end": "error", "error": "moved",
    })
    ws_frames.append(ws_entry("close_1012_moved", "server_to_client", ws_frame(8, ws_close_payload(1012, moved))))
    sse_moved = "event: moved\ndata: %s\n\n" % moved
    sse_streams.append({"name": "moved", "request_headers": {"Accept": "text/event-stream"},
                        "text": sse_moved, "events": sse_parse(sse_moved)})
    stream_errors.insert(1, {
        "name": "moved",
        "json_text": moved,
        "msgpack_hex": hexs(mp_moved),
        "meaning": "the user now belongs to another node (dynamic cluster): reconnect to location at "
                   "once (no backoff), resuming after the highest seq seen",
    })

    # ---- chunked input a client must reject
    chunked_malformed = [
        ("size_not_hex", b"zz\r\n{\"y\":0}\r\n", "the size line is not hex digits"),
        ("size_line_lf_only", b"7\n{\"y\":0}\r\n", "the size line does not end with CRLF"),
        ("payload_not_followed_by_crlf", b"7\r\n{\"y\":0}XX", "the payload is not followed by CRLF"),
        ("payload_longer_than_size", b"5\r\n{\"y\":0}\r\n", "the size is smaller than the payload: no CRLF where it must be"),
        ("size_overflows_64_bits", b"10000000000000000\r\n", "the size does not fit in 64 bits"),
        ("empty_size_line", b"\r\n{\"y\":0}\r\n", "the size line is empty"),
        ("invalid_json_payload", chunk(b"hello"), "the payload is not JSON"),
        ("json_not_an_object", chunk(b"[1,2]"), "the payload is JSON but not an object"),
        ("truncated_chunk_then_eof", b"7\r\n{\"y\"", "the connection ends inside a chunk (treat as a lost connection, not a clean end)"),
    ]

    # ---- HTTP errors on the client port
    def req(name, raw, port=None, note=None, headers=()):
        resp = http(port or srv.client_port, raw)
        st, hd, body = split_response(resp)
        entry = {"name": name, "request": raw.decode("latin-1"), "status": st, "body_text": body.decode()}
        for h in headers:
            entry[h.replace("-", "_")] = hd.get(h)
        if note:
            entry["meaning"] = note
        http_errors.append(entry)
        return entry

    cp = srv.client_port
    host = "Host: 127.0.0.1:%d\r\n" % cp
    req("missing_uid", b"GET /connect?password=pw HTTP/1.1\r\n" + host.encode() + b"\r\n")
    req("invalid_uid_whitespace", b"GET /connect?uid=a%20b&password=pw HTTP/1.1\r\n" + host.encode() + b"\r\n")
    req("empty_password", b"GET /connect?uid=user001&password= HTTP/1.1\r\n" + host.encode() + b"\r\n",
        note="with --auth=none any non-empty password is accepted; with --auth=jwt a bad, expired or foreign token gives the same 401")
    req("invalid_codec", b"GET /connect?uid=user001&password=pw&codec=xml HTTP/1.1\r\n" + host.encode() + b"\r\n")
    req("msgpack_over_sse", b"GET /connect?uid=user001&password=pw&codec=msgpack HTTP/1.1\r\n" + host.encode() + b"Accept: text/event-stream\r\n\r\n")
    req("invalid_last_event_id", b"GET /connect?uid=user001&password=pw HTTP/1.1\r\n" + host.encode() + b"Accept: text/event-stream\r\nLast-Event-ID: abc\r\n\r\n")
    req("websocket_version_not_13", b"GET /connect?uid=user001&password=pw HTTP/1.1\r\n" + host.encode() + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    req("websocket_bad_key", b"GET /connect?uid=user001&password=pw HTTP/1.1\r\n" + host.encode() + b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n")
    req("connect_with_post", b"POST /connect?uid=user001&password=pw HTTP/1.1\r\n" + host.encode() + b"Content-Length: 0\r\n\r\n")
    req("unknown_path", b"GET /nope HTTP/1.1\r\n" + host.encode() + b"\r\n")
    req("headers_too_large", b"GET /connect?uid=user001&password=pw HTTP/1.1\r\n" + host.encode() + b"X-Big: " + b"x" * 9000 + b"\r\n\r\n")
    req("send_ok", b"POST /send?uid=user060&password=pw HTTP/1.1\r\n" + host.encode() + b"Content-Length: 38\r\n\r\n" + b'{"y":3,"t":"user061","b":"from /send"}')
    req("send_with_get", b"GET /send?uid=user060&password=pw HTTP/1.1\r\n" + host.encode() + b"\r\n")
    req("send_invalid_json", b"POST /send?uid=user060&password=pw HTTP/1.1\r\n" + host.encode() + b"Content-Length: 5\r\n\r\nhello")
    req("send_chunked_body", b"POST /send?uid=user060&password=pw HTTP/1.1\r\n" + host.encode() + b"Transfer-Encoding: chunked\r\n\r\n7\r\n{\"y\":0}\r\n0\r\n\r\n")
    req("send_body_too_large", b"POST /send?uid=user060&password=pw HTTP/1.1\r\n" + host.encode() + b"Content-Length: 300000\r\n\r\n")
    st, b = admin(srv, "GET", "/msg?uid=user061")
    assert "from /send" in b.decode(), b

    # 503: the connection limit
    lsrv = Server(binary, "--max_connections=2")  # one stream per core (2 cores)
    try:
        held = []
        for i in range(20):
            st = Stream(lsrv, "user%03d" % (70 + i))
            if st.status == 200:
                held.append(st)
                continue
            body = st.read_to_eof()
            st.close()
            http_errors.append({
                "name": "connection_limit", "request": "GET %s HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\r\n" % st.path,
                "status": st.status, "body_text": body.decode(),
                "meaning": "the node holds --max_connections streams: retry later with backoff",
            })
            break
        assert http_errors[-1]["name"] == "connection_limit" and http_errors[-1]["status"] == 503, http_errors[-1]
        for h in held:
            h.close()
    finally:
        lsrv.kill()

    # 303: a 2-node static cluster sends a user of the other node there
    ports = [(free_port(), free_port(), free_port()) for _ in range(2)]
    nodes = ",".join("n%d=127.0.0.1:%d:%d:%d" % (i + 1, *p) for i, p in enumerate(ports))
    cluster = [Server(binary, "--node=n%d" % (i + 1), "--nodes=" + nodes, ports=ports[i]) for i in range(2)]
    try:
        for srv_i in cluster:
            assert srv_i.client_port  # ports come from --nodes: reach them through it
        n1_client = ports[0][0]
        uid = None
        for i in range(200):
            cand = "user%03d" % (100 + i)
            raw = ("GET /connect?uid=%s&password=pw HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (cand, n1_client)).encode()
            st, hd, _ = split_response(http(n1_client, raw))
            if st == 303:
                uid = cand
                break
        assert uid
        e = req("redirect_to_owner_node",
                ("GET /connect?uid=%s&password=pw HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (uid, n1_client)).encode(),
                port=n1_client, headers=("location",),
                note="the uid belongs to another node: repeat the same request at Location (same query)")
        assert e["location"] == "http://127.0.0.1:%d/connect?uid=%s&password=pw" % (ports[1][0], uid), e
        # placeholders for the ports, so the vector does not depend on this run
        e["request"] = e["request"].replace(str(n1_client), "9000")
        e["location"] = e["location"].replace(str(ports[1][0]), "9100")
    finally:
        for c in cluster:
            c.kill()
    for e in http_errors:
        e["request"] = e["request"].replace(str(cp), "9000")

    # ---- write
    return {
        "messages.json": {"messages": messages},
        "chunked.json": {"streams": chunked_streams,
                         "malformed": [{"name": n, "bytes_hex": hexs(b), "why": w} for n, b, w in chunked_malformed]},
        "websocket.json": {"frames": ws_frames, "malformed": ws_malformed(), "rejected_by_server": ws_rejected},
        "sse.json": {"streams": sse_streams},
        "errors.json": {"http": http_errors, "stream": stream_errors},
    }


def ws_malformed():
    """Frames a client must refuse from a server (RFC 6455), with the close code to send."""
    return [
        {"name": "masked_server_frame", "hex": hexs(ws_frame(1, b'{"y":0}', mask=MASK)), "expect_close_code": 1002,
         "why": "a server must not mask its frames (§5.1)"},
        {"name": "reserved_bit_set", "hex": hexs(ws_frame(1, b'{"y":0}', rsv=0x40)), "expect_close_code": 1002,
         "why": "RSV1 set without a negotiated extension (§5.2)"},
        {"name": "reserved_opcode", "hex": hexs(ws_frame(3, b"x")), "expect_close_code": 1002,
         "why": "opcode 0x3 is reserved (§5.2)"},
        {"name": "control_frame_too_long", "hex": hexs(ws_frame(9, b"x" * 126)), "expect_close_code": 1002,
         "why": "a control frame's payload is at most 125 bytes (§5.5)"},
        {"name": "fragmented_ping", "hex": hexs(ws_frame(9, b"x", fin=False)), "expect_close_code": 1002,
         "why": "control frames must not be fragmented (§5.5)"},
        {"name": "unexpected_continuation", "hex": hexs(ws_frame(0, b"x")), "expect_close_code": 1002,
         "why": "a continuation frame with no message to continue (§5.4)"},
        {"name": "invalid_utf8_text", "hex": hexs(ws_frame(1, b"\xff\xfe")), "expect_close_code": 1007,
         "why": "a text message that is not UTF-8 (§8.1)"},
        {"name": "close_one_byte_payload", "hex": hexs(ws_frame(8, b"\x03")), "expect_close_code": 1002,
         "why": "a close payload is empty or at least 2 bytes (§5.5.1)"},
        {"name": "close_code_1005_on_the_wire", "hex": hexs(ws_frame(8, ws_close_payload(1005, ""))), "expect_close_code": 1002,
         "why": "1005 must never be sent in a close frame (§7.4.1)"},
    ]


if __name__ == "__main__":
    sys.exit(main())
