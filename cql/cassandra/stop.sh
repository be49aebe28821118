#!/usr/bin/env bash
# Stops the Cassandra node cql/cassandra/start.sh started (by its pid file): SIGTERM, then
# SIGKILL after IPUSH_CASSANDRA_STOP_S seconds (default 30). Nothing running: says so, exit 0.
set -euo pipefail

run="${IPUSH_CASSANDRA_RUN:-${TMPDIR:-/tmp}/ipush-cassandra}"
pidfile="$run/cassandra.pid"
wait_s="${IPUSH_CASSANDRA_STOP_S:-30}"

if [[ ! -f "$pidfile" ]]; then
  echo "cassandra not running (no $pidfile)"
  exit 0
fi
pid="$(cat "$pidfile")"
if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
  echo "cassandra not running (stale pid file, pid ${pid:-none})"
  rm -f "$pidfile"
  exit 0
fi
# A stopped (SIGSTOP) JVM cannot handle SIGTERM: continue it first.
kill -CONT "$pid" 2>/dev/null || true
kill -TERM "$pid"
deadline=$((SECONDS + wait_s))
while kill -0 "$pid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then
    echo "cassandra (pid $pid) still running after ${wait_s}s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    break
  fi
  sleep 0.5
done
rm -f "$pidfile"
echo "cassandra stopped (pid $pid)"
