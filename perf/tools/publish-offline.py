#!/usr/bin/env python3
"""Publishes N offline messages round-robin to USERS users (PREFIX0, PREFIX1, ...) through one
keep-alive `POST /pub/batch` connection, LINES a request, ttl one day. Stops early after
MAX_SECS (the caller sees fewer), fails at a refused request or line. Prints how many were
acknowledged, and on stderr the slowest request's answer time (a stall shows there).

  publish-offline.py ADMIN_PORT N USERS BODY_BYTES LINES MAX_SECS PREFIX
"""
import http.client
import json
import sys
import time


def main():
    port, n, users, body, lines, max_secs = map(int, sys.argv[1:7])
    prefix = sys.argv[7]
    b = "x" * body
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    sent = ok = 0
    slowest, slowest_at = 0.0, 0.0
    end = time.monotonic() + max_secs
    while sent < n and time.monotonic() < end:
        k = min(lines, n - sent)
        payload = "".join(
            json.dumps({"to": f"{prefix}{(sent + i) % users}", "from": "op", "ttl": 86400, "b": b}) + "\n"
            for i in range(k)
        )
        t0 = time.monotonic()
        c.request("POST", "/pub/batch", payload, {"Content-Type": "application/x-ndjson"})
        r = c.getresponse()
        out = r.read()
        took = time.monotonic() - t0
        if took > slowest:
            slowest, slowest_at = took, time.time()
        if r.status != 200:
            sys.exit(f"/pub/batch answered {r.status}: {out[:200]!r}")
        ok += out.count(b'"status":200')
        sent += k
    if ok != sent:
        sys.exit(f"{sent - ok} of {sent} publishes failed")
    at = time.strftime("%H:%M:%S", time.gmtime(slowest_at))
    print(f"publish-offline: {ok} acknowledged; slowest /pub/batch answer {slowest * 1000:.0f} ms"
          f" (answered {at} UTC)", file=sys.stderr)
    print(ok)


if __name__ == "__main__":
    main()
