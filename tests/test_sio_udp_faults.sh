#!/usr/bin/env bash
# Stream mode over UDP through a faulty relay (a small python3 proxy between
# the peers): reordered, duplicated and lost packets (the proxy is slow, so
# it also loses packets on its own) still give identical output; when data
# stops getting through for good, the transfer ends with exit 1 and "data
# lost in transit", and what was written is an exact prefix of what was sent.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
if ! command -v python3 >/dev/null; then
	echo "test_sio_udp_faults: python3 not found, skipped"
	exit 0
fi
mkid a
mkid b
head -c $((2 * 1024 * 1024)) /dev/urandom >"$T/data"

cat >"$T/proxy.py" <<'PY'
# proxy.py LISTEN_PORT TARGET_PORT MODE N: relays UDP between one client and
# the target; the Nth large client->target packet is dropped, swapped with the
# next one, or sent twice (MODE drop, swap, dup); MODE blackhole drops every
# large client->target packet from the Nth on.
import select, socket, sys
lp, tp, mode, n = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", lp))
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.connect(("127.0.0.1", tp))
client, count, held = None, 0, None
while True:
    r, _, _ = select.select([s, t], [], [], 60)
    if not r:
        break
    if s in r:
        data, client = s.recvfrom(70000)
        if len(data) > 1000:
            count += 1
            if count >= n and mode == "blackhole":
                continue
            if count == n and mode == "drop":
                continue
            if count == n and mode == "swap":
                held = data
                continue
            if count == n and mode == "dup":
                t.send(data)
        try:
            t.send(data)
            if held is not None and count == n + 1:
                t.send(held)
                held = None
        except OSError:
            pass
    if t in r:
        try:
            data = t.recv(70000)
        except OSError:
            continue
        if client:
            s.sendto(data, client)
PY

through_proxy() { # MODE N -> LRC CRC, $T/l.out
	local mode=$1 n=$2 lp pp lpid ppid
	lp=$(pick_port)
	pp=$(pick_port)
	timeout -k 5 "$TMO" "$SIO" listen -q -i "$T/a" "udp:127.0.0.1:$lp" </dev/null >"$T/l.out" 2>"$T/l.err" &
	lpid=$!
	BG_PIDS+=("$lpid")
	wait_ready "udp:127.0.0.1:$lp" "$lpid"
	python3 "$T/proxy.py" "$pp" "$lp" "$mode" "$n" &
	ppid=$!
	BG_PIDS+=("$ppid")
	wait_ready "udp:127.0.0.1:$pp" "$ppid"
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" "udp:127.0.0.1:$pp" <"$T/data" >/dev/null 2>"$T/c.err"
	CRC=$?
	wait "$lpid"
	LRC=$?
	kill "$ppid" 2>/dev/null
}

for mode in swap dup drop; do
	through_proxy "$mode" 100
	check_eq "$mode: exits" "0 0" "$CRC $LRC"
	check_eq "$mode: output identical" "$(sha "$T/data")" "$(sha "$T/l.out")"
done

through_proxy blackhole 300
check_eq "blackhole: receiver exit 1" 1 "$LRC"
check_eq "blackhole: sender exit 1" 1 "$CRC"
check "blackhole: receiver says data lost ($(cat "$T/l.err"))" grep -q 'data lost in transit' "$T/l.err"
check "blackhole: sender says data lost ($(cat "$T/c.err"))" grep -q 'data lost in transit' "$T/c.err"
n=$(stat -c %s "$T/l.out")
check "blackhole: some data was written before the gap ($n bytes)" test "$n" -gt 0
check "blackhole: not everything was written" test "$n" -lt "$(stat -c %s "$T/data")"
check "blackhole: output is an exact prefix" cmp -s -n "$n" "$T/data" "$T/l.out"
finish
