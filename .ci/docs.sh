#!/usr/bin/env bash
# Docs checks (issue 14): `.ci/docs.sh install` installs what they need (nginx and openssl for
# tests/tls_nginx.rs, a Python venv with schemathesis); `.ci/docs.sh test` runs schemathesis:
# docs/admin-api.yaml against a live server started from $IPUSH_SERVER (generated and
# malformed inputs for every operation: no 5xx, every answer as described). With no argument:
# both. The Rust tests (tests/vectors.rs, tests/tls_nginx.rs, tests/admin_head_allow.rs) run
# in `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${DOCS_VENV:-target/docs-venv}
SCHEMATHESIS_VERSION=4.32.5

install() {
  local need=()
  command -v nginx >/dev/null || need+=(nginx)
  command -v openssl >/dev/null || need+=(openssl)
  command -v python3 >/dev/null || need+=(python3)
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then need+=(python3-venv); fi
  command -v curl >/dev/null || need+=(curl)
  if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ! -x "$VENV/bin/schemathesis" ] ||
    [ "$("$VENV/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  nginx -v
  openssl version
  "$VENV/bin/schemathesis" --version
}

# What `test` started, ended on exit whatever happens (globals: the trap runs after return).
PID=""
HOLDER=""
DIR=""
cleanup() {
  if [ -n "$HOLDER" ]; then kill "$HOLDER" 2>/dev/null || true; fi
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  if [ -n "$DIR" ]; then rm -rf "$DIR"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

test_admin_api() {
  local bin=${IPUSH_SERVER:-target/debug/ipush_server}
  if [ ! -x "$bin" ]; then
    echo "docs.sh: no server binary at $bin (set IPUSH_SERVER or cargo build)" >&2
    exit 1
  fi
  if [ ! -x "$VENV/bin/schemathesis" ]; then
    echo "docs.sh: schemathesis missing: run .ci/docs.sh install" >&2
    exit 1
  fi
  local cp ap bp
  DIR=$(mktemp -d)
  local dir=$DIR
  trap cleanup EXIT
  # start on free ports; retry if a port was taken in between
  for _ in 1 2 3 4 5; do
    cp=$(free_port) ap=$(free_port) bp=$(free_port)
    [ "$cp" != "$ap" ] && [ "$ap" != "$bp" ] && [ "$cp" != "$bp" ] || continue
    "$bin" --client_host=127.0.0.1 --client_port="$cp" --admin_port="$ap" --bus_port="$bp" \
      --cores=2 --storage=memory --data_dir="$dir/data" --pid_file="$dir/ipush.pid" \
      --log_level=error >"$dir/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 300); do
      if curl -fsS -o /dev/null "http://127.0.0.1:$ap/health" 2>/dev/null; then break 2; fi
      kill -0 "$PID" 2>/dev/null || break
      sleep 0.1
    done
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
  done
  if [ -z "$PID" ]; then
    echo "docs.sh: the server did not start" >&2
    cat "$dir/server.log" >&2 || true
    exit 1
  fi
  # a connected user, so that POST /disconnect?uid=user001 (the schema's example) can succeed
  curl -sN "http://127.0.0.1:$cp/connect?uid=user001&password=pw" >/dev/null 2>&1 &
  HOLDER=$!

  local common=(--config-file .ci/docs-schemathesis.toml run docs/admin-api.yaml
    --url "http://127.0.0.1:$ap" --checks all --max-examples 30 --seed 14 --workers 1
    --request-timeout 10 --no-color)
  echo "== schemathesis, ASCII strings, every check"
  "$VENV/bin/schemathesis" "${common[@]}" --generation-codec ascii
  echo "== schemathesis, any UTF-8 string (ids are limited in bytes, which a schema's"
  echo "   maxLength cannot say: a schema-valid id may be refused, so positive_data_acceptance is off)"
  "$VENV/bin/schemathesis" "${common[@]}" --exclude-checks positive_data_acceptance
  kill -0 "$PID" 2>/dev/null || {
    echo "docs.sh: the server died during the run" >&2
    exit 1
  }
}

case "${1:-all}" in
  install) install ;;
  test) test_admin_api ;;
  all)
    install
    test_admin_api
    ;;
  *)
    echo "usage: .ci/docs.sh [install|test]" >&2
    exit 2
    ;;
esac
