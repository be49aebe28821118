#!/usr/bin/env bash
# perf/vs-peers.sh — the same loadtest scenarios against nchan (nginx + libnginx-mod-nchan,
# Debian), Centrifugo v6 and ipush (release build, --storage=embedded, fresh data dir), in one
# run, with a table of ratios.
#
#   perf/vs-peers.sh                          # N=10000 M=1000 UNICAST_USERS=10000 UNICAST_MSGS=100000
#   N=2000 M=200 UNICAST_MSGS=20000 perf/vs-peers.sh   # quick
#   SCENARIOS="connect burst" PEERS="nchan ipush" perf/vs-peers.sh   # some scenarios, some servers
#   NO_BUILD=1 SERVER=/tmp/ipush_before PEERS=ipush OUT=/tmp/a perf/vs-peers.sh   # A/B a binary
#   IPUSH_ARGS=--defer_accept_s=0 perf/vs-peers.sh    # more ipush_server flags
#
# Scenarios (each bounded in time by loadtest itself):
#   connect  fanout --messages 0: N streams opened at CONNECT_RATE/s (default 10,000) and held
#            HOLD s; connect latency (connect start -> response head), RSS/stream
#   burst    the same with every connect started at once (--connect-rate 100000000)
#   fanout   N subscribers of one channel x M publishes, as fast as the window allows
#   fanout½  M_HALF (M/5) publishes at half the max publish rate measured just before
#   unicast  UNICAST_USERS streams, UNICAST_MSGS publishes to random users (--seed 1)
#   unicast½ the same at half the measured unicast rate (publish -> receive latency), or at
#            UNICAST_RATE publishes/s for every server
# nchan: `http-raw-stream` subscribers (each message followed by "\n"), POST /pub/<channel>,
#   a 100-message buffer for 10 min per channel; unicast = one channel per user.
# Centrifugo: the uni-directional HTTP-streaming transport (POST /connection/uni_http_stream,
#   one JSON push per line), clients authenticated with an HS256 JWT whose `channels` claim
#   subscribes them (a user's own channel in unicast); publishes through its HTTP server API
#   (POST /api/publish, X-API-Key); history on (100 messages, 10 min per channel: offsets are
#   checked consecutive per stream); in-memory engine; GOMAXPROCS=CENTRIFUGO_PROCS.
#   Installed with `go install github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION` through
#   the Go module proxy into ~/.cache/ipush-peers/bin (CENTRIFUGO= to use another binary).
# Output: a table on stdout; JSON reports, logs and HDR percentile files (*.hist) in $OUT
# (default perf/results/vs-peers/).
set -euo pipefail

N=${N:-10000}
M=${M:-1000}
HOLD=${HOLD:-3}
CONNECT_RATE=${CONNECT_RATE:-10000}
UNICAST_USERS=${UNICAST_USERS:-10000}
UNICAST_MSGS=${UNICAST_MSGS:-100000}
PUB_CONNS=${PUB_CONNS:-16}
FPUB_CONNS=${FPUB_CONNS:-32}
WINDOW=${WINDOW:-32}
M_HALF=${M_HALF:-$(( M / 5 ))}
TIMEOUT=${TIMEOUT:-900}
UWINDOW=${UWINDOW:-256}
SCENARIOS=${SCENARIOS:-connect burst fanout unicast}
PEERS=${PEERS:-nchan centrifugo ipush}
# Server sizes (the load generator shares the box): nginx workers, Go threads, ipush cores.
NCHAN_WORKERS=${NCHAN_WORKERS:-2}
CENTRIFUGO_PROCS=${CENTRIFUGO_PROCS:-2}
IPUSH_CORES=${IPUSH_CORES:-2}
CENTRIFUGO_VERSION=${CENTRIFUGO_VERSION:-latest}
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }
peer() { [[ " $PEERS " == *" $1 "* ]]; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/perf/results/vs-peers}
LT=${LT:-$ROOT/target/release/loadtest}
# SERVER= another ipush_server binary (A/B runs); NO_BUILD=1 skips the cargo build.
SERVER=${SERVER:-$ROOT/target/release/ipush_server}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ipush-peers
CENTRIFUGO=${CENTRIFUGO:-$CACHE/bin/centrifugo}
mkdir -p "$OUT"

if peer nchan && { ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; }; then
    echo "installing nginx + libnginx-mod-nchan (apt-get)..." >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx libnginx-mod-nchan >&2
fi
if peer centrifugo && [ ! -x "$CENTRIFUGO" ]; then
    echo "installing centrifugo v6 (go install, module proxy) into $CACHE/bin..." >&2
    mkdir -p "$CACHE/bin"
    GOBIN=$CACHE/bin go install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION" >&2
    CENTRIFUGO=$CACHE/bin/centrifugo
fi
if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release -p ipush --bin ipush_server -p loadtest >&2)
fi

# shellcheck source=perf/lib.sh
source "$ROOT/perf/lib.sh"
perf_workdir vs-peers

rand() { python3 -c 'import secrets; print(secrets.token_hex(16))'; }

declare -A TGT PIDS_OF

