#!/usr/bin/env bash
# Identity pinning (-r) and pre-shared keys (--psk-file) through `sio`:
# success, and failure with exit 3 and one line saying which; timeouts.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b
mkid c
head -c 32 /dev/urandom >"$T/psk1"
head -c 64 /dev/urandom >"$T/psk2"
chmod 600 "$T/psk1" "$T/psk2" # a PSK file must be private, like a key
echo "hello through an authenticated session" >"$T/msg"

for k in udp tcp unixgram; do
	# pinned both ways, with the .pub files and with the printed key lines
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a -r $T/b/id_ed25519.pub" "-q -i $T/b -r $T/a.pub.line" "$T/msg"
	check_eq "$k pinned both ways: exits" "0 0" "$CRC $LRC"
	check_eq "$k pinned both ways: data" "$(sha "$T/msg")" "$(sha "$T/l.out")"

	# the listener pins c, but b connects: no session, exit 3 on both sides
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a -r $T/c/id_ed25519.pub --timeout 2" "-q -i $T/b --timeout 2" "$T/msg"
	check_eq "$k wrong identity: connect exit" 3 "$CRC"
	check_eq "$k wrong identity: listen exit" 3 "$LRC"
	check "$k wrong identity: nothing delivered" test ! -s "$T/l.out"
	check "$k wrong identity: listener says why ($(cat "$T/l.err"))" \
		grep -qiE 'not authenticated|identity' "$T/l.err"
	check_eq "$k wrong identity: one error line (connect)" 1 "$(grep -c . "$T/c.err")"

	# the connecting side pins c, but a listens
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a --timeout 2" "-q -i $T/b -r $T/c/id_ed25519.pub --timeout 2" "$T/msg"
	check_eq "$k connector pins another key: connect exit" 3 "$CRC"
	check_eq "$k connector pins another key: listen exit" 3 "$LRC"
	check "$k connector pins another key: says why ($(cat "$T/c.err"))" \
		grep -qiE 'not authenticated|identity' "$T/c.err"

	# same PSK: works
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a --psk-file $T/psk1" "-q -i $T/b --psk-file $T/psk1" "$T/msg"
	check_eq "$k same PSK: exits" "0 0" "$CRC $LRC"
	check_eq "$k same PSK: data" "$(sha "$T/msg")" "$(sha "$T/l.out")"

	# different PSK / PSK on one side only: exit 3, nothing delivered
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a --psk-file $T/psk1 --timeout 2" "-q -i $T/b --psk-file $T/psk2 --timeout 2" "$T/msg"
	check_eq "$k wrong PSK: exits" "3 3" "$CRC $LRC"
	check "$k wrong PSK: nothing delivered" test ! -s "$T/l.out"
	check "$k wrong PSK: one line naming the PSK ($(cat "$T/c.err"))" \
		grep -qi 'psk' "$T/c.err"
	check_eq "$k wrong PSK: one line only" 1 "$(grep -c . "$T/c.err")"
	a=$(new_addr "$k")
	run_pair "$a" "-q -i $T/a --timeout 2" "-q -i $T/b --psk-file $T/psk2 --timeout 2" "$T/msg"
	check_eq "$k PSK on one side only: exits" "3 3" "$CRC $LRC"
	# the listener, which has no PSK, points at the PSK, not the identity
	check "$k PSK on the connecting side only: listener asks about a PSK ($(cat "$T/l.err"))" \
		grep -q 'does the peer use a --psk-file we do not have' "$T/l.err"
done

# A wrong pinned key, with the default timeouts over TCP (the kernel vouches
# for the sender: both sides end at once) and --timeout 5 over UDP (an
# off-path sender could forge a refusal, so UDP waits for the right peer
# until the timeout, docs/SECURITY.md): either side pinning the wrong key,
# both exit 3. The times are printed (TIME lines), not asserted.
for k in tcp udp; do
	tmo=
	[ "$k" = udp ] && tmo="--timeout 5"
	for who in listen connect; do
		lpin= cpin=
		if [ "$who" = listen ]; then lpin="-r $T/c/id_ed25519.pub"; else cpin="-r $T/c/id_ed25519.pub"; fi
		a=$(new_addr "$k")
		# shellcheck disable=SC2086
		listen_bg "$a" -q -i "$T/a" $lpin $tmo
		t0=$(now_s)
		# shellcheck disable=SC2086
		timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" $cpin $tmo "$a" <"$T/msg" >/dev/null 2>"$T/c.err"
		CRC=$?
		report_time "$k, wrong -r key on the $who side${tmo:+ ($tmo)}" connect "$t0" "$CRC" "$T/c.err"
		end_bg
		report_time "$k, wrong -r key on the $who side${tmo:+ ($tmo)}" listen "$t0" "$LRC" "$T/l.err"
		check_eq "$k, wrong key on the $who side, default timeouts: exits" "3 3" "$CRC $LRC"
		check "$k, wrong key on the $who side: nothing delivered" test ! -s "$T/l.out"
	done
done

# nobody there: exit 3 after --timeout
for k in udp tcp unix unixgram; do
	a=$(new_addr "$k")
	timeout -k 5 60 "$SIO" connect -i "$T/a" --timeout 1 "$a" <"$T/msg" >"$T/c.out" 2>"$T/c.err"
	check_eq "$k connect to nobody: exit 3" 3 $?
	check "$k connect to nobody: says no session ($(cat "$T/c.err"))" grep -qi 'no session' "$T/c.err"
	if [ "$k" = tcp ]; then
		check "tcp connect to nobody: says refused ($(cat "$T/c.err"))" grep -q 'connection refused' "$T/c.err"
	fi
	timeout -k 5 60 "$SIO" listen -i "$T/a" --timeout 1 "$a" <"$T/msg" >"$T/l.out" 2>"$T/l.err"
	check_eq "$k listen without peer: exit 3" 3 $?
done

# a UDP listener accepts the first peer that completes a valid key exchange
# and ignores others: a wrong-PSK peer first, then the right one
a=$(new_addr udp)
timeout -k 5 "$TMO" "$SIO" listen -q -i "$T/a" --psk-file "$T/psk1" --timeout 30 "$a" </dev/null >"$T/l.out" 2>"$T/l.err" &
lpid=$!
BG_PIDS+=("$lpid")
wait_ready "$a" "$lpid"
timeout -k 5 60 "$SIO" connect -q -i "$T/c" --psk-file "$T/psk2" --timeout 3 "$a" <"$T/msg" >/dev/null 2>"$T/c1.err"
check_eq "intruder with a wrong PSK: exit 3" 3 $?
timeout -k 5 60 "$SIO" connect -q -i "$T/b" --psk-file "$T/psk1" "$a" <"$T/msg" >/dev/null 2>"$T/c2.err"
check_eq "right peer after an intruder: connect exit" 0 $?
wait "$lpid"
check_eq "right peer after an intruder: listen exit" 0 $?
check_eq "right peer after an intruder: data" "$(sha "$T/msg")" "$(sha "$T/l.out")"
finish
