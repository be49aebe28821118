#!/bin/bash
# Quick fan-out A/B of the current release build: 10,000 subscribers x 300 messages, window 32,
# 4 admin connections, --storage=embedded (default), fresh data dir. Usage: perf/tools/fanout-ab.sh LABEL
# quick fan-out A/B: $1 = label
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D=$(mktemp -d); B=${BIN:-$ROOT/target/release/ipush_server}
$B --client_host=127.0.0.1 --client_port=23100 --admin_port=23101 --bus_port=23102 --pid_file=$D/pid --data_dir=$D/data --log_level=warn > $D/log 2>&1 &
SP=$!
for i in $(seq 50); do curl -s 127.0.0.1:23101/health >/dev/null && break; sleep 0.1; done
timeout 200 "$ROOT/target/release/loadtest" fanout --target 127.0.0.1:23100 --admin 127.0.0.1:23101 --subscribers 10000 --messages 300 --window 32 --pub-conns 4 --src 127.0.0.2-127.0.0.9 --quiet --json > $D/out.json 2>$D/err
python3 -c "import json,sys; r=json.load(open('$D/out.json'))['delivery']; print('$1', {k:r.get(k) for k in ['per_sec','lost','duplicated','out_of_order']}, 'p50/p99', r['latency_us']['p50'], r['latency_us']['p99'])" 2>/dev/null || (tail -5 $D/err; head -c 600 $D/out.json)
cp $D/out.json /tmp/fan-$1.json; kill $SP; wait $SP 2>/dev/null; rm -rf $D
