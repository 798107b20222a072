// Package image builds the disks and artifacts that updog installs: GPT disk
// images laid out as Bottlerocket lays them out (BottlerocketPlan, NewTable,
// CreateDisk), and whole releases (Build): a bootable A/B disk image whose
// set A holds the release, and the compressed boot, root and hash images of
// an update with the release.json that describes them.
//
// A build makes its file systems without loop devices, mounts or root
// privileges: mke2fs -d (written straight into the disk image with -E
// offset), mkfs.erofs or mksquashfs, and the ESP's FAT in Go (WriteFAT). It
// is reproducible: every identifier (disk and partition GUIDs, file system
// UUIDs and hash seeds, the FAT serial, the verity UUID) is derived from the
// inputs, the times written are SOURCE_DATE_EPOCH's (NormalizeExt4 rewrites
// the times mke2fs -d copies), and the dm-verity salt is derived from the
// variant (DefaultSalt), the same for every release of it. The root image is
// read once: its dm-verity tree (package verity) and its compressed artifact
// (Compressor: zstd in independent frames of at most MaxFrameBytes, xz, lz4)
// are made from the same bytes in parallel, and the holes of the sparse
// image are not read at all.
//
// The BOOT file system holds the kernel, the initrd and boot.conf
// (BootConfig), the kernel command line with the root's dm-verity table,
// for the boot chain to read.
//
// It trusts its inputs less than a build tool usually does: a rootfs
// tarball is extracted under the rules of ExtractTar, inputs that are not
// regular files are refused, and every size is checked against the plan
// before anything is written. It must never import the updater or the
// repository code. It is silent: progress goes to the *slog.Logger in
// BuildOptions.
package image