# ---------- nchan ----------
if peer nchan; then
    start_nchan "$NCHAN_WORKERS" "$OUT/nginx.log"
    PIDS_OF[nchan]=$NCHAN_PIDS
    TGT[nchan]="--sub-url-template http://127.0.0.1:$NPORT/sub/{channel} --pub-url-template http://127.0.0.1:$NPORT/pub/{channel}"
fi

# ---------- Centrifugo ----------
if peer centrifugo; then
    FPORT=$(free_port)
    CF_SECRET=$(rand)
    CF_KEY=$(rand)
    cat >"$WORK/centrifugo.json" <<EOF
{
  "http_server": { "address": "127.0.0.1", "port": $FPORT },
  "log": { "level": "warn" },
  "usage_stats": { "disabled": true },
  "client": { "token": { "hmac_secret_key": "$CF_SECRET" } },
  "http_api": { "key": "$CF_KEY" },
  "uni_http_stream": { "enabled": true, "connect_code_to_http_response": { "enabled": true } },
  "websocket": { "disabled": true },
  "channel": { "without_namespace": { "history_size": 100, "history_ttl": "600s" } }
}
EOF
    "$CENTRIFUGO" version >"$OUT/centrifugo.version" 2>&1 || true
    GOMAXPROCS=$CENTRIFUGO_PROCS "$CENTRIFUGO" --config "$WORK/centrifugo.json" >"$OUT/centrifugo.log" 2>&1 &
    CF_PID=$!
    PIDS+=("$CF_PID")
    wait_port "$FPORT"
    PIDS_OF[centrifugo]=$CF_PID
    TGT[centrifugo]="--peer centrifugo --target 127.0.0.1:$FPORT --api-key $CF_KEY --auth_secret $CF_SECRET"
fi

# ---------- ipush ----------
if peer ipush; then
    CPORT=$(free_port); APORT=$(free_port); BPORT=$(free_port)
    "$SERVER" --client_host=127.0.0.1 --client_port="$CPORT" --admin_port="$APORT" --bus_port="$BPORT" \
        --storage=embedded --data_dir="$WORK/ipush-data" --pid_file="$WORK/ipush.pid" --log_level=warn \
        --cores="$IPUSH_CORES" ${IPUSH_ARGS:-} \
        >"$OUT/ipush.log" 2>&1 &
    IPUSH_PID=$!
    PIDS+=("$IPUSH_PID")
    wait_port "$CPORT"
    wait_port "$APORT"
    PIDS_OF[ipush]=$IPUSH_PID
    TGT[ipush]="--target 127.0.0.1:$CPORT --admin 127.0.0.1:$APORT"
fi

# run NAME SERVER args... : loadtest with --json into $OUT/NAME.SERVER.json (never fails the script)
run() {
    local name=$1 srv=$2; shift 2
    local tgt
    read -r -a tgt <<<"${TGT[$srv]}"
    echo "== $name / $srv: loadtest $*" >&2
    "$LT" "$@" "${tgt[@]}" --hist-out "$OUT/$name.$srv.hist" --timeout-secs "$TIMEOUT" --json --quiet \
        >"$OUT/$name.$srv.json" 2>"$OUT/$name.$srv.txt" || true
    cat "$OUT/$name.$srv.txt" >&2
    sleep 1
}
jq_() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=eval(sys.argv[2],{"d":d}); print(v)' "$@"; }

uptime >"$OUT/uptime.txt"
for srv in $PEERS; do
    pids=${PIDS_OF[$srv]}
    if has connect; then
        run connect "$srv" fanout --subscribers "$N" --messages 0 --hold-secs "$HOLD" \
            --connect-rate "$CONNECT_RATE" --pids "$pids"
    fi
    if has burst; then
        run burst "$srv" fanout --subscribers "$N" --messages 0 --hold-secs 0 \
            --connect-rate 100000000
    fi
    if has fanout; then
        run fanout "$srv" fanout --subscribers "$N" --messages "$M" --window "$WINDOW" --pub-conns "$FPUB_CONNS"
        RATE=$(jq_ "$OUT/fanout.$srv.json" 'max(1.0, max(d["publish"]["per_sec"], d["delivery"]["per_sec"]/max(1,d["connect"]["connected"]))/2)')
        run fanout-half "$srv" fanout --subscribers "$N" --messages "$M_HALF" --window "$WINDOW" --pub-conns "$FPUB_CONNS" --rate "$RATE"
    fi
    if has unicast; then
        run unicast "$srv" unicast --users "$UNICAST_USERS" --messages "$UNICAST_MSGS" --seed 1 \
            --window "$UWINDOW" --pub-conns "$PUB_CONNS"
        # UNICAST_RATE=N: the same rate for every server (the issue's "p99 at 5,000/s").
        URATE=${UNICAST_RATE:-$(jq_ "$OUT/unicast.$srv.json" 'max(1.0, d["publish"]["per_sec"]/2)')}
        run unicast-half "$srv" unicast --users "$UNICAST_USERS" --messages "$UNICAST_MSGS" --seed 1 \
            --window "$UWINDOW" --pub-conns "$PUB_CONNS" --rate "$URATE"
    fi
done
uptime >>"$OUT/uptime.txt"

python3 "$ROOT/perf/peers_table.py" "$OUT" $PEERS
