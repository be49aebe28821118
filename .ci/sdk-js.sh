#!/usr/bin/env bash
# The JavaScript/TypeScript SDK (sdk/js): install its tools, then lint (tsc --noEmit strict,
# prettier --check) and run its tests (node's test runner) against a real ipush_server.
#   .ci/sdk-js.sh install   Node.js >= 20 (apt if missing) and `npm ci` in sdk/js
#   .ci/sdk-js.sh test      lint + tests; IPUSH_SERVER = the server binary (default
#                           target/debug/ipush_server, which `cargo test --workspace` builds)
#   .ci/sdk-js.sh           both
# Runs from the repository root. The tests read the shared vectors in sdk/vectors/ (missing
# vectors fail under CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

install() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
      echo "sdk-js: node and npm are missing (need root to apt-get install them)" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 20 ]; then
    echo "sdk-js: Node.js >= 20 required, found $(node --version)" >&2
    exit 1
  fi
  (cd sdk/js && { npm ci --no-audit --no-fund --loglevel=error || npm install --no-audit --no-fund --loglevel=error; })
}

run_tests() {
  export IPUSH_SERVER="${IPUSH_SERVER:-$PWD/target/debug/ipush_server}"
  if [ ! -x "$IPUSH_SERVER" ]; then
    echo "sdk-js: no server binary at $IPUSH_SERVER (cargo build, or set IPUSH_SERVER)" >&2
    exit 1
  fi
  if [ ! -d sdk/js/node_modules ]; then
    echo "sdk-js: sdk/js/node_modules is missing: run .ci/sdk-js.sh install" >&2
    exit 1
  fi
  cd sdk/js
  echo "== sdk-js: tsc --noEmit (strict), prettier --check"
  npx tsc -p tsconfig.json --noEmit
  npx tsc -p tsconfig.typetest.json
  npx prettier --check .
  echo "== sdk-js: build and test against $IPUSH_SERVER"
  npx tsc -p tsconfig.json
  node --test --test-concurrency=1 --test-timeout=60000 test/*.test.mjs
}

case "${1:-all}" in
  install) install ;;
  test) run_tests ;;
  all) install && run_tests ;;
  *)
    echo "usage: $0 [install|test]" >&2
    exit 2
    ;;
esac
