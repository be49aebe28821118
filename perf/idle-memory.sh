#!/usr/bin/env bash
# Server memory per idle /connect stream: start one ipush_server (memory
# storage) on free ports, hold N streams with `loadtest hold`, read the
# server's RSS before and after from /proc, stop the server, summarise.
#
# Environment:
#   N=19000        streams to hold (the per-process fd cap here is 20,000)
#   HOLD=20        seconds to hold them once all are open
#   RATE=5000      new connections per second
#   TRANSPORT=chunked   stream transport: chunked, ws (WebSocket) or sse (loadtest --transport)
#   CODEC=json     message codec: json or msgpack (chunked and ws only; loadtest --codec)
#   OUT=perf/results/idle-memory.json   where the loadtest JSON report goes
#                  (the server's log is kept beside it as *.server.log)
#   SRC=127.0.0.2-127.0.0.9   local source addresses for loadtest --src ("" = none). One
#                  address is enough for ports, but Linux connect() hands out even
#                  ephemeral ports first and gets very slow (seconds of stall) once
#                  those are used up, which at N=19000 stretched the ramp to 10 s.
#   SKIP_BUILD=1   do not run `cargo build --release --workspace`
#   SERVER_ARGS    extra ipush_server flags (e.g. --cores=1), after the defaults
#   The server inherits the environment, so MALLOC_ARENA_MAX=2 etc. apply to it.
#   IPUSH_SERVER / LOADTEST   binaries to use (default: target/release/...)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${N:-19000}
HOLD=${HOLD:-20}
RATE=${RATE:-5000}
TRANSPORT=${TRANSPORT:-chunked}
CODEC=${CODEC:-json}
SRC=${SRC-127.0.0.2-127.0.0.9}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
IPUSH_SERVER=${IPUSH_SERVER:-$TARGET_DIR/release/ipush_server}
LOADTEST=${LOADTEST:-$TARGET_DIR/release/loadtest}
OUT=${OUT:-$ROOT/perf/results/idle-memory.json}
mkdir -p "$(dirname "$OUT")"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ipush-idle.XXXXXX")
SERVER_PID=""

cleanup() {
    # Only the server this script started.
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "idle-memory: $*" >&2; }

# A TCP port on 127.0.0.1 that nothing listens on, below the ephemeral range.
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    log "no free port found"
    return 1
}

# Top-level number of the pretty-printed JSON report (no jq needed).
field() {
    sed -n "s/^  \"$1\": \\(.*\\),\\{0,1\\}\$/\\1/p" "$OUT" | head -n1 | sed 's/,$//'
}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release"
    # --workspace: a plain `cargo build` in the root builds only ipush, not loadtest.
    timeout 1800 cargo build --release --workspace
fi
[[ -x "$IPUSH_SERVER" ]] || { log "missing $IPUSH_SERVER"; exit 1; }
[[ -x "$LOADTEST" ]] || { log "missing $LOADTEST"; exit 1; }

# Both processes need N fds plus a margin; the hard limit is the ceiling.
ulimit -n "$(ulimit -Hn)"

PORT=$(free_port)
APORT=$(free_port)
while [[ "$APORT" == "$PORT" ]]; do APORT=$(free_port); done
mkdir -p "$TMP/data"

log "starting ipush_server on :$PORT (admin :$APORT)"
"$IPUSH_SERVER" --flagfile=conf/default.conf --client_port="$PORT" --admin_port="$APORT" \
    --pid_file="$TMP/ipush.pid" --storage=memory --data_dir="$TMP/data" ${SERVER_ARGS:-} \
    >"$TMP/server.log" 2>&1 &
SERVER_PID=$!

healthy=0
for _ in $(seq 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        log "server exited during startup:"; cat "$TMP/server.log" >&2; exit 1
    fi
    if curl -fsS --max-time 1 "http://127.0.0.1:$APORT/health" >/dev/null 2>&1; then
        healthy=1; break
    fi
    sleep 0.1
done
if [[ $healthy != 1 ]]; then
    log "server not healthy after 10 s:"; tail -n 50 "$TMP/server.log" >&2; exit 1
fi

log "holding $N $TRANSPORT/$CODEC streams for $HOLD s"
LT_RC=0
timeout $((N / RATE + HOLD + 120)) "$LOADTEST" hold --target "127.0.0.1:$PORT" --conns "$N" \
    --rate "$RATE" --hold-secs "$HOLD" --transport "$TRANSPORT" --codec "$CODEC" \
    --pids "$SERVER_PID" ${SRC:+--src "$SRC"} --json >"$OUT" \
    || LT_RC=$?

log "stopping server"
if [[ -f "$TMP/ipush.pid" ]]; then
    kill "$(cat "$TMP/ipush.pid")" 2>/dev/null || true
else
    kill "$SERVER_PID" 2>/dev/null || true
fi
SERVER_RC=0
for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$SERVER_PID" 2>/dev/null; then
    log "server still running 15 s after SIGTERM; killing it"
    kill -9 "$SERVER_PID" 2>/dev/null || true
fi
wait "$SERVER_PID" 2>/dev/null || SERVER_RC=$?
SERVER_PID=""
cp "$TMP/server.log" "${OUT%.json}.server.log" 2>/dev/null || true

if [[ ! -s "$OUT" ]]; then
    log "loadtest produced no report (exit $LT_RC)"; exit 1
fi

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
HELD=$(field held_at_settle)
BEFORE=$(field server_rss_bytes_before)
AFTER=$(field server_rss_bytes_after)
PER=$(field server_rss_bytes_per_stream)
PD=$(field server_private_dirty_bytes_per_stream)
END=$(field server_rss_bytes_end)
PER_END=$(field server_rss_bytes_per_stream_end)
PD_END=$(field server_private_dirty_bytes_per_stream_end)
K_SLAB=$(field kernel_slab_bytes_per_conn)
K_TCP=$(field kernel_tcp_mem_bytes_per_conn)
FAILED=$(field failed)
CPS=$(field connects_per_sec)
P99=$(sed -n '/"connect_latency_us"/,/}/s/^ *"p99": \([0-9]*\).*/\1/p' "$OUT")

echo "Idle-stream memory on $(nproc) cores, Linux $(uname -r), commit ${COMMIT}${DIRTY}:" \
     "ipush_server (--storage=memory) held ${HELD} of ${N} ${TRANSPORT}/${CODEC} /connect streams for ${HOLD} s;" \
     "server RSS went from ${BEFORE} to ${AFTER} bytes, i.e. ${PER} bytes per stream" \
     "(${PD} bytes private dirty per stream; target <= 1536);" \
     "at the end of the hold RSS was ${END} bytes, ${PER_END} bytes per stream (${PD_END} private dirty)." \
     "Kernel, system-wide and counting both ends of each loopback connection: slab ${K_SLAB}" \
     "and TCP buffers ${K_TCP} bytes per connection." \
     "Connects: ${CPS}/s, p99 ${P99} us; ${FAILED} failed." \
     "loadtest exit ${LT_RC}, server exit ${SERVER_RC}; full report in ${OUT#"$ROOT"/}."
exit "$LT_RC"
