#!/usr/bin/env bash
# A datagram peer killed with SIGKILL sends nothing more: the survivor gives
# it up after --dead seconds (default 10; keepalives flow while idle) and
# says "the peer stopped answering" (it used to take about 88 s and say
# "timed out"). Either side over udp:, the listener over unixgram:, and an
# idle session (no data flowing) with --dead 3.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b

# the connecting side is killed during a transfer: the listener notices
for k in udp unixgram; do
	a=$(new_addr "$k")
	listen_bg "$a" -q -i "$T/a"
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" "$a" </dev/zero >/dev/null 2>"$T/c.err" &
	cpid=$!
	BG_PIDS+=("$cpid")
	for i in $(seq 1 200); do [ -s "$T/l.out" ] && break; sleep 0.05; done
	pkill -KILL -P "$cpid" -x sio
	end_bg
	check_eq "$k connector killed: listener exit 1" 1 "$LRC"
	check "$k connector killed: listener says the peer stopped answering ($(cat "$T/l.err"))" \
		grep -q 'the peer stopped answering' "$T/l.err"
	n=$(stat -c %s "$T/l.out")
	check "$k connector killed: output is an exact prefix" cmp -s -n "$n" /dev/zero "$T/l.out"
	wait "$cpid" 2>/dev/null
done

# the listening side is killed during a transfer: the connector notices
a=$(new_addr udp)
listen_bg "$a" -q -i "$T/a"
timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" "$a" </dev/zero >/dev/null 2>"$T/c.err" &
cpid=$!
BG_PIDS+=("$cpid")
for i in $(seq 1 200); do [ -s "$T/l.out" ] && break; sleep 0.05; done
pkill -KILL -P "$LPID" -x sio
wait "$cpid"
check_eq "udp listener killed: connector exit 1" 1 "$?"
check "udp listener killed: connector says the peer stopped answering ($(cat "$T/c.err"))" \
	grep -q 'the peer stopped answering' "$T/c.err"
{ end_bg; } 2>/dev/null

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
end_bg
check_eq "idle peer killed: listener exit 1" 1 "$LRC"
check "idle peer killed: listener says the peer stopped answering ($(cat "$T/l.err"))" \
	grep -q 'the peer stopped answering (nothing heard for 3 s' "$T/l.err"
exec {IDLE}>&-
wait "$cpid" 2>/dev/null
finish
