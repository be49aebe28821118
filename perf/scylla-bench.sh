#!/usr/bin/env bash
# ipush persisting through a real Cassandra / ScyllaDB, side by side with the database's own
# write rate in the same run (issue 16). Bounded (a few minutes), its own keyspace (dropped at
# the end), its own server on free ports; stops only what it started.
#
#   bash cql/cassandra/start.sh && perf/scylla-bench.sh
#   M=50000 F=50 perf/scylla-bench.sh           # smaller
#   ROUNDS=3 perf/scylla-bench.sh               # more interleaved rounds (default 2)
#   DB=10.0.0.5:9042 perf/scylla-bench.sh       # another database
#   PROF=1 perf/scylla-bench.sh                 # perf record of the server during unicast
#   SERVER=/path/ipush_server perf/scylla-bench.sh  # another build of the server (A/B runs)
#   BUILD=0 perf/scylla-bench.sh                # use the release binaries already built
#
# Like with like: PC (default 512) keep-alive publishing connections with one /pub in flight
# each, so PC publishes are in flight at the server (it runs at most 2 cores x 256 statements),
# and the raw loop keeps INFLIGHT (default: PC) writes in flight; both at consistency ONE, both
# with prepared statements (the raw loop on one session, ipush on one per core).
#
# ROUNDS rounds on one database and one server, their steps back to back, so that the load of
# other jobs on the box hits the raw loop and ipush alike; each round's ratio is to its own raw:
#   1. raw      scylla-raw (perf/tools/scylla-raw): M single-row INSERTs of a message row,
#               INFLIGHT at a time (the database's limit on this box), then the same M writes
#               as ipush issues them (row + users.max_seq in one unlogged single-partition batch)
#   2. unicast  loadtest unicast: 10,000 users, M publishes as fast as PC connections allow;
#               every /pub is answered after its row is written (publish RTT = that wait)
#   3. fan-out  loadtest fanout: 10,000 subscribers of one channel, F publishes; every delivery
#               is one row in the database
# then once:
#   4. p99      loadtest unicast at half the rounds' mean unicast rate: publish RTT p99
# Prints a summary; JSON reports go to $OUT (default perf/results/scylla-bench-<time>/).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DB="${DB:-${IPUSH_TEST_SCYLLA:-127.0.0.1:9042}}"
M="${M:-100000}"
F="${F:-100}"
CORES="${CORES:-2}"
PC="${PC:-512}"
INFLIGHT="${INFLIGHT:-$PC}"
ROUNDS="${ROUNDS:-2}"
OUT="${OUT:-$ROOT/perf/results/scylla-bench-$(date -u +%Y%m%dT%H%M%SZ)}"
KS="ipush_bench_$$"
mkdir -p "$OUT"

if [[ "${BUILD:-1}" != 0 ]]; then
  echo "== build (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p ipush -p loadtest)
  # The raw tool shares the root's lock file and target dir: the driver is built once.
  cp "$ROOT/Cargo.lock" "$ROOT/perf/tools/scylla-raw/Cargo.lock"
  (cd "$ROOT/perf/tools/scylla-raw" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q)
fi
SERVER="${SERVER:-$ROOT/target/release/ipush_server}"
LT="$ROOT/target/release/loadtest"
RAW="$ROOT/target/release/scylla-raw"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# The server's CPU seconds (user+system, all threads) and context switches (voluntary,
# involuntary, all threads) so far: "cpu vol invol". Compared before and after a step, they
# say what one publish costs the server, which a loaded box disturbs less than the rate.
proc_counts() {
  python3 - "$1" <<'PY'
import glob, os, sys
pid = sys.argv[1]
f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
cpu = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
vol = invol = 0
for st in glob.glob(f"/proc/{pid}/task/*/status"):
    try:
        for line in open(st):
            if line.startswith("voluntary_ctxt_switches"): vol += int(line.split()[1])
            if line.startswith("nonvoluntary_ctxt_switches"): invol += int(line.split()[1])
    except OSError:
        pass
print(f"{cpu:.2f} {vol} {invol}")
PY
}

D="$(mktemp -d)"
SP=""
cleanup() {
  if [[ -n "$SP" ]]; then kill "$SP" 2>/dev/null || true; wait "$SP" 2>/dev/null || true; fi
  "$RAW" nodes="$DB" keyspace="$KS" writes=1 drop_keyspace=1 >/dev/null 2>&1 || true
  rm -rf "$D"
}
trap cleanup EXIT

