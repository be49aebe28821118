#!/usr/bin/env bash
# Server RSS per departed uid: start one ipush_server on free ports, let ROUNDS x N distinct
# uids each open a /connect stream and leave (at most CONC open at once), wait after each
# round until the resident-users gauge (ipush_users_resident) is back to 0, and read the
# server's RSS from /proc. A warm-up round first fills the allocator's pools; the growth per
# departed uid is (RSS after the last round - RSS after the warm-up) / (uids of the measured
# rounds whose connect got its 200).
#
# Environment:
#   N=20000        distinct uids per round (each connects once)
#   ROUNDS=3       measured rounds after the warm-up round
#   CONC=1000      streams open at once (the per-process fd cap here is 20,000)
#   IDLE=1         --user_idle_s of the server; 0 = eviction off (then the script does not
#                  wait for the gauge and reports the growth per uid without eviction)
#   STORAGE=memory --storage of the server (memory or embedded)
#   SKIP_BUILD=1   do not run `cargo build --release`
#   SERVER_ARGS    extra ipush_server flags, after the defaults
#   IPUSH_SERVER   binary to use (default: target/release/ipush_server)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${N:-20000}
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-1000}
IDLE=${IDLE:-1}
STORAGE=${STORAGE:-memory}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
IPUSH_SERVER=${IPUSH_SERVER:-$TARGET_DIR/release/ipush_server}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ipush-evict.XXXXXX")
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

log() { echo "user-evict: $*" >&2; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release"
    timeout 1800 cargo build --release --bin ipush_server
fi
[[ -x "$IPUSH_SERVER" ]] || { log "missing $IPUSH_SERVER"; exit 1; }
ulimit -n "$(ulimit -Hn)"

mkdir -p "$TMP/data"
"$IPUSH_SERVER" --flagfile=conf/default.conf --client_port=0 --admin_port=0 --bus_port=0 \
    --pid_file="$TMP/ipush.pid" --storage="$STORAGE" --data_dir="$TMP/data" \
    --user_idle_s="$IDLE" --log_level=warn ${SERVER_ARGS:-} >"$TMP/ready" 2>"$TMP/server.log" &
SERVER_PID=$!
for _ in $(seq 300); do
    grep -q '^ipush_server ready' "$TMP/ready" 2>/dev/null && break
    kill -0 "$SERVER_PID" 2>/dev/null || { log "server exited:"; cat "$TMP/server.log" >&2; exit 1; }
    sleep 0.1
done
READY=$(grep '^ipush_server ready' "$TMP/ready") || { log "server not ready in 30 s"; exit 1; }
CPORT=$(sed -n 's/.* client=[^ ]*:\([0-9]*\).*/\1/p' <<<"$READY")
APORT=$(sed -n 's/.* admin=[^ ]*:\([0-9]*\).*/\1/p' <<<"$READY")
log "server pid $SERVER_PID, client :$CPORT, admin :$APORT, --user_idle_s=$IDLE, --storage=$STORAGE"

# The churn client and the measurements, in Python (stdlib only).
RC=0
python3 - "$SERVER_PID" "$CPORT" "$APORT" "$N" "$ROUNDS" "$CONC" "$IDLE" <<'EOF' || RC=$?
import asyncio, sys, time, urllib.request

pid, cport, aport, n, rounds, conc, idle = sys.argv[1:8]
cport, aport, n, rounds, conc, idle = int(cport), int(aport), int(n), int(rounds), int(conc), int(idle)

def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

def metric(name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{aport}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total

async def one(uid, sem, failed):
    async with sem:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", cport)
            w.write(f"GET /connect?uid={uid}&password=pw HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            if not head.startswith(b"HTTP/1.1 200"):
                failed.append(head[:40])
            w.close()
        except Exception as e:
            failed.append(repr(e))

async def churn(prefix):
    sem, failed = asyncio.Semaphore(conc), []
    await asyncio.gather(*(one(f"{prefix}{i}", sem, failed) for i in range(n)))
    return failed

def settle(limit=300):
    t0 = time.time()
    while time.time() - t0 < limit:
        if metric("ipush_user_number") == 0 and (idle == 0 or metric("ipush_users_resident") == 0):
            return time.time() - t0
        time.sleep(0.2)
    raise SystemExit("gauges did not settle")

start = rss()
print(f"rss at start: {start} B", flush=True)
rows, departed = [], 0
for rnd in range(rounds + 1):
    t0 = time.time()
    failed = asyncio.run(churn(f"r{rnd}u"))
    took = time.time() - t0
    peak_resident = metric("ipush_users_resident")
    waited = settle()
    time.sleep(1.5)  # one more housekeeping tick: the sweep's shrink runs after its last eviction
    r = rss()
    rows.append(r)
    if rnd > 0:
        departed += n - len(failed)
    print(f"round {rnd}: {n} uids in {took:.1f} s ({len(failed)} failed), resident just after "
          f"{peak_resident:.0f}, settled in {waited:.1f} s, rss {r} B, resident now "
          f"{metric('ipush_users_resident'):.0f}, evicted total {metric('ipush_users_evicted'):.0f}",
          flush=True)
    if failed:
        print("  first failures:", failed[:3])
per = (rows[-1] - rows[0]) / max(departed, 1)
print(f"RESULT: rss after warm-up {rows[0]} B, after {rounds} more rounds {rows[-1]} B: "
      f"{per:.1f} B per departed uid ({departed} connected and left; target < 64); warm-up round vs start: "
      f"{(rows[0] - start) / n:.1f} B per uid")
EOF
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo "uncommitted")
DIRTY=$(git status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
log "commit ${COMMIT}${DIRTY}, $(nproc) cores, Linux $(uname -r), binary $IPUSH_SERVER"
exit $RC
