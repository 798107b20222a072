#!/usr/bin/env bash
# The A/B boot-state life cycle on a generated Bottlerocket disk image:
# status, upgrade, simulated boot, fallback, upgrade again, mark good.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=bin
dir=demo
disk=$dir/disk.img
rm -rf "$dir" && mkdir -p "$dir"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sp() { echo "\$ signpost $*"; "$bin/signpost" --disk "$disk" "$@"; }
active=a
boot() {
  echo "\$ signpost next    # the bootloader picks a set and uses up a try"
  active=$("$bin/signpost" --disk "$disk" next)
  echo "booted set $active"
}

say "Build a 2 GiB Bottlerocket OS disk image (sparse)"
"$bin/imgbuild" disk --size 2GiB --disk-guid 11111111-2222-4333-8444-555555555555 "$disk"

say "A fresh image boots set A"
sp status
boot
sp --active "$active" mark-successful-boot

say "Stage an update in set B: clear it, (write images), mark it valid, upgrade"
sp --active "$active" clear-inactive
sp --active "$active" mark-inactive-valid
sp --active "$active" upgrade-to-inactive
sp --active "$active" status

say "Reboot: the bootloader tries B once"
boot
sp --active "$active" status

say "B never marks itself good (say it failed to come up): the next boot falls back to A"
boot
sp --active "$active" status

say "Stage the update again, boot it, and this time mark it good"
sp --active "$active" clear-inactive
sp --active "$active" mark-inactive-valid
sp --active "$active" upgrade-to-inactive
boot
sp --active "$active" mark-successful-boot
boot
sp --active "$active" --json status

say "Roll back to A (it is still marked good), then cancel that"
sp --active "$active" --dry-run rollback-to-inactive
sp --active "$active" rollback-to-inactive
sp --active "$active" cancel-upgrade
sp --active "$active" status

say "dm-verity: the hash tree that proves a root image is the one that was signed"
head -c $((64 << 20)) /dev/urandom >"$dir/root.img"
root=$("$bin/imgbuild" verity format --salt 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f "$dir/root.img" "$dir/hash.img")
echo "root hash $root"
"$bin/imgbuild" verity verify "$dir/root.img" "$dir/hash.img" "$root"
printf '\xff' | dd of="$dir/root.img" bs=1 seek=$((4096 * 1000 + 17)) conv=notrunc status=none
echo "(flipped one byte in data block 1000)"
"$bin/imgbuild" verity verify "$dir/root.img" "$dir/hash.img" "$root" || echo "verify exited $? as it should"

if command -v sgdisk >/dev/null 2>&1; then
  say "sgdisk's opinion of the table we wrote"
  sgdisk -v "$disk"
fi
say "Done: $disk"
