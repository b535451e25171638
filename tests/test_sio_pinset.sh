#!/usr/bin/env bash
# A two-key pin set through `sio`: the listener (b) accepts a and c; a
# connects through a relay run by c (tests/tools/forge_relay.c), which
# forges key exchanges as a, signed with c's key (during the first handshake
# and, for 2 s, while keys are renewed every 0.5 s), and seals data under the keys
# any reply would agree. The transfer must arrive intact, the listener must
# name a as its peer, and every forgery must be dropped.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
RELAY="$SIO_BINARY_DIR/forge_relay"
[ -x "$RELAY" ] || { echo "forge_relay not built" >&2; exit 1; }
mkid a
mkid b
mkid c
cat "$T/a.pub.line" "$T/c.pub.line" >"$T/two.keys"
fp_a=$("$SIO" fingerprint "$T/a/id_ed25519.pub")
fp_c=$("$SIO" fingerprint "$T/c/id_ed25519.pub")
for i in 1 2 3; do head -c 200000 /dev/urandom >"$T/part$i"; done
cat "$T/part1" "$T/part2" "$T/part3" >"$T/in"

pl=$(pick_port)
pr=$(pick_port)
listen_bg "udp:127.0.0.1:$pl" -i "$T/b" -r "$T/two.keys" --rekey 0.5 --stats
"$RELAY" "$pr" "$pl" "$T/c/id_ed25519" 2 >"$T/relay.out" 2>"$T/relay.err" &
RPID=$!
BG_PIDS+=("$RPID")
sleep 0.2
{ cat "$T/part1"; sleep 1.5; cat "$T/part2"; sleep 1.5; cat "$T/part3"; } |
	timeout -k 5 "$TMO" "$SIO" connect -q -i "$T/a" -r "$T/b/id_ed25519.pub" --rekey 0.5 \
		"udp:127.0.0.1:$pr" >"$T/c.out" 2>"$T/c.err"
CRC=$?
end_bg
kill -TERM "$RPID"
wait "$RPID"
read -r _ forged _ data <"$T/relay.out"
echo "relay: forged $forged key exchanges, sealed data for $data replies"
grep 'packets dropped' "$T/l.err"
kx_drops=$(sed -n 's/.*key exchange \([0-9]*\).*/\1/p' "$T/l.err" | head -1)
check_eq "exits (connect, listen)" "0 0" "$CRC $LRC"
check_eq "data intact" "$(sha "$T/in")" "$(sha "$T/l.out")"
check "the relay forged during the transfer ($forged)" test "${forged:-0}" -ge 10
check "listener names a as its peer" grep -q "established with $fp_a" "$T/l.err"
check "the listener dropped every forgery (${kx_drops:-none} >= $forged)" test "${kx_drops:-0}" -ge "${forged:-1}"
check "listener never names c" bash -c "! grep -q '$fp_c' '$T/l.err'"
finish
