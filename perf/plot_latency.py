#!/usr/bin/env python3
"""Publish -> receive latency percentile charts for perf/vs-nchan.sh (and perf/vs-peers.sh).

Usage: plot_latency.py OUT_DIR

Reads OUT_DIR/<scenario>.<server>.hist (loadtest --hist-out: HdrHistogram percentile
distribution, microseconds) for the scenarios fanout, fanout-half, unicast and unicast-half and
the servers nchan and ipush, and writes OUT_DIR/latency-percentiles.png: one panel per
scenario, latency (log scale) against percentile (x = 1/(1-p), so the tail is spread out).
Needs matplotlib; a missing file leaves its curve out.
"""
import os
import sys


def read_hist(path):
    """(percentiles, values in ms) from a percentile distribution file."""
    ps, vs = [], []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            try:
                v, p = float(parts[0]), float(parts[1])
            except ValueError:
                continue
            if p >= 1.0:
                p = 0.999999
            ps.append(1.0 / (1.0 - p))
            vs.append(v / 1000.0)
    return ps, vs


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_latency: matplotlib is not installed; no chart", file=sys.stderr)
        return 0
    scenarios = ["fanout", "fanout-half", "unicast", "unicast-half"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    drawn = 0
    for ax, name in zip(axes.flat, scenarios):
        for server, style in (("nchan", "--"), ("ipush", "-")):
            path = os.path.join(out, f"{name}.{server}.hist")
            if not os.path.exists(path):
                continue
            ps, vs = read_hist(path)
            if ps:
                ax.plot(ps, vs, style, label=server)
                drawn += 1
        ax.set_title(name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [1, 10, 100, 1000, 10000, 100000]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
        ax.set_xlabel("percentile")
        ax.set_ylabel("publish -> receive (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    if drawn == 0:
        print(f"plot_latency: no .hist files in {out}; no chart", file=sys.stderr)
        return 0
    fig.suptitle("ipush vs nchan, same loadtest, same box (perf/vs-nchan.sh)")
    fig.tight_layout()
    path = os.path.join(out, "latency-percentiles.png")
    fig.savefig(path, dpi=100)
    print(f"plot_latency: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
