#!/usr/bin/env bash
# Amplification toward an address that never answered, for `sio listen
# --multi` (RFC 9000 §8.1: at most 3 times the bytes received from it until
# it proved it receives our packets). An eavesdropper captures a client's
# first datagram and sends it from a socket that then only listens: once
# (no PSK), and under three fresh connection ids (with -r and --psk-file: a
# replay, nothing binds the message to a connection id). Everything the hub
# sends back within 4 s (four of its retry periods) is counted.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
if ! command -v python3 >/dev/null; then
	echo "test_sio_multi_amp: python3 not found, skipped"
	exit 77
fi
mkid hub
mkid p1
cp "$T/p1.pub.line" "$T/auth"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/psk"
chmod 600 "$T/psk"

cat >"$T/amp.py" <<'PY'
# amp.py HUB_PORT NCID WINDOW_S SIO_CONNECT_ARGS...: runs `sio connect ARGS
# udp:127.0.0.1:P` against a socket of ours, keeps the first datagram it
# sends, kills it, sends that datagram to the hub under NCID connection ids
# and prints "SENT BACK" after WINDOW_S seconds of listening.
import socket, subprocess, sys, time
hub, ncid, window = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
cap = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
cap.bind(("127.0.0.1", 0))
cap.settimeout(30)
cli = subprocess.Popen(sys.argv[4:] + ["udp:127.0.0.1:%d" % cap.getsockname()[1]],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
first = cap.recv(4096)
cli.kill()
cli.wait()
att = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
att.bind(("127.0.0.1", 0))
sent = back = 0
for i in range(ncid):
    d = bytearray(first)
    d[1] ^= i  # another connection id, the same message
    att.sendto(bytes(d), ("127.0.0.1", hub))
    sent += len(d)
end = time.monotonic() + window
while True:
    left = end - time.monotonic()
    if left <= 0:
        break
    att.settimeout(left)
    try:
        back += len(att.recv(4096))
    except socket.timeout:
        break
print(sent, back)
PY

# amp_case NAME NCID "HUB OPTS" "CLIENT OPTS"
amp_case() {
	local a port r sent back
	a=$(new_addr udp)
	port=${a##*:}
	rm -f "$T/hin" && mkfifo "$T/hin"
	exec 7<>"$T/hin"
	# shellcheck disable=SC2086
	timeout "$TMO" "$SIO" listen --multi -i "$T/hub" $3 --stats "$a" <"$T/hin" >"$T/hub.out" \
		2>"$T/hub.err" 7>&- &
	local hpid=$!
	BG_PIDS+=("$hpid")
	wait_ready "$a" "$hpid"
	# shellcheck disable=SC2086
	r=$(python3 "$T/amp.py" "$port" "$2" 4 "$SIO" connect --multi --lines -q -i "$T/p1" \
		-r "$T/hub.pub.line" $4 --timeout 30)
	read -r sent back <<<"$r"
	echo "$1: $sent bytes sent, $back back (x$(awk "BEGIN{printf \"%.2f\", $back/$sent}"))"
	check "$1: something answered" [ "${back:-0}" -gt 0 ]
	check "$1: at most 3 times the bytes received" [ "${back:-0}" -le $((3 * ${sent:-0})) ]
	exec 7>&-
	wait "$hpid"
}

amp_case "listen --multi" 1 "" ""
amp_case "listen --multi -r --psk-file, 3 connection ids" 3 "-r $T/auth --psk-file $T/psk" \
	"--psk-file $T/psk"
finish
