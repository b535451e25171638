#!/usr/bin/env bash
# A receiver that closes the session (its stdin ended) while the sender still
# has stdin bytes in flight: the sender must not report success. It exits 1
# with "data lost: the peer closed the session before confirming N bytes of
# stdin"; the receiver, which chose to close, exits 0 with an exact prefix.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b

for k in tcp unix udp; do
	a=$(new_addr "$k")
	hold="$T/hold.$k"
	mkfifo "$hold" "$T/src.$k"
	# the receiver's stdin stays open while this sleep lives (nothing else
	# holds the fifo's write end, so killing it ends that stdin)
	sleep 1000 >"$hold" &
	hpid=$!
	BG_PIDS+=("$hpid")
	timeout -k 5 "$TMO" "$SIO" listen -q -i "$T/a" "$a" <"$hold" >"$T/l.out" 2>"$T/l.err" &
	lpid=$!
	BG_PIDS+=("$lpid")
	wait_ready "$a" "$lpid"
	# an endless source: the sender always has unconfirmed bytes in flight
	(exec cat /dev/zero) 2>/dev/null >"$T/src.$k" &
	spid=$!
	BG_PIDS+=("$spid")
	timeout -k 5 "$TMO" "$SIO" connect -q --stats -i "$T/b" "$a" <"$T/src.$k" >/dev/null 2>"$T/c.err" &
	cpid=$!
	BG_PIDS+=("$cpid")
	for i in $(seq 1 200); do [ -s "$T/l.out" ] && break; sleep 0.05; done
	# the receiver's stdin ends: it closes the session gracefully
	kill "$hpid"
	wait "$lpid"
	lrc=$?
	wait "$cpid"
	crc=$?
	kill "$spid" 2>/dev/null
	check_eq "$k: receiver that closed exits 0" 0 "$lrc"
	n=$(stat -c %s "$T/l.out")
	if [ "$crc" = 0 ]; then
		# the sender's window may be full, waiting, when the receiver's
		# last ACK confirms all it sent: nothing it sent was lost, and 0
		# is right then, but only then: what it reports as sent must be
		# exactly what the receiver wrote
		sent=$(sed -n 's/.*sent \([0-9]*\) bytes in.*/\1/p' "$T/c.err" | head -1)
		check_eq "$k: a sender that exits 0 sent exactly what arrived" "$n" "$sent"
		check "$k: a sender that exits 0 reports no loss" \
			sh -c "! grep -q 'data lost' '$T/c.err'"
	else
		check_eq "$k: sender whose data was not all confirmed exits 1" 1 "$crc"
		check "$k: sender says data was lost ($(cat "$T/c.err"))" \
			grep -q 'data lost: the peer closed the session before confirming [0-9]* bytes of stdin' "$T/c.err"
	fi
	check "$k: receiver got data ($n bytes)" test "$n" -gt 0
	check "$k: what arrived is an exact prefix" cmp -s -n "$n" /dev/zero "$T/l.out"
done

# A receiver whose stdin ends just after it wrote everything (before the
# sender's end-of-stream was processed, or before the periodic ACK went
# out): it acknowledges what it wrote before closing, so the sender, whose
# every byte arrived, exits 0 (it used to report the last chunks as lost).
head -c $((3 * 1024 * 1024)) /dev/urandom >"$T/data3"
want=$(stat -c %s "$T/data3")
for k in tcp unix tcp; do
	a=$(new_addr "$k")
	hold="$T/hold.end.$k.$RANDOM"
	mkfifo "$hold"
	sleep 1000 >"$hold" &
	hpid=$!
	BG_PIDS+=("$hpid")
	timeout -k 5 "$TMO" "$SIO" listen -q -i "$T/a" "$a" <"$hold" >"$T/l.out" 2>"$T/l.err" &
	lpid=$!
	BG_PIDS+=("$lpid")
	wait_ready "$a" "$lpid"
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" "$a" <"$T/data3" >/dev/null 2>"$T/c.err" &
	cpid=$!
	BG_PIDS+=("$cpid")
	for i in $(seq 1 1000); do
		[ "$(stat -c %s "$T/l.out" 2>/dev/null || echo 0)" -ge "$want" ] && break
		sleep 0.01
	done
	kill "$hpid"
	wait "$lpid"
	lrc=$?
	wait "$cpid"
	crc=$?
	check_eq "$k: receiver closing right after the last byte exits 0" 0 "$lrc"
	check_eq "$k: sender whose bytes all arrived exits 0 ($(cat "$T/c.err"))" 0 "$crc"
	check_eq "$k: content" "$(sha "$T/data3")" "$(sha "$T/l.out")"
done

# the same transfer that ends normally still exits 0 on both sides
a=$(new_addr tcp)
head -c $((4 * 1024 * 1024)) /dev/urandom >"$T/data"
run_pair "$a" "-q -i $T/a" "-q -i $T/b" "$T/data"
check_eq "complete transfer: sender exit" 0 "$CRC"
check_eq "complete transfer: receiver exit" 0 "$LRC"
check_eq "complete transfer: content" "$(sha "$T/data")" "$(sha "$T/l.out")"
finish
