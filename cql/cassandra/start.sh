#!/usr/bin/env bash
# Starts a single-node Apache Cassandra 5.0 on 127.0.0.1 for ipush's tests and local development
# (--storage=scylla), and waits until it answers CQL. Idempotent: when it is already running,
# says so and exits 0.
#
#   bash cql/cassandra/start.sh          # prints 127.0.0.1:9042 once CQL answers
#   bash cql/cassandra/stop.sh
#
# Needs JDK 17 (Cassandra 5.0 installs a SecurityManager at start-up, which Java 24+ refuse) and
# Maven (the first run fetches cassandra-all and its runtime jars from Maven Central, ~70 MB).
#
# Environment (all optional):
#   IPUSH_CASSANDRA_CACHE     where the jars are kept (default: ~/.cache/ipush-cassandra)
#   IPUSH_CASSANDRA_RUN       pid file, log and data dir of the running node
#                             (default: ${TMPDIR:-/tmp}/ipush-cassandra)
#   IPUSH_CASSANDRA_PORT      CQL port (default 9042); storage port: IPUSH_CASSANDRA_STORAGE_PORT
#                             (default 7000)
#   IPUSH_CASSANDRA_HEAP      maximum heap (default 1g; the initial heap is 512m)
#   IPUSH_CASSANDRA_TIMEOUT_S how long to wait for CQL (default 180)
#   JAVA_HOME                 a JDK 17 (default: the first /usr/lib/jvm/*17* found)
# Every start of a stopped node begins with empty data directories.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
version="$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$here/pom.xml")"
cache="${IPUSH_CASSANDRA_CACHE:-$HOME/.cache/ipush-cassandra}"
lib="$cache/lib-$version"
run="${IPUSH_CASSANDRA_RUN:-${TMPDIR:-/tmp}/ipush-cassandra}"
port="${IPUSH_CASSANDRA_PORT:-9042}"
storage_port="${IPUSH_CASSANDRA_STORAGE_PORT:-7000}"
heap="${IPUSH_CASSANDRA_HEAP:-1g}"
wait_s="${IPUSH_CASSANDRA_TIMEOUT_S:-180}"
pidfile="$run/cassandra.pid"
addr="127.0.0.1:$port"

die() {
  echo "cassandra/start.sh: $*" >&2
  exit 1
}

# Sends a CQL v4 OPTIONS frame and expects a SUPPORTED answer (0x84 ... opcode 0x06).
cql_answers() {
  local reply
  reply="$(timeout 3 bash -c "
    exec 3<>/dev/tcp/127.0.0.1/$port || exit 1
    printf '\x04\x00\x00\x01\x05\x00\x00\x00\x00' >&3
    head -c 5 <&3 | od -An -tx1
  " 2>/dev/null)" || return 1
  [[ "$(echo "$reply" | tr -d ' \n')" == 8400000106 ]]
}

