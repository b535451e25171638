#!/usr/bin/env bash
# Real network faults between two `sio` peers in network namespaces this
# test creates itself: A <-veth-> R <-veth-> B, every link with MTU 1280.
# The kernel here has no sch_netem, so R runs a small seeded fault relay
# (python3) that loses, delays, reorders and duplicates UDP datagrams both
# ways. Checked: sessions establish and renew keys every second under 10%
# and 30% loss; in --lines mode every delivered line is intact and unique;
# in stream mode over UDP the output is the input or, if the stream ended
# with "data lost in transit", an exact prefix of it; TCP routed through R
# (MTU 1280, a token bucket that drops segments) carries every byte; the
# packet size settles below the path MTU.
# Needs root (CAP_NET_ADMIN) and `ip`; otherwise skipped (exit 77).
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
skip() {
	echo "test_netns: skipped: $*"
	exit 77
}
[ "$(id -u)" -eq 0 ] || skip "not root"
command -v ip >/dev/null || skip "no ip command (iproute2)"
command -v python3 >/dev/null || skip "no python3"
NA="sio$$a" NR="sio$$r" NB="sio$$b"
ip netns add "$NA" 2>/dev/null || skip "cannot create network namespaces here"
netns_cleanup() {
	local ns
	for ns in "$NA" "$NR" "$NB"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
	done
	cleanup
	ip netns del "$NA" 2>/dev/null
	ip netns del "$NR" 2>/dev/null
	ip netns del "$NB" 2>/dev/null
}
trap netns_cleanup EXIT
ip netns add "$NR" && ip netns add "$NB" || skip "cannot create network namespaces here"
# A 10.77.1.1 <-> 10.77.1.2 R 10.77.2.2 <-> 10.77.2.1 B
ip link add va netns "$NA" type veth peer name ra netns "$NR" || skip "no veth"
ip link add vb netns "$NB" type veth peer name rb netns "$NR" || skip "no veth"
for x in "$NA va 10.77.1.1" "$NR ra 10.77.1.2" "$NR rb 10.77.2.2" "$NB vb 10.77.2.1"; do
	set -- $x
	ip -n "$1" link set "$2" mtu 1280 up
	ip -n "$1" addr add "$3/24" dev "$2"
	ip -n "$1" link set lo up
done
ip -n "$NA" route add default via 10.77.1.2
ip -n "$NB" route add default via 10.77.2.2
ip netns exec "$NR" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
# (Background processes are started with `ip netns exec` itself, not
# through a shell function, so that $! is the process to stop.)
inA() { ip netns exec "$NA" "$@"; }

mkid a
mkid b

