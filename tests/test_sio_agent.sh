#!/usr/bin/env bash
# `sio` with an ssh-agent started by this test: an encrypted (or absent)
# private key whose key the agent holds is used through the agent without
# asking; --agent insists, --no-agent refuses; -v says which; an agent
# without the key falls back to the passphrase; an agent that refuses
# (ssh-add -c, no askpass) fails the session with one clear line.
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
for p in ssh-agent ssh-add ssh-keygen setsid; do
	command -v $p >/dev/null || { echo "SKIPPED: $p not installed"; exit 77; }
done

export SSH_AUTH_SOCK="$T/agent.sock"
env -u DISPLAY -u SSH_ASKPASS -u WAYLAND_DISPLAY ssh-agent -D -a "$SSH_AUTH_SOCK" >/dev/null 2>&1 &
AGENT=$!
BG_PIDS+=("$AGENT")
for _ in $(seq 1 200); do [ -S "$SSH_AUTH_SOCK" ] && break; sleep 0.05; done

# alice: key in the agent, file encrypted; bob: an ordinary sio identity
ssh-keygen -q -t ed25519 -N '' -C alice -f "$T/alice"
ssh-add -q "$T/alice" </dev/null 2>/dev/null
ssh-keygen -q -p -P '' -N 'not typed' -f "$T/alice" >/dev/null 2>&1
mkid bob
head -c 200000 /dev/urandom >"$T/data"

# no terminal, no passphrase file, no askpass: only the agent can sign
nott() { setsid -w "$@"; }
addr=$(new_addr udp)
listen_bg "$addr" -i "$T/bob" -r "$T/alice.pub"
nott timeout -k 5 "$TMO" "$SIO" connect -v -i "$T/alice" -r "$T/bob/id_ed25519.pub" --rekey 0.5 "$addr" \
	<"$T/data" >/dev/null 2>"$T/c.err"
CRC=$?
end_bg
check_eq "encrypted key, agent holds it: connect exit" 0 "$CRC"
check_eq "listener exit" 0 "$LRC"
check_eq "data through" "$(sha "$T/data")" "$(sha "$T/l.out")"
check "-v says the agent signs" grep -q "signing with the ssh-agent" "$T/c.err"

# only alice.pub: the agent is the only holder of the key
mkdir "$T/pubonly" && cp "$T/alice.pub" "$T/pubonly/id_ed25519.pub"
addr=$(new_addr unix)
listen_bg "$addr" -i "$T/bob" -r "$T/alice.pub"
nott timeout -k 5 "$TMO" "$SIO" connect -i "$T/pubonly" -r "$T/bob/id_ed25519.pub" "$addr" \
	<"$T/data" >/dev/null 2>"$T/c.err"
CRC=$?
end_bg
check_eq "private key absent, agent holds it" "0 0" "$CRC $LRC"

# --no-agent: the passphrase is needed and nobody can type it
nott timeout 30 "$SIO" connect --no-agent -i "$T/alice" --timeout 1 "$(new_addr udp)" \
	</dev/null >/dev/null 2>"$T/err"
check_eq "--no-agent: exit 1" 1 $?
check "--no-agent: asks for the passphrase (no terminal)" grep -q "no terminal to ask on" "$T/err"
printf 'not typed\n' >"$T/pf"
nott timeout 30 "$SIO" connect -v --no-agent -i "$T/alice" --passphrase-file "$T/pf" --timeout 0.5 \
	"$(new_addr udp)" </dev/null >/dev/null 2>"$T/err"
check "--no-agent with the passphrase: the key file signs" grep -q "signing with the key file (passphrase-protected)" "$T/err"
nott timeout 30 "$SIO" connect --no-agent -i "$T/pubonly" --timeout 1 "$(new_addr udp)" \
	</dev/null >/dev/null 2>"$T/err"
check "--no-agent, no private key: says so" grep -q "private key file is absent and --no-agent" "$T/err"

# an agent without the key: --agent fails; by default the passphrase is used
ssh-keygen -q -t ed25519 -N 'carol pw' -f "$T/carol"
printf 'carol pw\n' >"$T/cpf"
nott timeout 30 "$SIO" connect --agent -i "$T/carol" --timeout 1 "$(new_addr udp)" \
	</dev/null >/dev/null 2>"$T/err"
check_eq "--agent, key not in the agent: exit 1" 1 $?
check "--agent: says the agent lacks the key" grep -q "does not hold this key" "$T/err"
nott timeout 30 "$SIO" connect -v -i "$T/carol" --passphrase-file "$T/cpf" --timeout 0.5 \
	"$(new_addr udp)" </dev/null >/dev/null 2>"$T/err"
check "agent without the key: falls back to the passphrase" grep -q "signing with the key file" "$T/err"
SSH_AUTH_SOCK= nott timeout 30 "$SIO" connect --agent -i "$T/alice" --timeout 1 "$(new_addr udp)" \
	</dev/null >/dev/null 2>"$T/err"
check "--agent without SSH_AUTH_SOCK: says so" grep -q "SSH_AUTH_SOCK is not set" "$T/err"

# ssh-add -c: every signature needs a confirmation nobody can give
ssh-keygen -q -t ed25519 -N '' -f "$T/dave"
ssh-add -q -c "$T/dave" </dev/null 2>/dev/null
addr=$(new_addr udp)
listen_bg "$addr" -i "$T/bob" --timeout 3
nott timeout -k 5 "$TMO" "$SIO" connect --agent -i "$T/dave" --timeout 3 "$addr" \
	</dev/null >/dev/null 2>"$T/c.err"
CRC=$?
kill "$LPID" 2>/dev/null
end_bg
check_eq "ssh-add -c refused: connect exit 1" 1 "$CRC"
check "ssh-add -c refused: the signer refused, said once" grep -q "signer (ssh-agent or callback) failed or refused" "$T/c.err"

# the agent dies during a session with renewals every 0.3 s: sio ends with
# the signer error, not a hang
addr=$(new_addr udp)
mkfifo "$T/slow"
listen_bg "$addr" -i "$T/bob"
nott timeout -k 5 "$TMO" "$SIO" connect -i "$T/alice" --rekey 0.3 "$addr" <"$T/slow" >/dev/null 2>"$T/c.err" &
CPID=$!
exec {SLOW}>"$T/slow"
printf 'hello\n' >&"$SLOW"
for _ in $(seq 1 200); do grep -q hello "$T/l.out" 2>/dev/null && break; sleep 0.05; done
kill -KILL "$AGENT"
wait "$CPID"
CRC=$?
exec {SLOW}>&-
kill "$LPID" 2>/dev/null
end_bg
check "agent killed: connect fails (exit $CRC)" test "$CRC" -ne 0
check "agent killed: says the signer failed" grep -q "signer" "$T/c.err"

finish
