#!/usr/bin/env bash
# `sio listen` + `sio connect` end to end on every address kind: several MB
# of random (binary) data arrive identical (sha256), empty input, --lines,
# --channel, --stats and -q.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b
KINDS="udp tcp unix unixgram"
have_ipv6 && KINDS="$KINDS udp6 tcp6"

head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"$T/random.bin"
: >"$T/empty"
# every byte value, NUL runs, no trailing newline
{ for i in $(seq 0 255); do printf "\\x$(printf %02x "$i")"; done; head -c 70000 /dev/zero; printf 'end'; } >"$T/bytes.bin"

for k in $KINDS; do
	for f in random.bin empty bytes.bin; do
		a=$(new_addr "$k")
		run_pair "$a" "-q -i $T/a --timeout 60" "-q -i $T/b --timeout 60" "$T/$f"
		check_eq "$k $f: connect exit" 0 "$CRC"
		check_eq "$k $f: listen exit" 0 "$LRC"
		check_eq "$k $f: data arrived identical" "$(sha "$T/$f")" "$(sha "$T/l.out")"
		check "$k $f: -q keeps stderr empty ($(head -c 300 "$T/l.err" "$T/c.err"))" \
			test ! -s "$T/l.err" -a ! -s "$T/c.err"
	done
done

# the other direction: the listener sends, the connecting side receives
# (its stdin is /dev/null: its own direction ends at once, the peer's does not)
a=$(new_addr udp)
LISTEN_IN=$T/random.bin run_pair "$a" "-q -i $T/a" "-q -i $T/b" /dev/null
check_eq "listener sends: exits" "0 0" "$CRC $LRC"
check_eq "listener sends: data identical" "$(sha "$T/random.bin")" "$(sha "$T/c.out")"

# --lines: each line one message, written back as one line (empty lines too)
{ for i in $(seq 1 300); do echo "line $i $RANDOM"; [ $((i % 50)) -eq 0 ] && echo; done; printf 'last line without newline'; } >"$T/lines.txt"
{ cat "$T/lines.txt"; echo; } >"$T/lines.expected"
for k in $KINDS; do
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a --lines" "-q -i $T/b --lines" "$T/lines.txt"
	check_eq "$k --lines: exits" "0 0" "$CRC $LRC"
	check_eq "$k --lines: every line arrived as sent" "$(sha "$T/lines.expected")" "$(sha "$T/l.out")"
done

# --channel: same channel works (stream and lines); different channels are a
# mode mismatch (tests/test_sio_modes.sh)
for k in udp tcp; do
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a --channel 7" "-q -i $T/b --channel 7" "$T/random.bin"
	check_eq "$k --channel 7 stream: exits" "0 0" "$CRC $LRC"
	check_eq "$k --channel 7 stream: data identical" "$(sha "$T/random.bin")" "$(sha "$T/l.out")"
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a --lines --channel 2147483646" "-q -i $T/b --lines --channel 2147483646" "$T/lines.txt"
	check_eq "$k --channel max --lines: data identical" "$(sha "$T/lines.expected")" "$(sha "$T/l.out")"
done

# listening on all addresses (empty HOST), reached over IPv4 and IPv6
for proto in udp tcp; do
	p=$(pick_port)
	run_pair "$proto::$p" "-q -i $T/a" "-q -i $T/b" "$T/bytes.bin" "$proto:127.0.0.1:$p"
	check_eq "$proto::PORT via 127.0.0.1" "0 0 $(sha "$T/bytes.bin")" "$CRC $LRC $(sha "$T/l.out")"
	if have_ipv6; then
		p=$(pick_port)
		run_pair "$proto::$p" "-q -i $T/a" "-q -i $T/b" "$T/bytes.bin" "$proto:[::1]:$p"
		check_eq "$proto::PORT via [::1]" "0 0 $(sha "$T/bytes.bin")" "$CRC $LRC $(sha "$T/l.out")"
	fi
done

# service names in addresses (tcp:HOST:SERVICE), as getaddrinfo resolves
# them: a tcp service of /etc/services whose port is free here
svc=$(getent services 2>/dev/null | awk '{split($2, p, "/"); if (p[2] == "tcp" && p[1] > 10000 && p[1] < 60000) print $1, p[1]}' |
	while read -r name port; do port_bound tcp "$port" || { echo "$name $port"; break; }; done)
if [ -n "$svc" ]; then
	set -- $svc
	run_pair "tcp:127.0.0.1:$1" "-q -i $T/a" "-q -i $T/b" "$T/bytes.bin"
	check_eq "tcp:127.0.0.1:$1 (port $2): exits" "0 0" "$CRC $LRC"
	check_eq "tcp:127.0.0.1:$1 (port $2): data identical" "$(sha "$T/bytes.bin")" "$(sha "$T/l.out")"
