#!/usr/bin/env bash
# CI for the Python SDK (sdk/python): `install` makes a venv at sdk/python/.venv and installs
# the package with its test extras from PyPI; `test` lints (ruff, mypy --strict) and runs
# pytest against the real server at $IPUSH_SERVER (default target/debug/ipush_server).
# No subcommand = install, then test. Run from anywhere; works from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

PKG=sdk/python
VENV=$PKG/.venv
PY=$VENV/bin/python

python_ok() {
  command -v python3 >/dev/null &&
    python3 -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null
}

install() {
  if ! python_ok; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    fi
    python_ok || { echo "sdk-py: python3 >= 3.9 with venv is required" >&2; exit 1; }
  fi
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --disable-pip-version-check --upgrade pip
  "$PY" -m pip install -q --disable-pip-version-check -e "$PKG[test]"
}

run_tests() {
  [ -x "$PY" ] || { echo "sdk-py: no venv at $VENV; run '$0 install' first" >&2; exit 1; }
  export IPUSH_SERVER="${IPUSH_SERVER:-$PWD/target/debug/ipush_server}"
  if [ ! -x "$IPUSH_SERVER" ]; then
    echo "sdk-py: no server binary at $IPUSH_SERVER (build it with cargo build)" >&2
    exit 1
  fi
  (
    cd "$PKG"
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/mypy src/ipush
    .venv/bin/python -m pytest -q -p no:cacheprovider
  )
}

case "${1:-all}" in
  install) install ;;
  test) run_tests ;;
  all) install && run_tests ;;
  *) echo "usage: $0 [install|test]" >&2; exit 2 ;;
esac
