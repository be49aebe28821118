#!/usr/bin/env bash
# perf/cluster-bench.sh — issue 4's benchmark: a 3-node ipush cluster on 127.0.0.1/2/3
# (release build, --cores=1 each on this 2-core box, --storage=$STORAGE, fresh data dirs).
#
#   unicast  USERS streams connected through node 1 (303s followed to each owner), UNICAST_MSGS
#            admin publishes through node 1 to random users: ~2/3 of them cross the NNG bus.
#   unicast½ the same at half the max publish rate measured just before (latency).
#   fanout½  M/5 publishes at half the max rate measured just before (latency).
#   fanout   N subscribers spread over the 3 nodes (by ownership), subscribed through node 1,
#            M channel publishes through node 1: each broadcast over the bus, each node delivering
#            to its own members.
#
#   perf/cluster-bench.sh                        # USERS=6000 UNICAST_MSGS=60000 N=6000 M=500
#   USERS=600 UNICAST_MSGS=5000 N=600 M=100 perf/cluster-bench.sh   # quick
# Output: a table on stdout; JSON reports and node logs in $OUT (default perf/results/cluster-bench/).
set -euo pipefail

USERS=${USERS:-6000}
UNICAST_MSGS=${UNICAST_MSGS:-60000}
N=${N:-6000}
M=${M:-500}
STORAGE=${STORAGE:-embedded}
PUB_CONNS=${PUB_CONNS:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/perf/results/cluster-bench}
LT=$ROOT/target/release/loadtest
SERVER=$ROOT/target/release/ipush_server
mkdir -p "$OUT"
(cd "$ROOT" && cargo build --release --workspace >&2)

# shellcheck source=perf/lib.sh
source "$ROOT/perf/lib.sh"
perf_workdir cluster-bench

declare -A C A B
SPEC=""
for i in 1 2 3; do
    ip=127.0.0.$i
    C[$i]=$(free_port "$ip"); A[$i]=$(free_port "$ip"); B[$i]=$(free_port "$ip")
    SPEC+="${SPEC:+,}n$i=$ip:${C[$i]}:${A[$i]}:${B[$i]}"
done
for i in 1 2 3; do
    ip=127.0.0.$i
    "$SERVER" --node="n$i" --nodes="$SPEC" --client_host="$ip" --admin_host="$ip" \
        --cores=1 --storage="$STORAGE" --data_dir="$WORK/n$i" --pid_file="$WORK/n$i.pid" \
        --log_level=warn >"$OUT/n$i.log" 2>&1 &
    PIDS+=("$!")
done
for i in 1 2 3; do
    wait_port "${C[$i]}" "127.0.0.$i"
    wait_port "${A[$i]}" "127.0.0.$i"
done
# Every peer up on node 1.
for _ in $(seq 150); do
    if curl -s "http://127.0.0.1:${A[1]}/health" | python3 -c 'import json,sys; p=json.load(sys.stdin)["result"]["peers"]; sys.exit(0 if all(v=="up" for v in p.values()) else 1)' 2>/dev/null; then
        break
    fi
    sleep 0.2
done
ALLPIDS=$(IFS=,; echo "${PIDS[*]}")
T=(--target "127.0.0.1:${C[1]}" --admin "127.0.0.1:${A[1]}")

run() {
    local name=$1; shift
    echo "== $name: loadtest $* ${T[*]}" >&2
    "$LT" "$@" "${T[@]}" --timeout-secs 600 --json --quiet >"$OUT/$name.json" 2>"$OUT/$name.txt" || true
    cat "$OUT/$name.txt" >&2
    sleep 1
}
jq_() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2],{"d":d}))' "$@"; }

run unicast unicast --users "$USERS" --messages "$UNICAST_MSGS" --seed 1 --window 256 --pub-conns "$PUB_CONNS" --pids "$ALLPIDS"
URATE=$(jq_ "$OUT/unicast.json" 'max(1.0, d["publish"]["per_sec"]/2)')
run unicast-half unicast --users "$USERS" --messages "$UNICAST_MSGS" --seed 1 --window 256 --pub-conns "$PUB_CONNS" --rate "$URATE"
run fanout fanout --subscribers "$N" --messages "$M" --window 64 --pub-conns 4
FRATE=$(jq_ "$OUT/fanout.json" 'max(1.0, d["publish"]["per_sec"]/2)')
run fanout-half fanout --subscribers "$N" --messages "$(( M / 5 ))" --window 64 --pub-conns 4 --rate "$FRATE"

for i in 1 2 3; do
    curl -s "http://127.0.0.$i:${A[$i]}/stats" >"$OUT/n$i.stats.json" || true
done

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
print("| run | streams (redirected) | published/s | delivered msgs/s | lost | dup | ooo | seq err | latency p50 / p99 / p99.9 / max (us) | publish RTT p50 / p99 (us) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for n in ("unicast", "unicast-half", "fanout", "fanout-half"):
    try:
        d = json.load(open(os.path.join(out, n + ".json")))
    except Exception:
        print(f"| {n} | (no report) |"); continue
    l = d["delivery"]["latency_us"]; p = d["publish"]["latency_us"]
    print(f'| {n} | {d["connect"]["connected"]} ({d["connect"]["redirects"]}) | {d["publish"]["per_sec"]:,.0f} | '
          f'{d["delivery"]["per_sec"]:,.0f} | {d["delivery"]["lost"]} | {d["delivery"]["duplicated"]} | '
          f'{d["delivery"]["out_of_order"]} | {d["delivery"]["seq_errors"]} | '
          f'{l.get("p50")} / {l.get("p99")} / {l.get("p99_9")} / {l.get("max")} | {p.get("p50")} / {p.get("p99")} |')
PY
