#!/usr/bin/env bash
# ipush persisting through a real Cassandra / ScyllaDB, side by side with the database's own
# write rate in the same run (issue 16). Bounded (a few minutes), its own keyspace (dropped at
# the end), its own server on free ports; stops only what it started.
#
#   bash cql/cassandra/start.sh && perf/scylla-bench.sh
#   M=50000 F=50 perf/scylla-bench.sh           # smaller
#   DB=10.0.0.5:9042 perf/scylla-bench.sh       # another database
#   PROF=1 perf/scylla-bench.sh                 # perf record of the server during unicast
#   SERVER=/path/ipush_server perf/scylla-bench.sh  # another build of the server (A/B runs)
# PC (default 256) keep-alive publishing connections, one /pub in flight each (as many in
# flight as ipush's 2 cores x 256 statements, and about the raw loop's INFLIGHT=512 / 2).
#
# Runs, in this order, on one database:
#   1. raw      scylla-raw (perf/tools/scylla-raw): M single-row INSERTs of a message row,
#               INFLIGHT at a time (the database's limit on this box), then the same M writes
#               as ipush issues them (row + users.max_seq in one unlogged single-partition batch)
#   2. unicast  loadtest unicast: 10,000 users, M publishes as fast as the window allows; every
#               /pub is answered after its row is written (publish RTT = that wait)
#   3. fan-out  loadtest fanout: 10,000 subscribers of one channel, F publishes; every delivery
#               is one row in the database
#   4. p99      loadtest unicast at half the unicast rate of step 2: publish RTT p99
# Prints a summary; JSON reports go to $OUT (default perf/results/scylla-bench-<time>/).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DB="${DB:-${IPUSH_TEST_SCYLLA:-127.0.0.1:9042}}"
M="${M:-100000}"
F="${F:-100}"
INFLIGHT="${INFLIGHT:-512}"
CORES="${CORES:-2}"
PC="${PC:-256}"
OUT="${OUT:-$ROOT/perf/results/scylla-bench-$(date -u +%Y%m%dT%H%M%SZ)}"
KS="ipush_bench_$$"
mkdir -p "$OUT"

echo "== build (release)" >&2
(cd "$ROOT" && cargo build --release -q -p ipush -p loadtest)
# The raw tool shares the root's lock file and target dir: the driver is built once.
cp "$ROOT/Cargo.lock" "$ROOT/perf/tools/scylla-raw/Cargo.lock"
(cd "$ROOT/perf/tools/scylla-raw" && CARGO_TARGET_DIR="$ROOT/target" cargo build --release -q)
SERVER="${SERVER:-$ROOT/target/release/ipush_server}"
LT="$ROOT/target/release/loadtest"
RAW="$ROOT/target/release/scylla-raw"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
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

echo "== 1. raw driver: $M single-row writes, $INFLIGHT in flight" >&2
"$RAW" nodes="$DB" keyspace="$KS" writes="$M" inflight="$INFLIGHT" >"$OUT/raw.json"
"$RAW" nodes="$DB" keyspace="$KS" writes="$M" inflight="$INFLIGHT" batch=1 >"$OUT/raw-batch.json"

LT_COMMON=(--target "127.0.0.1:$CP" --admin "127.0.0.1:$AP" --src 127.0.0.2-127.0.0.9 --quiet --json)
echo "== 2. unicast: 10,000 users, $M publishes" >&2
if [[ -n "${PROF:-}" ]]; then
  (sleep 8 && perf record -g -o "$OUT/perf.data" -p "$SP" -- sleep 5 >/dev/null 2>&1) &
  PERF_PID=$!
fi
uptime >"$OUT/uptime.txt"
read -r cpu0 vol0 invol0 < <(proc_counts "$SP")
timeout 300 "$LT" unicast --users 10000 --messages "$M" --seed 1 --window 1024 --pub-conns "$PC" \
  "${LT_COMMON[@]}" >"$OUT/unicast.json" 2>"$OUT/unicast.err" || true
