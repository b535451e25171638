#!/usr/bin/env bash
# `sio listen --multi`: several peers at once through one UDP socket, each
# line tagged with the sender's fingerprint; a key not in -r FILE is refused
# (exit 3 on the peer, nothing printed); SIGHUP reloads FILE and the same
# peer then gets in; a hub stdin line reaches a connected peer.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid hub
for i in 1 2 3 4 5 6 7 8; do mkid "p$i"; done
mkid stranger
: >"$T/auth"
for i in 1 2 3 4 5 6 7 8; do cat "$T/p$i.pub.line" >>"$T/auth"; done

for k in udp unixgram; do
	a=$(new_addr "$k")
	rm -f "$T/hin" && mkfifo "$T/hin"
	exec 7<>"$T/hin"
	timeout "$TMO" "$SIO" listen --multi -i "$T/hub" -r "$T/auth" --stats "$a" <"$T/hin" \
		>"$T/hub.out" 2>"$T/hub.err" 7>&- &
	hpid=$!
	BG_PIDS+=("$hpid")
	wait_ready "$a" "$hpid"
	# the hub's workers share its port (SO_REUSEPORT): another process
	# must still be told the port is taken, not get a share of it
	timeout "$TMO" "$SIO" listen --multi -i "$T/hub" "$a" </dev/null >/dev/null 2>"$T/dup.err" 7>&-
	check_eq "$k: a second hub on the same address: exit 1" 1 "$?"
	check "$k: a second hub: address in use" grep -q "address in use" "$T/dup.err"

	pids=()
	for i in 1 2 3 4 5 6 7 8; do
		printf 'hello from %s\nsecond line %s\n' "$i" "$i" |
			timeout "$TMO" "$SIO" connect --multi --lines -q -i "$T/p$i" -r "$T/hub.pub.line" \
				--timeout 20 "$a" >"$T/c$i.out" 2>"$T/c$i.err" 7>&- &
		pids+=($!)
	done
	rcs=""
	for p in "${pids[@]}"; do
		wait "$p"
		rcs="$rcs$?"
	done
	check_eq "$k: all peers exit 0" 00000000 "$rcs"
	for i in 1 2 3 4 5 6 7 8; do
		fp=$("$SIO" fingerprint "$T/p$i/id_ed25519.pub" | cut -d' ' -f1 | grep -o 'SHA256:[^ ]*')
		for n in 1 2; do
			[ "$(grep -c "second line" "$T/hub.out")" -ge 8 ] && break
			sleep 0.5
		done
		check "$k: line 1 of peer $i tagged with its fingerprint" grep -qxF "$fp hello from $i" "$T/hub.out"
		check "$k: line 2 of peer $i tagged with its fingerprint" grep -qxF "$fp second line $i" "$T/hub.out"
	done

	# not in the allowed keys: refused, nothing printed
	printf 'let me in\n' | timeout "$TMO" "$SIO" connect --multi --lines -q -i "$T/stranger" \
		-r "$T/hub.pub.line" --timeout 3 "$a" >/dev/null 2>"$T/s.err"
	check_eq "$k: stranger refused (exit 3)" 3 "$?"
	check "$k: nothing printed for the stranger" bash -c "! grep -q 'let me in' '$T/hub.out'"

	# SIGHUP reloads the allowed keys
	cat "$T/stranger.pub.line" >>"$T/auth"
	kill -HUP "$hpid"
	for n in $(seq 1 100); do grep -q reloaded "$T/hub.err" && break; sleep 0.05; done
	printf 'let me in\n' | timeout "$TMO" "$SIO" connect --multi --lines -q -i "$T/stranger" \
		-r "$T/hub.pub.line" --timeout 10 "$a" >/dev/null 2>"$T/s.err"
	check_eq "$k: stranger in after SIGHUP (exit 0)" 0 "$?"
	for n in $(seq 1 100); do grep -q 'let me in' "$T/hub.out" && break; sleep 0.05; done
	check "$k: stranger's line printed after reload" grep -q 'let me in' "$T/hub.out"
	sed -i '$d' "$T/auth"

	# a hub stdin line reaches a connected peer
	rm -f "$T/cin" && mkfifo "$T/cin"
	exec 8<>"$T/cin"
	timeout "$TMO" "$SIO" connect --multi --lines -q -i "$T/p1" -r "$T/hub.pub.line" --timeout 10 \
		"$a" <"$T/cin" >"$T/listen1.out" 2>"$T/listen1.err" 7>&- 8>&- &
	cpid=$!
	BG_PIDS+=("$cpid")
	echo "are you there" >&8
	for n in $(seq 1 200); do grep -q 'are you there' "$T/hub.out" && break; sleep 0.05; done
	for n in $(seq 1 200); do [ "$(grep -c joined "$T/hub.err")" -ge 10 ] && break; sleep 0.05; done
	echo "news for everyone" >&7
	for n in $(seq 1 200); do grep -q 'news for everyone' "$T/listen1.out" && break; sleep 0.05; done
	check "$k: hub line reached the peer" grep -qx 'news for everyone' "$T/listen1.out"
	exec 8>&-
	wait "$cpid"
	exec 7>&-
	wait "$hpid"
	check_eq "$k: hub exits 0 at the end of its stdin" 0 "$?"
	check "$k: hub counted the refusal" grep -qE 'unauthorized [1-9]' "$T/hub.err"
