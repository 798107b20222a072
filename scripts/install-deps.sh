#!/usr/bin/env bash
# Installs the external tools the tests compare against (sgdisk, cgpt,
# veritysetup, sfdisk, lz4, xz, GNU time), when they are missing and we can:
# as root on a Debian-like system. Otherwise it says what is missing; the
# tests that need a missing tool skip locally and fail under CI.
set -euo pipefail
need=()
command -v sgdisk >/dev/null 2>&1 || need+=(gdisk)
command -v cgpt >/dev/null 2>&1 || need+=(cgpt)
command -v veritysetup >/dev/null 2>&1 || [ -x /usr/sbin/veritysetup ] || need+=(cryptsetup-bin)
command -v sfdisk >/dev/null 2>&1 || [ -x /usr/sbin/sfdisk ] || need+=(fdisk)
command -v lz4 >/dev/null 2>&1 || need+=(lz4)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
[ -x /usr/bin/time ] || need+=(time)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "install-deps: missing packages ${need[*]} (not root or no apt-get); tests needing them will skip" >&2
fi
