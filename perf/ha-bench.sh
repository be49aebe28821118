#!/usr/bin/env bash
# perf/ha-bench.sh — issue 13's benchmark: the dynamic cluster (--storage=scylla, no --nodes)
# of three nodes on 127.0.0.1-3 sharing one keyspace of the local Cassandra/ScyllaDB, release
# build, --cores=1 each (a 2-core box), the default --member_timeout_ms=3000. Bounded (a few
# minutes); its own keyspaces, dropped at the end; stops only what it started.
#
#   bash cql/cassandra/start.sh && perf/ha-bench.sh
#   USERS=300 MSGS=20000 perf/ha-bench.sh        # smaller
#
# Under continuous publishing (PUBS keep-alive connections through node 1, USERS users):
#   crash   kill -9 of n3: time to the first and to the last successful publish for n3's users
#   join    n3 started again: slots it takes back, time until the slots settle
#   leave   SIGTERM to n2: its exit status and time, publishes refused meanwhile (target 0)
#   check   every publish answered 200 stored exactly once, seqs contiguous (read back by /msg)
# then loadtest unicast (MSGS publishes) through node 1 of the dynamic cluster and of a static
# --nodes cluster on the same database: the throughput cost of the dynamic routing and fencing.
# ROUNDS=N repeats that pair N times, each cluster on a fresh keyspace, the order alternating
# (dynamic first in odd rounds); FAULTS=0 skips crash/join/leave (throughput only):
#   FAULTS=0 ROUNDS=4 MSGS=60000 perf/ha-bench.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DB="${DB:-${IPUSH_TEST_SCYLLA:-127.0.0.1:9042}}"
USERS="${USERS:-600}"
MSGS="${MSGS:-30000}"
PUBS="${PUBS:-8}"
OUT="${OUT:-$ROOT/perf/results/ha-bench-$(date -u +%Y%m%dT%H%M%SZ)}"
KS="ipush_ha_$$"
KS_STATIC="ipush_hs_$$"
ROUNDS="${ROUNDS:-1}"
FAULTS="${FAULTS:-1}"
KEYSPACES=("$KS" "$KS_STATIC")
for r in $(seq 2 "$ROUNDS"); do KEYSPACES+=("${KS}_$r" "${KS_STATIC}_$r"); done
mkdir -p "$OUT"

echo "== build (release)" >&2
(cd "$ROOT" && cargo build --release -q -p ipush -p loadtest)
cp "$ROOT/Cargo.lock" "$ROOT/perf/tools/scylla-raw/Cargo.lock"
(cd "$ROOT/perf/tools/scylla-raw" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q)
SERVER="${SERVER:-$ROOT/target/release/ipush_server}"
LT="$ROOT/target/release/loadtest"
RAW="$ROOT/target/release/scylla-raw"

