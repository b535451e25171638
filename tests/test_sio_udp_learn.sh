#!/usr/bin/env bash
# `sio listen udp:` learns its peer's address (docs/PROTOCOL.md §4.5):
#  - amplification: a key-exchange message captured from a real
#    `sio connect` is sent once, from a plain UDP socket that then stays
#    silent; the listener may send back at most 3 times its size, however
#    long we wait (its retry timer is set to 0.25 s so that the old
#    behaviour, a resend every retry period, shows within the window);
#    without and with a PSK;
#  - a replay of the connecting side's key-exchange message from a third
#    socket, in the middle of a transfer, redirects nothing: the transfer
#    completes and the third socket gets nothing;
#  - a normal transfer over udp: still works.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
if ! command -v python3 >/dev/null; then
	echo "test_sio_udp_learn: python3 not found, skipped"
	exit 0
fi
mkid a
mkid b
head -c 32 /dev/urandom >"$T/psk"
chmod 600 "$T/psk"

cat >"$T/udp.py" <<'PY'
# udp.py capture PORT OUT: binds 127.0.0.1:PORT, writes the first datagram
#   that arrives to OUT.
# udp.py blast PORT FILE SECONDS [COUNT]: sends FILE as one datagram to
#   127.0.0.1:PORT (COUNT times, default 1) from a fresh socket, then counts
#   what comes back for SECONDS; prints "SENT_BYTES RECEIVED_BYTES DATAGRAMS".
import select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if sys.argv[1] == "capture":
    s.bind(("127.0.0.1", int(sys.argv[2])))
    s.settimeout(30)
    d = s.recv(70000)
    open(sys.argv[3], "wb").write(d)
    sys.exit(0)
d = open(sys.argv[3], "rb").read()
count = int(sys.argv[5]) if len(sys.argv) > 5 else 1
s.bind(("127.0.0.1", 0))
for _ in range(count):
    s.sendto(d, ("127.0.0.1", int(sys.argv[2])))
end = time.monotonic() + float(sys.argv[4])
got = n = 0
while True:
    left = end - time.monotonic()
    if left <= 0:
        break
    r, _, _ = select.select([s], [], [], left)
    if r:
        got += len(s.recv(70000))
        n += 1
print(len(d) * count, got, n)
PY

# capture OUT CONNECT_OPTS...: the first datagram a `sio connect` sends
capture() {
	local out=$1 port
	shift
	port=$(pick_port)
	python3 "$T/udp.py" capture "$port" "$out" &
	local cpid=$!
	BG_PIDS+=("$cpid")
	wait_ready "udp:127.0.0.1:$port" "$cpid"
	timeout -k 2 3 "$SIO" connect -q -i "$T/a" "$@" "udp:127.0.0.1:$port" </dev/null >/dev/null 2>&1 &
	local spid=$!
	wait "$cpid"
	kill "$spid" 2>/dev/null
	wait "$spid" 2>/dev/null
}

# factor NAME LISTEN_OPTS...: one captured message in, bytes out over 3 s
factor() {
	local name=$1 addr sent got n
	shift
	addr=$(new_addr udp)
	listen_bg "$addr" -q -i "$T/b" --rekey 1 --timeout 0 "$@"
	read -r sent got n < <(python3 "$T/udp.py" blast "${addr##*:}" "$T/kx.$name" 3)
	kill "$LPID" 2>/dev/null
	end_bg
	echo "$name: $sent bytes in, $got bytes in $n datagrams out"
	check "$name: the listener answered ($n datagrams)" test "${n:-0}" -ge 1
	check "$name: at most 3x back ($got bytes for $sent)" test "${got:-999999}" -le $((3 * ${sent:-0}))
}

capture "$T/kx.plain"
check_eq "captured key-exchange message" 175 "$(stat -c %s "$T/kx.plain")"
factor plain
capture "$T/kx.psk" --psk-file "$T/psk"
check_eq "captured PSK key-exchange message" 216 "$(stat -c %s "$T/kx.psk")"
factor psk --psk-file "$T/psk"

# A transfer during which a third socket replays the connecting side's
# key-exchange message (captured on the way by a relay) again and again.
cat >"$T/relay.py" <<'PY'
# relay.py LISTEN_PORT TARGET_PORT: relays UDP between one client and the
# target; from the 20th large client packet on, resends the client's last
# key-exchange message to the target from a third socket every 20 packets,
# and counts what the target sends to that socket (printed at the end).
import select, socket, sys
lp, tp = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", lp))
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.connect(("127.0.0.1", tp))
m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
m.bind(("127.0.0.1", 0))
client, kx, big, replays, to_m = None, None, 0, 0, 0
while True:
    r, _, _ = select.select([s, t, m], [], [], 2)
    if not r:
        break
    if s in r:
        data, client = s.recvfrom(70000)
        if data[0] & 0x80:
            kx = data
        elif len(data) > 1000:
            big += 1
            if big >= 20 and big % 20 == 0 and kx:
                m.sendto(kx, ("127.0.0.1", tp))
                replays += 1
        t.send(data)
    if t in r:
        data = t.recv(70000)
        if client:
            s.sendto(data, client)
    if m in r:
        m.recv(70000)
        to_m += 1
print(replays, to_m)
PY
head -c $((1024 * 1024)) /dev/urandom >"$T/data"
lp=$(pick_port)
pp=$(pick_port)
listen_bg "udp:127.0.0.1:$lp" -q -i "$T/b"
python3 "$T/relay.py" "$pp" "$lp" >"$T/relay.out" &
rpid=$!
BG_PIDS+=("$rpid")
wait_ready "udp:127.0.0.1:$pp" "$rpid"
timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/a" "udp:127.0.0.1:$pp" <"$T/data" >/dev/null 2>"$T/c.err"
CRC=$?
end_bg
wait "$rpid"
read -r replays to_m <"$T/relay.out"
check_eq "replay: exits" "0 0" "$CRC $LRC"
check_eq "replay: output identical" "$(sha "$T/data")" "$(sha "$T/l.out")"
check "replay: the relay did replay ($replays times)" test "${replays:-0}" -ge 1
check_eq "replay: nothing went to the replaying socket" 0 "${to_m:-x}"

# plain transfer
run_pair "$(new_addr udp)" "-q -i $T/b" "-q -i $T/a" "$T/data"
check_eq "transfer: exits" "0 0" "$CRC $LRC"
check_eq "transfer: output identical" "$(sha "$T/data")" "$(sha "$T/l.out")"
finish
