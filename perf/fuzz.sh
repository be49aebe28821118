#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for SECONDS (default 60), one after the
# other, then prints one line per target: executions, execs/s, corpus size, crash or not.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); works on a stable toolchain through
# RUSTC_BOOTSTRAP=1. A crash leaves its input in fuzz/artifacts/<target>/ and makes the script
# exit 1 (after running the other targets). With PARALLEL=1 all targets run at once (each for
# SECONDS of wall time), for a box whose time is short; run it under `nice -n 19` on a shared
# one. The builds here are the optimised ones cargo-fuzz makes by default; .ci/fuzz.sh is the
# quick CI variant. Usage: [PARALLEL=1] perf/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
shift || true
case $secs in '' | *[!0-9]*) echo "usage: perf/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;; esac
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2
  exit 1
fi
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
# Same dependency versions as the server build (fuzz/Cargo.lock is not committed).
[ Cargo.lock -nt ../Cargo.lock ] || cp ../Cargo.lock Cargo.lock
cargo fuzz build >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs one target; its log and verdict go to $work/<target>.{log,verdict}.
run_one() {
  local t=$1
  mkdir -p "corpus/$t" "$work/$t.tmp"
  if TMPDIR="$work/$t.tmp" cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" \
       -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 >"$work/$t.log" 2>&1; then
    echo "no crash" >"$work/$t.verdict"
  else
    echo "CRASH (see fuzz/artifacts/$t/)" >"$work/$t.verdict"
  fi
}

for t in "${targets[@]}"; do
  if [ "${PARALLEL:-0}" = 1 ]; then run_one "$t" & else run_one "$t"; fi
done
wait
failed=0
for t in "${targets[@]}"; do
  log=$work/$t.log
  verdict=$(cat "$work/$t.verdict")
  if [ "$verdict" != "no crash" ]; then
    failed=1
    tail -40 "$log" >&2
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "corpus/$t" -type f | wc -l)
  printf '%-16s %6ss  execs %10s  (%s/s)  corpus %5s  %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$corpus" "$verdict"
done
exit $failed
