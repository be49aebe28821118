#!/usr/bin/env bash
# CI for the reliability work (issue 11): `install` fetches what the tests need, `test` runs
# them; no argument does both. Runs from the repo root as root on a fresh Debian machine;
# IPUSH_SERVER (absolute path) names the server binary under test. Every prerequisite missing
# after `install` is a failure, not a skip.
#   tests: crash_restart, data_dir_lock, head_requests, websocket_close, operable, systemd_unit,
#          the unit tests of net / lockfile / diagnose / ws / response / auth
#   fuzz:  .ci/fuzz.sh (installs cargo-fuzz if needed, builds every target in fuzz/, runs each
#          for FUZZ_SMOKE_S seconds, default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

# What cargo test --workspace needs (systemd-analyze for tests/systemd_unit.rs, prlimit for
# tests/operable.rs, iptables for tests/dynamic_cluster.rs); .ci/run calls this.
packages() {
  local pkgs=()
  command -v systemd-analyze >/dev/null || pkgs+=(systemd)
  command -v prlimit >/dev/null || pkgs+=(util-linux)
  # tests/dynamic_cluster.rs cuts a node off from its peers with iptables rules.
  command -v iptables >/dev/null || pkgs+=(iptables)
  if [ "${#pkgs[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  fi
}

install() {
  packages
}

run_tests() {
  for tool in systemd-analyze prlimit; do
    command -v "$tool" >/dev/null || { echo "reliab: $tool missing (run .ci/reliab.sh install)" >&2; exit 1; }
  done
  export CI=${CI:-true}
  cargo test --lib -- net:: lockfile diagnose transport::ws http::response auth::
  cargo test --test crash_restart --test data_dir_lock --test head_requests \
    --test websocket_close --test operable --test systemd_unit
  bash .ci/fuzz.sh
}

case "${1:-all}" in
  packages) packages ;;
  install) install ;;
  test) run_tests ;;
  all) install; run_tests ;;
  *) echo "usage: .ci/reliab.sh [packages|install|test]" >&2; exit 2 ;;
esac