echo "== server (--storage=scylla, keyspace $KS at $DB, --cores=$CORES)" >&2
for attempt in 1 2 3; do
  CP=$(free_port); AP=$(free_port); BP=$(free_port)
  "$SERVER" --client_host=127.0.0.1 --client_port="$CP" --admin_port="$AP" --bus_port="$BP" \
    --pid_file="$D/pid" --data_dir="$D/data" --log_level=warn --cores="$CORES" \
    --storage=scylla --scylla_nodes="$DB" --scylla_keyspace="$KS" --scylla_init_schema=true \
    --scylla_consistency=one --max_offline_msg_num=1000 >"$OUT/server.log" 2>&1 &
  SP=$!
  for _ in $(seq 300); do
    curl -sf "127.0.0.1:$AP/health" >/dev/null 2>&1 && break
    kill -0 "$SP" 2>/dev/null || break
    sleep 0.2
  done
  curl -sf "127.0.0.1:$AP/health" >/dev/null 2>&1 && break
  kill "$SP" 2>/dev/null || true; wait "$SP" 2>/dev/null || true; SP=""
  [[ $attempt == 3 ]] && { tail -5 "$OUT/server.log" >&2; echo "server did not start" >&2; exit 1; }
done

LT_COMMON=(--target "127.0.0.1:$CP" --admin "127.0.0.1:$AP" --src 127.0.0.2-127.0.0.9 --quiet --json)
# The server's store-commit histogram so far: "sum_seconds count".
commits() {
  curl -s "127.0.0.1:$AP/metrics" |
    awk '/^ipush_store_commit_seconds_sum/ {s=$2} /^ipush_store_commit_seconds_count/ {c=$2} END {print s+0, c+0}'
}
for r in $(seq "$ROUNDS"); do
  echo "== round $r/$ROUNDS, 1. raw driver: $M single-row writes, $INFLIGHT in flight" >&2
  echo "round $r: $(uptime)" >>"$OUT/uptime.txt"
  "$RAW" nodes="$DB" keyspace="$KS" writes="$M" inflight="$INFLIGHT" >"$OUT/raw-$r.json"
  "$RAW" nodes="$DB" keyspace="$KS" writes="$M" inflight="$INFLIGHT" batch=1 >"$OUT/raw-batch-$r.json"

  echo "== round $r/$ROUNDS, 2. unicast: 10,000 users, $M publishes, $PC in flight" >&2
  if [[ -n "${PROF:-}" && $r == 1 ]]; then
    (sleep 8 && perf record -g -o "$OUT/perf.data" -p "$SP" -- sleep 5 >/dev/null 2>&1) &
    PERF_PID=$!
  fi
  read -r cpu0 vol0 invol0 < <(proc_counts "$SP")
  read -r csum0 ccount0 < <(commits)
  timeout 300 "$LT" unicast --users 10000 --messages "$M" --seed "$r" --window $((2 * PC)) \
    --pub-conns "$PC" "${LT_COMMON[@]}" >"$OUT/unicast-$r.json" 2>"$OUT/unicast-$r.err" || true
  read -r cpu1 vol1 invol1 < <(proc_counts "$SP")
  read -r csum1 ccount1 < <(commits)
  # Over the unicast step (its connects included): "cpu_s voluntary involuntary", and the
  # server's mean store commit (issued to answered, seen on the core) in microseconds.
  echo "$(python3 -c "print(round($cpu1-$cpu0,2))") $((vol1 - vol0)) $((invol1 - invol0))" >"$OUT/unicast-proc-$r.txt"
  python3 -c "print(round(1e6*($csum1-$csum0)/max($ccount1-$ccount0,1)))" >"$OUT/unicast-commit-$r.txt"
  if [[ -n "${PROF:-}" && $r == 1 ]]; then
    wait "$PERF_PID" || true
    perf report -i "$OUT/perf.data" --stdio --no-children --sort dso 2>/dev/null | grep -v '^#' | grep . | head -12 >"$OUT/perf-dso.txt" || true
    perf report -i "$OUT/perf.data" --stdio --no-children --sort sym 2>/dev/null | grep -v '^#' | grep '%' | head -25 >"$OUT/perf-sym.txt" || true
  fi

  echo "== round $r/$ROUNDS, 3. fan-out: 10,000 subscribers, $F publishes" >&2
  timeout 300 "$LT" fanout --subscribers 10000 --messages "$F" --window 4 --pub-conns 4 \
    "${LT_COMMON[@]}" >"$OUT/fanout-$r.json" 2>"$OUT/fanout-$r.err" || true
