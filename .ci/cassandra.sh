#!/usr/bin/env bash
# The --storage=scylla tests against a real Apache Cassandra (issue 16), on their own: JDK 17 and
# Maven from apt when absent, cql/cassandra/start.sh (stopped at exit unless it was already
# running), then every test target that has scylla tests, none skipped. .ci/run does the same
# for the whole suite. Runs from the repo root; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
ls /usr/lib/jvm/java-17-openjdk-*/bin/java >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
run="${IPUSH_CASSANDRA_RUN:-${TMPDIR:-/tmp}/ipush-cassandra}"
if ! { [ -f "$run/cassandra.pid" ] && kill -0 "$(cat "$run/cassandra.pid")" 2>/dev/null; }; then
  trap 'bash cql/cassandra/stop.sh' EXIT
fi
started=$SECONDS
IPUSH_TEST_SCYLLA="$(bash cql/cassandra/start.sh | tail -1)"
echo "cassandra at $IPUSH_TEST_SCYLLA after $((SECONDS - started)) s"
IPUSH_TEST_SCYLLA_PID="$(cat "$run/cassandra.pid")"
export IPUSH_TEST_SCYLLA IPUSH_TEST_SCYLLA_PID CI="${CI:-true}"
cargo test -p ipush --lib scylla
cargo test -p ipush --test storage_conformance --test scylla_errors --test scylla_outage
cargo test -p ipush --test durability --test cluster scylla
