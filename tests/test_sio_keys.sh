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
expect_err "keygen -i FILE" "plainfile: not a directory" keygen -i "$T/plainfile"

finish
