# Helpers for the end-to-end tests of the `sio` command (tests/test_sio_*.sh).
# Sourced, not run. Every sio process runs under `timeout`, in a private
# temporary directory, on loopback only, with fresh ports and socket paths.
set -u
: "${SIO:?SIO must name the sio binary (CTest sets it)}"
[ -x "$SIO" ] || { echo "SIO=$SIO is not executable" >&2; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/sio-test.XXXXXX")
PASSED=0
FAILED=0
BG_PIDS=()
TMO=${SIO_TEST_TIMEOUT:-120} # hard cap per sio process (never reached when things work)

cleanup() {
	local p
	for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	sleep 0.2
	for p in "${BG_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT

ok() { PASSED=$((PASSED + 1)); }
bad() {
	FAILED=$((FAILED + 1))
	echo "FAIL: $*" >&2
}
check() { # check DESCRIPTION COMMAND...
	local d=$1
	shift
	if "$@"; then ok; else bad "$d"; fi
}
check_eq() { # check_eq DESCRIPTION EXPECTED ACTUAL
	if [ "$2" = "$3" ]; then ok; else bad "$1: expected '$2', got '$3'"; fi
}
finish() {
	echo "$(basename "$0" .sh): $PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
	exit $?
}

# Is something bound to local PORT? (PROTO udp or tcp; IPv4 or IPv6)
port_bound() {
	local hex
	hex=$(printf ':%04X ' "$2")
	cat "/proc/net/$1" "/proc/net/${1}6" 2>/dev/null | awk '{print $2" "}' | grep -q -- "$hex"
}

# A free-looking random port (the caller retries if it was taken meanwhile).
pick_port() {
	local p
	while :; do
		p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		port_bound udp "$p" || port_bound tcp "$p" || break
	done
	echo "$p"
}

SEQ=0
# new_addr KIND -> a fresh ADDRESS of that kind (udp, udp6, tcp, tcp6, unix, unixgram)
new_addr() {
	SEQ=$((SEQ + 1))
	case $1 in
	udp) echo "udp:127.0.0.1:$(pick_port)" ;;
	udp6) echo "udp:[::1]:$(pick_port)" ;;
	tcp) echo "tcp:127.0.0.1:$(pick_port)" ;;
	tcp6) echo "tcp:[::1]:$(pick_port)" ;;
	unix) echo "unix:$T/s$SEQ.sock" ;;
	unixgram) echo "unixgram:$T/g$SEQ.sock" ;;
	esac
}

# wait_ready ADDRESS PID: until the listener bound ADDRESS (or died).
wait_ready() {
	local a=$1 pid=$2 i p=${1##*:}
	case $p in # a service name: its port number
	*[!0-9]*) p=$(getent services "$p/${a%%:*}" | awk '{split($2, x, "/"); print x[1]}') ;;
	esac
	for i in $(seq 1 200); do
		kill -0 "$pid" 2>/dev/null || return 1
		case $a in
		udp:*) port_bound udp "$p" && return 0 ;;
		tcp:*) port_bound tcp "$p" && return 0 ;;
		unix:* | unixgram:*) [ -S "${a#*:}" ] && return 0 ;;
		esac
		sleep 0.05
	done
	return 1
}

have_ipv6() { [ -f /proc/net/if_inet6 ] && grep -q '00000000000000000000000000000001 ' /proc/net/if_inet6; }

# Identities for the tests.
mkid() { "$SIO" keygen -i "$T/$1" >"$T/$1.pub.line" 2>/dev/null; }

# run_pair ADDRESS "LISTEN OPTS" "CONNECT OPTS" INPUT [CONNECT_ADDRESS]
# Runs `sio listen` (stdin /dev/null, as in scripts and services) and `sio
# connect` (stdin from INPUT) against each other. Results: LRC/CRC exit
# codes, $T/l.out $T/l.err (listener stdout/stderr), $T/c.out $T/c.err.
run_pair() {
	local addr=$1 lopts=$2 copts=$3 input=$4 caddr=${5:-$1}
	# shellcheck disable=SC2086
	listen_bg "$addr" $lopts
	# shellcheck disable=SC2086
	timeout -k 5 "$TMO" "$SIO" connect $copts "$caddr" <"$input" >"$T/c.out" 2>"$T/c.err"
	CRC=$?
	end_bg
}

# listen_bg ADDRESS OPTS...: starts `sio listen OPTS ADDRESS` with stdin from
# $LISTEN_IN (default /dev/null: its direction ends at once, and it keeps
# receiving until the peer's stream ends) and waits until it is ready;
# output in $T/l.out $T/l.err, its pid in LPID. end_bg waits for it and sets
# LRC to its exit code.
listen_bg() {
	local addr=$1
	shift
	timeout -k 5 "$TMO" "$SIO" listen "$@" "$addr" <"${LISTEN_IN:-/dev/null}" >"$T/l.out" 2>"$T/l.err" &
	LPID=$!
	BG_PIDS+=("$LPID")
	wait_ready "$addr" "$LPID"
}
end_bg() {
	wait "$LPID"
	LRC=$?
}

sha() { sha256sum <"$1" | cut -d' ' -f1; }

# Measured times for the closing notes of issues (never asserted: a test
# only checks the outcome, within its own timeout). t0=$(now_s) ... then
# report_time CASE SIDE "$t0" RC ERRFILE prints one table row on stdout.
now_s() { date +%s.%N; }
report_time() {
	local secs
	secs=$(awk -v a="$3" -v b="$(now_s)" 'BEGIN { printf "%.2f", b - a }')
	echo "TIME | $1 | $2 | $secs s | exit $4 | $(head -n 1 "$5" 2>/dev/null)"
}
