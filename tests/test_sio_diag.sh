#!/usr/bin/env bash
# sio's diagnostics (the library's on_diag): an unconnected `sio listen`
# with -r names a refused identity once, without -v, and still serves the
# right peer; -v shows the handshake and the drop summaries, -vv each
# key-exchange message; -q shows none of it.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid a
mkid b
mkid c
fpb=$("$SIO" fingerprint "$T/b/id_ed25519.pub" | cut -d' ' -f1)
fpc=$("$SIO" fingerprint "$T/c/id_ed25519.pub" | cut -d' ' -f1)
echo "the right peer's data" >"$T/msg"

for k in udp unixgram; do
	# c is not pinned: it tries three times (each try retries its key
	# exchange too); one line names it, then b is served
	a=$(new_addr "$k")
	listen_bg "$a" -i "$T/a" -r "$T/b/id_ed25519.pub"
	for i in 1 2 3; do
		timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/c" --timeout 1.5 "$a" </dev/null >/dev/null 2>"$T/c$i.err"
		check_eq "$k wrong peer, try $i: exit 3" 3 "$?"
	done
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" -r "$T/a/id_ed25519.pub" "$a" <"$T/msg" >"$T/c.out" 2>"$T/c.err"
	CRC=$?
	end_bg
	check_eq "$k right peer after the wrong one: exits" "0 0" "$CRC $LRC"
	check_eq "$k right peer after the wrong one: data" "$(sha "$T/msg")" "$(sha "$T/l.out")"
	check_eq "$k refused line once, without -v ($(tr '\n' '|' <"$T/l.err"))" 1 \
		"$(grep -cxF "sio: refused $fpc (not pinned)" "$T/l.err")"
	check "$k no refused line for the right peer" test "$(grep -c "refused $fpb" "$T/l.err")" -eq 0
	check "$k no info lines without -v ($(tr '\n' '|' <"$T/l.err"))" \
		test "$(grep -cE 'key generation|dropped|peer address' "$T/l.err")" -eq 0

	# -q: not even the refused line
	a=$(new_addr "$k")
	listen_bg "$a" -q -i "$T/a" -r "$T/b/id_ed25519.pub" --timeout 2
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/c" --timeout 1.5 "$a" </dev/null >/dev/null 2>/dev/null
	end_bg
	check_eq "$k -q: exit 3" 3 "$LRC"
	check "$k -q: no refused line ($(tr "\n" "|" <"$T/l.err"))" test "$(grep -c "^sio: refused" "$T/l.err")" -eq 0

	# -v on the listener, -vv on the connecting side; the wrong peer
	# first: the listener then also summarises its drops
	a=$(new_addr "$k")
	listen_bg "$a" -v -i "$T/a" -r "$T/b/id_ed25519.pub"
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/c" --timeout 1.5 "$a" </dev/null >/dev/null 2>/dev/null
	timeout -k 5 "$TMO" "$SIO" connect -vv -i "$T/b" -r "$T/a/id_ed25519.pub" "$a" <"$T/msg" >"$T/c.out" 2>"$T/c.err"
	CRC=$?
	end_bg
	check_eq "$k -v: exits ($(tr "\n" "|" <"$T/l.err") // $(tr "\n" "|" <"$T/c.err"))" "0 0" "$CRC $LRC"
	check_eq "$k -v: data" "$(sha "$T/msg")" "$(sha "$T/l.out")"
	check_eq "$k -v: established line with the generation ($(tr '\n' '|' <"$T/l.err"))" 1 \
		"$(grep -cxF "sio: established with $fpb (key generation 1)" "$T/l.err")"
	check_eq "$k -v: refused line once" 1 "$(grep -cxF "sio: refused $fpc (not pinned)" "$T/l.err")"
	check "$k -v: the refusals summarised" \
		grep -qE '^sio: dropped [0-9]+ packets? \(identity: ' "$T/l.err"
	check "$k -v: the peer's address, tentative then validated" \
		grep -q '^sio: peer address .* (tentative: a key exchange came from it)' "$T/l.err"
	check "$k -v: the peer's address validated" \
		grep -q '^sio: peer address .* validated (authenticated data came from it)' "$T/l.err"
	check "$k -v: no debug lines" test "$(grep -c 'key exchange:' "$T/l.err")" -eq 0
	check "$k -vv: our key exchange sent ($(tr '\n' '|' <"$T/c.err"))" \
		grep -qxF "sio: key exchange: sent generation 1" "$T/c.err"
	check "$k -vv: the peer's received" \
		grep -qxF "sio: key exchange: received generation 1 from $(
			"$SIO" fingerprint "$T/a/id_ed25519.pub" | cut -d' ' -f1)" "$T/c.err"
	check "$k every stderr line starts with 'sio: '" test "$(grep -vc '^sio: ' "$T/l.err" "$T/c.err" | awk -F: '{s += $2} END {print s}')" -eq 0
done

# listen --multi: the hub names a stranger once, however often it knocks
a=$(new_addr udp)
(sleep 30 | timeout -k 5 "$TMO" "$SIO" listen --multi --lines -i "$T/a" -r "$T/b/id_ed25519.pub" "$a" >"$T/h.out" 2>"$T/h.err") &
HPID=$!
BG_PIDS+=("$HPID")
wait_ready "$a" "$HPID"
for i in 1 2; do
	echo "let me in" | timeout -k 5 "$TMO" "$SIO" connect --multi --lines -q -i "$T/c" \
		-r "$T/a/id_ed25519.pub" --timeout 1.5 "$a" >/dev/null 2>&1
	check_eq "multi: stranger, try $i: exit 3" 3 "$?"
done
echo "hello hub" | timeout -k 5 "$TMO" "$SIO" connect --multi --lines -q -i "$T/b" \
	-r "$T/a/id_ed25519.pub" "$a" >/dev/null 2>&1
check_eq "multi: allowed peer served" 0 "$?"
for n in $(seq 1 100); do grep -q 'hello hub' "$T/h.out" && break; sleep 0.05; done
kill -TERM "$HPID" 2>/dev/null
wait "$HPID" 2>/dev/null
check_eq "multi: refused line once ($(tr '\n' '|' <"$T/h.err"))" 1 \
	"$(grep -cxF "sio: refused $fpc (not allowed)" "$T/h.err")"
check "multi: the allowed peer's line" grep -q 'hello hub' "$T/h.out"

# key renewals show with -v
a=$(new_addr udp)
listen_bg "$a" -v -i "$T/a" -r "$T/b/id_ed25519.pub" --rekey 0.3
(cat "$T/msg"; sleep 1.5) | timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/b" -r "$T/a/id_ed25519.pub" --rekey 0.3 "$a" >/dev/null 2>&1
end_bg
check_eq "renewals: exit" 0 "$LRC"
check "renewals: -v says so ($(tr '\n' '|' <"$T/l.err"))" grep -qE '^sio: keys renewed \(generation [0-9]+\)$' "$T/l.err"
finish
