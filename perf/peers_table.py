#!/usr/bin/env python3
"""The table of perf/vs-peers.sh: one row per metric, one column per server, and ipush's
ratio to each other server (>1 = ipush better). Reads OUT/<scenario>.<server>.json.

    perf/peers_table.py perf/results/vs-peers nchan centrifugo ipush
"""
import json
import os
import sys


def main():
    out, peers = sys.argv[1], sys.argv[2:] or ["nchan", "centrifugo", "ipush"]

    def load(n, s):
        try:
            with open(os.path.join(out, f"{n}.{s}.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    others = [p for p in peers if p != "ipush"]
    head = ["metric"] + peers + ([f"ipush/{p}" for p in others] if "ipush" in peers else [])
    rows = []

    def row(label, n, f, fmt="{:,.0f}", higher=True):
        vals = {}
        for s in peers:
            d = load(n, s)
            try:
                vals[s] = f(d) if d else None
            except (KeyError, TypeError):
                vals[s] = None
        show = lambda v: "-" if v is None else fmt.format(v)
        r = [label] + [show(vals[s]) for s in peers]
        if "ipush" in peers:
            for p in others:
                a, b = vals.get(p), vals.get("ipush")
                r.append(f"{(b / a if higher else a / b):.2f}x" if a and b else "")
        rows.append(r)

    lat = lambda k: (lambda d: d["delivery"]["latency_us"].get(k))
    clat = lambda k: (lambda d: d["connect"]["latency_us"].get(k))
    bad = lambda d: d["delivery"]["lost"] + d["delivery"]["duplicated"] + d["delivery"]["out_of_order"] \
        + d["delivery"]["misdelivered"] + d["delivery"]["seq_errors"]
    row("connect: streams connected", "connect", lambda d: d["connect"]["connected"])
    row("connect: connects/s", "connect", lambda d: d["connect"]["per_sec"])
    row("connect: p50 (us)", "connect", clat("p50"), higher=False)
    row("connect: p99 (us)", "connect", clat("p99"), higher=False)
    row("connect: server RSS/stream (B)", "connect", lambda d: d["memory"]["rss_per_stream"], higher=False)
    row("burst: streams connected", "burst", lambda d: d["connect"]["connected"])
    row("burst: p50 (us)", "burst", clat("p50"), higher=False)
    row("burst: p99 (us)", "burst", clat("p99"), higher=False)
    row("fanout: delivered msgs/s", "fanout", lambda d: d["delivery"]["per_sec"])
    row("fanout: publishes/s", "fanout", lambda d: d["publish"]["per_sec"])
    row("fanout: lost+dup+ooo+misdelivered+seq", "fanout", bad, higher=False)
    row("fanout: p99 (us)", "fanout", lat("p99"), higher=False)
    row("fanout@half: rate (pub/s)", "fanout-half", lambda d: d["rate"])
    row("fanout@half: p50 (us)", "fanout-half", lat("p50"), higher=False)
    row("fanout@half: p99 (us)", "fanout-half", lat("p99"), higher=False)
    row("fanout@half: lost+dup+ooo+misdelivered+seq", "fanout-half", bad, higher=False)
    row("unicast: publishes/s", "unicast", lambda d: d["publish"]["per_sec"])
    row("unicast: lost+dup+ooo+misdelivered+seq", "unicast", bad, higher=False)
    row("unicast: p99 (us)", "unicast", lat("p99"), higher=False)
    row("unicast@half: rate (pub/s)", "unicast-half", lambda d: d["rate"])
    row("unicast@half: p50 (us)", "unicast-half", lat("p50"), higher=False)
    row("unicast@half: p99 (us)", "unicast-half", lat("p99"), higher=False)
    row("unicast@half: lost+dup+ooo+misdelivered+seq", "unicast-half", bad, higher=False)
    rows = [r for r in rows if any(c != "-" for c in r[1 : 1 + len(peers)])]
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(head)) + " |")
    print("|" + "|".join("-" * (x + 2) for x in w) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
    print("(ratios: >1 = ipush better; an error count of 0 on both sides gives no ratio)")


if __name__ == "__main__":
    main()
