#!/bin/bash
# Quick single-node A/B of the current release build (not a substitute for perf/vs-nchan.sh):
# starts ipush_server (--storage=embedded unless SARGS says otherwise) on fixed ports 8100-8102,
# runs one loadtest scenario, samples server and loadtest CPU and the server's send() count
# mid-run, and prints the delivery summary. Optional PROF=name records a perf profile of the
# server into /tmp/perf.name.data.
#
#   perf/tools/quick-bench.sh fanout    # 10,000 subscribers x M=1000, window 32, PC=32 pub conns
#   perf/tools/quick-bench.sh unicast   # 10,000 users, M=200000 publishes, window 256, PC=16
#   SARGS=--storage=memory PC=4 perf/tools/quick-bench.sh fanout
#   BIN=/tmp/ipush_old perf/tools/quick-bench.sh fanout   # another server binary (A/B)
#   SARGS=--cores=1 LT_CPU=1 perf/tools/quick-bench.sh unicast   # loadtest pinned to CPU 1
# Besides the summary it prints the server's CPU per delivered message over the sample (less
# noisy than msgs/s for A/B runs on a shared 2-core box).
set -u
KIND=${1:-fanout}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D=$(mktemp -d); B=${BIN:-$ROOT/target/release/ipush_server}; LT=${LTBIN:-$ROOT/target/release/loadtest}
$B --client_host=127.0.0.1 --client_port=8100 --admin_port=8101 --bus_port=8102 \
    --pid_file=$D/pid --data_dir=$D/data --log_level=warn ${SARGS:-} > $D/log 2>&1 &
SP=$!
for _ in $(seq 50); do curl -s 127.0.0.1:8101/health >/dev/null && break; sleep 0.1; done
if [ "$KIND" = fanout ]; then
    ARGS=(fanout --subscribers 10000 --messages "${M:-1000}" --window "${W:-32}" --pub-conns "${PC:-32}" ${RATE:+--rate "$RATE"})
else
    ARGS=(unicast --users 10000 --messages "${M:-200000}" --seed 1 --window "${W:-256}" --pub-conns "${PC:-16}")
fi
timeout 300 ${LT_CPU:+taskset -c "$LT_CPU"} "$LT" "${ARGS[@]}" --target 127.0.0.1:8100 --admin 127.0.0.1:8101 \
    --src 127.0.0.2-127.0.0.9 --quiet --json > $D/out.json 2>$D/err &
TP=$!
sleep "${WAIT:-5}"
LP=$(pgrep -P $TP | head -1)
received() { curl -s 127.0.0.1:8101/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["result"]["throughput"]["total_send_number"])' 2>/dev/null || echo 0; }
t() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
ra=$(received); a=$(t $SP); b=$(t "$LP"); sleep 4
a2=$(t $SP); b2=$(t "$LP"); rb=$(received)
echo "server cpu% $(( (a2-a)/4 ))  loadtest cpu% $(( (b2-b)/4 ))  server us/delivery $(python3 -c "print(round(($a2-$a)*1e4/max(1,$rb-$ra),3))")"
perf stat -e syscalls:sys_enter_sendto -p $SP -- sleep 2 2>&1 | awk '/sys_enter/ {print "server send() per s:", $1/2}'
if [ -n "${PROF:-}" ]; then perf record -g -o /tmp/perf.$PROF.data -p $SP -- sleep 4 >/dev/null 2>&1; fi
wait $TP
python3 -c "import json; r=json.load(open('$D/out.json'))['delivery']; print({k: r.get(k) for k in ['per_sec','lost','duplicated','out_of_order']}, 'latency p50/p99 us', r['latency_us']['p50'], r['latency_us']['p99'])" \
    || tail -5 $D/err
kill -0 $SP 2>/dev/null || { echo "server exited:"; tail -20 $D/log; }
kill $SP 2>/dev/null; wait $SP 2>/dev/null; cp $D/log /tmp/quick-bench-server.log; rm -rf "$D"
