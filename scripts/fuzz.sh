#!/usr/bin/env bash
# Runs every built libFuzzer target (BUILD_DIR/fuzz_*) for SECONDS each,
# starting from its seed corpus fuzz/corpus/<target>/ copied to a scratch
# directory under BUILD_DIR (the repository is never modified). Exits
# non-zero if any target crashes; crash inputs stay in BUILD_DIR/fuzz-out/.
# Usage: scripts/fuzz.sh BUILD_DIR SECONDS
set -uo pipefail
build=${1:?usage: scripts/fuzz.sh BUILD_DIR SECONDS}
secs=${2:?usage: scripts/fuzz.sh BUILD_DIR SECONDS}
src=$(cd "$(dirname "$0")/.." && pwd)
out="$build/fuzz-out"
mkdir -p "$out"
shopt -s nullglob
targets=("$build"/fuzz_*)
fail=0 ran=0
for t in "${targets[@]}"; do
  [ -f "$t" ] && [ -x "$t" ] || continue
  name=$(basename "$t")
  work="$out/$name"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  [ -d "$src/fuzz/corpus/$name" ] && cp -R "$src/fuzz/corpus/$name/." "$work/corpus/"
  echo "== $name: ${secs}s"
  if "$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^Done' "$work/log" | tr '\n' ' '; echo
  else
    echo "FAIL: $name crashed; see $work/log and $work/artifacts/"
    tail -40 "$work/log"
    fail=1
  fi
  ran=$((ran + 1))
done
[ "$ran" -gt 0 ] || { echo "no fuzz_* targets in $build"; exit 1; }
exit $fail