running_pid() {
  [[ -f "$pidfile" ]] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

if pid="$(running_pid)"; then
  if cql_answers; then
    echo "cassandra already running (pid $pid), CQL at $addr"
    echo "$addr"
    exit 0
  fi
  echo "cassandra already started (pid $pid) but CQL does not answer yet; waiting" >&2
else
  # ---- JDK 17 ---------------------------------------------------------------------------
  java_major() { "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
  java=""
  for j in "${JAVA_HOME:+$JAVA_HOME/bin/java}" /usr/lib/jvm/java-17-openjdk-*/bin/java \
    /usr/lib/jvm/*17*/bin/java "$(command -v java || true)"; do
    if [[ -n "$j" && -x "$j" && "$(java_major "$j")" == 17 ]]; then
      java="$j"
      break
    fi
  done
  [[ -n "$java" ]] || die "no JDK 17 found (set JAVA_HOME; Debian: apt-get install openjdk-17-jdk-headless)"

  if ss -ltn 2>/dev/null | awk '{print $4}' | grep -qE "[:.]$port\$"; then
    die "port $port is taken by another process, which is not the node this script started \
(set IPUSH_CASSANDRA_PORT to use another port)"
  fi

  # ---- the jars, fetched once ----------------------------------------------------------------
  if [[ ! -f "$lib/cassandra-all-$version.jar" ]]; then
    command -v mvn >/dev/null || die "mvn not found (Debian: apt-get install maven)"
    echo "fetching cassandra-all $version and its dependencies into $lib (once)" >&2
    mkdir -p "$cache"
    tmp="$(mktemp -d "$cache/fetch.XXXXXX")"
    if ! mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$tmp" >"$cache/fetch.log" 2>&1; then
      tail -20 "$cache/fetch.log" >&2
      rm -rf "$tmp"
      die "mvn could not fetch cassandra-all $version (log: $cache/fetch.log)"
    fi
    rm -rf "$lib"
    mv "$tmp" "$lib"
  fi

  # ---- a fresh node --------------------------------------------------------------------------
  mkdir -p "$run"
  rm -rf "$run/data" "$run/logs"
  mkdir -p "$run/data" "$run/logs"
  # The JVM options of Cassandra's conf/jvm-server.options and conf/jvm17-server.options that
  # matter here, with a small heap.
  opts=(
    -Xms512m "-Xmx$heap" -Xss256k
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m
    -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300
    -XX:InitiatingHeapOccupancyPercent=70 -XX:+UseTLAB -XX:+ResizeTLAB
    -XX:+PerfDisableSharedMem -XX:-UseBiasedLocking
    -XX:+HeapDumpOnOutOfMemoryError "-XX:HeapDumpPath=$run/logs"
    -XX:+CrashOnOutOfMemoryError -XX:StringTableSize=1000003
    -Djava.net.preferIPv4Stack=true -Djdk.attach.allowAttachSelf=true
    -Dio.netty.tryReflectionSetAccessible=true -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    "-javaagent:$lib/jamm-0.4.0.jar"
    # One node, thrown away after the run: skip fsyncs of the system tables, gossip settling
    # and the ring delay.
    -Dcassandra.unsafesystem=true
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=100
    -Dcassandra.initial_token=0
    "-Dcassandra.config=file://$here/cassandra.yaml"
    "-Dcassandra.storagedir=$run/data"
    "-Dcassandra.logdir=$run/logs"
    "-Dlogback.configurationFile=file://$here/logback.xml"
    "-Dcassandra.native_transport_port=$port"
    "-Dcassandra.storage_port=$storage_port"
    -Dcassandra-foreground=yes
  )
  # -XX:-UseBiasedLocking is gone from JDK 17's accepted flags on some builds: drop what the
  # JVM refuses rather than fail.
  if ! "$java" -XX:-UseBiasedLocking -version >/dev/null 2>&1; then
    opts=("${opts[@]/-XX:-UseBiasedLocking/}")
  fi
  filtered=()
  for o in "${opts[@]}"; do [[ -n "$o" ]] && filtered+=("$o"); done
  nohup "$java" "${filtered[@]}" -cp "$here:$lib/*" org.apache.cassandra.service.CassandraDaemon \
    >"$run/logs/stdout.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
  echo "cassandra $version starting (pid $pid, data in $run/data, log $run/logs/system.log)" >&2
fi

deadline=$((SECONDS + wait_s))
until cql_answers; do
  if ! kill -0 "$pid" 2>/dev/null; then
    tail -30 "$run/logs/stdout.log" >&2 || true
    grep -E "ERROR|Exception" "$run/logs/system.log" 2>/dev/null | tail -10 >&2 || true
    rm -f "$pidfile"
    die "cassandra (pid $pid) exited before CQL answered (logs in $run/logs)"
  fi
  if ((SECONDS >= deadline)); then
    tail -20 "$run/logs/system.log" >&2 || true
    die "CQL at $addr did not answer within ${wait_s}s (pid $pid still running; logs in $run/logs; \
bash $here/stop.sh stops it)"
  fi
  sleep 1
done
echo "cassandra up (pid $pid), CQL at $addr" >&2
echo "$addr"
