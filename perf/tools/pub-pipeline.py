#!/usr/bin/env python3
"""One keep-alive admin connection publishing as fast as it is answered (issue #15).

  --mode pub:   pipelined `POST /pub?to=U` requests, DEPTH in flight;
  --mode batch: `POST /pub/batch` requests of LINES messages each, DEPTH in flight.

The users have no stream (offline: every message is stored, nothing is delivered), so this
measures the admin path and the store, not stream writes; `loadtest unicast --pipeline N` /
`--batch N` measures the same with a stream per user. Prints the messages acknowledged ok
per second, and the failures; exits 1 if any message failed.

  perf/tools/pub-pipeline.py --admin 127.0.0.1:9001 --mode pub --depth 100 --seconds 10
  perf/tools/pub-pipeline.py --mode batch --lines 1000 --depth 4
"""
import argparse
import json
import socket
import sys
import threading
import time


def requests(a):
    """A ring of distinct ready-made requests, cycling over the users."""
    body = "x" * a.body_bytes
    out = []
    n = 0
    for _ in range(64):
        if a.mode == "pub":
            path = f"/pub?to={a.prefix}{n % a.users}&from=op"
            n += 1
            req = (f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Length: {len(body)}\r\n\r\n{body}")
            out.append((req.encode(), 1))
        else:
            lines = []
            for _ in range(a.lines):
                lines.append(json.dumps({"to": f"{a.prefix}{n % a.users}", "from": "op", "b": body}))
                n += 1
            payload = ("\n".join(lines) + "\n").encode()
            head = (f"POST /pub/batch HTTP/1.1\r\nHost: b\r\nContent-Type: application/x-ndjson\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n").encode()
            out.append((head + payload, a.lines))
    return out


class Marker:
    """Counts a byte string in a stream read in pieces (also when a piece cuts it)."""

    def __init__(self, m):
        self.m = m
        self.tail = b""

    def feed(self, data):
        buf = self.tail + data
        self.tail = buf[-(len(self.m) - 1):]
        return buf.count(self.m)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin", default="127.0.0.1:9001")
    p.add_argument("--mode", choices=["pub", "batch"], default="pub")
    p.add_argument("--depth", type=int, default=100, help="requests in flight")
    p.add_argument("--lines", type=int, default=1000, help="messages per /pub/batch request")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--prefix", default=f"pp{int(time.time()) % 100000}-")
    p.add_argument("--body-bytes", type=int, default=100)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    host, port = a.admin.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ring = requests(a)
    room = threading.Semaphore(a.depth)
    state = {"answers": 0, "ok": 0, "failed": 0, "done": False}
    sent_msgs = []  # messages per request, in send order (answers come in this order)

    answers_c = Marker(b"HTTP/1.1 ")
    ok_c = Marker(b"HTTP/1.1 200 " if a.mode == "pub" else b'"status":200')
    status_c = Marker(b'"status":')

    def reader():
        # Until every message sent has its answer (a batch's lines may trail its head).
        while not state["done"] or state["ok"] + state["failed"] < sum(sent_msgs):
            data = sock.recv(1 << 20)
            if not data:
                break
            answers = answers_c.feed(data)
            ok = ok_c.feed(data)
            if a.mode == "pub":
                state["failed"] += answers - ok
            else:
                state["failed"] += status_c.feed(data) - ok
            state["ok"] += ok
            state["answers"] += answers
            for _ in range(answers):
                room.release()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    start = time.monotonic()
    end = start + a.seconds
    i = 0
    while time.monotonic() < end:
        room.acquire()
        req, n = ring[i % len(ring)]
        i += 1
        sent_msgs.append(n)
        sock.sendall(req)
    state["done"] = True
    t.join(timeout=30)
    took = time.monotonic() - start
    sent = sum(sent_msgs)
    print(json.dumps({
        "mode": a.mode, "depth": a.depth, "lines": a.lines if a.mode == "batch" else 1,
        "requests": len(sent_msgs), "answers": state["answers"], "messages": sent,
        "ok": state["ok"], "failed": state["failed"], "seconds": round(took, 2),
        "ok_per_sec": round(state["ok"] / took),
    }))
    sys.exit(0 if state["failed"] == 0 and state["ok"] == sent else 1)


if __name__ == "__main__":
    main()
