#!/usr/bin/env bash
# make demo: the whole story on one machine, from a root file system to a
# host that updated, booted the new release, marked it good and rolled back.
#
#   1. build release 1.0.0 as a bootable disk image and 1.1.0 as update
#      artifacts (imgbuild build), from a small generated root file system;
#   2. make signing keys, a TUF root and a signed repository (tuftool);
#   3. add both releases to the manifest with a wave policy (updata);
#   4. serve the repository on 127.0.0.1;
#   5. updog check-update, updog update into the disk image's set B,
#      signpost next (the reboot), updog mark-good, updog status, updog
#      rollback, updog status.
#
# Every command a user would type is printed ("$ ...") before it runs, from
# inside the demo directory. Environment:
#   DEMO_DIR        where everything goes (default: demo/ in the project)
#   BIN             where the binaries are (default: bin/, from make build)
#   DEMO_SKIP_DEPS  set: do not run scripts/install-deps.sh (the tests set it)
set -euo pipefail
project=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${BIN:-$project/bin}" && pwd)
dir=${DEMO_DIR:-$project/demo}
export PATH="$bin:$PATH"
for cmd in imgbuild tuftool updata updog signpost; do
  [ -x "$bin/$cmd" ] || { echo "demo: $bin/$cmd is missing: run make build first" >&2; exit 1; }
done

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# run CMD...: print the command as a user would type it, then run it.
run() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
  done
  printf '$ %s\n' "${out[*]}"
  "$@"
}
note() { printf '   (%s)\n' "$*"; }

if [ -z "${DEMO_SKIP_DEPS:-}" ]; then
  say "Install what the demo needs (e2fsprogs, python3, busybox-static, ...)"
  "$project/scripts/install-deps.sh" --demo
fi
export PATH="$PATH:/usr/sbin:/sbin"
for t in mke2fs:e2fsprogs debugfs:e2fsprogs zstd:zstd python3:python3; do
  command -v "${t%%:*}" >/dev/null 2>&1 ||
    { echo "demo: ${t%%:*} is missing (Debian package ${t#*:}): run scripts/install-deps.sh --demo as root" >&2; exit 1; }
done

rm -rf "$dir"
mkdir -p "$dir"
cd "$dir"
dir=$(pwd)
server=""
cleanup() { if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; }
trap cleanup EXIT

variant=demo
arch=$(uname -m)
# The same inputs and SOURCE_DATE_EPOCH give byte-identical images.
export SOURCE_DATE_EPOCH=1767225600

say "The inputs: a kernel and two small root file systems"
kernel=""
for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
  if [ -r "$k" ]; then kernel=$k; break; fi
done
mkdir -p inputs
if [ -n "$kernel" ]; then
  cp "$kernel" inputs/vmlinuz
  note "kernel: Debian's $kernel"
else
  printf 'a stand-in for a kernel: no /boot/vmlinuz-* on this machine\n' >inputs/vmlinuz
  head -c 1048576 /dev/zero >>inputs/vmlinuz
  note "kernel: a stand-in file (no /boot/vmlinuz-* here; apt-get install linux-image-amd64 gives a real one)"
fi
busybox=""
for b in /bin/busybox /usr/bin/busybox; do
  if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then busybox=$b; break; fi
done
for v in 1.0.0 1.1.0; do
  r=inputs/rootfs-$v
  mkdir -p "$r"/{bin,etc,usr/share/demo,var,tmp,proc,sys,dev,run}
  printf 'NAME=updog-demo\nID=updog\nVARIANT_ID=%s\nVERSION_ID=%s\nPRETTY_NAME="updog demo %s"\n' "$variant" "$v" "$v" >"$r/etc/os-release"
  echo "updog-demo" >"$r/etc/hostname"
  printf 'release %s of the updog demo\n' "$v" >"$r/usr/share/demo/README"
  if [ -n "$busybox" ]; then
    cp "$busybox" "$r/bin/busybox"
    for app in sh ls cat mount echo; do ln -sf busybox "$r/bin/$app"; done
  fi
