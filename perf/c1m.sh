#!/usr/bin/env bash
# C1M on one box: as many concurrent /connect streams as this machine holds, target 1,000,000,
# server and load generator together, held HOLD seconds with zero drops.
#
# The per-process open-file cap (20,000 here, not raisable) forces both sides apart:
#  - the server is a local cluster of NODES ipush nodes, node i on 127.0.0.i (own client,
#    admin and bus ports), --cores=1 each, pinned alternately to CPU 0 and 1 (taskset; the
#    server pins its executor to the first allowed CPU), --storage=memory, and a large
#    --heartbeat_interval_s so heartbeats to a million idle streams do not dominate;
#  - the load is `loadtest ramp --cluster`: one worker process per node (each <= 19,000
#    sockets) that connects only uids that node owns (the server's rendezvous hash, verified:
#    the report's `redirects` must be 0), from its own slice of 127.0.1.1-127.0.1.220.
# It stops opening at the first failure, holds what it has HOLD seconds, and reports server
# user-space memory (sum of the nodes' VmRSS minus their baseline) and kernel memory (Slab,
# sockstat) per connection, a CSV per second, and PNG charts (perf/plot_c1m.py, matplotlib).
#
# Environment:
#   N=1000000   target streams        NODES=55     cluster nodes (N/NODES must be <= 19,000)
#   RATE=5000   connects per second   HOLD=60      seconds to hold
#   CONNECT_TIMEOUT_MS=30000  per-connect deadline (connect -> 200): on 2 saturated cores
#               connects queue for seconds; a timeout counts as a failure and stops the ramp
#   PORT=7100   client port (admin PORT+1, bus PORT+2) on every 127.0.0.i
#   OUT=perf/results/c1m   prefix of the outputs (.json, .csv, .hist, -*.png, -nodes.log)
#   TUNE=1      run perf/tune-os.sh first (root)       SKIP_BUILD=1  no cargo build
#   MAX_SECS=1200  hard bound on the whole run
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${N:-1000000}
NODES=${NODES:-55}
RATE=${RATE:-5000}
CONNECT_TIMEOUT_MS=${CONNECT_TIMEOUT_MS:-30000}
HOLD=${HOLD:-60}
PORT=${PORT:-7100}
MAX_SECS=${MAX_SECS:-1200}
OUT=${OUT:-$ROOT/perf/results/c1m}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
IPUSH_SERVER=${IPUSH_SERVER:-$TARGET_DIR/release/ipush_server}
LOADTEST=${LOADTEST:-$TARGET_DIR/release/loadtest}
mkdir -p "$(dirname "$OUT")"
START=$(date +%s)

log() { echo "c1m: $*" >&2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ipush-c1m.XXXXXX")
PIDS=()
cleanup() {
    # Only the nodes this script started, by pid.
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for _ in $(seq 100); do
        local alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        (( alive )) || break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    cat "$TMP"/n*.log >"$OUT-nodes.log" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release"
    timeout 1800 cargo build --release --workspace
fi
if [[ "${TUNE:-1}" == 1 ]]; then perf/tune-os.sh >&2 || true; fi
ulimit -n "$(ulimit -Hn)"
FD=$(ulimit -n)

per_node=$(( (N + NODES - 1) / NODES ))
if (( per_node > FD - 1000 )); then
    log "N=$N over NODES=$NODES is $per_node streams per node: over the fd cap $FD; raise NODES"
    exit 1
fi
(( NODES <= 254 )) || { log "NODES must be <= 254"; exit 1; }

# ---- memory headroom: ~10.3 KB kernel (both socket ends, measured in RESULTS.md) + ~1.1 KB
# server + ~0.3 KB loadtest per connection, plus ~25 MB per node and ~10 MB per worker.
AVAIL=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) * 1024 ))
PER_CONN=11700
FIXED=$(( NODES * 35 * 1000 * 1000 + 2 * 1000 * 1000 * 1000 ))
FIT=$(( (AVAIL - FIXED) / PER_CONN ))
log "MemAvailable $((AVAIL / 1000000)) MB; at ~$PER_CONN B per connection (kernel both ends +" \
    "server + loadtest) and $((FIXED / 1000000)) MB fixed/margin, about $FIT connections fit"
