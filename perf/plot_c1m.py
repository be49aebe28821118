#!/usr/bin/env python3
"""Charts of a `loadtest ramp --csv` run (perf/c1m.sh): connections vs. memory, and the
connect-latency percentile distribution of `--hist-out`.

    python3 perf/plot_c1m.py RAMP.csv HIST.txt OUT_PREFIX

writes OUT_PREFIX-memory.png and OUT_PREFIX-latency.png. Needs matplotlib
(`pip install matplotlib`); without it, prints that the charts were skipped and exits 0.
"""
import csv
import sys


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 1
    csv_path, hist_path, prefix = sys.argv[1:]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_c1m: matplotlib not installed; charts skipped", file=sys.stderr)
        return 0

    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        print("plot_c1m: empty CSV; charts skipped", file=sys.stderr)
        return 0
    held = [int(r["held"]) for r in rows]
    rss0 = int(rows[0]["server_rss_bytes"]) - int(rows[0]["server_rss_delta_bytes"])
    slab0 = int(rows[0]["slab_bytes"]) - int(rows[0]["slab_delta_bytes"])
    rss = [(int(r["server_rss_bytes"]) - rss0) / 2**30 for r in rows]
    slab = [(int(r["slab_bytes"]) - slab0) / 2**30 for r in rows]
    avail = [int(r["mem_available_bytes"]) / 2**30 for r in rows]
    t = [float(r["t_secs"]) for r in rows]

    fig, ax = plt.subplots(1, 2, figsize=(13, 5))
    ax[0].plot(held, rss, label="server user-space (Σ VmRSS − baseline)")
    ax[0].plot(held, slab, label="kernel Slab − baseline (both socket ends)")
    ax[0].set_xlabel("concurrent streams")
    ax[0].set_ylabel("GiB")
    ax[0].set_title("Memory vs. connections")
    ax[0].grid(True, alpha=0.3)
    ax[0].legend()
    ax[1].plot(t, [h / 1000 for h in held], label="streams held (thousands)")
    ax2 = ax[1].twinx()
    ax2.plot(t, avail, color="tab:red", label="MemAvailable (GiB)")
    ax2.set_ylabel("MemAvailable, GiB")
    ax[1].set_xlabel("seconds")
    ax[1].set_ylabel("thousands of streams")
    ax[1].set_title("Ramp and hold")
    ax[1].grid(True, alpha=0.3)
    lines = ax[1].get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax[1].legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right")
    fig.tight_layout()
    fig.savefig(prefix + "-memory.png", dpi=110)

    # Latency: percentile distribution (value µs, percentile, count) and per-step p50/p99.
    vals, pct = [], []
    for line in open(hist_path):
        parts = line.split()
        if len(parts) == 3 and parts[0].replace(".", "").isdigit():
            q = float(parts[1])
            if q >= 1.0:
                q = 0.999999
            vals.append(int(parts[0]) / 1000)
            pct.append(1 / (1 - q))
    fig, ax = plt.subplots(1, 2, figsize=(13, 5))
    if vals:
        ax[0].plot(pct, vals)
        ax[0].set_xscale("log")
        ticks = [1, 2, 10, 100, 1000, 10000, 100000]
        ax[0].set_xticks(ticks)
        ax[0].set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax[0].set_xlabel("percentile")
    ax[0].set_ylabel("connect latency, ms")
    ax[0].set_title("Connect latency distribution (whole run)")
    ax[0].grid(True, alpha=0.3)
    steps = [r for r in rows if int(r["step_connects"]) > 0]
    ax[1].plot([int(r["held"]) for r in steps], [int(r["lat_p50_us"]) / 1000 for r in steps], label="p50")
    ax[1].plot([int(r["held"]) for r in steps], [int(r["lat_p99_us"]) / 1000 for r in steps], label="p99")
    ax[1].plot([int(r["held"]) for r in steps], [int(r["lat_max_us"]) / 1000 for r in steps], label="max", alpha=0.5)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("concurrent streams")
    ax[1].set_ylabel("connect latency of the step, ms")
    ax[1].set_title("Connect latency as the count climbs")
    ax[1].grid(True, alpha=0.3)
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(prefix + "-latency.png", dpi=110)
    print(f"plot_c1m: wrote {prefix}-memory.png and {prefix}-latency.png", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
