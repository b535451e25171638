#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD_DIR (fuzz_*) for SECONDS each,
# one after the other, starting from its seed corpus fuzz/corpus/<target>/
# copied to a scratch directory (the repository's corpus is never
# modified). Exits non-zero if any target finds a crash, leak, timeout or
# sanitizer report; the reproducer is kept and its path printed.
#   usage: scripts/fuzz.sh BUILD_DIR SECONDS [TARGET...]
# Build first: make fuzz (or CC=clang cmake -DSIO_FUZZ=ON ...).
set -u
if [ $# -lt 2 ]; then
	echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
	exit 2
fi
build=$1
secs=$2
shift 2
src=$(cd "$(dirname "$0")/.." && pwd)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for f in "$build"/fuzz_*; do
		[ -x "$f" ] && [ -f "$f" ] && targets+=("$(basename "$f")")
	done
fi
if [ ${#targets[@]} -eq 0 ]; then
	echo "fuzz.sh: no fuzz_* executables in $build (configure with -DSIO_FUZZ=ON)" >&2
	exit 2
fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/sio-fuzz.XXXXXX")
failed=0
for t in "${targets[@]}"; do
	work="$scratch/$t"
	mkdir -p "$work/corpus" "$work/artifacts"
	if [ -d "$src/fuzz/corpus/$t" ]; then
		cp -r "$src/fuzz/corpus/$t/." "$work/corpus/"
	fi
	echo "== $t: ${secs}s, seeds: $(ls "$work/corpus" | wc -l)"
	if "$build/$t" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$work/artifacts/" "$work/corpus" \
		>"$work/log" 2>&1; then
		grep -E '^stat::number_of_executed_units|^Done' "$work/log" | sed "s/^/   $t: /"
	else
		failed=1
		echo "!! $t FAILED; log: $work/log; reproducer(s):" >&2
		ls "$work/artifacts" | sed "s|^|   $work/artifacts/|" >&2
		grep -E 'ERROR|SUMMARY|runtime error' "$work/log" | head -5 >&2
	fi
done
if [ $failed -eq 0 ]; then
	rm -rf "$scratch"
	echo "fuzz.sh: all targets clean"
fi
exit $failed
