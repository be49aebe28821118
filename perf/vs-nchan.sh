#!/usr/bin/env bash
# perf/vs-nchan.sh — perf/vs-peers.sh with nchan and ipush only (PEERS="nchan ipush"), results
# in perf/results/vs-nchan/, plus the latency chart latency-percentiles.png
# (perf/plot_latency.py, needs matplotlib). Every knob of vs-peers.sh applies (N, M, HOLD,
# UNICAST_USERS, UNICAST_MSGS, PUB_CONNS, FPUB_CONNS, WINDOW, NCHAN_WORKERS, IPUSH_CORES, ...).
#
#   perf/vs-nchan.sh                                   # hold fanout unicast
#   N=2000 M=200 UNICAST_MSGS=20000 perf/vs-nchan.sh   # quick
#   SCENARIOS="unicast" PUB_CONNS=64 perf/vs-nchan.sh  # some scenarios
#
# The scenario once called `hold` (N streams opened and held: connect rate and latency,
# RSS/stream) is vs-peers.sh's `connect`; `hold` is still accepted.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCENARIOS=${SCENARIOS:-hold fanout unicast}
SCENARIOS=${SCENARIOS//hold/connect}
export SCENARIOS PEERS="nchan ipush" OUT=${OUT:-$ROOT/perf/results/vs-nchan}
export HOLD=${HOLD:-5}
"$ROOT/perf/vs-peers.sh"
python3 "$ROOT/perf/plot_latency.py" "$OUT" || true
