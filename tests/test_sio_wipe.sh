#!/usr/bin/env bash
# What a peer sent does not stay in the receiving sio's memory once it is
# written out: the receiving process (still in its session) is searched
# through /proc/PID/mem for a marker the peer sent, in stream mode, in
# --lines mode and in the --multi hub. Needs the right to read another
# process's memory (root, as in CI): skipped (exit 77) without it. Mappings
# over 1 GiB are not searched (in an ASan build its allocator keeps the heap
# there, so that build checks less).
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b
MARK="wipe-marker-$RANDOM$RANDOM-7c41e0d2b9"

# count_marker PID: occurrences of $MARK in the writable mappings of PID,
# or of its child when PID is the `timeout` running sio
count_marker() {
	local pid
	pid=$(pgrep -n -P "$1" 2>/dev/null) || pid=$1
	python3 - "$pid" "$MARK" <<'EOF'
import re, sys
pid, mark = sys.argv[1], sys.argv[2].encode()
n = 0
CHUNK = 8 << 20
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
        lo, hi, perm = int(m[1], 16), int(m[2], 16), m[3]
        # huge reservations (a sanitizer's shadow memory and allocator
        # space) are skipped: reading them would take hours
        if "rw" not in perm or "[vvar" in line or "[vsyscall" in line or hi - lo > (1 << 30):
            continue
        tail = b""
        for at in range(lo, hi, CHUNK):
            try:
                mem.seek(at)
                buf = tail + mem.read(min(CHUNK, hi - at))
            except OSError:
                tail = b""
                continue
            n += buf.count(mark)
            tail = buf[-(len(mark) - 1):]
print(n)
EOF
}

sleep 30 &
probe=$!
if ! count_marker "$probe" >/dev/null 2>&1; then
	kill "$probe"
	echo "cannot read another process's memory here: skipped" >&2
	exit 77
fi
kill "$probe"

# payload: the marker on many lines, between other bytes
for i in $(seq 1 200); do echo "line $i $MARK end"; done >"$T/payload"

for mode in stream lines; do
	opt=""
	[ "$mode" = lines ] && opt="--lines"
	a=$(new_addr udp)
	# shellcheck disable=SC2086
	listen_bg "$a" -q $opt -i "$T/a" -r "$T/b.pub.line"
	rm -f "$T/cin" && mkfifo "$T/cin"
	exec 8<>"$T/cin"
	# shellcheck disable=SC2086
	timeout -k 5 "$TMO" "$SIO" connect -q $opt -i "$T/b" -r "$T/a.pub.line" "$a" <"$T/cin" \
		>/dev/null 2>"$T/c.err" 8>&- &
	cpid=$!
	BG_PIDS+=("$cpid")
	cat "$T/payload" >&8
	for n in $(seq 1 200); do
		[ "$(grep -c "$MARK" "$T/l.out")" -ge 200 ] && break
		sleep 0.05
	done
	check_eq "$mode: everything arrived" 200 "$(grep -c "$MARK" "$T/l.out")"
	# (the writer thread frees its last chunk just after its write returned)
	for n in 1 2 3 4 5 6 7 8 9 10; do
		left=$(count_marker "$LPID")
		[ "$left" = 0 ] && break
		sleep 0.2
	done
	check_eq "$mode: no copy of the peer's data left in the receiver's memory" 0 "$left"
	exec 8>&-
	wait "$cpid"
	crc=$?
	end_bg
	check_eq "$mode: both exit 0" "0 0" "$crc $LRC"
done

# the --multi hub: every line it printed is gone from its memory
a=$(new_addr udp)
rm -f "$T/hin" && mkfifo "$T/hin"
exec 7<>"$T/hin"
timeout "$TMO" "$SIO" listen --multi -q -i "$T/a" "$a" <"$T/hin" >"$T/hub.out" 2>"$T/hub.err" 7>&- &
hpid=$!
BG_PIDS+=("$hpid")
wait_ready "$a" "$hpid"
timeout "$TMO" "$SIO" connect --multi --lines -q -i "$T/b" -r "$T/a.pub.line" --timeout 20 "$a" \
	< <(head -n 10 "$T/payload") >/dev/null 2>"$T/c.err" 7>&-
check_eq "hub peer exits 0" 0 "$?"
# --lines over UDP may lose a line (its sender does not wait for the hub)
for n in $(seq 1 100); do [ "$(grep -c "$MARK" "$T/hub.out")" -ge 10 ] && break; sleep 0.05; done
check "hub: lines printed" grep -q "$MARK" "$T/hub.out"
for n in 1 2 3 4 5 6 7 8 9 10; do
	left=$(count_marker "$hpid")
	[ "$left" = 0 ] && break
	sleep 0.2
done
check_eq "hub: no copy of the peers' lines left in its memory" 0 "$left"
exec 7>&-
wait "$hpid"
check_eq "hub exits 0" 0 "$?"
finish
