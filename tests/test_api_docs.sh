#!/usr/bin/env bash
# The library's documentation does not drift from its header: every public
# function (SIO_API in include/secureio.h) is named in docs/API.md, and the
# version is one number everywhere: CMakeLists.txt's project(VERSION), the
# header's SIO_VERSION_STRING, sio_version() (through `sio --version`).
source "$SIO_SOURCE_DIR/tests/sio_lib.sh"
src=$SIO_SOURCE_DIR

# "SIO_API int sio_x(" -> sio_x (every declaration starts its line)
grep -E '^SIO_API ' "$src/include/secureio.h" | grep -oE 'sio_[a-z0-9_]+\(' | tr -d '(' |
	sort -u >"$T/api.fns"
check "the header declares functions ($(wc -l <"$T/api.fns"))" test "$(wc -l <"$T/api.fns")" -ge 70
missing=
while read -r f; do
	grep -qE "(^|[^a-z0-9_])$f([^a-z0-9_]|$)" "$src/docs/API.md" || missing="$missing $f"
done <"$T/api.fns"
check "docs/API.md names every public function (missing:${missing:- none})" test -z "$missing"

want=$(sed -nE 's/^project\(secureio VERSION ([0-9.]+).*/\1/p' "$src/CMakeLists.txt")
hdr=$(sed -nE 's/^#define SIO_VERSION_STRING "(.*)"/\1/p' "$src/include/secureio.h")
check_eq "SIO_VERSION_STRING is the CMake project version" "$want" "$hdr"
check_eq "sio --version prints sio_version()" "sio (secureio) $want" "$("$SIO" --version)"
for part in MAJOR MINOR PATCH; do
	v=$(sed -nE "s/^#define SIO_VERSION_$part ([0-9]+)/\\1/p" "$src/include/secureio.h")
	case $part in
	MAJOR) w=${want%%.*} ;;
	MINOR) w=${want#*.} && w=${w%%.*} ;;
	PATCH) w=${want##*.} ;;
	esac
	check_eq "SIO_VERSION_$part" "$w" "$v"
done
finish
