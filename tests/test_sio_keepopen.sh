#!/usr/bin/env bash
# listen -k/--keep-open serves one peer after the other (ncat's -k) until
# SIGTERM: three peers in a row on each transport, each transfer confirmed
# (exit 0), the outputs in order on the listener's stdout; a peer that
# fails to authenticate does not stop it; -k is refused where it makes no
# sense.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b
mkid intruder
for k in tcp udp unix unixgram; do
	a=$(new_addr "$k")
	listen_bg "$a" -q -i "$T/a" -k -r "$T/b.pub.line"
	rcs=""
	: >"$T/expected"
	for n in 1 2 3; do
		head -c $((100000 * n)) /dev/urandom >"$T/in$n"
		cat "$T/in$n" >>"$T/expected"
		if [ "$n" = 2 ]; then
			# an intruder between two peers is refused, the listener goes on
			timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/intruder" --timeout 3 "$a" </dev/null >/dev/null 2>/dev/null
			check_eq "$k -k: intruder refused (exit 3)" 3 "$?"
		fi
		timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" "$a" <"$T/in$n" >/dev/null 2>"$T/c$n.err"
		rcs="$rcs$?"
	done
	check_eq "$k -k: three peers in a row exit 0" 000 "$rcs"
	check "$k -k: listener still serving" kill -0 "$LPID"
	kill -TERM "$LPID"
	end_bg
	check_eq "$k -k: SIGTERM while waiting: exit 0" 0 "$LRC"
	check_eq "$k -k: the three streams, in order" "$(sha "$T/expected")" "$(sha "$T/l.out")"
	check "$k -k: nothing on stderr but the refusal ($(cat "$T/l.err"))" \
		test -z "$(grep -Ev 'no session established|not authenticated' "$T/l.err")"
done
"$SIO" connect -k tcp:127.0.0.1:1 </dev/null 2>/dev/null
check_eq "connect -k: usage error" 2 "$?"
"$SIO" listen -k --multi udp::1 </dev/null 2>/dev/null
check_eq "listen -k --multi: usage error" 2 "$?"
finish
