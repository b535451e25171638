#!/usr/bin/env bash
# Runs the C tests and examples of BUILD_DIR (default build), and the sio
# command over TCP, UDP and a UNIX socket, under valgrind memcheck: any invalid access, use of uninitialised memory or definite /
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
# The sio command end to end: one 1 MiB transfer over each of TCP, UDP and
# a UNIX socket, both ends under memcheck (keys made beforehand).
vg() { valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect --track-fds=no "$@"; }
bound() { # PROTO PORT: something listens there
	local hex
	hex=$(printf ':%04X ' "$2")
	awk '{print $2" "}' "/proc/net/$1" | grep -q -- "$hex"
}
if [ -x "$build/sio" ] && echo "sio" | grep -Eq -- "$filter"; then
	w="$log/sio"
	mkdir -p "$w"
	"$build/sio" keygen -i "$w/a" >/dev/null 2>&1 && "$build/sio" keygen -i "$w/b" >/dev/null 2>&1
	head -c 1048576 /dev/urandom >"$w/data"
	for kind in tcp udp unix; do
		ran=$((ran + 1))
		start=$SECONDS
		port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		case $kind in
		tcp | udp) addr="$kind:127.0.0.1:$port" ;;
		unix) addr="unix:$w/sock" ;;
		esac
		# the listener only receives: stdin /dev/null (its direction
		# ends at once; it keeps receiving until the sender's ends)
		vg "$build/sio" listen -q -i "$w/a" -r "$w/b/id_ed25519.pub" "$addr" </dev/null \
			>"$w/$kind.out" 2>"$w/$kind.lerr" &
		lpid=$!
		for _ in $(seq 1 200); do # memcheck starts slowly
			case $kind in
			unix) [ -S "$w/sock" ] && break ;;
			*) bound "$kind" "$port" && break ;;
			esac
			sleep 0.1
		done
		vg "$build/sio" connect -q -i "$w/b" -r "$w/a/id_ed25519.pub" "$addr" <"$w/data" \
			>/dev/null 2>"$w/$kind.cerr"
		crc=$?
		wait "$lpid"
		lrc=$?
		rm -f "$w/sock"
		if [ "$crc" -eq 0 ] && [ "$lrc" -eq 0 ] && cmp -s "$w/data" "$w/$kind.out"; then
			echo "ok   sio over $kind ($((SECONDS - start)) s)"
		else
			echo "FAIL sio over $kind ($((SECONDS - start)) s): exits $crc/$lrc; $w/$kind.{lerr,cerr}"
			tail -n 20 "$w/$kind.lerr" "$w/$kind.cerr"
			failed=$((failed + 1))
		fi
	done
fi
echo "valgrind: $ran programs, $failed failed"
[ "$failed" -eq 0 ] && rm -rf "$log"
[ "$failed" -eq 0 ]