else
	echo "no free named tcp service in /etc/services: service-name transfer skipped"
fi
timeout -k 5 10 "$SIO" connect -q -i "$T/b" --timeout 1 tcp:127.0.0.1:no-such-service </dev/null 2>"$T/svc.err"
check_eq "unknown service: exit 1" 1 "$?"
check "unknown service: says so ($(cat "$T/svc.err"))" grep -q "unknown tcp service 'no-such-service'" "$T/svc.err"

# --rekey: keys are renewed during a transfer without losing anything
a=$(new_addr udp)
mkfifo "$T/slow"
(head -c 100000 "$T/random.bin"; sleep 3.5; tail -c +100001 "$T/random.bin") >"$T/slow" &
BG_PIDS+=($!)
run_pair "$a" "-q -i $T/a --rekey 1 --stats --progress" "-q -i $T/b --rekey 1 --stats" "$T/slow"
check_eq "--rekey 1: exits" "0 0" "$CRC $LRC"
check_eq "--rekey 1: data identical" "$(sha "$T/random.bin")" "$(sha "$T/l.out")"
renewals=$(sed -n 's/.*key renewals \([0-9]*\).*/\1/p' "$T/c.err")
check "--rekey 1: keys were renewed (${renewals:-none})" test "${renewals:-0}" -ge 1
# --progress (stderr not a terminal: one line per second, and a last one)
check "--progress: reports while the stream runs ($(grep -c progress "$T/l.err") lines)" \
	test "$(grep -c '^sio: progress: sent 0.0 MB, received [0-9.]* MB, [0-9.]* MB/s, 00:0' "$T/l.err")" -ge 2
check "--progress: the last line counts every byte ($(grep progress "$T/l.err" | tail -1))" \
	grep -q "^sio: progress: sent 0.0 MB, received 3.2 MB" <(grep progress "$T/l.err" | tail -1)

# --stats on both ends; without -q the learned identity is reported
a=$(new_addr unix)
run_pair "$a" "-i $T/a --stats" "-i $T/b --stats" "$T/random.bin"
check_eq "--stats: exits" "0 0" "$CRC $LRC"
for side in l c; do
	for w in "bytes" "messages" "dropped" "malformed" "decrypt" "replay" "key renewals" "packet size" "elapsed" "throughput"; do
		check "--stats ($side) mentions $w" grep -q "^sio: stats:.*$w" "$T/$side.err"
	done
done
check "--stats counts the bytes sent" grep -q "sent $(stat -c %s "$T/random.bin") bytes" "$T/c.err"
check "--stats counts the bytes received" grep -q "received $(stat -c %s "$T/random.bin") bytes" "$T/l.err"
check "unpinned peer's key line is printed (listener sees b)" grep -qF "$(cut -d' ' -f1,2 "$T/b.pub.line")" "$T/l.err"
check "unpinned peer's key line is printed (connector sees a)" grep -qF "$(cut -d' ' -f1,2 "$T/a.pub.line")" "$T/c.err"

# A closed stdin is an empty input (it was taken by sio's own wake pipe or
# socket: the relay then never ended, or sent its own packets as data).
a=$(new_addr tcp)
listen_bg "$a" -q -i "$T/a"
timeout -k 5 30 "$SIO" connect -q -i "$T/b" "$a" <&- >"$T/c.out" 2>"$T/c.err"
check_eq "closed stdin: connect ends at once with 0" 0 "$?"
end_bg
check_eq "closed stdin: listener exit" 0 "$LRC"
check_eq "closed stdin: nothing arrived" 0 "$(stat -c %s "$T/l.out")"

# A second `listen` on the UNIX path of a waiting one says "address in use"
# and leaves the first alone (its probe used to be accepted as the first
# one's peer, which then failed and removed its socket).
a=$(new_addr unix)
listen_bg "$a" -q -i "$T/a"
timeout -k 5 10 "$SIO" listen -q -i "$T/a" "$a" </dev/null >/dev/null 2>"$T/l2.err"
check_eq "second listener: exit 1" 1 "$?"
check "second listener: address in use" grep -q "address in use" "$T/l2.err"
timeout -k 5 30 "$SIO" connect -q -i "$T/b" "$a" <"$T/random.bin" >/dev/null 2>"$T/c.err"
check_eq "first listener still serves: sender exit" 0 "$?"
end_bg
check_eq "first listener still serves: listener exit" 0 "$LRC"
check_eq "first listener still serves: data identical" "$(sha "$T/random.bin")" "$(sha "$T/l.out")"
finish