done

# a peer's control bytes never reach the hub's terminal: its attempts to
# erase or repaint its line (ESC [2K, CR, BS, raw 8-bit CSI 0x9b, DEL, a
# UTF-8 encoded C1 CSI) come out escaped as \xNN on its own line, after its
# own fingerprint; a backslash is doubled. In a C locale every byte >= 0x80
# is escaped; in a UTF-8 locale printable UTF-8 (here é) passes.
fp1=$("$SIO" fingerprint "$T/p1/id_ed25519.pub" | grep -o 'SHA256:[^ ]*')
fp2=$("$SIO" fingerprint "$T/p2/id_ed25519.pub" | grep -o 'SHA256:[^ ]*')
for loc in C C.UTF-8; do
	a=$(new_addr udp)
	rm -f "$T/hin" && mkfifo "$T/hin"
	exec 7<>"$T/hin"
	LC_ALL=$loc timeout "$TMO" "$SIO" listen --multi -q -i "$T/hub" "$a" <"$T/hin" \
		>"$T/esc.out" 2>"$T/esc.err" 7>&- &
	hpid=$!
	BG_PIDS+=("$hpid")
	wait_ready "$a" "$hpid"
	printf 'x\r\033[2K%s forged line\n\bDEL\177 csi\2332J utf8-c1\302\2332J back\\x1b caf\303\251\n' "$fp2" |
		timeout "$TMO" "$SIO" connect --multi --lines -q -i "$T/p1" -r "$T/hub.pub.line" \
			--timeout 20 "$a" >/dev/null 2>"$T/c.err" 7>&-
	check_eq "$loc: escaping peer exits 0" 0 "$?"
	for n in $(seq 1 100); do [ "$(wc -l <"$T/esc.out")" -ge 2 ] && break; sleep 0.05; done
	exec 7>&-
	wait "$hpid"
	check_eq "$loc: hub exits 0" 0 "$?"
	check_eq "$loc: two lines, no more" 2 "$(wc -l <"$T/esc.out")"
	for b in '\r' '\033' '\010' '\177' '\233'; do
		check "$loc: no raw byte $b in the hub's output" \
			bash -c "! LC_ALL=C grep -q \"\$(printf '$b')\" '$T/esc.out'"
	done
	check "$loc: forged line shown escaped after the sender's fingerprint" \
		grep -qxF "$fp1 x\\x0d\\x1b[2K$fp2 forged line" "$T/esc.out"
	check "$loc: no line starts with the other peer's fingerprint" \
		bash -c "! grep -q '^$fp2' '$T/esc.out'"
	if [ "$loc" = C ]; then
		want="$fp1 \\x08DEL\\x7f csi\\x9b2J utf8-c1\\xc2\\x9b2J back\\\\x1b caf\\xc3\\xa9"
	else
		want="$fp1 \\x08DEL\\x7f csi\\x9b2J utf8-c1\\xc2\\x9b2J back\\\\x1b caf$(printf '\303\251')"
	fi
	check "$loc: BS, DEL, raw and UTF-8 C1 CSI escaped, backslash doubled ($(tail -n 1 "$T/esc.out" | od -c | head -3))" \
		grep -qxF "$want" "$T/esc.out"
done

# the hub's stdout goes away (its reader, `true`, is gone before any line
# comes; lines keep coming a second later too): it stops with exit 1 and
# says why, instead of dropping every later line until it is killed
a=$(new_addr udp)
rm -f "$T/hin" && mkfifo "$T/hin"
exec 7<>"$T/hin"
( timeout 30 "$SIO" listen --multi -q -i "$T/hub" "$a" <"$T/hin" 2>"$T/hub.err" 7>&-
  echo $? >"$T/hub.rc" ) | true &
hpid=$!
wait_ready "$a" "$(pgrep -n -f "listen --multi -q -i $T/hub")"
(seq 1 5; sleep 1; seq 6 10) | timeout 30 "$SIO" connect --multi --lines -q -i "$T/p1" \
	-r "$T/hub.pub.line" --timeout 10 "$a" >/dev/null 2>/dev/null 7>&-
wait "$hpid"
exec 7>&-
check_eq "hub with stdout gone: exit 1" 1 "$(cat "$T/hub.rc")"
check "hub with stdout gone: says so ($(cat "$T/hub.err"))" grep -q "stdout: Broken pipe" "$T/hub.err"
finish
