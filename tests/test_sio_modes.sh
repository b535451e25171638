#!/usr/bin/env bash
# Each side announces its mode (stream or --lines, channel, --multi,
# --send-only/--recv-only) on sio's control channel at the start of the
# session: sides that cannot work together both stop with exit 2 and a
# message naming both modes, and nothing reaches stdout (a --lines listener
# fed by a stream sender used to print raw framing and duplicated lines).
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b
for i in $(seq 1 200); do echo "line $i"; done >"$T/in"

# mismatch NAME KIND "LISTEN OPTS" "CONNECT OPTS" LISTEN_WORDS CONNECT_WORDS
mismatch() {
	local name=$1 k=$2 lo=$3 co=$4 lw=$5 cw=$6 a
	a=$(new_addr "$k")
	LISTEN_IN=$T/in run_pair "$a" "-i $T/a $lo" "-i $T/b $co" "$T/in"
	check_eq "$k $name: both exit 2" "2 2" "$CRC $LRC"
	check "$k $name: listener names both modes ($(grep mismatch "$T/l.err"))" \
		grep -qE "mode mismatch: we run $lw.*the peer runs $cw" "$T/l.err"
	check "$k $name: connector names both modes ($(grep mismatch "$T/c.err"))" \
		grep -qE "mode mismatch: we run $cw.*the peer runs $lw" "$T/c.err"
	check "$k $name: nothing written" test ! -s "$T/l.out" -a ! -s "$T/c.out"
}

for k in udp tcp unix unixgram; do
	mismatch "lines listener, stream sender" "$k" --lines "" "--lines mode" "stream mode"
	mismatch "stream listener, lines sender" "$k" "" --lines "stream mode" "--lines mode"
done
for k in udp tcp; do
	mismatch "channel 5 against 6" "$k" "--channel 5" "--channel 6" "stream mode on channel 5" "stream mode on channel 6"
	mismatch "lines on channel 5 against the default" "$k" "--lines --channel 5" "--lines" \
		"--lines mode on channel 5" "--lines mode on the default channel"
	mismatch "both --send-only" "$k" --send-only --send-only "stream mode.*--send-only" "stream mode.*--send-only"
	mismatch "both --recv-only" "$k" --recv-only --recv-only "stream mode.*--recv-only" "stream mode.*--recv-only"
done
# --multi client against a plain listener (TCP carries it: no connection id there)
mismatch "--multi client, plain listener" tcp --lines "--multi --lines" "--lines mode on the default channel" "--lines mode.*--multi"

# a stream-mode --multi client against a hub: refused by both
for k in udp unixgram; do
	a=$(new_addr "$k")
	mkfifo "$T/hin.$k"
	exec {HIN}<>"$T/hin.$k"
	timeout -k 5 "$TMO" "$SIO" listen --multi -i "$T/a" "$a" <"$T/hin.$k" >"$T/hub.out" 2>"$T/hub.err" {HIN}>&- &
	hpid=$!
	BG_PIDS+=("$hpid")
	wait_ready "$a" "$hpid"
	timeout -k 5 "$TMO" "$SIO" connect --multi -q -i "$T/b" "$a" <"$T/in" >"$T/c.out" 2>"$T/c.err"
	check_eq "$k stream client against a hub: exit 2" 2 "$?"
	check "$k stream client against a hub: names both modes ($(cat "$T/c.err"))" \
		grep -q "mode mismatch: we run stream mode on the default channel, --multi, the peer runs --lines mode on the default channel, listen --multi" "$T/c.err"
	for i in $(seq 1 100); do grep -q refused "$T/hub.err" && break; sleep 0.05; done
	check "$k stream client against a hub: hub says why ($(cat "$T/hub.err"))" \
		grep -q "refused: mode mismatch: it runs stream mode" "$T/hub.err"
	check "$k stream client against a hub: hub printed nothing" test ! -s "$T/hub.out"
	exec {HIN}>&-
	wait "$hpid"
	check_eq "$k hub exits 0 at the end of its stdin" 0 "$?"
done

# usage: --channel stops below sio's control channel; --send-only and
# --recv-only exclude each other
"$SIO" connect --channel 2147483647 tcp:127.0.0.1:1 </dev/null 2>"$T/u.err"
check_eq "--channel 2147483647: usage error" 2 "$?"
check "--channel 2147483647: says it is the control channel" grep -q "control channel" "$T/u.err"
"$SIO" listen --send-only --recv-only tcp::1 </dev/null 2>/dev/null
check_eq "--send-only --recv-only: usage error" 2 "$?"
finish
