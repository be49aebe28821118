#!/usr/bin/env bash
# perf/vs-nchan.sh — the same loadtest scenarios against nchan (nginx + libnginx-mod-nchan,
# Debian) and against ipush (release build, --storage=embedded, fresh data dir), in one run,
# with a table of ratios.
#
#   perf/vs-nchan.sh                       # N=10000 M=1000 UNICAST_USERS=10000 UNICAST_MSGS=100000
#   N=2000 M=200 UNICAST_MSGS=20000 perf/vs-nchan.sh   # quick
#   SCENARIOS="unicast" PUB_CONNS=64 perf/vs-nchan.sh   # only some scenarios (hold fanout unicast)
#
# Scenarios (each bounded in time by loadtest itself):
#   hold     fanout --messages 0 --hold-secs $HOLD: N streams opened and held; connect rate, RSS/stream
#   fanout   N subscribers of one channel x M publishes, as fast as the window allows
#   fanout½  M_HALF (M/5) publishes at half the max publish rate measured just before (p99 target: <= 5 ms)
#   unicast  UNICAST_USERS streams, UNICAST_MSGS publishes to random users (--seed 1)
# nchan: subscribers use the `http-raw-stream` subscriber (one connection, each message followed
# by "\n"), publishers POST /pub/<channel>; unicast = one channel per user.
# Output: a table on stdout; JSON reports, logs, HDR percentile files (*.hist) and the chart
# latency-percentiles.png (perf/plot_latency.py, needs matplotlib) in $OUT (default
# perf/results/vs-nchan/).
set -euo pipefail

N=${N:-10000}
M=${M:-1000}
HOLD=${HOLD:-5}
UNICAST_USERS=${UNICAST_USERS:-10000}
UNICAST_MSGS=${UNICAST_MSGS:-100000}
PUB_CONNS=${PUB_CONNS:-16}
# Fan-out publishers: one admin connection per publish in the window, so the server sees up to
# WINDOW publishes at once (with 4, ipush's flusher has little to coalesce: ~135k vs ~315k/s).
FPUB_CONNS=${FPUB_CONNS:-32}
WINDOW=${WINDOW:-32}
M_HALF=${M_HALF:-$(( M / 5 ))}
TIMEOUT=${TIMEOUT:-900}
UWINDOW=${UWINDOW:-256}
SCENARIOS=${SCENARIOS:-hold fanout unicast}
# Server sizes: nginx worker processes and ipush --cores (the load generator shares the box).
NCHAN_WORKERS=${NCHAN_WORKERS:-2}
IPUSH_CORES=${IPUSH_CORES:-2}
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/perf/results/vs-nchan}
LT=$ROOT/target/release/loadtest
SERVER=$ROOT/target/release/ipush_server
mkdir -p "$OUT"

if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    echo "installing nginx + libnginx-mod-nchan (apt-get)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx libnginx-mod-nchan >&2
fi
(cd "$ROOT" && cargo build --release --workspace >&2)

WORK=$(mktemp -d /tmp/vs-nchan.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $1 did not open" >&2
    return 1
}
children() { pgrep -P "$1" | tr '\n' ',' ; }

# ---------- nchan ----------
NPORT=$(free_port)
mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
cat >"$WORK/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes $NCHAN_WORKERS;
worker_rlimit_nofile 20000;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 19000; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    keepalive_requests 1000000;
    nchan_max_reserved_memory 1024M;
    server {
        # reuseport: one listening socket per worker, so the kernel spreads the subscribers
        # evenly (without it one worker often took most of them: fan-out 125-176k instead of
        # ~340k with two workers).
        listen 127.0.0.1:$NPORT reuseport backlog=16384;
        location ~ ^/sub/(.+)\$ {
            nchan_subscriber http-raw-stream;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }
        location ~ ^/pub/(.+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_buffer_length 100;
            nchan_message_timeout 10m;
        }
    }
}
EOF
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" -g 'daemon off;' \
    >"$OUT/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NPORT"
sleep 0.5
NCHAN_PIDS="$NGINX_PID,$(children "$NGINX_PID")"
NCHAN_PIDS=${NCHAN_PIDS%,}

# ---------- ipush ----------
CPORT=$(free_port); APORT=$(free_port); BPORT=$(free_port)
"$SERVER" --client_host=127.0.0.1 --client_port="$CPORT" --admin_port="$APORT" --bus_port="$BPORT" \
    --storage=embedded --data_dir="$WORK/ipush-data" --pid_file="$WORK/ipush.pid" --log_level=warn \
    --cores="$IPUSH_CORES" \
    >"$OUT/ipush.log" 2>&1 &
IPUSH_PID=$!
PIDS+=("$IPUSH_PID")
wait_port "$CPORT"
wait_port "$APORT"

NCHAN_T=(--sub-url-template "http://127.0.0.1:$NPORT/sub/{channel}" --pub-url-template "http://127.0.0.1:$NPORT/pub/{channel}")
IPUSH_T=(--target "127.0.0.1:$CPORT" --admin "127.0.0.1:$APORT")

