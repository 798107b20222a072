// imgbuild builds the disk images and update artifacts that updog installs.
//
// Synopsis:
//
//	imgbuild build --kernel FILE [--initrd FILE] --rootfs DIR|TARBALL --variant V --arch A --version X
//	               [--size 2GiB] [--partition-plan unified|split] [--root-fs ext4|erofs|squashfs]
//	               [--compress zstd|xz|lz4|none] [--cmdline ARGS] [--name NAME]
//	               [--uefi [--uefi-kernel FILE] [--uefi-initrd FILE] [--grub-efi FILE]] [--esp-size SIZE] [--json] --out DIR
//	imgbuild disk [--size SIZE] [--partition-plan split|unified] [--sector-size N] [--disk-guid GUID] [--json] OUT
//	imgbuild verity format|verify|dump ...
//
// Description:
//
//	build turns a kernel, an optional initrd and a root file system (a
//	directory or a tarball) into a release in the new or empty directory
//	DIR: a bootable A/B disk image whose set A holds the release (the
//	root file system made by mke2fs -d, mkfs.erofs or mksquashfs, its
//	dm-verity hash tree, a BOOT file system with the kernel, the initrd
//	and boot.conf carrying the kernel command line with the dm-verity
//	table, a FAT ESP: empty, or with --uefi GRUB and stage one, the boot
//	selector's kernel and initramfs, which GRUB starts from the ESP
//	itself), the three compressed update artifacts, and
//	release.json for "updata add-update --from-release". The disk follows
//	Bottlerocket's unified plan (DATA at the end of the disk) or, with
//	--partition-plan split, its OS-disk plan (DATA on another disk). The
//	same inputs and SOURCE_DATE_EPOCH give the same bytes. Nothing
//	half-written is left at DIR on an error or a signal.
//
//	disk writes an empty Bottlerocket A/B OS disk image: a GPT with
//	BIOS-BOOT, EFI-SYSTEM, BOOT/ROOT/HASH/RESERVED for sets A and B,
//	EFI-BACKUP, PRIVATE and the 1 MiB DATA-A placeholder of the split plan
//	(--partition-plan unified: the DATA partition, as build makes), set A
//	marked as a fresh build (priority 1, successful). OUT is created as a
//	sparse file.
//
// Options: see imgbuild COMMAND --help.
//
// Exit status: 0 success, 1 error, 2 usage error (bad flag values included),
// 3 verity verify found corruption.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
