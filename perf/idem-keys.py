#!/usr/bin/env python3
"""Idempotency keys: server memory per remembered key, and the publish rate with and without a
key, on one keep-alive admin connection (the client, plain Python, bounds the rate: compare the
two rates with each other, not with perf/RESULTS.md's loadtest numbers).

    perf/idem-keys.py [N] [--bin target/release/ipush_server]

Starts `ipush_server --cores=1 --storage=memory` on free ports, then
  1. N publishes with ttl=0 and a fresh key each (no message is stored, only the key), and
     reads the server's VmRSS before and after: (after - before) / N bytes per key;
  2. N unicast publishes (ttl default, stored) without a key, then N with a fresh key each,
     to N/100 users, and reports each rate.
"""
import os, socket, subprocess, sys, tempfile, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")

def start(binary, d):
    p = subprocess.Popen([binary, "--cores=1", "--storage=memory", "--client_host=127.0.0.1",
                          "--client_port=0", "--admin_port=0", f"--pid_file={d}/pid",
                          "--log_level=warn", "--idempotency_max_keys=10000000"],
                         stdout=subprocess.PIPE, text=True)
    for line in p.stdout:
        if line.startswith("ipush_server ready"):
            admin = [w for w in line.split() if w.startswith("admin=")][0]
            return p, int(admin.rsplit(":", 1)[1])
    raise RuntimeError("server did not start")

class Admin:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def pub(self, path, body=b"x" * 100):
        self.s.sendall(b"POST %s HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n%s"
                       % (path.encode(), len(body), body))
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0]
                .split(b":")[1])
        while len(rest) < n:
            rest += self.s.recv(65536)
        self.buf = rest[n:]
        status = int(head.split(b" ")[1])
        assert status == 200, (status, head, rest[:n])

def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 100000
    binary = "target/release/ipush_server"
    if "--bin" in sys.argv:
        binary = sys.argv[sys.argv.index("--bin") + 1]
    with tempfile.TemporaryDirectory() as d:
        p, port = start(binary, d)
        try:
            a = Admin(port)
            for i in range(1000):  # warm-up: allocator, the user, the connection
                a.pub(f"/pub?to=warm&from=b&ttl=0&idempotency_key=w{i}")
            before = rss_kib(p.pid)
            for i in range(n):
                a.pub(f"/pub?to=mem{i % 100}&from=b&ttl=0&idempotency_key=key-{i:012d}")
            after = rss_kib(p.pid)
            print(f"keys held: {n}; VmRSS {before} -> {after} KiB: "
                  f"{(after - before) * 1024 / n:.0f} bytes per key")
            users = max(1, n // 100)
            for label, key in (("without a key", False), ("with a fresh key", True)):
                t = time.perf_counter()
                for i in range(n):
                    k = f"&idempotency_key=r{i}" if key else ""
                    a.pub(f"/pub?to={'k' if key else 'p'}{i % users}&from=b{k}")
                dt = time.perf_counter() - t
                print(f"unicast {label}: {n} in {dt:.2f} s = {n / dt:.0f}/s")
        finally:
            p.terminate()
            p.wait(timeout=20)

if __name__ == "__main__":
    main()
