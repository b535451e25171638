#!/usr/bin/env bash
# `sio keygen`, `sio pubkey`, `sio fingerprint` against ssh-keygen (-y, -l),
# and bad key files (exit 1, one line on stderr naming the file).
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"

# ---- keygen / pubkey / fingerprint ----
timeout 30 "$SIO" keygen -i "$T/id" >"$T/kg.out" 2>"$T/kg.err"
check_eq "keygen exit code" 0 $?
check "keygen made the private key" test -f "$T/id/id_ed25519"
check "keygen made the public key" test -f "$T/id/id_ed25519.pub"
check_eq "private key mode" 600 "$(stat -c %a "$T/id/id_ed25519")"
check_eq "directory mode" 700 "$(stat -c %a "$T/id")"
line=$(cat "$T/kg.out")
check "keygen prints one ssh-ed25519 line" grep -qx 'ssh-ed25519 [A-Za-z0-9+/=]* *.*' "$T/kg.out"
check_eq "keygen line is what ssh-keygen -y derives" \
	"$(ssh-keygen -y -f "$T/id/id_ed25519" | cut -d' ' -f1,2)" "$(cut -d' ' -f1,2 <<<"$line")"
check_eq "keygen line matches the .pub file" "$(cut -d' ' -f1,2 "$T/id/id_ed25519.pub")" \
	"$(cut -d' ' -f1,2 <<<"$line")"
before=$(sha "$T/id/id_ed25519")
check_eq "keygen again: same key" "$line" "$(timeout 30 "$SIO" keygen -i "$T/id" 2>/dev/null)"
check_eq "keygen never overwrites" "$before" "$(sha "$T/id/id_ed25519")"
check_eq "pubkey -i DIR" "$line" "$(timeout 30 "$SIO" pubkey -i "$T/id")"
check_eq "pubkey -f private key" "$line" "$(timeout 30 "$SIO" pubkey -f "$T/id/id_ed25519")"
check_eq "pubkey -f public key" "$line" "$(timeout 30 "$SIO" pubkey -f "$T/id/id_ed25519.pub")"
check_eq "pubkey defaults to ~/.ssh" "$line" "$(HOME="$T/home" && mkdir -p "$HOME" &&
	cp -r "$T/id" "$HOME/.ssh" && timeout 30 "$SIO" pubkey)"
fp=$(ssh-keygen -l -f "$T/id/id_ed25519.pub" | cut -d' ' -f2)
check_eq "fingerprint of .pub = ssh-keygen -l" "$fp" "$(timeout 30 "$SIO" fingerprint "$T/id/id_ed25519.pub")"
check_eq "fingerprint of private key = ssh-keygen -l" "$fp" "$(timeout 30 "$SIO" fingerprint "$T/id/id_ed25519")"

# keys made by ssh-keygen itself
mkdir -m 700 "$T/ssh"
ssh-keygen -q -t ed25519 -N '' -C 'made by ssh-keygen' -f "$T/ssh/id_ed25519"
check_eq "pubkey of an ssh-keygen key" "$(cut -d' ' -f1,2 "$T/ssh/id_ed25519.pub")" \
	"$(timeout 30 "$SIO" pubkey -i "$T/ssh" | cut -d' ' -f1,2)"
check_eq "fingerprint of an ssh-keygen key" "$(ssh-keygen -l -f "$T/ssh/id_ed25519" | cut -d' ' -f2)" \
	"$(timeout 30 "$SIO" fingerprint "$T/ssh/id_ed25519")"
check_eq "keygen keeps an ssh-keygen key" "$(cut -d' ' -f1,2 "$T/ssh/id_ed25519.pub")" \
	"$(timeout 30 "$SIO" keygen -i "$T/ssh" 2>/dev/null | cut -d' ' -f1,2)"
# authorized_keys-style file with two keys and a comment
{ echo "# two keys"; cat "$T/ssh/id_ed25519.pub"; echo; cat "$T/id/id_ed25519.pub"; } >"$T/two.pub"
check_eq "fingerprint of every key in a list" \
	"$(ssh-keygen -l -f "$T/ssh/id_ed25519.pub" | cut -d' ' -f2) $fp" \
	"$(timeout 30 "$SIO" fingerprint "$T/two.pub" | tr '\n' ' ' | sed 's/ $//')"

