#!/bin/sh
# Installs the peers sio-bench compares the library and the `sio` command
# with (Debian packages socat, spiped, openssl, and libzmq3-dev for the
# CurveZMQ rows, which load libzmq.so.5 at run time) when run as root;
# otherwise says what is missing and exits 0 (the bench then skips those rows
# with a message).
missing=""
command -v socat >/dev/null 2>&1 || missing="$missing socat"
command -v spiped >/dev/null 2>&1 || missing="$missing spiped"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
{ ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libzmq\.so\.5 ' ||
	missing="$missing libzmq3-dev"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "bench/tools.sh: installing$missing" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1 ||
		{ apt-get update -q >/dev/null 2>&1 &&
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; } ||
		echo "bench/tools.sh: could not install$missing: those rows are skipped" >&2
else
	echo "bench/tools.sh: not installed:$missing (run as root or apt-get install$missing): those rows are skipped" >&2
fi
exit 0
