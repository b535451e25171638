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
