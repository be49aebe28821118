#!/usr/bin/env bash
# CI for the Java SDK (sdk/java): `install` makes sure JDK 17 and Maven are there and fetches
# the build's dependencies; `test` runs the JUnit suite against a real ipush_server
# ($IPUSH_SERVER, default target/debug/ipush_server). No argument: both.
# Runs from the repository root; a missing prerequisite fails (never skips) when CI is set.
set -euo pipefail
cd "$(dirname "$0")/.."

jdk17_home() {
  local d
  for d in /usr/lib/jvm/java-17-openjdk-*; do
    if [ -x "$d/bin/javac" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

use_jdk17() {
  local home
  if ! home="$(jdk17_home)"; then
    echo "sdk-java: JDK 17 not found under /usr/lib/jvm (run: $0 install)" >&2
    exit 1
  fi
  export JAVA_HOME="$home"
  export PATH="$JAVA_HOME/bin:$PATH"
}

MVN_FLAGS=(-B -q -Dstyle.color=never
  # -q hides Maven's INFO lines; keep Surefire's "Tests run: N, Failures: 0" summary.
  -Dorg.slf4j.simpleLogger.log.org.apache.maven.plugin.surefire=info)

install() {
  if ! jdk17_home >/dev/null || ! command -v mvn >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jdk-headless maven >/dev/null
  fi
  use_jdk17
  java -version 2>&1 | head -1 || true
  mvn -v 2>/dev/null | head -1 || true
  # Fetch the plugins and dependencies (and compile, warnings are errors).
  (cd sdk/java && mvn "${MVN_FLAGS[@]}" test-compile spotless:check)
}

run_tests() {
  use_jdk17
  local server="${IPUSH_SERVER:-target/debug/ipush_server}"
  if [ ! -x "$server" ]; then
    echo "sdk-java: ipush_server not found at $server (build it with cargo build, or set IPUSH_SERVER)" >&2
    exit 1
  fi
  if [ ! -f sdk/vectors/messages.json ]; then
    echo "sdk-java: shared vectors missing at sdk/vectors/" >&2
    exit 1
  fi
  IPUSH_SERVER="$(readlink -f "$server")"
  export IPUSH_SERVER
  export CI="${CI:-true}"
  # Format check (google-java-format through spotless), then the suite.
  (cd sdk/java && mvn "${MVN_FLAGS[@]}" spotless:check test)
}

case "${1:-all}" in
  install) install ;;
  test) run_tests ;;
  all)
    install
    run_tests
    ;;
  *)
    echo "usage: $0 [install|test]" >&2
    exit 2
    ;;
esac
