#!/usr/bin/env bash
# Checks for the Debian packages the build and tests need; installs the
# missing ones through apt-get when run as root, otherwise names them and
# stops. Usage: scripts/deps.sh [fuzz]
set -euo pipefail
need=(cmake make gcc pkg-config libsodium-dev libssl-dev openssh-client)
[ "${1:-}" = fuzz ] && need+=(clang libclang-rt-14-dev)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "deps: missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