done

half=$(python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
rates = [json.load(open(f"{out}/unicast-{i}.json"))["publish"]["per_sec"] for i in range(1, n + 1)]
print(round(sum(rates) / len(rates) / 2))
PY
)
n_half=$((half * 20))
((n_half > 0)) || n_half=1000
echo "== 4. unicast at half the mean rate: $half publishes/s for about 20 s" >&2
echo "half: $(uptime)" >>"$OUT/uptime.txt"
timeout 300 "$LT" unicast --users 10000 --messages "$n_half" --rate "$half" --seed 99 --window 4096 \
  --pub-conns "$PC" "${LT_COMMON[@]}" >"$OUT/half.json" 2>"$OUT/half.err" || true
echo "end: $(uptime)" >>"$OUT/uptime.txt"
errors=$(curl -s "127.0.0.1:$AP/metrics" | awk '/^ipush_storage_error\{/ {s+=$2} END {print s+0}')

python3 - "$OUT" "$errors" "$ROUNDS" <<'PY'
import json, sys
out, errors, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
j = lambda n: json.load(open(f"{out}/{n}.json"))
def d(r): return r["delivery"]
def ok(r): return "ok" if r["success"] else "NOT CLEAN (lost %s, failed publishes %s)" % (d(r)["lost"], r["publish"]["failed"])
uni_r, batch_r, fan_r = [], [], []
for i in range(1, rounds + 1):
    raw, rawb, uni, fan = j(f"raw-{i}"), j(f"raw-batch-{i}"), j(f"unicast-{i}"), j(f"fanout-{i}")
    print(f"round {i}:")
    print(f"  raw driver, single-row INSERT:           {raw['per_sec']:>8,.0f} writes/s  (p50 {raw['p50_us']} us, p99 {raw['p99_us']} us, errors {raw['errors']}, {raw['inflight']} in flight)")
    print(f"  raw driver, ipush's batch (row+max_seq): {rawb['per_sec']:>8,.0f} writes/s  (p50 {rawb['p50_us']} us, p99 {rawb['p99_us']} us, errors {rawb['errors']})")
    u = uni["publish"]["per_sec"]
    uni_r.append(u / raw["per_sec"])
    batch_r.append(u / rawb["per_sec"])
    print(f"  ipush unicast, persisted:                {u:>8,.0f} publishes/s = {100*u/raw['per_sec']:.0f}% of raw single-row, {100*u/rawb['per_sec']:.0f}% of raw batch; {ok(uni)}")
    commit = open(f"{out}/unicast-commit-{i}.txt").read().strip()
    lat = uni["publish"]["latency_us"]
    print(f"    publish RTT p50 {lat.get('p50')} us, p99 {lat.get('p99')} us (saturated); the server's mean store commit {commit} us")
    cpu, vol, invol = open(f"{out}/unicast-proc-{i}.txt").read().split()
    n = max(uni["publish"]["published"], 1)
    print(f"    server during unicast (connects included): {float(cpu):.1f} CPU s = {1e6*float(cpu)/n:.0f} us/publish; context switches {int(vol)/n:.1f} voluntary + {int(invol)/n:.1f} involuntary per publish")
    f = d(fan)["per_sec"]
    fan_r.append(f / raw["per_sec"])
    print(f"  ipush fan-out (10,000 members), persisted: {f:>6,.0f} deliveries/s = {100*f/raw['per_sec']:.0f}% of raw single-row; {ok(fan)}")
pct = lambda v: " / ".join(f"{100*x:.0f}" for x in v)
print(f"unicast / raw single-row, per round: {pct(uni_r)} %  (/ raw batch: {pct(batch_r)} %); fan-out / raw single-row: {pct(fan_r)} %")
half = j("half")
h = half["publish"]
print(f"ipush unicast at {half['rate']:.0f}/s (half the mean): achieved {h['per_sec']:,.0f}/s, publish RTT p50 {h['latency_us'].get('p50')} us, p99 {h['latency_us'].get('p99')} us, p99.9 {h['latency_us'].get('p99_9')} us; {ok(half)}")
print(f"server storage errors: {errors}")
PY
echo "reports: $OUT" >&2
