#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for SECONDS (default 60), one after the
# other, then prints one line per target: executions, execs/s, corpus size, crash or not.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); works on a stable toolchain through
# RUSTC_BOOTSTRAP=1. A crash leaves its input in fuzz/artifacts/<target>/ and makes the script
# exit 1 (after running the other targets). Usage: perf/fuzz.sh [SECONDS] [TARGET...]
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
cargo fuzz build >/dev/null
failed=0
summary=()
for t in "${targets[@]}"; do
  log=$(mktemp)
  mkdir -p "corpus/$t"
  if cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
       -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    verdict="no crash"
  else
    verdict="CRASH (see fuzz/artifacts/$t/)"
    failed=1
    tail -40 "$log" >&2
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corpus=$(find "corpus/$t" -type f | wc -l)
  summary+=("$(printf '%-16s %6ss  execs %10s  (%s/s)  corpus %5s  %s' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$corpus" "$verdict")")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
exit $failed
