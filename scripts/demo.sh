#!/usr/bin/env bash
# `make demo`: two `sio` peers on this machine run real encrypted, mutually
# authenticated sessions over UDP, a UNIX socket and TCP (loopback), send a few
# megabytes of random data and check that every byte arrived unchanged.
# Builds nothing itself: the Makefile built sio and passes its path in $SIO.
set -u
SIO=${SIO:-build/sio}
MB=${DEMO_MB:-4}
[ -x "$SIO" ] || { echo "demo: $SIO not found (run: make demo)" >&2; exit 1; }
D=$(mktemp -d "${TMPDIR:-/tmp}/sio-demo.XXXXXX")
cleanup() {
	jobs -p | xargs -r kill 2>/dev/null
	rm -rf "$D"
}
trap cleanup EXIT

port_bound() { # PROTO PORT: is a local socket bound to PORT?
	cat "/proc/net/$1" "/proc/net/${1}6" 2>/dev/null | awk '{print $2" "}' | grep -q "$(printf ':%04X ' "$2")"
}
free_port() {
	local p
	while :; do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		port_bound udp "$p" || port_bound tcp "$p" || { echo "$p"; return; }
	done
}
ready() { # ADDRESS PID: wait until the listener bound its address
	for _ in $(seq 1 100); do
		kill -0 "$2" 2>/dev/null || return 1
		case $1 in
		udp:*) port_bound udp "${1##*:}" && return 0 ;;
		tcp:*) port_bound tcp "${1##*:}" && return 0 ;;
		*) [ -S "${1#*:}" ] && return 0 ;;
		esac
		sleep 0.05
	done
	return 1
}

"$SIO" keygen -i "$D/alice" >"$D/alice.pub" 2>/dev/null &&
	"$SIO" keygen -i "$D/bob" >"$D/bob.pub" 2>/dev/null || { echo "demo: sio keygen failed" >&2; exit 1; }
head -c $((MB * 1024 * 1024)) /dev/urandom >"$D/sent"
SUM=$(sha256sum <"$D/sent" | cut -c1-64)

echo "secureio demo: two sio peers, Ed25519 identities made just now in $D"
echo "  alice $("$SIO" fingerprint "$D/alice.pub")  (sio listen,  pins bob's key with -r)"
echo "  bob   $("$SIO" fingerprint "$D/bob.pub")  (sio connect, pins alice's key with -r)"
echo "  bob sends $MB MiB of random data to alice; sha256 $SUM"

fails=0
n=0
for addr in "udp:127.0.0.1:$(free_port)" "unix:$D/demo.sock" "tcp:127.0.0.1:$(free_port)"; do
	n=$((n + 1))
	echo
	echo "== $addr"
	# alice only receives: her stdin is /dev/null, as in a script (her
	# direction ends at once, she keeps receiving until bob's ends)
	timeout -k 5 120 "$SIO" listen -q --stats -i "$D/alice" -r "$D/bob.pub" "$addr" \
		</dev/null >"$D/received" 2>"$D/alice.err" &
	lpid=$!
	ready "$addr" "$lpid"
	timeout -k 5 120 "$SIO" connect -q --stats -i "$D/bob" -r "$D/alice.pub" "$addr" \
		<"$D/sent" >/dev/null 2>"$D/bob.err"
	crc=$?
	wait "$lpid"
	lrc=$?
	got=$(sha256sum <"$D/received" | cut -c1-64)
	echo "  alice (listen):"
	sed 's/^sio: stats: /    /; s/^sio: /    error: /' "$D/alice.err"
	echo "  bob (connect):"
	sed 's/^sio: stats: /    /; s/^sio: /    error: /' "$D/bob.err"
	if [ "$crc" -eq 0 ] && [ "$lrc" -eq 0 ] && [ "$got" = "$SUM" ]; then
		echo "  OK: $(stat -c %s "$D/received") bytes received, sha256 identical"
	else
		echo "  FAILED: exit codes connect=$crc listen=$lrc, sha256 received $got"
		fails=$((fails + 1))
	fi
done
echo
if [ "$fails" -eq 0 ]; then
	echo "demo passed: $n transports, $MB MiB each, every byte arrived unchanged."
else
	echo "demo FAILED on $fails of $n transports" >&2
	exit 1
fi