done
echo "what changed in 1.1.0" >inputs/rootfs-1.1.0/usr/share/demo/CHANGES
if [ -n "$busybox" ]; then note "root file systems: busybox-static ($busybox) and a few files"; else note "root file systems: a few files (install busybox-static for a shell)"; fi

say "Build release 1.0.0: a bootable A/B disk image (set A holds it) and its update artifacts"
run imgbuild build --kernel inputs/vmlinuz --rootfs inputs/rootfs-1.0.0 --variant $variant --arch "$arch" --version 1.0.0 \
  --size 2GiB --out build-1.0.0
cp "build-1.0.0/updog-$variant-$arch-1.0.0.img" disk.img
note "disk.img is a copy of the image, for updog to update"

say "Build release 1.1.0: the update artifacts only"
run imgbuild build --kernel inputs/vmlinuz --rootfs inputs/rootfs-1.1.0 --variant $variant --arch "$arch" --version 1.1.0 \
  --size 2GiB --no-disk --out build-1.1.0

say "What the boot chain will read: boot.conf in the BOOT file system"
printf '$ zstd -dq < build-1.0.0/updog-%s-%s-1.0.0-boot.ext4.zst > boot-1.0.0.ext4\n' "$variant" "$arch"
zstd -dq <"build-1.0.0/updog-$variant-$arch-1.0.0-boot.ext4.zst" >boot-1.0.0.ext4
run debugfs -R 'cat /boot.conf' boot-1.0.0.ext4
bootpart=$(sfdisk --part-uuid "build-1.0.0/updog-$variant-$arch-1.0.0.img" 3 2>/dev/null | tr A-F a-f || true)

say "Signing keys and the TUF root (one key per role)"
mkdir -p keys
for role in root targets snapshot timestamp; do run tuftool gen-key --type ed25519 --out keys/$role.pem; done
run tuftool root init root.json --expires "in 52 weeks"
for role in root targets snapshot timestamp; do run tuftool root add-key root.json -k keys/$role.pem --role $role; done
run tuftool root sign root.json -k keys/root.pem

say "The manifest: both releases, and 1.1.0's staged rollout"
cat >waves.toml <<'TOML'
# 1% of the fleet (seeds 0-19) during the first day, then 20%, then all.
[[waves]]
start_after = '0 hours'
fleet_percentage = 1
[[waves]]
start_after = '1 day'
fleet_percentage = 20
[[waves]]
start_after = '3 days'
fleet_percentage = 100
TOML
run updata init manifest.json
run updata add-update manifest.json --from-release build-1.0.0/release.json
run updata add-update manifest.json --from-release build-1.1.0/release.json
start=$(date -u -d '2 hours ago' +%Y-%m-%dT%H:%M:%SZ)
note "the rollout of 1.1.0 began two hours ago, at $start: its first wave is open, the others open over the next days"
run updata set-waves manifest.json --variant $variant --arch "$arch" --version 1.1.0 --wave-policy waves.toml --start-at "$start"
run updata validate manifest.json

