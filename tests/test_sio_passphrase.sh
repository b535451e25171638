#!/usr/bin/env bash
# Passphrase-protected identities in `sio`: keygen writes them (passphrase
# from --passphrase-file, SIO_ASKPASS, or typed on a terminal without echo),
# ssh-keygen reads them; listen/connect open them (and ssh-keygen's) the
# same three ways; a wrong passphrase, or no way to ask, is one clear line
# and exit 1; -i takes a key file; a missing identity is never created.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
command -v ssh-keygen >/dev/null || { echo "SKIPPED: ssh-keygen not installed"; exit 77; }

printf 'correct horse\n' >"$T/pf"
printf 'wrong horse\n' >"$T/bad"
printf '#!/bin/sh\nprintf "%%s\\n" "$1" >>"%s/askpass.log"\necho "correct horse"\n' "$T" >"$T/askpass"
printf '#!/bin/sh\nexit 1\n' >"$T/cancel"
chmod +x "$T/askpass" "$T/cancel"
sshy() { ssh-keygen -y -P "$1" -f "$2" >/dev/null 2>&1; } # sshy PASSPHRASE KEYFILE

# ---- keygen ----
timeout 60 "$SIO" keygen -i "$T/a" --passphrase-file "$T/pf" </dev/null >"$T/a.line" 2>"$T/kg.err"
check_eq "keygen --passphrase-file" 0 $?
check "keygen says the key is protected" grep -q "passphrase-protected" "$T/kg.err"
check_eq "ssh-keygen -y -P reads it" "$(cut -d' ' -f1,2 "$T/a.line")" \
	"$(ssh-keygen -y -P 'correct horse' -f "$T/a/id_ed25519" 2>/dev/null | cut -d' ' -f1,2)"
check "ssh-keygen -y without the passphrase fails" \
	bash -c "! ssh-keygen -y -P '' -f '$T/a/id_ed25519' >/dev/null 2>&1"
check_eq "keygen on an existing encrypted key prints it without asking" "$(cat "$T/a.line")" \
	"$(timeout 30 "$SIO" keygen -i "$T/a" </dev/null 2>/dev/null)"
check_eq "pubkey -f of an encrypted key needs no passphrase" "$(cat "$T/a.line")" \
	"$(timeout 30 "$SIO" pubkey -f "$T/a/id_ed25519" 2>/dev/null </dev/null)"
check_eq "fingerprint of an encrypted key" "$(ssh-keygen -l -f "$T/a/id_ed25519.pub" | cut -d' ' -f2)" \
	"$(timeout 30 "$SIO" fingerprint "$T/a/id_ed25519" 2>/dev/null)"

SIO_ASKPASS="$T/askpass" timeout 60 "$SIO" keygen -i "$T/b" </dev/null >"$T/b.line" 2>/dev/null
check_eq "keygen with SIO_ASKPASS" 0 $?
check_eq "SIO_ASKPASS asked twice (new passphrase, confirmation)" 2 "$(wc -l <"$T/askpass.log")"
check "ssh-keygen reads the SIO_ASKPASS key" sshy 'correct horse' "$T/b/id_ed25519"

timeout 60 "$SIO" keygen -i "$T/plain" </dev/null >/dev/null 2>&1
check "keygen in a script (no terminal, no askpass): no passphrase, as before" \
	sshy '' "$T/plain/id_ed25519"
printf '\n' >"$T/empty"
timeout 60 "$SIO" keygen -i "$T/e" --passphrase-file "$T/empty" </dev/null >/dev/null 2>&1
check "an empty passphrase means none (as ssh-keygen -N '')" sshy '' "$T/e/id_ed25519"

