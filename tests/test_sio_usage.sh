#!/usr/bin/env bash
# The `sio` command without a session: usage errors (exit 2, with the usage
# line, nothing on stdout), --help, and local errors that need no key file
# format (exit 1, one line on stderr): missing files, bad PSK files,
# addresses in use.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
# usage: expect_usage DESCRIPTION ARGS...
expect_usage() {
	local d=$1
	shift
	timeout -k 5 30 "$SIO" "$@" </dev/null >"$T/out" 2>"$T/err"
	local rc=$?
	check_eq "$d: exit code" 2 "$rc"
	check "$d: usage line" grep -q '^usage: sio' "$T/err"
	check "$d: first line names the problem" grep -q '^sio: ' "$T/err"
	check "$d: nothing on stdout" test ! -s "$T/out"
}
expect_usage "no arguments"
expect_usage "unknown command" frobnicate
expect_usage "listen without ADDRESS" listen
expect_usage "connect without ADDRESS" connect -q
expect_usage "unknown option" listen --bogus udp:127.0.0.1:5000
expect_usage "two addresses" connect udp:127.0.0.1:5000 udp:127.0.0.1:5001
expect_usage "option without value" connect udp:127.0.0.1:5000 -r
expect_usage "bad channel" connect --channel 2147483648 udp:127.0.0.1:5000
expect_usage "negative channel" connect --channel -1 udp:127.0.0.1:5000
expect_usage "bad timeout" connect --timeout soon udp:127.0.0.1:5000
expect_usage "zero rekey" connect --rekey 0 udp:127.0.0.1:5000
expect_usage "tiny rekey" connect --rekey 0.01 udp:127.0.0.1:5000
expect_usage "flag with value" connect --lines=yes udp:127.0.0.1:5000
for a in udp:127.0.0.1 udp:127.0.0.1:0 udp:127.0.0.1:65536 udp:127.0.0.1:1http udp:::1:5000 \
	'udp:[::1]5000' 'udp:[::1:5000' 'udp:[]:5000' 'udp:[1.2.3.4]:5000' tcp::5000 sctp:1.2.3.4:5 \
	unix: unixgram: "unix:$(printf 'x%.0s' $(seq 1 120))" 127.0.0.1:5000; do
	expect_usage "bad address $a" connect "$a"
done
expect_usage "fingerprint without FILE" fingerprint
expect_usage "pubkey with both -i and -f" pubkey -i "$T/x" -f "$T/y"
expect_usage "keygen extra argument" keygen -i "$T/x" extra

check "--help exits 0" timeout 30 "$SIO" --help >"$T/help"
check "--help shows every subcommand" grep -q 'sio connect \[OPTIONS\] ADDRESS' "$T/help"
check "--help warns about lost lines over UDP" grep -qi 'lost' "$T/help"

expect_err() { # expect_err DESCRIPTION PATTERN ARGS...
	local d=$1 pat=$2
	shift 2
	timeout -k 5 30 "$SIO" "$@" </dev/null >"$T/out" 2>"$T/err"
	local rc=$?
	check_eq "$d: exit code" 1 "$rc"
	check_eq "$d: one line on stderr" 1 "$(wc -l <"$T/err")"
	check "$d: message ($(head -c 200 "$T/err"))" grep -qi -- "$pat" "$T/err"
}
mkid id
expect_err "fingerprint of a missing file" "missing" fingerprint "$T/missing"
expect_err "connect with a missing -r file" "missing" connect -i "$T/id" -r "$T/missing" udp:127.0.0.1:9
head -c 8 /dev/urandom >"$T/short.psk"
chmod 600 "$T/short.psk"
expect_err "PSK file too short" "16 to" connect -i "$T/id" --psk-file "$T/short.psk" udp:127.0.0.1:9
head -c 1025 /dev/urandom >"$T/long.psk"
chmod 600 "$T/long.psk"
expect_err "PSK file too long" "16 to" connect -i "$T/id" --psk-file "$T/long.psk" udp:127.0.0.1:9
expect_err "missing PSK file" "nope.psk" connect -i "$T/id" --psk-file "$T/nope.psk" udp:127.0.0.1:9

# ---- address in use: exit 1 ----
p=$(pick_port)
timeout -k 5 60 "$SIO" listen -q -i "$T/id" --timeout 20 "udp:127.0.0.1:$p" </dev/null >/dev/null 2>&1 &
BG_PIDS+=($!)
wait_ready "udp:127.0.0.1:$p" $!
expect_err "udp address in use" "in use" listen -i "$T/id" "udp:127.0.0.1:$p"
echo x >"$T/plainfile"
expect_err "unix path that is not a socket" "not a socket" listen -i "$T/id" "unix:$T/plainfile"
timeout -k 5 60 "$SIO" listen -q -i "$T/id" --timeout 20 "unix:$T/busy.sock" </dev/null >/dev/null 2>&1 &
BG_PIDS+=($!)
wait_ready "unix:$T/busy.sock" $!
expect_err "unix socket in use" "in use" listen -i "$T/id" "unix:$T/busy.sock"
finish
