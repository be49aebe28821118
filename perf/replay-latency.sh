#!/usr/bin/env bash
# perf/replay-latency.sh — issue 12: how long a client waits for its backlog. One ipush_server
# (--storage=embedded, free ports, its own data dir): USERS offline users get MSGS messages of
# BODY bytes each (`POST /pub/batch`), the server is restarted (SIGTERM, start again: the index
# is rebuilt from the files), then SAMPLE users connect one at a time and the time from the TCP
# connect to the last replayed message (`"s":MSGS}`) is measured:
#   warm  the page cache as the restart left it (recovery read the files);
#   cold  after `sync; echo 3 > /proc/sys/vm/drop_caches` (root), other users of the same set.
# Prints p50/p90/p99/max of both, start-up time, RSS and disk per message. Bounded: publishing
# stops after MAX_SECS, every connect times out after 10 s.
#
#   perf/replay-latency.sh                                  # 10,000 users x 100 messages
#   USERS=1000 MSGS=100 SAMPLE=200 perf/replay-latency.sh    # quick
#
# Environment: USERS=10000 MSGS=100 BODY=100 SAMPLE=1000 LINES=1000 MAX_SECS=900
#   SERVER_ARGS (default --cores=2), IPUSH_SERVER (default target/release/ipush_server).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
USERS=${USERS:-10000}
MSGS=${MSGS:-100}
BODY=${BODY:-100}
SAMPLE=${SAMPLE:-1000}
LINES=${LINES:-1000}
MAX_SECS=${MAX_SECS:-900}
SERVER_ARGS=${SERVER_ARGS:---cores=2}
IPUSH_SERVER=${IPUSH_SERVER:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ipush_server}
[[ -x "$IPUSH_SERVER" ]] || { echo "replay-latency: missing $IPUSH_SERVER (cargo build --release)" >&2; exit 1; }
(( SAMPLE * 2 <= USERS )) || { echo "replay-latency: SAMPLE*2 must be <= USERS (warm and cold use different users)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ipush-replay.XXXXXX")
SERVER_PID=""
stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 300); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
cleanup() {
    stop_server
    # The compactions, with the elapsed ms at the end of each step (to set beside the slowest
    # publish's time).
    grep -h "store snapshot written" "$TMP/server.log" 2>/dev/null | sed 's/^/replay-latency: /' >&2 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "replay-latency: $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PORT=$(free_port)
APORT=$(free_port)
mkdir -p "$TMP/data"
start_server() {
    local t0=$(date +%s%N)
    "$IPUSH_SERVER" --flagfile=conf/default.conf --client_host=127.0.0.1 --client_port="$PORT" \
        --admin_port="$APORT" --bus_port="$(free_port)" --pid_file="$TMP/ipush.pid" \
        --storage=embedded --data_dir="$TMP/data" --max_batch_lines="$LINES" $SERVER_ARGS \
        >>"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 3000); do
        kill -0 "$SERVER_PID" 2>/dev/null || { log "server exited:"; tail -n 20 "$TMP/server.log" >&2; exit 1; }
        if curl -fsS --max-time 1 "http://127.0.0.1:$APORT/health" >/dev/null 2>&1; then
            STARTUP_MS=$((($(date +%s%N) - t0) / 1000000))
            return 0
        fi
        sleep 0.1
    done
    log "server not healthy after 300 s"; exit 1
}
# In whole bytes: awk's print would write 2.5e+09 past a few GB, which bash cannot add.
rss() { awk '/^VmRSS:/ {printf "%.0f\n", $2 * 1024}' "/proc/$SERVER_PID/status"; }

start_server
BASE=$(rss)
log "publishing $MSGS x $BODY B to each of $USERS users"
PUBLISHED=$(python3 perf/tools/publish-offline.py "$APORT" $((USERS * MSGS)) "$USERS" "$BODY" "$LINES" "$MAX_SECS" rl)
(( PUBLISHED == USERS * MSGS )) || { log "only $PUBLISHED of $((USERS * MSGS)) published within $MAX_SECS s"; exit 1; }
SERVING=$(rss)
DISK=$(du -sb "$TMP/data" | cut -f1)
stop_server
start_server
RESTARTED=$(rss)
log "restarted in $STARTUP_MS ms"

measure() { # FIRST_USER LABEL
    python3 - "$PORT" "$1" "$SAMPLE" "$MSGS" "$2" <<'EOF'
import socket, sys, time
port, first, n, msgs, label = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
last = f'"s":{msgs}}}'.encode()
lat = []
for u in range(first, first + n):
    t0 = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET /connect?uid=rl{u}&password=x HTTP/1.1\r\nHost: b\r\n\r\n".encode())
    buf = b""
    while last not in buf:
        chunk = s.recv(1 << 16)
        if not chunk:
            sys.exit(f"rl{u}: stream ended before seq {msgs}: {buf[:300]!r}")
        buf += chunk
    lat.append((time.perf_counter() - t0) * 1000)
    got = buf.count(b'"s":')
    if got < msgs:
        sys.exit(f"rl{u}: {got} messages replayed, expected {msgs}")
    s.close()
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"{label}: {n} users x {msgs} messages, connect -> last replayed message: "
      f"p50 {q(0.5):.2f} ms, p90 {q(0.9):.2f} ms, p99 {q(0.99):.2f} ms, max {lat[-1]:.2f} ms")
EOF
}
WARM=$(measure 0 warm)
sync
if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
    COLD=$(measure "$SAMPLE" "cold (page cache dropped)")
else
    COLD="cold: not measured (drop_caches needs root)"
fi
stop_server

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
echo "Replay latency on $(nproc) cores, Linux $(uname -r), commit ${COMMIT}${DIRTY}, $(basename "$IPUSH_SERVER")" \
     "$SERVER_ARGS --storage=embedded: $PUBLISHED messages of $BODY B to $USERS users ($MSGS each)." \
     "RSS serving $(((SERVING - BASE) / PUBLISHED)) B per message, after the restart" \
     "$(((RESTARTED - BASE) / PUBLISHED)) B; disk $((DISK / PUBLISHED)) B per message; start-up $STARTUP_MS ms."
echo "$WARM"
echo "$COLD"