WORK="$(mktemp -d /tmp/ha-bench.XXXXXX)"
cleanup() {
  for f in "$WORK"/*.pid; do
    [[ -f $f ]] || continue
    p=$(cat "$f"); kill "$p" 2>/dev/null || true
  done
  sleep 1
  for f in "$WORK"/*.pid; do
    [[ -f $f ]] || continue
    p=$(cat "$f"); kill -9 "$p" 2>/dev/null || true
  done
  for ks in "${KEYSPACES[@]}"; do
    "$RAW" nodes="$DB" keyspace="$ks" writes=1 drop_keyspace=1 >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

port_on() {
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$1"
}
declare -A C A B
for i in 1 2 3; do
  C[$i]=$(port_on 127.0.0.$i); A[$i]=$(port_on 127.0.0.$i); B[$i]=$(port_on 127.0.0.$i)
done

# start NAME INDEX KEYSPACE [extra flags...]: one node on 127.0.0.INDEX, pid in $WORK/NAME.pid
start() {
  local name=$1 i=$2 ks=$3
  shift 3
  local cmd=("$SERVER" --client_host=127.0.0.$i --admin_host=127.0.0.$i --client_port="${C[$i]}"
    --admin_port="${A[$i]}" --bus_port="${B[$i]}" --cores=1 --log_level=warn
    --pid_file= --data_dir="$WORK/data-$name" --storage=scylla --scylla_nodes="$DB"
    --scylla_keyspace="$ks" --scylla_consistency=one --max_offline_msg_num=100000
    --node="$name" "$@")
  printf '%s\0' "${cmd[@]}" >"$WORK/$name.cmd"
  "${cmd[@]}" >>"$OUT/$name.log" 2>&1 &
  echo $! >"$WORK/$name.pid"
  for _ in $(seq 300); do
    curl -sf "127.0.0.$i:${A[$i]}/health" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$WORK/$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -5 "$OUT/$name.log" >&2
  echo "$name did not start" >&2
  exit 1
}

# Until the three nodes serve all 1024 slots between them (bounded: 30 s).
wait_slots() {
  local total s
  for _ in $(seq 300); do
    total=0
    for i in 1 2 3; do
      s=$(curl -sf "127.0.0.$i:${A[$i]}/health" | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"].get("slots_served", 0))' 2>/dev/null || echo 0)
      total=$((total + s))
    done
    [[ $total == 1024 ]] && return 0
    sleep 0.1
  done
  echo "slots not settled on three nodes within 30 s" >&2
}

# stop_nodes NAME...: SIGTERM, then wait (bounded) for each to exit.
stop_nodes() {
  local n
  for n in "$@"; do kill "$(cat "$WORK/$n.pid")" 2>/dev/null || true; done
  for n in "$@"; do
    for _ in $(seq 100); do kill -0 "$(cat "$WORK/$n.pid")" 2>/dev/null || break; sleep 0.1; done
    rm -f "$WORK/$n.pid"
  done
}

if [[ $FAULTS == 1 ]]; then
echo "== dynamic cluster: keyspace $KS at $DB" >&2
start n1 1 "$KS" --scylla_init_schema=true
start n2 2 "$KS"
start n3 3 "$KS"

export WORK SERVER USERS PUBS DB KS
export A1="${A[1]}" A2="${A[2]}" A3="${A[3]}" C3="${C[3]}" B3="${B[3]}"
python3 - "$OUT" <<'PY' | tee "$OUT/ha.txt"
import http.client, json, os, signal, subprocess, sys, threading, time
out = sys.argv[1]
E = os.environ
work, users, pubs = E["WORK"], int(E["USERS"]), int(E["PUBS"])
admin = {1: ("127.0.0.1", int(E["A1"])), 2: ("127.0.0.2", int(E["A2"])), 3: ("127.0.0.3", int(E["A3"]))}

def get(i, path):
    c = http.client.HTTPConnection(*admin[i], timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"null")
    except OSError:
        return None, None
    finally:
        c.close()

def served(nodes, names):
    total = 0
    for i in nodes:
        st, h = get(i, "/health")
        if st != 200:
            return None
        up = [m["name"] for m in h["result"].get("members", []) if m["state"] == "up"]
        if up != names:
            return None
        total += h["result"]["slots_served"]
    return total

def wait_settled(nodes, names, limit=60):
    t0 = time.time()
    while time.time() - t0 < limit:
        if served(nodes, names) == 1024:
            return time.time() - t0
        time.sleep(0.05)
    raise SystemExit(f"not settled on {names} within {limit} s")

def pid(name):
    return int(open(f"{work}/{name}.pid").read())

wait_settled([1, 2, 3], ["n1", "n2", "n3"])
log, lock, stop = [], threading.Lock(), threading.Event()

def publisher(k0):
    c, k = None, k0
    while not stop.is_set():
        uid = f"u{k % users}"
        body = f"{uid}-{k}"
        k += pubs
        t = time.time()
        try:
            if c is None:
                c = http.client.HTTPConnection(*admin[1], timeout=10)
            c.request("POST", f"/pub?to={uid}&from=ha", body)
            r = c.getresponse(); r.read()
            st = r.status
        except OSError:
            st, c = None, None
        with lock:
            log.append((t, uid, body, st))

threads = [threading.Thread(target=publisher, args=(k,)) for k in range(pubs)]
for th in threads: th.start()
time.sleep(3)

def owner(uid):
    st, v = get(1, f"/shard?uid={uid}")
    return v["result"] if st == 200 else None
victims = {f"u{i}" for i in range(users) if owner(f"u{i}") == f"127.0.0.3:{E['C3']}"}
os.kill(pid("n3"), signal.SIGKILL)
t_kill = time.time()
time.sleep(0.5)
wait_settled([1, 2], ["n1", "n2"], 30)
time.sleep(1)
with lock:
    ok_v = [t for (t, u, _, st) in log if t >= t_kill and u in victims and st == 200]
    first = min(ok_v) - t_kill if ok_v else None
    bad = [t for (t, u, _, st) in log if t >= t_kill and u in victims and st != 200]
    last_bad = max(bad) - t_kill if bad else 0.0
print(f"crash: kill -9 of n3 ({len(victims)} of {users} users): first successful publish for its users after {first:.2f} s; last refused one at {last_bad:.2f} s; {len(bad)} refused")

# join: n3 again (a new process on the same ports and name)
slots_before = {i: get(i, "/health")[1]["result"]["slots_served"] for i in (1, 2)}
n3 = subprocess.Popen(open(f"{work}/n3.cmd").read().split("\0")[:-1], stdout=open(f"{out}/n3.log", "a"), stderr=subprocess.STDOUT)
open(f"{work}/n3.pid", "w").write(str(n3.pid))
t_join = time.time()
for _ in range(300):
    if get(3, "/health")[0] == 200: break
    time.sleep(0.1)
settle = wait_settled([1, 2, 3], ["n1", "n2", "n3"])
n3_slots = get(3, "/health")[1]["result"]["slots_served"]
print(f"join: n3 back after {time.time() - t_join:.2f} s, took {n3_slots} of 1024 slots ({n3_slots / 10.24:.1f} %), settled {settle:.2f} s after it answered")
with lock:
    bad_join = [st for (t, _, _, st) in log if t >= t_join and st != 200]
print(f"join: {len(bad_join)} publishes refused while it joined ({sorted(set(map(str, bad_join)))})")

time.sleep(2)
with lock: n_before = len(log)
p2 = pid("n2")
os.kill(p2, signal.SIGTERM)
t_leave = time.time()
while True:
    try:
        os.kill(p2, 0)
    except ProcessLookupError:
        break
    if time.time() - t_leave > 60: raise SystemExit("n2 did not exit within 60 s")
    time.sleep(0.02)
left = time.time() - t_leave
wait_settled([1, 3], ["n1", "n3"], 30)
time.sleep(1)
stop.set()
for th in threads: th.join()
with lock:
    during = [st for (t, _, _, st) in log[n_before:] if t >= t_leave]
bad_leave = [st for st in during if st != 200]
print(f"leave: SIGTERM of n2 -> exited after {left:.2f} s; {len(during)} publishes meanwhile and to settle, {len(bad_leave)} refused ({sorted(set(map(str, bad_leave)))})")

# check
acked, doubt = {}, {}
for (_, u, b, st) in log:
    if st == 200:
        acked.setdefault(u, set()).add(b)
    elif st is None:
        doubt.setdefault(u, set()).add(b)
problems = 0
for i in range(users):
    uid = f"u{i}"
    st, v = get(1, f"/msg?uid={uid}")
    msgs = [json.loads(l) for l in v["result"]]
    seqs = [m["s"] for m in msgs]
    bodies = [m["b"] for m in msgs]
    if seqs != list(range(1, len(seqs) + 1)): problems += 1; print(f"  {uid}: seqs not contiguous")
    if len(set(bodies)) != len(bodies): problems += 1; print(f"  {uid}: a body stored twice")
    lost = acked.get(uid, set()) - set(bodies)
    if lost: problems += 1; print(f"  {uid}: {len(lost)} acknowledged publishes lost")
n_ok = sum(len(s) for s in acked.values())
print(f"check: {n_ok} publishes answered 200, {sum(len(s) for s in doubt.values())} without an answer, {len(log) - n_ok} refused in all; {'every one stored once, seqs contiguous' if problems == 0 else f'{problems} PROBLEMS'}")
PY

# The same node count for both throughput runs: n2 joins again and the slots settle.
start n2 2 "$KS"
wait_slots
stop_nodes n1 n2 n3
fi
echo "== throughput: loadtest unicast through node 1, dynamic (3 nodes) vs static (3 nodes), $ROUNDS round(s)" >&2
LT_ARGS=(unicast --users 10000 --messages "$MSGS" --seed 1 --window 1024 --pub-conns 64 --src 127.0.0.4-127.0.0.9 --quiet --json)
NODES="n1=127.0.0.1:${C[1]}:${A[1]}:${B[1]},n2=127.0.0.2:${C[2]}:${A[2]}:${B[2]},n3=127.0.0.3:${C[3]}:${A[3]}:${B[3]}"
# dynamic|static ROUND: a fresh 3-node cluster of that kind, loadtest through node 1, stopped.
measure() {
  local kind=$1 r=$2 ks suffix=""
  [[ $r == 1 ]] || suffix="_$r"
  if [[ $kind == dynamic ]]; then
    ks="$KS$suffix"
    # Round 1 of a run with faults reuses the keyspace the faults ran on (the nodes restart).
    start n1 1 "$ks" --scylla_init_schema=true
    start n2 2 "$ks"
    start n3 3 "$ks"
    wait_slots
  else
    ks="$KS_STATIC$suffix"
    start n1 1 "$ks" --scylla_init_schema=true --nodes="$NODES"
    start n2 2 "$ks" --nodes="$NODES"
    start n3 3 "$ks" --nodes="$NODES"
  fi
  timeout 300 "$LT" "${LT_ARGS[@]}" --target "127.0.0.1:${C[1]}" --admin "127.0.0.1:${A[1]}" \
    >"$OUT/$kind-$r.json" 2>"$OUT/$kind-$r.err" || true
  stop_nodes n1 n2 n3
}
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 == 1 )); then measure dynamic "$r"; measure static "$r"; else measure static "$r"; measure dynamic "$r"; fi
done
python3 - "$OUT" "$ROUNDS" <<'PY' | tee -a "$OUT/ha.txt"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def r(n):
    try: return json.load(open(f"{out}/{n}.json"))
    except Exception: return None
ratios = []
for k in range(1, rounds + 1):
    d, s = r(f"dynamic-{k}"), r(f"static-{k}")
    for name, x in ((f"dynamic-{k}", d), (f"static-{k}", s)):
        if x is None: print(f"{name}: no report (see {name}.err)"); continue
        print(f"{name}: {x['publish']['per_sec']:,.0f} publishes/s, p99 {x['publish'].get('latency_us', {}).get('p99', 0) / 1000:.1f} ms; {'clean' if x['success'] else 'NOT CLEAN'}")
    if d and s:
        ratios.append(d['publish']['per_sec'] / s['publish']['per_sec'])
        print(f"round {k} ({'dynamic first' if k % 2 else 'static first'}): dynamic/static {ratios[-1]:.2f}")
if ratios:
    print(f"dynamic/static over {len(ratios)} round(s): median {statistics.median(ratios):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f}")
PY
uptime | tee -a "$OUT/ha.txt"
echo "reports: $OUT" >&2