if (( FIT < N )); then
    log "memory headroom is below N=$N: the ramp will show where it stops (target kept)"
fi

# ---- cluster spec: node i = 127.0.0.i
SPEC=""
for i in $(seq 1 "$NODES"); do
    SPEC+="${SPEC:+,}n$i=127.0.0.$i:$PORT:$((PORT + 1)):$((PORT + 2))"
done
for i in $(seq 1 "$NODES"); do
    if (exec 3<>"/dev/tcp/127.0.0.$i/$PORT") 2>/dev/null; then
        log "127.0.0.$i:$PORT is already in use"; exit 1
    fi
done

log "starting $NODES nodes (127.0.0.1-127.0.0.$NODES, ports $PORT-$((PORT + 2)))"
for i in $(seq 1 "$NODES"); do
    mkdir -p "$TMP/d$i"
    taskset -c $(( (i - 1) % $(nproc) )) "$IPUSH_SERVER" --node="n$i" --nodes="$SPEC" \
        --client_host="127.0.0.$i" --admin_host="127.0.0.$i" \
        --client_port="$PORT" --admin_port=$((PORT + 1)) --bus_port=$((PORT + 2)) \
        --storage=memory --cores=1 --heartbeat_interval_s=3600 --log_level=warn \
        --pid_file="$TMP/n$i.pid" --data_dir="$TMP/d$i" ${SERVER_ARGS:-} \
        >"$TMP/n$i.log" 2>&1 &
    PIDS+=($!)
done
for i in $(seq 1 "$NODES"); do
    ok=0
    for _ in $(seq 300); do
        if curl -fsS --max-time 1 "http://127.0.0.$i:$((PORT + 1))/health" >/dev/null 2>&1; then ok=1; break; fi
        kill -0 "${PIDS[$((i - 1))]}" 2>/dev/null || break
        sleep 0.1
    done
    (( ok )) || { log "node n$i not healthy:"; tail -n 20 "$TMP/n$i.log" >&2; exit 1; }
done
for _ in $(seq 60); do
    down=$(curl -fsS --max-time 2 "http://127.0.0.1:$((PORT + 1))/health" | grep -o '"down"' | wc -l || true)
    [[ "$down" == 0 ]] && break
    sleep 0.5
done
log "all nodes healthy; peers down as seen by n1: ${down:-?}"
# Ownership spot check: /shard of a few uids from two nodes agree (loadtest's own hash is
# checked by the run itself: a wrong owner costs a 303 and shows as redirects > 0).
for k in 1 2 3; do
    a=$(curl -fsS "http://127.0.0.1:$((PORT + 1))/shard?uid=c$k")
    b=$(curl -fsS "http://127.0.0.$NODES:$((PORT + 1))/shard?uid=c$k")
    [[ "$a" == "$b" ]] || { log "/shard disagrees for c$k: $a vs $b"; exit 1; }
done

