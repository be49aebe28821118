# perf/lib.sh — helpers the perf scripts share; `source "$(dirname "$0")/lib.sh"`.
#   free_port [HOST]          a port free on HOST (127.0.0.1) now
#   wait_port PORT [HOST]     until PORT on HOST accepts (20 s), else 1
#   perf_workdir NAME         WORK=a fresh temp dir; on exit (or INT/TERM) every pid in PIDS
#                             gets SIGTERM, then SIGKILL after 5 s, and WORK is removed
#   start_nchan WORKERS LOG   nginx + nchan in $WORK/nginx on 127.0.0.1:$NPORT (a free port):
#                             http-raw-stream subscribers on /sub/<id>, publishers on /pub/<id>,
#                             a 100-message buffer for 10 min per channel; NCHAN_PIDS = the
#                             master and its workers (comma-separated), the master in PIDS

free_port() {
    python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "${1:-127.0.0.1}"
}

wait_port() {
    local port=$1 host=${2:-127.0.0.1}
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$host:$port did not open" >&2
    return 1
}

PIDS=()
perf_cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    [ -z "${WORK:-}" ] || rm -rf "$WORK"
}

perf_workdir() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    trap perf_cleanup EXIT
    trap 'exit 130' INT TERM
}

start_nchan() {
    local workers=$1 log=$2 master
    NPORT=$(free_port)
    mkdir -p "$WORK/nginx/logs" "$WORK/nginx/tmp"
    cat >"$WORK/nginx/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes $workers;
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
    keepalive_requests 100000000;
    nchan_max_reserved_memory 1024M;
    server {
        # reuseport: one listening socket per worker, so the kernel spreads the subscribers.
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
    nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" \
        -g 'daemon off;' >"$log" 2>&1 &
    master=$!
    PIDS+=("$master")
    wait_port "$NPORT"
    sleep 0.5
    NCHAN_PIDS="$master,$(pgrep -P "$master" | paste -sd,)"
    NCHAN_PIDS=${NCHAN_PIDS%,}
}
