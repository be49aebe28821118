#!/usr/bin/env bash
# perf/pipeline-bench.sh — one keep-alive admin connection publishing (issue #15), with wrk:
#   pub    DEPTH pipelined `POST /pub?to=U` (100-byte bodies) written at once, the next DEPTH
#          once all are answered (wrk's pipelining, perf/tools/pipeline.lua); nchan gets the
#          same requests on `POST /pub/<channel>` (one channel per user) in the same run
#   batch  BATCH_DEPTH pipelined `POST /pub/batch` of LINES lines each (ipush only)
# Each ipush run is a fresh server (release build, conf/default.conf, --storage=embedded, its
# own data dir and ports): the store grows by millions of unacked messages per run, and a
# grown store spends runs compacting. Users have no stream: every message is stored.
#
#   perf/pipeline-bench.sh                     # RUNS=5 SECS=8 DEPTH=100 LINES=1000 USERS=1000
#   RUNS=1 MODES=batch perf/pipeline-bench.sh  # quick
#   PEERS=ipush perf/pipeline-bench.sh         # without nchan
# Prints one line per run (messages/s, server CPU µs per message) and the medians.
set -euo pipefail

RUNS=${RUNS:-5}
SECS=${SECS:-8}
DEPTH=${DEPTH:-100}
BATCH_DEPTH=${BATCH_DEPTH:-4}
LINES=${LINES:-1000}
USERS=${USERS:-1000}
MODES=${MODES:-pub batch}
PEERS=${PEERS:-nchan ipush}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVER=${SERVER:-$ROOT/target/release/ipush_server}
LUA=$ROOT/perf/tools/pipeline.lua
peer() { [[ " $PEERS " == *" $1 "* ]]; }
mode() { [[ " $MODES " == *" $1 "* ]]; }

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >&2
if peer nchan && { ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; }; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx libnginx-mod-nchan >&2
fi
[ -n "${NO_BUILD:-}" ] || (cd "$ROOT" && cargo build --release -p ipush --bin ipush_server >&2)

# shellcheck source=perf/lib.sh
source "$ROOT/perf/lib.sh"
perf_workdir pipeline-bench

# utime + stime of the processes in $1 (comma-separated pids), in clock ticks.
ticks() {
    local t=0 p
    for p in ${1//,/ }; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
# Runs wrk against $1 with script args $2...; prints "<requests/s> <non-2xx+errors>".
run_wrk() {
    local url=$1
    shift
    wrk -t1 -c1 -d"${SECS}s" -s "$LUA" "$url" -- "$@" >"$WORK/wrk.out"
    local rps errs
    rps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.out")
    errs=$(awk '/^requests / {gsub(",", ""); print $5 + $7 + $9 + $11 + $13}' "$WORK/wrk.out")
    echo "$rps ${errs:-0}"
}
# One measured run against pids $1 at $2: prints "<messages/s> <µs CPU per message> <errors>".
measure() {
    local pids=$1 url=$2 per=$3
    shift 3
    local a b out rps errs
    a=$(ticks "$pids")
    out=$(run_wrk "$url" "$@")
    b=$(ticks "$pids")
    rps=${out% *}
    errs=${out#* }
    python3 - "$rps" "$per" "$((b - a))" "$SECS" "$errs" <<'EOF'
import os, sys
rps, per, ticks, secs, errs = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
msgs = rps * per
cpu = ticks / os.sysconf("SC_CLK_TCK")
print(f"{msgs:.0f} {cpu / (msgs * secs) * 1e6:.1f} {errs}")
EOF
}

start_ipush() {
    local dir=$WORK/ipush-$1
    rm -rf "$dir"
    mkdir -p "$dir"
    CPORT=$(free_port)
    APORT=$(free_port)
    "$SERVER" --flagfile="$ROOT/conf/default.conf" --data_dir="$dir/data" --pid_file="$dir/pid" \
        --client_port="$CPORT" --admin_port="$APORT" --auth=none >"$dir/log" 2>&1 &
    IPUSH_PID=$!
    PIDS+=("$IPUSH_PID")
    wait_port "$APORT"
}
stop_ipush() {
    kill "$IPUSH_PID"
    for _ in $(seq 100); do kill -0 "$IPUSH_PID" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$IPUSH_PID" 2>/dev/null || true
}

if peer nchan && mode pub; then
    start_nchan 2 "$WORK/nginx.log"
fi

echo "# $(date -u +%FT%TZ) $(git -C "$ROOT" rev-parse --short HEAD) runs=$RUNS secs=$SECS depth=$DEPTH lines=$LINES×$BATCH_DEPTH users=$USERS"
echo "# what run messages/s server-µs/msg errors"
declare -A ALL
for r in $(seq "$RUNS"); do
    if mode pub; then
        if peer nchan; then
            read -r m c e < <(measure "$NCHAN_PIDS" "http://127.0.0.1:$NPORT" 1 nchan "$DEPTH" "$USERS")
            echo "nchan-pub $r $m $c $e"
            ALL[nchan-pub]+="$m "
        fi
        if peer ipush; then
            start_ipush "pub$r"
            read -r m c e < <(measure "$IPUSH_PID" "http://127.0.0.1:$APORT" 1 ipush "$DEPTH" "$USERS")
            echo "ipush-pub $r $m $c $e"
            ALL[ipush-pub]+="$m "
            stop_ipush
        fi
    fi
    if mode batch && peer ipush; then
        start_ipush "batch$r"
        read -r m c e < <(measure "$IPUSH_PID" "http://127.0.0.1:$APORT" "$LINES" batch "$BATCH_DEPTH" "$USERS" "$LINES")
        echo "ipush-batch $r $m $c $e"
        ALL[ipush-batch]+="$m "
        stop_ipush
    fi
done
for k in "${!ALL[@]}"; do
    python3 -c 'import statistics, sys; v = [float(x) for x in sys.argv[2:]]; print(f"median {sys.argv[1]} {statistics.median(v):.0f}/s (min {min(v):.0f}, max {max(v):.0f})")' "$k" ${ALL[$k]}
done