# on a terminal: script(1) gives sio a pty; the passphrase is typed once the
# prompt is shown (echo is off by then) and must not appear in the output
if command -v script >/dev/null; then
	mkfifo "$T/tin"
	timeout 60 script -qfec "'$SIO' keygen -i '$T/t'" "$T/ts" <"$T/tin" >/dev/null 2>&1 &
	spid=$!
	exec {TIN}>"$T/tin"
	waitfor() { for _ in $(seq 1 600); do grep -q "$1" "$T/ts" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
	waitfor "Enter passphrase" && printf 'typed secret\n' >&"$TIN"
	waitfor "again" && printf 'typed secret\n' >&"$TIN"
	waitfor "ssh-ed25519"
	exec {TIN}>&-
	wait "$spid"
	check "keygen on a terminal: ssh-keygen reads the typed passphrase" \
		sshy 'typed secret' "$T/t/id_ed25519"
	check "the typed passphrase was not echoed" bash -c "! grep -q 'typed secret' '$T/ts'"
else
	echo "script(1) not installed: terminal prompt not tested"
fi

# ---- listen / connect with encrypted keys ----
ssh-keygen -q -t ed25519 -N 'correct horse' -Z chacha20-poly1305@openssh.com -f "$T/sshkey"
head -c 100000 /dev/urandom >"$T/data"
addr=$(new_addr udp)
run_pair "$addr" "-i $T/a --passphrase-file $T/pf -r $T/sshkey.pub" \
	"-i $T/sshkey --passphrase-file $T/pf -r $T/a/id_ed25519.pub" "$T/data"
check_eq "connect (-i ssh-keygen's encrypted key FILE) exit" 0 "$CRC"
check_eq "listen (encrypted key in a directory) exit" 0 "$LRC"
check_eq "data through" "$(sha "$T/data")" "$(sha "$T/l.out")"

addr=$(new_addr unix)
SIO_ASKPASS="$T/askpass" run_pair "$addr" "-i $T/b -r $T/sshkey.pub" \
	"-i $T/sshkey -r $T/b/id_ed25519.pub" "$T/data"
check_eq "SIO_ASKPASS opens the keys of both sides" "0 0" "$CRC $LRC"

timeout 30 "$SIO" connect -i "$T/a" --passphrase-file "$T/bad" --timeout 1 "$(new_addr udp)" \
	</dev/null >/dev/null 2>"$T/err"
check_eq "wrong passphrase: exit 1" 1 $?
check "wrong passphrase: said so, naming the file" grep -q "a/id_ed25519: wrong passphrase" "$T/err"
check_eq "one line" 1 "$(wc -l <"$T/err")"

SIO_ASKPASS="$T/cancel" timeout 30 "$SIO" connect -i "$T/a" --timeout 1 "$(new_addr udp)" \
	</dev/null >/dev/null 2>"$T/err"
check_eq "askpass cancelled: exit 1" 1 $?
check "askpass cancelled: said so" grep -q "gave no passphrase" "$T/err"

if command -v setsid >/dev/null; then
	setsid -w timeout 30 "$SIO" connect -i "$T/a" --timeout 1 "$(new_addr udp)" \
		</dev/null >/dev/null 2>"$T/err"
	check_eq "no terminal, no askpass: exit 1" 1 $?
	check "no terminal: says how to give the passphrase" grep -q "passphrase-file" "$T/err"
fi

# ---- sio pubkey keeps the key's comment ----
ssh-keygen -q -t ed25519 -N '' -C 'alice@laptop' -f "$T/cm"
check_eq "pubkey of an unencrypted key: its comment" "$(cat "$T/cm.pub")" \
	"$(timeout 30 "$SIO" pubkey -f "$T/cm")"
check_eq "pubkey of the .pub: its comment" "$(cat "$T/cm.pub")" "$(timeout 30 "$SIO" pubkey -f "$T/cm.pub")"
ssh-keygen -q -t ed25519 -N 'pw' -C 'bob at work' -f "$T/cme"
check_eq "pubkey of an encrypted key: the comment of its .pub" "$(cat "$T/cme.pub")" \
	"$(timeout 30 "$SIO" pubkey -f "$T/cme" </dev/null)"
{ cat "$T/cm.pub"; printf 'no-pty %s\n' "$(cat "$T/cme.pub")"; } >"$T/ak"
check_eq "pubkey of an authorized_keys file: every comment" "$(cat "$T/cm.pub" "$T/cme.pub")" \
	"$(timeout 30 "$SIO" pubkey -f "$T/ak")"
check_eq "keygen prints the comment too" "secureio" "$(timeout 30 "$SIO" keygen -i "$T/a" </dev/null | cut -d' ' -f3-)"

# ---- -i never creates ----
for cmd in listen connect; do
	timeout 30 "$SIO" $cmd -i "$T/typo" --timeout 1 "$(new_addr udp)" </dev/null >/dev/null 2>"$T/err"
	check_eq "$cmd -i MISSING: exit 1" 1 $?
	check "$cmd -i MISSING: names it and says how to create it" grep -q "typo.*sio keygen -i" "$T/err"
	check "$cmd -i MISSING: nothing created" test ! -e "$T/typo"
	mkdir -p "$T/emptydir"
	timeout 30 "$SIO" $cmd -i "$T/emptydir" --timeout 1 "$(new_addr udp)" </dev/null >/dev/null 2>"$T/err"
	check "$cmd -i EMPTY_DIR: names the missing file" grep -q "emptydir/id_ed25519" "$T/err"
	check "$cmd -i EMPTY_DIR: no key created" test ! -e "$T/emptydir/id_ed25519"
done

finish
