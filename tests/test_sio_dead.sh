#!/usr/bin/env bash
# A datagram peer killed with SIGKILL sends nothing more: the survivor gives
# it up after --dead seconds (default 10; keepalives flow while idle) and
# says "the peer stopped answering" (it used to take about 88 s and say
# "timed out"). A connecting side whose listener was killed learns it from
# the network (port unreachable on its connected socket) in about a second,
# over udp: and unixgram: (which said "I/O error"). Either side over udp:,
# both over unixgram:, and an idle session (no data flowing) with --dead 3.
# Each case prints its measured time (TIME lines; not asserted).
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b

# the connecting side is killed during a transfer: the listener (an
# unconnected socket: no port-unreachable reports) notices after --dead
for k in udp unixgram; do
	a=$(new_addr "$k")
	listen_bg "$a" -q -i "$T/a"
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" "$a" </dev/zero >/dev/null 2>"$T/c.err" &
	cpid=$!
	BG_PIDS+=("$cpid")
	for i in $(seq 1 200); do [ -s "$T/l.out" ] && break; sleep 0.05; done
	pkill -KILL -P "$cpid" -x sio
	t0=$(now_s)
	end_bg
	report_time "$k: connecting side killed" "listen" "$t0" "$LRC" "$T/l.err"
	check_eq "$k connector killed: listener exit 1" 1 "$LRC"
	check "$k connector killed: listener says the peer stopped answering ($(cat "$T/l.err"))" \
		grep -q 'the peer stopped answering' "$T/l.err"
	n=$(stat -c %s "$T/l.out")
	check "$k connector killed: output is an exact prefix" cmp -s -n "$n" /dev/zero "$T/l.out"
	wait "$cpid" 2>/dev/null
	rm -f "$T/l.out"
done

# the listening side is killed during a transfer: the connector (a
# connected socket) is told the port is unreachable and gives up at once
for k in udp unixgram; do
	a=$(new_addr "$k")
	listen_bg "$a" -q -i "$T/a"
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" "$a" </dev/zero >/dev/null 2>"$T/c.err" &
	cpid=$!
	BG_PIDS+=("$cpid")
	for i in $(seq 1 200); do [ -s "$T/l.out" ] && break; sleep 0.05; done
	pkill -KILL -P "$LPID" -x sio
	t0=$(now_s)
	wait "$cpid"
	crc=$?
	report_time "$k: listening side killed" "connect" "$t0" "$crc" "$T/c.err"
	check_eq "$k listener killed: connector exit 1" 1 "$crc"
	check "$k listener killed: connector says the peer stopped answering, port unreachable ($(cat "$T/c.err"))" \
		grep -q 'the peer stopped answering (port unreachable' "$T/c.err"
	{ end_bg; } 2>/dev/null
	rm -f "$T/l.out"
done

# an idle session: keepalives keep it up past --dead, then the killed
# peer is noticed
mkfifo "$T/idle"
exec {IDLE}<>"$T/idle"
a=$(new_addr udp)
LISTEN_IN=$T/idle listen_bg "$a" -q -i "$T/a" --dead 3
timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" --dead 3 "$a" <"$T/idle" >/dev/null 2>"$T/c.err" &
cpid=$!
BG_PIDS+=("$cpid")
sleep 5 # longer than --dead: a live but silent peer must not be given up
check "idle session: still up after more than --dead seconds" kill -0 "$LPID"
pkill -KILL -P "$cpid" -x sio
t0=$(now_s)
end_bg
report_time "udp, idle, --dead 3: connecting side killed" "listen" "$t0" "$LRC" "$T/l.err"
check_eq "idle peer killed: listener exit 1" 1 "$LRC"
check "idle peer killed: listener says the peer stopped answering ($(cat "$T/l.err"))" \
	grep -q 'the peer stopped answering (nothing heard for 3 s' "$T/l.err"
wait "$cpid" 2>/dev/null

# idle the other way round: the listener is killed, the idle connector
# learns it at its next keepalive (every --dead/4 s) from the port
# unreachable report, well before --dead
LISTEN_IN=$T/idle listen_bg "$a" -q -i "$T/a" --dead 3
timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" --dead 3 "$a" <"$T/idle" >/dev/null 2>"$T/c.err" &
cpid=$!
BG_PIDS+=("$cpid")
sleep 2
pkill -KILL -P "$LPID" -x sio
t0=$(now_s)
wait "$cpid"
crc=$?
report_time "udp, idle, --dead 3: listening side killed" "connect" "$t0" "$crc" "$T/c.err"
check_eq "idle listener killed: connector exit 1" 1 "$crc"
check "idle listener killed: connector says port unreachable ($(cat "$T/c.err"))" \
	grep -q 'port unreachable' "$T/c.err"
{ end_bg; } 2>/dev/null
exec {IDLE}>&-
finish