read -r cpu1 vol1 invol1 < <(proc_counts "$SP")
# Counts over the unicast step (its connects included): cpu_s voluntary involuntary.
echo "$(python3 -c "print(round($cpu1-$cpu0,2))") $((vol1 - vol0)) $((invol1 - invol0))" >"$OUT/unicast-proc.txt"
if [[ -n "${PROF:-}" ]]; then
  wait "$PERF_PID" || true
  perf report -i "$OUT/perf.data" --stdio --no-children --sort dso 2>/dev/null | grep -v '^#' | grep . | head -12 >"$OUT/perf-dso.txt" || true
  perf report -i "$OUT/perf.data" --stdio --no-children --sort sym 2>/dev/null | grep -v '^#' | grep '%' | head -25 >"$OUT/perf-sym.txt" || true
fi
echo "== 3. fan-out: 10,000 subscribers, $F publishes" >&2
timeout 300 "$LT" fanout --subscribers 10000 --messages "$F" --window 4 --pub-conns 4 \
  "${LT_COMMON[@]}" >"$OUT/fanout.json" 2>"$OUT/fanout.err" || true
uni=$(json "$OUT/unicast.json" 'round(d["publish"]["per_sec"])')
half=$((uni / 2))
n_half=$((half * 20))
((n_half > 0)) || n_half=1000
echo "== 4. unicast at half that rate: $half publishes/s for about 20 s" >&2
timeout 300 "$LT" unicast --users 10000 --messages "$n_half" --rate "$half" --seed 2 --window 4096 \
  --pub-conns "$PC" "${LT_COMMON[@]}" >"$OUT/half.json" 2>"$OUT/half.err" || true
uptime >>"$OUT/uptime.txt"
errors=$(curl -s "127.0.0.1:$AP/metrics" | awk '/^ipush_storage_error\{/ {s+=$2} END {print s+0}')

python3 - "$OUT" "$errors" <<'EOF'
import json, sys
out, errors = sys.argv[1], sys.argv[2]
j = lambda n: json.load(open(f"{out}/{n}.json"))
raw, rawb, uni, fan, half = j("raw"), j("raw-batch"), j("unicast"), j("fanout"), j("half")
def d(r): return r["delivery"]
def ok(r): return "ok" if r["success"] else "NOT CLEAN (lost %s, failed publishes %s)" % (d(r)["lost"], r["publish"]["failed"])
print(f"raw driver, single-row INSERT:         {raw['per_sec']:>9,.0f} writes/s  (p50 {raw['p50_us']} us, p99 {raw['p99_us']} us, errors {raw['errors']})")
print(f"raw driver, ipush's batch (row+max_seq): {rawb['per_sec']:>7,.0f} writes/s  (p50 {rawb['p50_us']} us, p99 {rawb['p99_us']} us, errors {rawb['errors']})")
u = uni["publish"]["per_sec"]
print(f"ipush unicast, persisted:              {u:>9,.0f} publishes/s = {100*u/raw['per_sec']:.0f}% of raw single-row, {100*u/rawb['per_sec']:.0f}% of raw batch; deliveries {d(uni)['per_sec']:,.0f}/s; {ok(uni)}")
print(f"   publish RTT p50 {uni['publish']['latency_us'].get('p50')} us, p99 {uni['publish']['latency_us'].get('p99')} us (saturated)")
cpu, vol, invol = open(f"{out}/unicast-proc.txt").read().split()
n = max(uni["publish"]["published"], 1)
print(f"   server during unicast (connects included): {float(cpu):.1f} CPU s = {1e6*float(cpu)/n:.0f} us/publish; context switches {int(vol)/n:.1f} voluntary + {int(invol)/n:.1f} involuntary per publish")
f = d(fan)["per_sec"]
print(f"ipush fan-out (10,000 members), persisted: {f:>6,.0f} deliveries/s = {100*f/raw['per_sec']:.0f}% of raw single-row; {ok(fan)}")
h = half["publish"]
print(f"ipush unicast at {half['rate']} /s (half of the above): achieved {h['per_sec']:,.0f}/s, publish RTT p50 {h['latency_us'].get('p50')} us, p99 {h['latency_us'].get('p99')} us, p99.9 {h['latency_us'].get('p99_9')} us; {ok(half)}")
print(f"server storage errors: {errors}")
EOF
echo "reports: $OUT" >&2