PIDLIST=$(IFS=,; echo "${PIDS[*]}")
SLAB0=$(( $(awk '/^Slab:/ {print $2}' /proc/meminfo) * 1024 ))
LEFT=$(( MAX_SECS - ($(date +%s) - START) - 60 ))
log "ramp to $N at $RATE/s, hold $HOLD s (bound ${LEFT}s)"
# The server's own count while it runs: Σ user.user_number of /stats over the nodes, every 15 s.
poll_users() {
    local t0 i sum v
    t0=$(date +%s)
    for _ in $(seq $((LEFT / 15 + 2))); do
        sleep 15
        # All nodes at once (one at a time, a loaded box took minutes per round).
        for i in $(seq 1 "$NODES"); do
            curl -fsS --max-time 10 "http://127.0.0.$i:$((PORT + 1))/stats" 2>/dev/null \
                | grep -o '"user_number":[0-9]*' | cut -d: -f2 >"$TMP/users.$i" &
        done
        wait
        sum=0; ans=0
        for i in $(seq 1 "$NODES"); do
            v=$(cat "$TMP/users.$i" 2>/dev/null || true)
            [[ -n "$v" ]] && ans=$((ans + 1))
            sum=$((sum + ${v:-0}))
        done
        echo "$(( $(date +%s) - t0 )) $sum ($ans of $NODES nodes answered)" >>"$OUT-server-users.log"
    done
}
: >"$OUT-server-users.log"
poll_users &
POLLER=$!
LT_RC=0
timeout "$((LEFT + 30))" "$LOADTEST" ramp --cluster "$SPEC" --conns "$N" --rate "$RATE" \
    --max-failures 1 --hold-secs "$HOLD" --connect-timeout-ms "$CONNECT_TIMEOUT_MS" --uid-prefix c --src 127.0.1.1-127.0.1.220 \
    --pids "$PIDLIST" --csv "$OUT.csv" --hist-out "$OUT.hist" --timeout-secs "$LEFT" \
    --json >"$OUT.json" 2>"$OUT.log" || LT_RC=$?
tail -n 4 "$OUT.log" >&2
kill "$POLLER" 2>/dev/null || true
log "server-side online users (Σ /stats user.user_number, s since ramp start): max" \
    "$(sort -k2 -n "$OUT-server-users.log" | tail -n1 | cut -d' ' -f2-) ($OUT-server-users.log)"

# Server's own count at the end, summed over nodes (streams still open after the hold).
log "loadtest exit $LT_RC"
if command -v python3 >/dev/null; then
    python3 perf/plot_c1m.py "$OUT.csv" "$OUT.hist" "$OUT" >&2 || log "charts skipped"
fi

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
python3 - "$OUT.json" "$NODES" "$N" "$RATE" "$HOLD" "$COMMIT$DIRTY" <<'EOF' || true
import json, sys
j = json.load(open(sys.argv[1]))
m = j["memory"]; pk = m["peak"]; end = m["end"]; base = m["baseline"]
f = j["failures"]
print(f"c1m: commit {sys.argv[6]}, {sys.argv[2]} nodes, target {sys.argv[3]}, rate {sys.argv[4]}/s, hold {sys.argv[5]} s")
print(f"c1m: held at end of hold {j['held_at_end']:,} (peak {pk['held']:,}); attempted {j['attempted']:,}; "
      f"failed {j['failed']} {json.dumps(f)} errors {json.dumps(j['errors'])} status {json.dumps(j['status_codes'])}; redirects {j['redirects']}")
print(f"c1m: ramp {j['ramp_secs']:.1f} s, {j['connects_per_sec']:.0f} connects/s; connect latency us {json.dumps(j['connect_latency_us'])}")
print(f"c1m: server RSS {base['server_rss_bytes']:,} -> {end['server_rss_bytes']:,} B; per conn {end['server_rss_per_conn_bytes']} B "
      f"(private dirty {end['server_private_dirty_per_conn_bytes']} B)")
print(f"c1m: kernel Slab {base['kernel_slab_bytes']:,} -> {end['kernel_slab_bytes']:,} B; per conn (both ends) {end['kernel_slab_per_conn_bytes']} B; "
      f"SUnreclaim per conn {end['kernel_sunreclaim_per_conn_bytes']} B; MemAvailable at end {end['mem_available_bytes']:,} B")
print(f"c1m: first failure {m['first_failure']}")
EOF
log "outputs: $OUT.{json,csv,hist,log} $OUT-*.png $OUT-nodes.log; total $(( $(date +%s) - START )) s"
exit "$LT_RC"