# ---- bad key files: exit 1, one line ----
expect_err() { # expect_err DESCRIPTION PATTERN ARGS...
	local d=$1 pat=$2
	shift 2
	timeout -k 5 30 "$SIO" "$@" </dev/null >"$T/out" 2>"$T/err"
	local rc=$?
	check_eq "$d: exit code" 1 "$rc"
	check_eq "$d: one line on stderr" 1 "$(wc -l <"$T/err")"
	check "$d: message ($(head -c 200 "$T/err"))" grep -qiE -- "$pat" "$T/err"
}
echo "not a key" >"$T/garbage"
expect_err "fingerprint of garbage" "garbage: .*(malformed|ed25519)" fingerprint "$T/garbage"
expect_err "pubkey of garbage" "garbage: .*(malformed|ed25519)" pubkey -f "$T/garbage"
ssh-keygen -q -t rsa -b 1024 -N '' -f "$T/rsa" 2>/dev/null || ssh-keygen -q -t ecdsa -N '' -f "$T/rsa"
expect_err "pubkey of a non-Ed25519 private key" "rsa: .*not an ed25519" pubkey -f "$T/rsa"
expect_err "fingerprint of a non-Ed25519 public key" "rsa.pub: .*(ed25519|malformed)" fingerprint "$T/rsa.pub"
mkdir -m 700 "$T/open"
cp "$T/id/id_ed25519" "$T/id/id_ed25519.pub" "$T/open/"
chmod 644 "$T/open/id_ed25519"
expect_err "private key readable by others" "open/id_ed25519: .*group or others" pubkey -i "$T/open"
expect_err "pubkey of a directory without identity" "keygen" pubkey -i "$T/empty"
mkdir -m 700 "$T/trunc"
head -c 200 "$T/id/id_ed25519" >"$T/trunc/id_ed25519"
chmod 600 "$T/trunc/id_ed25519"
expect_err "truncated private key" "trunc/id_ed25519: .*(malformed|truncated)" pubkey -i "$T/trunc"
expect_err "listen with a bad identity" "trunc.*(malformed|truncated)" listen -i "$T/trunc" udp:127.0.0.1:9
expect_err "connect with a bad -r file" "garbage: .*(malformed|ed25519)" connect -i "$T/id" -r "$T/garbage" udp:127.0.0.1:9
# FIFOs and directories where files belong: refused at once (a FIFO with no
# writer used to block the open forever)
mkfifo "$T/fifo"
mkdir -m 700 "$T/fifoid"
mkfifo "$T/fifoid/id_ed25519"
expect_err "-r FIFO" "fifo: .*not a regular file" connect -i "$T/id" -r "$T/fifo" --timeout 1 udp:127.0.0.1:9
expect_err "-r directory" "open: .*not a regular file" connect -i "$T/id" -r "$T/open" --timeout 1 udp:127.0.0.1:9
expect_err "--psk-file FIFO" "fifo: not a regular file" connect -i "$T/id" --psk-file "$T/fifo" --timeout 1 udp:127.0.0.1:9
expect_err "--psk-file directory" "open: is a directory" connect -i "$T/id" --psk-file "$T/open" --timeout 1 udp:127.0.0.1:9
expect_err "listen --multi --psk-file FIFO" "fifo: not a regular file" listen --multi -i "$T/id" --psk-file "$T/fifo" udp:127.0.0.1:9
expect_err "identity key is a FIFO" "id_ed25519: .*not a regular file" keygen -i "$T/fifoid"
# a directory that cannot be created says so (it said "file not found")
expect_err "keygen -i /proc/nope" "/proc/nope: cannot create the identity directory" keygen -i /proc/nope
: >"$T/plainfile"
chmod 600 "$T/plainfile"
# -i FILE names a key file (as ssh -i does): an existing one is never
# overwritten, so an empty file is reported as the bad key it is
expect_err "keygen -i FILE" "plainfile: malformed or truncated key file" keygen -i "$T/plainfile"

# ---- a PSK file gets the private-key permission check ----
head -c 32 /dev/urandom >"$T/g.psk"
for m in 640 604 644 660; do
	chmod "$m" "$T/g.psk"
	expect_err "--psk-file mode $m" "g.psk: permissions 0$m are too open.*chmod 600 .*g.psk" \
		connect -i "$T/id" --psk-file "$T/g.psk" --timeout 1 udp:127.0.0.1:9
done
chmod 640 "$T/g.psk"
expect_err "listen --psk-file group-readable" "g.psk: .*too open.*chmod 600" \
	listen -i "$T/id" --psk-file "$T/g.psk" udp:127.0.0.1:9
expect_err "listen --multi --psk-file group-readable" "g.psk: .*too open.*chmod 600" \
	listen --multi -i "$T/id" --psk-file "$T/g.psk" udp:127.0.0.1:9
chmod 600 "$T/g.psk"
a=$(new_addr udp)
printf 'psk ok\n' >"$T/pskmsg"
run_pair "$a" "-q -i $T/id --psk-file $T/g.psk --timeout 10" "-q -i $T/ssh --psk-file $T/g.psk --timeout 10" "$T/pskmsg"
check_eq "a 0600 PSK file works (connect, listen)" "0 0" "$CRC $LRC"

# ---- an identity directory others can write to, or another user's ----
cp -r "$T/id" "$T/wdir"
for m in 777 775 757 1777; do
	chmod "$m" "$T/wdir"
	expect_err "identity dir mode $m (keygen)" "wdir: permissions 0?$m are too open.*chmod go-w .*wdir" \
		keygen -i "$T/wdir"
	expect_err "identity dir mode $m (connect)" "wdir: permissions 0?$m are too open.*chmod go-w" \
		connect -i "$T/wdir" --timeout 1 udp:127.0.0.1:9
done
expect_err "identity dir world-writable (listen --multi)" "wdir: .*too open.*chmod go-w" \
	listen --multi -i "$T/wdir" udp:127.0.0.1:9
rm -f "$T/wdir/id_ed25519" "$T/wdir/id_ed25519.pub"
expect_err "no key made in a world-writable dir" "wdir: .*too open" keygen -i "$T/wdir"
check "nothing written into it" test ! -e "$T/wdir/id_ed25519"
chmod 755 "$T/wdir"
check_eq "a 0755 identity dir is fine" 0 "$(timeout 30 "$SIO" keygen -i "$T/wdir" >/dev/null 2>&1; echo $?)"
# owned by another uid: as root (CI) chown gives it away; for root any uid
# but 0 is another user, whose owner could swap the key root then uses
if chown 12345:12345 "$T/wdir" 2>/dev/null; then
	chmod 700 "$T/wdir"
	expect_err "identity dir of uid 12345 (listen)" "wdir belongs to uid 12345, neither to this user" \
		listen -i "$T/wdir" udp:127.0.0.1:9
	expect_err "identity dir of uid 12345 (keygen)" "wdir belongs to uid 12345" keygen -i "$T/wdir"
	chown 0:0 "$T/wdir"
else
	echo "not root: the other-owner case is skipped" >&2
fi

finish
