#!/usr/bin/env bash
# Server memory per stored offline message (issue 12): start one ipush_server
# (--storage=embedded) on free ports with its own data dir, publish N offline
# messages of BODY bytes round-robin to USERS users through `POST /pub/batch`,
# read the server's RSS from /proc while it serves them, stop it (SIGTERM),
# start it again on the same data dir and read RSS after recovery. Prints the
# bytes per message of both, the disk bytes per message and the start-up time,
# and checks that one user's messages are all listed (`GET /msg`) after the
# restart.
#
# Environment:
#   N=1000000      messages to publish (bounded: at most MAX_SECS of publishing)
#   USERS=100000   users they go to, round-robin (each gets N/USERS)
#   BODY=100       body bytes
#   LINES=1000     lines per /pub/batch request
#   MAX_SECS=600   stop publishing after this long (the run then reports fewer messages)
#   SERVER_ARGS    extra ipush_server flags after the defaults (default: --cores=2)
#   IPUSH_SERVER   binary (default: target/release/ipush_server)
#   LOG=perf/results/store-memory.server.log   where the server's log (both runs) is kept
#   The server inherits the environment, so MALLOC_ARENA_MAX=2 etc. apply to it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${N:-1000000}
USERS=${USERS:-100000}
BODY=${BODY:-100}
LINES=${LINES:-1000}
MAX_SECS=${MAX_SECS:-600}
SERVER_ARGS=${SERVER_ARGS:---cores=2}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
IPUSH_SERVER=${IPUSH_SERVER:-$TARGET_DIR/release/ipush_server}
LOG=${LOG:-$ROOT/perf/results/store-memory.server.log}
[[ -x "$IPUSH_SERVER" ]] || { echo "store-memory: missing $IPUSH_SERVER" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ipush-store-memory.XXXXXX")
SERVER_PID=""

stop_server() {
    # Only the server this script started.
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
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "store-memory: $*" >&2; }

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

rss() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$SERVER_PID/status"; }

PORT=$(free_port)
APORT=$(free_port)
while [[ "$APORT" == "$PORT" ]]; do APORT=$(free_port); done
mkdir -p "$TMP/data"

# Starts the server; sets STARTUP_MS to the milliseconds until /health answered.
start_server() {
    local t0 t1
    t0=$(date +%s%N)
    "$IPUSH_SERVER" --flagfile=conf/default.conf --client_port="$PORT" --admin_port="$APORT" \
        --pid_file="$TMP/ipush.pid" --storage=embedded --data_dir="$TMP/data" \
        --max_batch_lines="$LINES" $SERVER_ARGS >>"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1200); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            log "server exited during startup:"; tail -n 30 "$TMP/server.log" >&2; exit 1
        fi
        if curl -fsS --max-time 1 "http://127.0.0.1:$APORT/health" >/dev/null 2>&1; then
            t1=$(date +%s%N)
            STARTUP_MS=$(((t1 - t0) / 1000000))
            return 0
        fi
        sleep 0.1
    done
    log "server not healthy after 120 s"; exit 1
}

# RSS once it has stopped moving (allocator and page-cache noise settle within a second).
settled_rss() {
    local a b
    a=$(rss)
    for _ in $(seq 20); do
        sleep 0.5
        b=$(rss)
        [[ $((b > a ? b - a : a - b)) -lt 65536 ]] && break
        a=$b
    done
    echo "$b"
}

start_server
BASE=$(settled_rss)
log "server up (pid $SERVER_PID), RSS $BASE; publishing $N x $BODY B to $USERS users"

PUBLISHED=$(timeout $((MAX_SECS + 60)) python3 perf/tools/publish-offline.py "$APORT" "$N" "$USERS" "$BODY" "$LINES" "$MAX_SECS" sm)
SERVING=$(settled_rss)
DISK=$(du -sb "$TMP/data" | cut -f1)
log "published $PUBLISHED; RSS $SERVING; disk $DISK bytes"

stop_server
start_server
RESTARTED=$(settled_rss)
PER_USER=$((PUBLISHED / USERS))
LISTED=$(curl -fsS "http://127.0.0.1:$APORT/msg?uid=sm7" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["result"]))')
stop_server
mkdir -p "$(dirname "$LOG")"
cp "$TMP/server.log" "$LOG"

COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
echo "Stored offline messages on $(nproc) cores, Linux $(uname -r), commit ${COMMIT}${DIRTY}," \
     "$(basename "$IPUSH_SERVER") $SERVER_ARGS --storage=embedded: $PUBLISHED messages of $BODY B" \
     "to $USERS users. RSS empty $BASE B; serving them $SERVING B," \
     "$(((SERVING - BASE) / PUBLISHED)) B per message; after a restart $RESTARTED B," \
     "$(((RESTARTED - BASE) / PUBLISHED)) B per message (start-up ${STARTUP_MS} ms)." \
     "Disk $DISK B, $((DISK / PUBLISHED)) B per message." \
     "User sm7 lists $LISTED messages after the restart (expected $PER_USER)."
[[ "$LISTED" == "$PER_USER" ]]
