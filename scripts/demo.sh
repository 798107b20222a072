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
cp "$dir/root.img" "$dir/root-tampered.img"
printf '\x5a' | cmp -s - <(dd if="$dir/root.img" bs=1 skip=$((4096 * 1000 + 17)) count=1 status=none) && byte='\xa5' || byte='\x5a'
printf "$byte" | dd of="$dir/root-tampered.img" bs=1 seek=$((4096 * 1000 + 17)) conv=notrunc status=none
echo "(a copy with one byte changed in data block 1000)"
"$bin/imgbuild" verity verify "$dir/root-tampered.img" "$dir/hash.img" "$root" || echo "verify exited $? as it should"

say "A release manifest with a staged rollout (default-waves policy)"
cat >"$dir/default-waves.toml" <<'TOML'
[[waves]]
start_after = '1 hour'
fleet_percentage = 1
[[waves]]
start_after = '4 hours'
fleet_percentage = 5
[[waves]]
start_after = '1 day'
fleet_percentage = 15
[[waves]]
start_after = '2 days'
fleet_percentage = 40
[[waves]]
start_after = '4 days'
fleet_percentage = 60
[[waves]]
start_after = '5 days'
fleet_percentage = 90
[[waves]]
start_after = '6 days'
fleet_percentage = 100
TOML
m="$dir/manifest.json"
"$bin/updata" init "$m"
"$bin/updata" add-update "$m" --variant demo --arch x86_64 --version 1.1.0 \
  --boot demo-boot-1.1.0.img.lz4 --root demo-root-1.1.0.img.lz4 --hash demo-hash-1.1.0.img.lz4 --verity-root-hash "$root" --verity-salt 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
"$bin/updata" set-waves "$m" --variant demo --arch x86_64 --version 1.1.0 --wave-policy "$dir/default-waves.toml" --start-at 2026-12-01T00:00:00Z
"$bin/updata" pause "$m" --variant demo --arch x86_64 --version 1.1.0 --at 2026-12-02T06:00:00Z
"$bin/updata" validate "$m"

say "Publish the release as a signed TUF repository (tough's layout), then fetch it as a client would"
t="$bin/tuftool"
keys="$dir/keys"; mkdir -p "$keys"
for role in root targets snapshot timestamp; do "$t" gen-key --type ed25519 --out "$keys/$role.pem" >/dev/null; done
"$t" root init "$dir/root.json" --expires "in 52 weeks"
for role in root targets snapshot timestamp; do "$t" root add-key "$dir/root.json" -k "$keys/$role.pem" --role $role; done
"$t" root sign "$dir/root.json" -k "$keys/root.pem"
mkdir -p "$dir/release"
cp "$m" "$dir/release/manifest.json"
cp "$dir/root.img" "$dir/release/demo-root-1.1.0.img"
cp "$dir/hash.img" "$dir/release/demo-hash-1.1.0.img"
"$t" create --root "$dir/root.json" -k "$keys/root.pem" -k "$keys/targets.pem" -k "$keys/snapshot.pem" -k "$keys/timestamp.pem" \
  --add-targets "$dir/release" --outdir "$dir/repo"
ls "$dir/repo/metadata"
"$t" download --root "$dir/root.json" --metadata-url "$dir/repo/metadata" --targets-url "$dir/repo/targets" "$dir/fetched"
"$bin/imgbuild" verity verify "$dir/fetched/demo-root-1.1.0.img" "$dir/fetched/demo-hash-1.1.0.img" "$root"
"$t" update --root "$dir/root.json" -k "$keys/timestamp.pem" --metadata-url "$dir/repo/metadata" --timestamp-only --outdir "$dir/repo2"
"$t" check-expiry --metadata-url "$dir/repo2/metadata" --within "3 days" || true

if command -v sgdisk >/dev/null 2>&1; then
  say "sgdisk's opinion of the table we wrote"
  sgdisk -v "$disk"
fi
say "Done: $disk"