cat >"$T/relay.py" <<'PY'
# relay.py LISTEN_IP PORT TARGET_IP PORT LOSS DELAY_MS REORDER DUP SEED
# UDP relay for one client: each datagram, either way, is lost with
# probability LOSS, else delayed DELAY_MS (+ up to 4*DELAY_MS more with
# probability REORDER, which reorders it) and sent twice with probability DUP.
import heapq, random, select, socket, sys, time
lip, lp, tip, tp = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
loss, delay, reorder, dup = float(sys.argv[5]), float(sys.argv[6]) / 1000, float(sys.argv[7]), float(sys.argv[8])
rnd = random.Random(int(sys.argv[9]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((lip, lp))
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.connect((tip, tp))
client, q, seq = None, [], 0
def put(sock, addr, data):
    global seq
    if rnd.random() < loss:
        return
    d = delay + (rnd.random() * 4 * delay if rnd.random() < reorder else 0)
    for k in range(2 if rnd.random() < dup else 1):
        seq += 1
        heapq.heappush(q, (time.monotonic() + d + k * 0.0005, seq, sock, addr, data))
idle = time.monotonic()
while time.monotonic() - idle < 120:
    wait = max(0.0, q[0][0] - time.monotonic()) if q else 1.0
    r, _, _ = select.select([s, t], [], [], wait)
    if s in r:
        data, client = s.recvfrom(70000)
        put(t, None, data)
        idle = time.monotonic()
    if t in r:
        try:
            data = t.recv(70000)
            if client:
                put(s, client, data)
        except OSError:
            pass
    now = time.monotonic()
    while q and q[0][0] <= now:
        _, _, sock, addr, data = heapq.heappop(q)
        try:
            sock.send(data) if addr is None else sock.sendto(data, addr)
        except OSError:
            pass
PY

cat >"$T/lines.py" <<'PY'
# lines.py gen N RATE: N numbered lines with a hash, RATE lines per second.
# lines.py check FILE N MIN: every line intact, none twice, at least MIN.
import hashlib, sys, time
def line(i):
    h = hashlib.sha256(str(i).encode()).hexdigest()
    return "%06d %s %s" % (i, h[:16], h * 2)
if sys.argv[1] == "gen":
    n, rate = int(sys.argv[2]), float(sys.argv[3])
    for i in range(n):
        sys.stdout.write(line(i) + "\n")
        if i % 20 == 19:
            sys.stdout.flush()
            time.sleep(20 / rate)
    sys.stdout.flush()
else:
    n, least = int(sys.argv[3]), int(sys.argv[4])
    seen = set()
    for raw in open(sys.argv[2]):
        l = raw.rstrip("\n")
        i = int(l[:6]) if l[:6].isdigit() else -1
        if i < 0 or i >= n or l != line(i):
            print("corrupted line: %r" % l[:80]); sys.exit(1)
        if i in seen:
            print("duplicated line %d" % i); sys.exit(1)
        seen.add(i)
    print("%d of %d lines, all intact and unique" % (len(seen), n))
    sys.exit(0 if len(seen) >= least else 1)
PY

# udp_in_ns NS PORT PID: until PID (in NS) bound the UDP/TCP PORT.
bound_in() { # NS PROTO PORT PID
	local i hex
	hex=$(printf ':%04X ' "$3")
	for i in $(seq 1 200); do
		kill -0 "$4" 2>/dev/null || return 1
		ip netns exec "$1" cat "/proc/net/$2" | awk '{print $2" "}' | grep -q -- "$hex" && return 0
		sleep 0.05
	done
	return 1
}

# relay_run NAME LOSS DELAY REORDER DUP SENDER... : B listens, A sends the
# output of SENDER through R's relay. Results: LRC CRC, $T/NAME.{out,lerr,cerr}
relay_run() {
	local name=$1 loss=$2 delay=$3 reorder=$4 dup=$5 mode=$6 port rport lpid rpid
	shift 6
	port=$(pick_port)
	rport=$(pick_port)
	ip netns exec "$NB" timeout -k 5 "$TMO" "$SIO" listen -q --stats --rekey 1 $mode -i "$T/a" \
		"udp:10.77.2.1:$port" </dev/null >"$T/$name.out" 2>"$T/$name.lerr" &
	lpid=$!
	BG_PIDS+=("$lpid")
	bound_in "$NB" udp "$port" "$lpid"
	ip netns exec "$NR" python3 "$T/relay.py" 10.77.1.2 "$rport" 10.77.2.1 "$port" "$loss" "$delay" \
		"$reorder" "$dup" 7 &
	rpid=$!
	BG_PIDS+=("$rpid")
	bound_in "$NR" udp "$rport" "$rpid"
	"$@" | inA timeout -k 5 "$TMO" "$SIO" connect -q --stats --rekey 1 $mode -i "$T/b" \
		"udp:10.77.1.2:$rport" >/dev/null 2>"$T/$name.cerr"
	CRC=${PIPESTATUS[1]}
	wait "$lpid"
	LRC=$?
	kill "$rpid" 2>/dev/null
	wait "$rpid" 2>/dev/null
}

renewals() { sed -n 's/.*key renewals \([0-9]*\),.*/\1/p' "$1" | head -1; }
pktsize() { sed -n 's/.*packet size \([0-9]*\),.*/\1/p' "$1" | head -1; }

# 1. Lines over UDP, 10% loss each way, delay, reordering, duplication.
relay_run l10 0.10 5 0.10 0.05 --lines python3 "$T/lines.py" gen 3000 1000
# lines lost on the network are counted at the end (LEND/LACK): exit 1 and
# "lines lost in transit" then, on both sides
lines_exits() { # NAME
	if [ "$CRC $LRC" = "0 0" ]; then ok; return; fi
	check_eq "$1: exits (lines lost)" "1 1" "$CRC $LRC"
	check "$1: sender says lines were lost" grep -q "lines lost in transit" "$T/$1.cerr"
	check "$1: listener says lines were lost" grep -q "lines lost in transit" "$T/$1.lerr"
}
lines_exits l10
check "lines 10%: intact, unique, most arrived" python3 "$T/lines.py" check "$T/l10.out" 3000 1500
check "lines 10%: keys renewed" [ "$(renewals "$T/l10.cerr")" -ge 1 ]
check "lines 10%: packet size within the 1280 path" [ "$(pktsize "$T/l10.cerr")" -le 1252 ]

# 2. The same at 30% loss.
#    (3 s of traffic: a renewal needs a message each way, about half of
#    the attempts get through, and sio retries one every 0.25 s here)
relay_run l30 0.30 5 0.10 0.05 --lines python3 "$T/lines.py" gen 3000 1000
lines_exits l30
check "lines 30%: intact, unique, some arrived" python3 "$T/lines.py" check "$T/l30.out" 3000 750
check "lines 30%: keys renewed ($(renewals "$T/l30.cerr"))" [ "$(renewals "$T/l30.cerr")" -ge 1 ]
echo "key renewals at 10% / 30% loss: $(renewals "$T/l10.cerr") / $(renewals "$T/l30.cerr")"

# 3. Stream mode over UDP at 10% loss: all of it, or an exact prefix and
#    "data lost in transit".
head -c $((512 * 1024)) /dev/urandom >"$T/data"
relay_run s10 0.10 2 0.05 0.05 "" cat "$T/data"
got=$(stat -c %s "$T/s10.out")
check "stream 10%: output is a prefix of the input" cmp -s "$T/s10.out" <(head -c "$got" "$T/data")
if [ "$LRC" -eq 0 ] && [ "$CRC" -eq 0 ]; then
	check "stream 10%: complete" cmp -s "$T/s10.out" "$T/data"
else
	check "stream 10%: loss reported" grep -q "data lost" "$T/s10.lerr" "$T/s10.cerr"
fi
echo "stream over UDP at 10% loss: exit $CRC/$LRC, $got of $((512 * 1024)) bytes"

# 4. TCP routed through R (MTU 1280 links) whose link toward B is a token
#    bucket of 20 Mbit/s with an 8 KiB queue: bursts overflow it and the
#    kernel drops real TCP segments (retransmitted by TCP); every byte
#    arrives. (tbf, unlike netem, is in this kernel.)
shaped=0
if tc -n "$NR" qdisc add dev rb root tbf rate 20mbit burst 16kb limit 8kb 2>/dev/null; then
	shaped=1
fi
port=$(pick_port)
ip netns exec "$NB" timeout -k 5 "$TMO" "$SIO" listen -q --rekey 1 -i "$T/a" "tcp:10.77.2.1:$port" </dev/null >"$T/tcp.out" 2>"$T/tcp.lerr" &
lpid=$!
BG_PIDS+=("$lpid")
bound_in "$NB" tcp "$port" "$lpid"
inA timeout -k 5 "$TMO" "$SIO" connect -q --rekey 1 -i "$T/b" "tcp:10.77.2.1:$port" <"$T/data" >/dev/null 2>"$T/tcp.cerr"
check_eq "tcp: sender exit" 0 "$?"
wait "$lpid"
check_eq "tcp: listener exit" 0 "$?"
check "tcp: every byte" cmp -s "$T/tcp.out" "$T/data"
if [ "$shaped" -eq 1 ]; then
	drops=$(tc -s -n "$NR" qdisc show dev rb | sed -n 's/.*(dropped \([0-9]*\),.*/\1/p' | head -1)
	echo "tcp through the shaped link: ${drops:-?} segments dropped by the kernel"
	check "tcp: the shaped link dropped segments (${drops:-none})" [ "${drops:-0}" -gt 0 ]
	tc -n "$NR" qdisc del dev rb root 2>/dev/null
else
	echo "tcp: no tbf qdisc here, the TCP case ran without drops"
fi

# 5. UDP routed directly (no relay): the packet size settles within the
#    1280-byte path and 512 KiB arrive whole.
port=$(pick_port)
ip netns exec "$NB" timeout -k 5 "$TMO" "$SIO" listen -q --stats -i "$T/a" "udp:10.77.2.1:$port" </dev/null >"$T/udp.out" 2>"$T/udp.lerr" &
lpid=$!
BG_PIDS+=("$lpid")
bound_in "$NB" udp "$port" "$lpid"
inA timeout -k 5 "$TMO" "$SIO" connect -q --stats -i "$T/b" "udp:10.77.2.1:$port" <"$T/data" >/dev/null 2>"$T/udp.cerr"
check_eq "udp routed: sender exit" 0 "$?"
wait "$lpid"
check "udp routed: every byte" cmp -s "$T/udp.out" "$T/data"
check "udp routed: packet size within the path" [ "$(pktsize "$T/udp.cerr")" -le 1252 ]
echo "negotiated packet size over the 1280 path: $(pktsize "$T/udp.cerr")"
finish
