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
#   DEMO_KERNEL     a Debian kernel to use (default: the newest readable
#                   /boot/vmlinuz-<version>); DEMO_MODULES its modules
#                   (default: /lib/modules/<version>)
set -euo pipefail
project=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${BIN:-$project/bin}" && pwd)
dir=${DEMO_DIR:-$project/demo}
export PATH="$bin:$PATH"
for cmd in imgbuild tuftool updata updog signpost bootsel; do
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

say "The inputs: a kernel, the boot chain's initramfs and two small root file systems"
debarch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
kernel=${DEMO_KERNEL:-}
if [ -z "$kernel" ]; then
  for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
    if [ -r "$k" ]; then kernel=$k; break; fi
  done
fi
modules=""
if [ -n "$kernel" ]; then
  modules=${DEMO_MODULES:-/lib/modules/${kernel##*/vmlinuz-}}
  [ -d "$modules" ] || modules=""
fi
# boot_missing says what booting the image needs and this machine lacks.
boot_missing=""
mkdir -p inputs
initrd=()
if [ -n "$kernel" ]; then
  cp "$kernel" inputs/vmlinuz
  note "kernel: Debian's $kernel"
  if [ -n "$modules" ] && ldd "$bin/bootsel" >/dev/null 2>&1; then
    boot_missing="a static bootsel, the initramfs's /init ($bin/bootsel is dynamically linked: make build builds it with CGO_ENABLED=0)"
    note "no initramfs: $boot_missing"
  elif [ -n "$modules" ]; then
    # Stage one of the boot chain: bootsel as /init with the modules it
    # needs. Every BOOT partition carries it, for stage two.
    run bootsel mkinitramfs --modules "$modules" --out inputs/initrd.img
    initrd=(--initrd inputs/initrd.img)
  else
    boot_missing="the modules of $kernel (no ${DEMO_MODULES:-/lib/modules/${kernel##*/vmlinuz-}}), from which bootsel mkinitramfs builds the boot chain's initramfs"
    note "no initramfs: $boot_missing"
  fi
else
  printf 'a stand-in for a kernel: no /boot/vmlinuz-* on this machine\n' >inputs/vmlinuz
  head -c 1048576 /dev/zero >>inputs/vmlinuz
  boot_missing="Debian's kernel: there is no /boot/vmlinuz-* here (apt-get install linux-image-$debarch installs it and its modules)"
  note "kernel: a stand-in file (no /boot/vmlinuz-* here; apt-get install linux-image-$debarch gives a real one)"
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
    for app in sh ls cat mount echo poweroff; do ln -sf busybox "$r/bin/$app"; done
    # The init the boot chain starts on the dm-verity root: say which
    # release came up, then a shell.
    mkdir -p "$r/sbin"
    cat >"$r/sbin/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
. /etc/os-release
echo "$PRETTY_NAME is up, its root read-only on $(cat /proc/mounts | while read -r dev mnt rest; do [ "$mnt" = / ] && echo "$dev"; done)"
echo "a busybox shell follows; poweroff -f ends the machine"
exec /bin/sh
INIT
    chmod 755 "$r/sbin/init"
  fi
done
echo "what changed in 1.1.0" >inputs/rootfs-1.1.0/usr/share/demo/CHANGES
if [ -n "$busybox" ]; then note "root file systems: busybox-static ($busybox) and a few files"; else note "root file systems: a few files (install busybox-static for a shell)"; fi

say "Build release 1.0.0: a bootable A/B disk image (set A holds it) and its update artifacts"
run imgbuild build --kernel inputs/vmlinuz "${initrd[@]}" --rootfs inputs/rootfs-1.0.0 --variant $variant --arch "$arch" --version 1.0.0 \
  --size 2GiB --out build-1.0.0
cp "build-1.0.0/updog-$variant-$arch-1.0.0.img" disk.img
note "disk.img is a copy of the image, for updog to update"

say "Build release 1.1.0: the update artifacts only"
run imgbuild build --kernel inputs/vmlinuz "${initrd[@]}" --rootfs inputs/rootfs-1.1.0 --variant $variant --arch "$arch" --version 1.1.0 \
  --size 2GiB --no-disk --out build-1.1.0

say "What the boot chain will read: boot.conf in the BOOT file system"
printf '$ zstd -dq < build-1.0.0/updog-%s-%s-1.0.0-boot.ext4.zst > boot-1.0.0.ext4\n' "$variant" "$arch"
zstd -dq <"build-1.0.0/updog-$variant-$arch-1.0.0-boot.ext4.zst" >boot-1.0.0.ext4
run debugfs -R 'cat /boot.conf' boot-1.0.0.ext4

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
if [ -z "$boot_missing" ]; then
  boot_how="Boot it:"
else
  boot_how="This machine lacks what booting needs: $boot_missing.
So the image built here cannot boot; install that, run make demo again, then:"
fi
[ -n "$busybox" ] || boot_how="$boot_how
(No busybox-static here, so the root file system has no /sbin/init: the boot stops
after stage two. apt-get install busybox-static, then make demo again.)"
cat <<EOF
Everything is in $dir:
  build-1.0.0/     release 1.0.0: the disk image updog-$variant-$arch-1.0.0.img, its artifacts, release.json
  build-1.1.0/     release 1.1.0: update artifacts and release.json
  disk.img         the host's disk: set B holds 1.1.0, set A 1.0.0 (booted next, after the rollback)
  repo/            the signed TUF repository (metadata/, targets/); root.json is its trusted root
  manifest.json    the release manifest; keys/ the signing keys; updog.toml the host's configuration
  state/           updog's state (last update, pending switch)

To boot the disk image with QEMU, through the real boot chain: QEMU starts
Debian's kernel with bootsel's initramfs (stage one), which picks the set with
gptprio as signpost next does (writing the image's partition table), and
starts that set's kernel, initramfs and boot.conf command line from its BOOT
partition; stage two sets up the dm-verity root and starts its /sbin/init.
$boot_how
  qemu-system-$arch -m 1024 -nographic -kernel $dir/inputs/vmlinuz -initrd $dir/inputs/initrd.img \\
    -append console=ttyS0 -drive file=$dir/build-1.0.0/updog-$variant-$arch-1.0.0.img,format=raw,if=virtio
(Ctrl-a x quits QEMU; add -enable-kvm where /dev/kvm is usable. disk.img boots
the same way, on set A after the rollback. Boot a copy to keep an image as it is.)
EOF
