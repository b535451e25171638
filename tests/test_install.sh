#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds and runs a tiny
# consumer against the installed files twice: through pkg-config and through
# CMake's find_package(secureio). The consumer makes an identity and prints
# its fingerprint.
set -euo pipefail
: "${SIO_BINARY_DIR:?}" "${SIO_SOURCE_DIR:?}"
tmp=$(mktemp -d /tmp/sio-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$SIO_BINARY_DIR" --prefix "$tmp/prefix" >/dev/null

libdir=$(sed -n 's/^CMAKE_INSTALL_LIBDIR:PATH=//p' "$SIO_BINARY_DIR/CMakeCache.txt")
libdir=${libdir:-lib}
for f in include/secureio.h "$libdir/libsecureio.a" "$libdir/pkgconfig/secureio.pc" \
         "$libdir/cmake/secureio/secureioConfig.cmake"; do
  [ -e "$tmp/prefix/$f" ] || { echo "FAIL: not installed: $f"; exit 1; }
done
ls "$tmp/prefix/$libdir"/libsecureio.so* >/dev/null || { echo "FAIL: no shared library"; exit 1; }

mkdir -p "$tmp/consumer"
cat > "$tmp/consumer/main.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <secureio.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
	sio_identity *id = NULL;
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	char fp[SIO_FINGERPRINT_MAX];
	if (sio_init() || sio_identity_generate(&id))
		return 1;
	sio_identity_public_key(id, pk);
	if (sio_fingerprint(pk, fp, sizeof fp))
		return 1;
	sio_identity_free(id);
	printf("%s\n", fp);
	/* Which file the library code came from (the test checks it is the
	 * installed shared library); asked of the loader, not of ldd, which
	 * cannot trace sanitizer binaries on every kernel. */
	Dl_info info;
	if (dladdr((void *)sio_fingerprint, &info) && info.dli_fname)
		fprintf(stderr, "library: %s\n", info.dli_fname);
	return strncmp(fp, "SHA256:", 7) != 0 || strlen(fp) != 50;
}
C
export LD_LIBRARY_PATH="$tmp/prefix/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cc=${CC:-cc}
# Sanitizer builds: the consumer must link the same runtime as the library.
san=$(sed -n 's/^SIO_SANITIZE:STRING=//p' "$SIO_BINARY_DIR/CMakeCache.txt")
sanflags=()
case "$san" in
  address) sanflags=(-fsanitize=address,undefined) ;;
  thread) sanflags=(-fsanitize=thread) ;;
esac
ccpath=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$SIO_BINARY_DIR/CMakeCache.txt")
[ -n "$ccpath" ] && cc=$ccpath

echo "== pkg-config consumer"
export PKG_CONFIG_PATH="$tmp/prefix/$libdir/pkgconfig"
flags=$(pkg-config --cflags --libs secureio)
echo "pkg-config: $flags"
$cc "${sanflags[@]}" -o "$tmp/consumer/pc" "$tmp/consumer/main.c" $flags
out1=$("$tmp/consumer/pc" 2>"$tmp/consumer/pc.lib")
echo "fingerprint: $out1"
cat "$tmp/consumer/pc.lib"
grep -q "^library: $tmp/prefix/$libdir/libsecureio.so" "$tmp/consumer/pc.lib" \
  || { echo "FAIL: consumer does not use the installed library"; exit 1; }
echo "== static via pkg-config --static"
$cc "${sanflags[@]}" -o "$tmp/consumer/pcs" "$tmp/consumer/main.c" \
  $(pkg-config --cflags secureio) "$tmp/prefix/$libdir/libsecureio.a" \
  $(pkg-config --static --libs-only-l secureio | sed 's/-lsecureio//')
"$tmp/consumer/pcs" >/dev/null 2>&1

echo "== CMake find_package consumer"
cat > "$tmp/consumer/CMakeLists.txt" <<CM
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(secureio 0.1 REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE secureio::secureio)
add_executable(consumer_static main.c)
target_link_libraries(consumer_static PRIVATE secureio::secureio_static)
CM
CC=$cc cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_C_FLAGS="${sanflags[*]}" >/dev/null
cmake --build "$tmp/consumer/build" >/dev/null
out2=$("$tmp/consumer/build/consumer" 2>/dev/null)
echo "fingerprint: $out2"
"$tmp/consumer/build/consumer_static" >/dev/null 2>&1
[ "$out1" != "$out2" ] || { echo "FAIL: two generated identities share a fingerprint"; exit 1; }
echo "test_install: passed"