# run NAME SERVER args... : loadtest with --json into $OUT/NAME.SERVER.json (never fails the script)
run() {
    local name=$1 srv=$2; shift 2
    local tgt
    if [ "$srv" = nchan ]; then tgt=("${NCHAN_T[@]}"); else tgt=("${IPUSH_T[@]}"); fi
    echo "== $name / $srv: loadtest $* ${tgt[*]}" >&2
    local hist=()
    if [ "$name" != hold ]; then hist=(--hist-out "$OUT/$name.$srv.hist"); fi
    "$LT" "$@" "${tgt[@]}" "${hist[@]}" --timeout-secs "$TIMEOUT" --json --quiet >"$OUT/$name.$srv.json" 2>"$OUT/$name.$srv.txt" || true
    cat "$OUT/$name.$srv.txt" >&2
    sleep 1
}
jq_() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=eval(sys.argv[2],{"d":d}); print(v)' "$@"; }

for srv in nchan ipush; do
    if [ "$srv" = nchan ]; then pids=$NCHAN_PIDS; else pids=$IPUSH_PID; fi
    if has hold; then
        run hold "$srv" fanout --subscribers "$N" --messages 0 --hold-secs "$HOLD" --pids "$pids"
    fi
    if has fanout; then
        run fanout "$srv" fanout --subscribers "$N" --messages "$M" --window "$WINDOW" --pub-conns "$FPUB_CONNS"
        RATE=$(jq_ "$OUT/fanout.$srv.json" 'max(1.0, max(d["publish"]["per_sec"], d["delivery"]["per_sec"]/max(1,d["connect"]["connected"]))/2)')
        run fanout-half "$srv" fanout --subscribers "$N" --messages "$M_HALF" --window "$WINDOW" --pub-conns "$FPUB_CONNS" --rate "$RATE"
    fi
    if has unicast; then
        run unicast "$srv" unicast --users "$UNICAST_USERS" --messages "$UNICAST_MSGS" --seed 1 \
            --window "$UWINDOW" --pub-conns "$PUB_CONNS"
        URATE=$(jq_ "$OUT/unicast.$srv.json" 'max(1.0, d["publish"]["per_sec"]/2)')
        run unicast-half "$srv" unicast --users "$UNICAST_USERS" --messages "$UNICAST_MSGS" --seed 1 \
            --window "$UWINDOW" --pub-conns "$PUB_CONNS" --rate "$URATE"
    fi
done

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(n, s):
    try:
        return json.load(open(os.path.join(out, f"{n}.{s}.json")))
    except Exception:
        return None
rows = []
def row(label, n, f, fmt="{:,.0f}", higher=True):
    a, b = load(n, "nchan"), load(n, "ipush")
    va = f(a) if a else None
    vb = f(b) if b else None
    ratio = ""
    if va and vb:
        ratio = f"{(vb / va if higher else va / vb):.2f}x"
    show = lambda v: "-" if v is None else fmt.format(v)
    rows.append((label, show(va), show(vb), ratio))
lat = lambda k: (lambda d: d["delivery"]["latency_us"].get(k))
row("hold: streams connected", "hold", lambda d: d["connect"]["connected"])
row("hold: connects/s", "hold", lambda d: d["connect"]["per_sec"])
row("hold: connect p99 (us)", "hold", lambda d: d["connect"]["latency_us"].get("p99"), higher=False)
row("hold: server RSS/stream (B)", "hold", lambda d: d["memory"]["rss_per_stream"], higher=False)
row("fanout: delivered msgs/s", "fanout", lambda d: d["delivery"]["per_sec"])
row("fanout: publishes/s", "fanout", lambda d: d["publish"]["per_sec"])
row("fanout: lost", "fanout", lambda d: d["delivery"]["lost"], higher=False)
row("fanout: dup+ooo", "fanout", lambda d: d["delivery"]["duplicated"] + d["delivery"]["out_of_order"], higher=False)
row("fanout: p50 (us)", "fanout", lat("p50"), higher=False)
row("fanout: p99 (us)", "fanout", lat("p99"), higher=False)
row("fanout@half: rate (pub/s)", "fanout-half", lambda d: d["rate"])
row("fanout@half: delivered msgs/s", "fanout-half", lambda d: d["delivery"]["per_sec"])
row("fanout@half: p50 (us)", "fanout-half", lat("p50"), higher=False)
row("fanout@half: p99 (us)", "fanout-half", lat("p99"), higher=False)
row("fanout@half: p99.9 (us)", "fanout-half", lat("p99_9"), higher=False)
row("fanout@half: lost", "fanout-half", lambda d: d["delivery"]["lost"], higher=False)
row("unicast: publishes/s", "unicast", lambda d: d["publish"]["per_sec"])
row("unicast: delivered msgs/s", "unicast", lambda d: d["delivery"]["per_sec"])
row("unicast: lost", "unicast", lambda d: d["delivery"]["lost"], higher=False)
row("unicast: p99 (us)", "unicast", lat("p99"), higher=False)
row("unicast@half: p50 (us)", "unicast-half", lat("p50"), higher=False)
row("unicast@half: p99 (us)", "unicast-half", lat("p99"), higher=False)
row("unicast@half: lost", "unicast-half", lambda d: d["delivery"]["lost"], higher=False)
w = [max(len(r[i]) for r in rows + [("metric", "nchan", "ipush", "ipush vs nchan (>1 = ipush better)")]) for i in range(4)]
print("| " + " | ".join(h.ljust(w[i]) for i, h in enumerate(("metric", "nchan", "ipush", "ipush vs nchan (>1 = ipush better)"))) + " |")
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
PY
python3 "$ROOT/perf/plot_latency.py" "$OUT" || true
