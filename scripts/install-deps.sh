#!/usr/bin/env bash
# Installs the external tools the tests compare against and imgbuild runs
# (sgdisk, cgpt, veritysetup, sfdisk, lz4, xz, zstd, GNU time, mke2fs,
# mkfs.erofs, mksquashfs, mtools and fsck.fat to check the ESP, python3 to
# serve the demo's repository, etcd for the fleet and lockd tests, curl and
# bc for the benchmarks, util-linux for losetup/partx/unshare, systemd's
# systemd-analyze to check the units in dist/systemd, grub-common and
# grub-efi-amd64-bin for imgbuild build --uefi's GRUB image), when they
# are missing and we can: as root
# (or with sudo) on a Debian-like system. Otherwise it says what is
# missing; the tests that need a missing tool skip locally and fail under
# CI.
#
# --demo adds busybox-static (a shell in the demo's root file system).
# --vm adds what `make test-vm` needs: qemu-system-x86 (the guest, under
# software emulation when there is no KVM), ovmf (the UEFI boot of the
# test image), apt and dpkg-deb
# (the Debian kernel is fetched with apt-get download).
set -euo pipefail
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
need=()
has sgdisk || need+=(gdisk)
has cgpt || need+=(cgpt)
has veritysetup || need+=(cryptsetup-bin)
has sfdisk || need+=(fdisk)
has lz4 || need+=(lz4)
has xz || need+=(xz-utils)
has zstd || need+=(zstd)
[ -x /usr/bin/time ] || need+=(time)
has mke2fs || need+=(e2fsprogs)
has mkfs.erofs || need+=(erofs-utils)
has mksquashfs || need+=(squashfs-tools)
has mdir || need+=(mtools)
has fsck.fat || need+=(dosfstools)
has python3 || need+=(python3)
has etcd || need+=(etcd-server)
has curl || need+=(curl)
has bc || need+=(bc)
has partx || need+=(util-linux)
has systemd-analyze || need+=(systemd)
# imgbuild build --uefi makes its GRUB image with grub-mkimage from these.
if [ "$(uname -m)" = x86_64 ]; then
  [ -d /usr/lib/grub/x86_64-efi ] || need+=(grub-efi-amd64-bin)
  has grub-mkimage || need+=(grub-common)
fi
for opt in "$@"; do
  case "$opt" in
  --demo)
    [ -x /bin/busybox ] || need+=(busybox-static) ;;
  --vm)
    has qemu-system-x86_64 || need+=(qemu-system-x86)
    [ -e /usr/share/ovmf/OVMF.fd ] || need+=(ovmf)
    has dpkg-deb || need+=(dpkg)
    has apt-get || need+=(apt) ;;
  *)
    echo "install-deps: unknown option $opt (want --demo or --vm)" >&2; exit 2 ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  echo "install-deps: installing ${need[*]} (sudo)"
  sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "install-deps: missing packages ${need[*]} (not root or no apt-get); tests needing them will skip" >&2
fi
