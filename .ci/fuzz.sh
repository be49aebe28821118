#!/usr/bin/env bash
# CI for the fuzz targets (issue 11): `install` installs cargo-fuzz when missing; `test` builds
# every target in fuzz/ with a light profile, replays the saved crash inputs
# (fuzz/regressions/<target>/), then fuzzes each target for FUZZ_SMOKE_S seconds (default 15)
# from an empty corpus; no argument does both. Fails on a build failure or a crash (the
# crashing input is kept in fuzz/artifacts/<target>/).
#
# Light profile: `cargo fuzz build --dev` (no optimisation; AddressSanitizer, coverage and
# debug assertions as usual) on ipush without its default `scylla` feature. A 15 s smoke run
# needs no speed; the optimised single-codegen-unit build that `cargo fuzz build` makes by
# default is for the long runs (perf/fuzz.sh). Times on the 2-core box: perf/RESULTS.md
# ("Fuzz targets in CI").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer); this lets the stable toolchain
# accept them.
export RUSTC_BOOTSTRAP=1
# Symbolised stack traces on a crash at a fraction of full debug info's build time and disk.
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
secs=${FUZZ_SMOKE_S:-15}

install() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    started=$SECONDS
    cargo install --locked cargo-fuzz --version 0.13.2
    echo "fuzz: cargo-fuzz installed in $((SECONDS - started)) s"
  fi
}

# Builds, replays, smoke-runs; runs in a subshell of its own (it changes directory).
run_tests() (
  cargo fuzz --version >/dev/null 2>&1 || { echo "fuzz: cargo-fuzz missing (run .ci/fuzz.sh install)" >&2; exit 1; }
  # The fuzz crate has its own lock file (not committed): start it from the server's, so both
  # build the same dependency versions (again whenever the server's changes).
  [ fuzz/Cargo.lock -nt Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
  cd fuzz
  started=$SECONDS
  cargo fuzz build --dev
  echo "fuzz: targets built in $((SECONDS - started)) s"

  bin=target/x86_64-unknown-linux-gnu/debug
  corpus=$(mktemp -d)
  trap 'rm -rf "$corpus"' EXIT
  failed=()
  passed=0
  for t in $(cargo fuzz list); do
    mkdir -p "artifacts/$t" "$corpus/$t"
    opts=(-artifact_prefix="artifacts/$t/" -rss_limit_mb=2048 -timeout=10)
    if [ -d "regressions/$t" ]; then
      # Each saved input once: a fixed crash that came back fails here.
      if ! "$bin/$t" "${opts[@]}" regressions/"$t"/* >"$corpus/$t.log" 2>&1; then
        tail -30 "$corpus/$t.log" >&2
        failed+=("$t (regression input)")
        continue
      fi
    fi
    if TMPDIR=$corpus "$bin/$t" "${opts[@]}" -max_total_time="$secs" -print_final_stats=1 \
         "$corpus/$t" >"$corpus/$t.log" 2>&1; then
      execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$corpus/$t.log" | tail -1)
      echo "fuzz: $t ${secs}s ${execs:-?} execs, no crash"
      passed=$((passed + 1))
    else
      tail -40 "$corpus/$t.log" >&2
      failed+=("$t")
    fi
  done
  [ "${#failed[@]}" -eq 0 ] || echo "fuzz: CRASH in ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  # The closing line CI reads: one target is one test.
  echo "fuzz: $passed passed, ${#failed[@]} failed"
  [ "${#failed[@]}" -eq 0 ]
)

case "${1:-all}" in
  install) install ;;
  test) run_tests ;;
  all) install; run_tests ;;
  *) echo "usage: .ci/fuzz.sh [install|test]" >&2; exit 2 ;;
esac
