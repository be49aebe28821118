# perf/lib.sh — helpers the perf scripts share; `source "$(dirname "$0")/lib.sh"`.
#   free_port [HOST]          a port free on HOST (127.0.0.1) now
#   wait_port PORT [HOST]     until PORT on HOST accepts (20 s), else 1
#   perf_workdir NAME         WORK=a fresh temp dir; on exit (or INT/TERM) every pid in PIDS
#                             gets SIGTERM, then SIGKILL after 5 s, and WORK is removed

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
