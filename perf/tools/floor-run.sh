#!/usr/bin/env bash
# The glommio floor: glommio-floor.rs (built as a tiny crate in /tmp with glommio 0.9,
# futures-lite 2, socket2 0.5) accepts N connections, answers a chunked 200 head and parks
# one task per connection on a 1-byte read. Hold them with loadtest, print bytes per stream.
# usage: FLOOR=/tmp/gfloor/target/release/gfloor LOADTEST=target/release/loadtest \
#        perf/tools/floor-run.sh N CORES [VAR=value ...]
set -u
N=$1; CORES=$2; shift 2
ulimit -n 20000
PORT=$((20000 + RANDOM % 10000))
env "$@" "${FLOOR:-/tmp/gfloor/target/release/gfloor}" $PORT byte $CORES & P=$!
sleep 0.5
"${LOADTEST:-target/release/loadtest}" hold --target 127.0.0.1:$PORT --conns $N --rate 5000 --hold-secs 5 --pids $P --src 127.0.0.2-127.0.0.9 --quiet --json > /tmp/floor-$N-$CORES.json 2>/dev/null
python3 -c "
import json;d=json.load(open('/tmp/floor-$N-$CORES.json'));print('floor N=$N cores=$CORES $*', d['held_at_end'], d['server_rss_bytes_before'], d['server_rss_bytes_end'], d['server_rss_bytes_per_stream_end'], d['server_private_dirty_bytes_per_stream_end'])"
kill $P; wait $P 2>/dev/null
