#!/usr/bin/env bash
# Each direction of a stream ends on its own (TCP half-close): a side whose
# stdin ended keeps receiving until the peer's stream ended too, and exits 0
# only when all it sent was written out by the peer and all the peer sent
# was written to its stdout. On every transport: a receiver with stdin at
# /dev/null (scripts, cron, systemd), a request/response exchange (echo GET
# | sio connect), both sides sending 20 MB at once, --send-only/--recv-only,
# and the same rule in --lines mode.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b
KINDS="tcp udp unix unixgram"

head -c $((1024 * 1024 + 4321)) /dev/urandom >"$T/1m"
head -c $((20 * 1000 * 1000)) /dev/urandom >"$T/20a"
head -c $((20 * 1000 * 1000)) /dev/urandom >"$T/20b"
echo GET >"$T/get"

for k in $KINDS; do
	# the /dev/null receiver: its own direction ends at once, it keeps receiving
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a" "-q -i $T/b" "$T/1m"
	check_eq "$k /dev/null receiver: exits (connect, listen)" "0 0" "$CRC $LRC"
	check_eq "$k /dev/null receiver: 1 MiB arrived identical" "$(sha "$T/1m")" "$(sha "$T/l.out")"
	check "$k /dev/null receiver: quiet ($(cat "$T/l.err" "$T/c.err"))" test ! -s "$T/l.err" -a ! -s "$T/c.err"

	# request/response: the request ends long before the 20 MB response
	a=$(new_addr "$k")
	LISTEN_IN=$T/20a run_pair "$a" "-q -i $T/a" "-q -i $T/b" "$T/get"
	check_eq "$k request/response: exits (connect, listen)" "0 0" "$CRC $LRC"
	check_eq "$k request/response: the request arrived" "GET" "$(cat "$T/l.out")"
	check_eq "$k request/response: 20 MB response identical" "$(sha "$T/20a")" "$(sha "$T/c.out")"

	# both sides send 20 MB at once
	a=$(new_addr "$k")
	LISTEN_IN=$T/20a run_pair "$a" "-q -i $T/a" "-q -i $T/b" "$T/20b"
	check_eq "$k both send 20 MB: exits (connect, listen)" "0 0" "$CRC $LRC"
	check_eq "$k both send 20 MB: listener received identical" "$(sha "$T/20b")" "$(sha "$T/l.out")"
	check_eq "$k both send 20 MB: connector received identical" "$(sha "$T/20a")" "$(sha "$T/c.out")"
	check "$k both send 20 MB: no false alarm ($(cat "$T/l.err" "$T/c.err"))" \
		test ! -s "$T/l.err" -a ! -s "$T/c.err"
done

# --recv-only needs no stdin that ends, --send-only writes nothing: a
# receiver whose stdin never ends exits 0 once the sender's stream ended
mkfifo "$T/never"
exec {NEVER}<>"$T/never"
for k in tcp udp; do
	a=$(new_addr "$k")
	LISTEN_IN=$T/1m run_pair "$a" "-q -i $T/a --send-only" "-q -i $T/b --recv-only" "$T/never"
	check_eq "$k --send-only listen, --recv-only connect: exits" "0 0" "$CRC $LRC"
	check_eq "$k --recv-only: data identical" "$(sha "$T/1m")" "$(sha "$T/c.out")"
	check "$k --send-only: nothing written" test ! -s "$T/l.out"
	a=$(new_addr "$k")
	LISTEN_IN=$T/never run_pair "$a" "-q -i $T/a --recv-only" "-q -i $T/b" "$T/1m"
	check_eq "$k --recv-only listen, plain connect: exits" "0 0" "$CRC $LRC"
	check_eq "$k --recv-only listen: data identical" "$(sha "$T/1m")" "$(sha "$T/l.out")"
done

# --lines: the same rule (LEND/LACK on the control channel)
for i in $(seq 1 2000); do echo "line $i of the response"; done >"$T/lines"
for k in tcp udp unix; do
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a --lines" "-q -i $T/b --lines" "$T/lines"
	check_eq "$k --lines /dev/null receiver: exits" "0 0" "$CRC $LRC"
	check_eq "$k --lines /dev/null receiver: every line" "$(sha "$T/lines")" "$(sha "$T/l.out")"
	a=$(new_addr "$k")
	LISTEN_IN=$T/lines run_pair "$a" "-q -i $T/a --lines" "-q -i $T/b --lines" "$T/get"
	check_eq "$k --lines request/response: exits" "0 0" "$CRC $LRC"
	check_eq "$k --lines request/response: request" "GET" "$(cat "$T/l.out")"
	check_eq "$k --lines request/response: every line of the response" "$(sha "$T/lines")" "$(sha "$T/c.out")"
done

# a chat ended by Ctrl-C on one side: the other says the peer closed it
for k in tcp udp; do
	a=$(new_addr "$k")
	LISTEN_IN=$T/never listen_bg "$a" -q -i "$T/a"
	(printf 'hello\n'; exec sleep 60) 2>/dev/null | timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" "$a" >/dev/null 2>"$T/c.err" &
	cpid=$!
	BG_PIDS+=("$cpid")
	for i in $(seq 1 200); do [ -s "$T/l.out" ] && break; sleep 0.05; done
	pkill -INT -P "$cpid" -x sio 2>/dev/null || kill -INT "$cpid"
	end_bg
	check_eq "$k peer interrupted: listener exit 1" 1 "$LRC"
	check "$k peer interrupted: listener says the peer closed the session ($(cat "$T/l.err"))" \
		grep -q "the peer closed the session" "$T/l.err"
	check_eq "$k peer interrupted: what arrived" "hello" "$(cat "$T/l.out")"
	wait "$cpid" 2>/dev/null
done
exec {NEVER}>&-
finish