say "A signed repository holding the manifest and the artifacts"
mkdir -p targets
cp manifest.json targets/
# Every artifact release.json names: the images, and the seekable root and
# its delta index (a host with the older release downloads only what changed).
for b in build-1.0.0 build-1.1.0; do
  cp $b/*.zst targets/
  ! ls $b/*.didx >/dev/null 2>&1 || cp $b/*.didx targets/
done
run tuftool create --root root.json -k keys/root.pem -k keys/targets.pem -k keys/snapshot.pem -k keys/timestamp.pem \
  --add-targets targets --outdir repo

say "Serve the repository on 127.0.0.1"
printf '$ python3 -m http.server --bind 127.0.0.1 0 --directory repo &\n'
python3 -u -m http.server --bind 127.0.0.1 0 --directory repo >server.log 2>&1 &
server=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*port \([0-9][0-9]*\).*/\1/p' server.log | head -n 1)
  [ -n "$port" ] && break
  kill -0 "$server" 2>/dev/null || { cat server.log; echo "demo: the server did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "demo: the server did not say its port" >&2; exit 1; }
note "serving on http://127.0.0.1:$port (PID $server)"

say "The host: its configuration, os-release and identity"
mkdir -p state health.d host
printf 'VARIANT_ID=%s\nVERSION_ID=1.0.0\n' "$variant" >host/os-release
echo 00112233445566778899aabbccddeeff >host/machine-id
cat >updog.toml <<EOF
# updog's configuration for the demo host (see updater/config.go)
metadata_base_url = "http://127.0.0.1:$port/metadata"
targets_base_url = "http://127.0.0.1:$port/targets"
seed = 0                      # this host's wave seed: in the first wave
version_lock = "latest"
ignore_waves = false
trusted_root = "$dir/root.json"
state_dir = "$dir/state"
os_release = "$dir/host/os-release"
health_dir = "$dir/health.d"
machine_id = "$dir/host/machine-id"
EOF
cat updog.toml
cat >health.d/10-demo <<'EOF'
#!/bin/sh
# A health check: mark-good marks the set good only if every check passes.
echo "the demo host is healthy"
EOF
chmod +x health.d/10-demo

u="updog --config updog.toml --disk disk.img"
say "Is there an update for this host (1.0.0 on set A)?"
run $u --active a check-update

say "Update: write 1.1.0 into set B, verify it, switch to it"
run $u --active a update

say "Reboot (simulated): the bootloader picks the set to boot"
printf '$ signpost --disk disk.img next\n'
active=$(signpost --disk disk.img next)
echo "$active"
if [ "$active" = b ]; then running=1.1.0; else running=1.0.0; fi
note "booted set $active, which holds $running; with no real boot, the demo writes $running's os-release for updog"
printf 'VARIANT_ID=%s\nVERSION_ID=%s\n' "$variant" "$running" >host/os-release

say "The new release came up: run the health checks and mark it good"
run $u --active "$active" mark-good
run $u --active "$active" status

say "Roll back to 1.0.0 (set A is still good), and look again"
run $u --active "$active" rollback
run $u --active "$active" status
run signpost --disk disk.img --active "$active" status

say "Done"
cat <<EOF
Everything is in $dir:
  build-1.0.0/     release 1.0.0: the disk image updog-$variant-$arch-1.0.0.img, its artifacts, release.json
  build-1.1.0/     release 1.1.0: update artifacts and release.json
  disk.img         the host's disk: set B holds 1.1.0, set A 1.0.0 (booted next, after the rollback)
  repo/            the signed TUF repository (metadata/, targets/); root.json is its trusted root
  manifest.json    the release manifest; keys/ the signing keys; updog.toml the host's configuration
  state/           updog's state (last update, pending switch)

To boot the image: the boot chain that picks a set with gptprio and reads its
BOOT partition's boot.conf comes in the next issue, so today firmware finds an
empty EFI system partition. QEMU can stand in for that boot chain: give it the
kernel and boot.conf's command line, with \$boot_uuid replaced by BOOT-A's
partition GUID (${bootpart:-see: sfdisk --part-uuid IMAGE 3}). The kernel needs
virtio-blk, dm-verity and ext4 built in, or an initrd with them (--initrd):
  cmdline=\$(sed -n 's/^cmdline=//p' <(debugfs -R 'cat /boot.conf' $dir/boot-1.0.0.ext4 2>/dev/null))
  qemu-system-x86_64 -m 1024 -nographic -kernel $dir/inputs/vmlinuz \\
    -append "\${cmdline//\\\$boot_uuid/${bootpart:-PARTUUID}}" \\
    -drive file=$dir/build-1.0.0/updog-$variant-$arch-1.0.0.img,format=raw,if=virtio
EOF
