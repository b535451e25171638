#!/usr/bin/env bash
# Runs the C tests and examples of BUILD_DIR (default build) under valgrind
# memcheck: any invalid access, use of uninitialised memory or definite /
# indirect leak fails the run. Not in CI (slow: valgrind runs code ~30x
# slower and serialises threads); `make valgrind` runs it.
#   usage: scripts/valgrind.sh [BUILD_DIR] [TEST_NAME_REGEX]
set -u
build=${1:-build}
filter=${2:-.}
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind not found (apt-get install valgrind)" >&2; exit 2; }
[ -d "$build" ] || { echo "valgrind.sh: no build directory $build (run make first)" >&2; exit 2; }
# memcheck runs one thread at a time: test_listener's 100 peers (200
# sessions, each with its I/O thread) would take most of an hour
export SIO_TEST_PEERS=${SIO_TEST_PEERS:-10}
log=$(mktemp -d "${TMPDIR:-/tmp}/sio-valgrind.XXXXXX")
failed=0
ran=0
for t in "$build"/test_* "$build"/example_*; do
	name=$(basename "$t")
	[ -x "$t" ] && [ -f "$t" ] || continue
	case $name in
	# the simulator tests run millions of virtual packets, the soak test
	# runs for a set time: both are covered by the sanitizer builds instead;
	# test_core_alloc counts allocations by interposing malloc, which
	# valgrind replaces with its own (its self-check then fails)
	test_sim | test_sim_messages | test_soak | test_core_alloc) continue ;;
	esac
	echo "$name" | grep -Eq -- "$filter" || continue
	ran=$((ran + 1))
	start=$SECONDS
	if valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
		--show-leak-kinds=definite,indirect --track-fds=no "$t" >"$log/$name.log" 2>&1; then
		echo "ok   $name ($((SECONDS - start)) s)"
	else
		echo "FAIL $name ($((SECONDS - start)) s): $log/$name.log"
		tail -30 "$log/$name.log"
		failed=$((failed + 1))
	fi
done
echo "valgrind: $ran programs, $failed failed"
[ "$failed" -eq 0 ] && rm -rf "$log"
[ "$failed" -eq 0 ]
