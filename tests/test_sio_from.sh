#!/usr/bin/env bash
# authorized_keys options in `sio listen -r FILE` (one peer and --multi):
# from="pattern-list" is enforced (a key allowed only from 10.9.9.9 was
# accepted from 127.0.0.1 before), over IPv4 and IPv6, UDP and TCP; options
# sio cannot enforce refuse the file with its name, line and option.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
mkid srv
mkid cli
key=$(cat "$T/cli.pub.line")
printf 'hello\n' >"$T/in"

# one_peer KIND FROM EXPECT_CONNECT_EXIT
one_peer() {
	local kind=$1 from=$2 want=$3 a
	printf 'from="%s" %s\n' "$from" "$key" >"$T/auth"
	a=$(new_addr "$kind")
	listen_bg "$a" -i "$T/srv" -r "$T/auth" --timeout 3
	timeout -k 5 "$TMO" "$SIO" connect -i "$T/cli" -r "$T/srv.pub.line" --timeout 3 "$a" \
		<"$T/in" >/dev/null 2>"$T/c.err"
	CRC=$?
	[ "$want" = 0 ] || kill "$LPID" 2>/dev/null
	end_bg
	check_eq "$kind from=\"$from\": connect exit" "$want" "$CRC"
	if [ "$want" = 0 ]; then
		check_eq "$kind from=\"$from\": data through" hello "$(cat "$T/l.out")"
	else
		check "$kind from=\"$from\": nothing delivered" test ! -s "$T/l.out"
	fi
}

one_peer udp "10.9.9.9" 3
one_peer udp "127.0.0.1" 0
one_peer udp "127.0.0.0/8,!127.0.0.2" 0
one_peer udp "*,!127.0.0.1" 3
one_peer tcp "10.0.0.0/8" 3
one_peer tcp "127.0.0.?" 0
if have_ipv6; then
	one_peer udp6 "::1" 0
	one_peer udp6 "127.0.0.1" 3
	one_peer udp6 "::/0,!::1" 3
	one_peer tcp6 "::1/128" 0
	one_peer tcp6 "2001:db8::/32" 3
else
	echo "no IPv6 loopback: IPv6 cases skipped"
fi

# --multi: the listener checks the source of each peer's key exchange
for kind in udp udp6; do
	[ "$kind" = udp6 ] && ! have_ipv6 && continue
	a=$(new_addr "$kind")
	host=127.0.0.1
	[ "$kind" = udp6 ] && host=::1
	printf 'from="%s" %s\n' "$host" "$key" >"$T/auth"
	rm -f "$T/hin" && mkfifo "$T/hin"
	exec {H}<>"$T/hin"
	timeout "$TMO" "$SIO" listen --multi -i "$T/srv" -r "$T/auth" "$a" <"$T/hin" \
		>"$T/hub.out" 2>"$T/hub.err" &
	hpid=$!
	BG_PIDS+=("$hpid")
	wait_ready "$a" "$hpid"
	printf 'allowed line\n' | timeout "$TMO" "$SIO" connect --multi --lines -q -i "$T/cli" \
		-r "$T/srv.pub.line" --timeout 10 "$a" >/dev/null 2>"$T/m.err"
	check_eq "--multi $kind: from=\"$host\" admitted" 0 $?
	printf 'from="10.9.9.9,2001:db8::1" %s\n' "$key" >"$T/auth"
	kill -HUP "$hpid"
	for _ in $(seq 1 100); do grep -q reloaded "$T/hub.err" && break; sleep 0.05; done
	printf 'refused line\n' | timeout "$TMO" "$SIO" connect --multi --lines -q -i "$T/cli" \
		-r "$T/srv.pub.line" --timeout 3 "$a" >/dev/null 2>"$T/m.err"
	check_eq "--multi $kind: wrong address refused (exit 3)" 3 $?
	check "--multi $kind: nothing printed from the wrong address" bash -c "! grep -q 'refused line' '$T/hub.out'"
	check "--multi $kind: the allowed line was printed" grep -q 'allowed line' "$T/hub.out"
	kill "$hpid" 2>/dev/null
	wait "$hpid" 2>/dev/null
	exec {H}>&-
done

# options sio cannot enforce: the file is refused, naming file, line, option
for opt in 'command="/bin/true"' 'environment="A=b"' 'permitopen="h:1"' 'cert-authority' \
	'expiry-time="20300101"' 'from="10.0.0.1/8"'; do
	printf '# allowed peers\n%s\n%s %s\n' "$key" "$opt" "$key" >"$T/auth"
	name=${opt%%=*}
	for mode in "" --multi; do
		timeout 30 "$SIO" listen $mode -i "$T/srv" -r "$T/auth" --timeout 1 "$(new_addr udp)" \
			</dev/null >/dev/null 2>"$T/err"
		check_eq "listen $mode $name: exit 1" 1 $?
		check "listen $mode $name: names file, line 3 and the option" \
			grep -qF "$T/auth: line 3: option '$name'" "$T/err"
	done
done
# restrictions of SSH features sio does not have are accepted
printf 'restrict,no-pty,no-port-forwarding,from="127.0.0.1" %s\n' "$key" >"$T/auth"
a=$(new_addr udp)
listen_bg "$a" -i "$T/srv" -r "$T/auth"
timeout -k 5 "$TMO" "$SIO" connect -i "$T/cli" -r "$T/srv.pub.line" "$a" <"$T/in" >/dev/null 2>&1
CRC=$?
end_bg
check_eq "restrict,no-pty,...: accepted" "0 0" "$CRC $LRC"

finish
