#!/usr/bin/env bash
# CI for the Go SDK (sdk/go): `install` checks the Go toolchain (>= 1.21) and downloads the
# module's dependencies from the module proxy (go.sum is committed); `test` checks gofmt and
# go vet, then runs `go test -race` against the real server at $IPUSH_SERVER (default
# target/debug/ipush_server). No subcommand = install, then test. A missing prerequisite fails.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=sdk/go
export PATH="$PATH:/usr/local/go/bin"

go_ok() {
  command -v go >/dev/null || return 1
  local v
  v="$(go env GOVERSION 2>/dev/null)" || return 1 # e.g. go1.26.8
  v="${v#go}"
  local major="${v%%.*}" rest="${v#*.}"
  local minor="${rest%%.*}"
  [ "$major" -gt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -ge 21 ]; }
}

install() {
  if ! go_ok && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null || true
  fi
  go_ok || { echo "sdk-go: Go >= 1.21 is required (found: $(go version 2>/dev/null || echo none))" >&2; exit 1; }
  go version
  (cd "$PKG" && go mod download && go mod verify >/dev/null)
}

run_tests() {
  go_ok || { echo "sdk-go: Go >= 1.21 is required; run '$0 install' first" >&2; exit 1; }
  export IPUSH_SERVER="${IPUSH_SERVER:-$PWD/target/debug/ipush_server}"
  case "$IPUSH_SERVER" in /*) ;; *) IPUSH_SERVER="$PWD/$IPUSH_SERVER" ;; esac
  if [ ! -x "$IPUSH_SERVER" ]; then
    echo "sdk-go: no server binary at $IPUSH_SERVER (build it with cargo build)" >&2
    exit 1
  fi
  (
    cd "$PKG"
    unformatted="$(gofmt -l .)"
    if [ -n "$unformatted" ]; then
      echo "sdk-go: not gofmt'ed:" >&2
      echo "$unformatted" >&2
      exit 1
    fi
    go vet ./...
    # -race needs cgo (gcc); the suite takes ~10 s, the first race build of the
    # standard library a few minutes on a cold cache.
    go test -race -count=1 -timeout=5m ./...
  )
}

case "${1:-all}" in
  install) install ;;
  test) run_tests ;;
  all) install && run_tests ;;
  *) echo "usage: $0 [install|test]" >&2; exit 2 ;;
esac
