package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/cli"
)

const buildSynopsis = `--kernel FILE [--initrd FILE] --rootfs DIR|TARBALL --variant V --arch A --version X [--size 2GiB]
       [--partition-plan unified|split] [--root-fs ext4|erofs|squashfs] [--compress zstd|xz|lz4|none]
       [--cmdline ARGS] [--name NAME] [--no-delta] [--delta-frame-size BYTES]
       [--uefi [--uefi-kernel FILE] [--uefi-initrd FILE] [--grub-efi FILE]] [--esp-size SIZE] [--json] --out DIR

Builds a release: a bootable A/B disk image (Bottlerocket's partition plan,
set A holding the release; "unified", the default, ends with the DATA
partition, a sixteenth of the disk; "split" is Bottlerocket's OS disk, whose
DATA is on a second disk) and the update artifacts that publish it
(<name>-<variant>-<arch>-<version>-boot.ext4.zst, -root.<fs>.zst,
-root.verity.zst) with release.json, for "updata add-update --from-release",
and, for delta updates, the root image as a zstd seekable file
(-root.<fs>.seek.zst, frames of 64 KiB) and its index (-root.<fs>.didx).
The file systems are made without loop devices, mounts or root (mke2fs -d,
mkfs.erofs, mksquashfs). The same inputs and SOURCE_DATE_EPOCH give the same
bytes. OUT must not exist or be empty; the build appears there whole or not
at all.

With --uefi the disk image boots on UEFI firmware by itself: its EFI system
partition (64 MiB unless --esp-size; the two ROOT partitions give up what it
grows) holds GRUB as EFI/BOOT/BOOTX64.EFI (made with grub-mkimage from
Debian's grub-efi-amd64-bin unless --grub-efi), EFI/BOOT/grub.cfg, and stage
one, the boot selector's kernel and initramfs (--kernel and --initrd unless
--uefi-kernel, --uefi-initrd), as EFI/updog/vmlinuz and EFI/updog/initrd.img,
which grub.cfg starts from the ESP itself with --cmdline: GRUB never reads a
BOOT partition, which updates rewrite.`

func runBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, parse := newFlags("build", buildSynopsis, stdout)
	var o image.BuildOptions
	fs.StringVar(&o.Kernel, "kernel", "", "kernel `FILE` (required)")
	fs.StringVar(&o.Initrd, "initrd", "", "initrd `FILE`")
	fs.StringVar(&o.RootFS, "rootfs", "", "root file system: a `DIR` or a tarball (plain, gzip, zstd or xz) (required)")
	fs.StringVar(&o.Variant, "variant", "", "variant (required)")
	fs.StringVar(&o.Arch, "arch", "", "architecture, e.g. x86_64 (required)")
	fs.StringVar(&o.Version, "version", "", "release version, MAJOR.MINOR.PATCH (required)")
	fs.StringVar(&o.Name, "name", image.DefaultName, "first part of the file names")
	size := fs.String("size", "2GiB", "disk image `SIZE` (KiB, MiB, GiB, TiB); the partition plan scales with it")
	plan := fs.String("partition-plan", string(image.PlanUnified), "Bottlerocket partition `PLAN`: unified (DATA at the end of the disk) or split (DATA on another disk)")
	fs.IntVar(&o.SectorSize, "sector-size", 512, "logical sector size, 512 or 4096")
	fs.StringVar(&o.RootFSType, "root-fs", image.FSExt4, "root file system type: ext4, erofs or squashfs")
	compress := fs.String("compress", string(image.CompressZstd), "artifact compression: zstd, xz, lz4 or none")
	fs.StringVar(&o.Cmdline, "cmdline", "console=tty0 console=ttyS0,115200n8", "kernel command line `ARGS` (the root and dm-verity arguments come first)")
	salt := fs.String("salt", "", "dm-verity salt as `HEX`, - for none (default: derived from the variant, the same for every release)")
	guid := fs.String("disk-guid", "", "disk `GUID` (default: derived from the inputs)")
	fs.BoolVar(&o.NoDisk, "no-disk", false, "build only the update artifacts and release.json")
	fs.BoolVar(&o.NoDelta, "no-delta", false, "leave out the delta artifacts (the seekable root image and its index)")
	fs.IntVar(&o.DeltaFrameSize, "delta-frame-size", 0, "output `BYTES` of each frame of the seekable root image, a multiple of 4096 (default 65536)")
	fs.BoolVar(&o.UEFI, "uefi", false, "make the disk image UEFI-bootable: GRUB and stage one on the EFI system partition")
	fs.StringVar(&o.StageOneKernel, "uefi-kernel", "", "stage one's kernel `FILE` on the ESP (default: --kernel)")
	fs.StringVar(&o.StageOneInitrd, "uefi-initrd", "", "stage one's initramfs `FILE` on the ESP, bootsel's (default: --initrd)")
	fs.StringVar(&o.GrubEFI, "grub-efi", "", "GRUB EFI image `FILE` for EFI/BOOT/BOOTX64.EFI, reading its grub.cfg from /EFI/BOOT on its own partition (default: made with grub-mkimage)")
	espSize := fs.String("esp-size", "", "EFI system partition `SIZE`, whole MiB (default 5MiB, 64MiB with --uefi)")
	out := fs.StringP("out", "o", "", "output `DIR`: new or empty (required)")
	asJSON := fs.Bool("json", false, "print release.json and the files made as JSON")
	verbose := fs.BoolP("verbose", "v", false, "say what is being done, on stderr")
	if err := parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usagef("build: unexpected argument %q (the output directory is --out)", fs.Arg(0))
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"--kernel", o.Kernel}, {"--rootfs", o.RootFS}, {"--variant", o.Variant},
		{"--arch", o.Arch}, {"--version", o.Version}, {"--out", *out}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return usagef("build: %s required", strings.Join(missing, ", ")+map[bool]string{true: " is", false: " are"}[len(missing) == 1])
	}
	o.Out = *out
	var err error
	if o.DiskSize, err = parseSize(*size); err != nil {
		return usagef("build: --size: %v", err)
	}
	if o.Plan, err = image.ParsePartitionPlan(*plan); err != nil {
		return usagef("build: --partition-plan: %v", err)
	}
	if *espSize != "" {
		if o.ESPSize, err = parseSize(*espSize); err != nil {
			return usagef("build: --esp-size: %v", err)
		}
	}
	c, err := image.ParseCompression(*compress)
	if err != nil {
		return usagef("build: --compress: %v", err)
	}
	o.Compression = c
	switch *salt {
	case "":
	case "-":
		o.Salt = []byte{}
	default:
		if o.Salt, err = hex.DecodeString(*salt); err != nil || len(o.Salt) == 0 {
			return usagef("build: --salt %q is not hex (use - for no salt)", *salt)
		}
	}
	if *guid != "" {
		g, err := gptprio.ParseGUID(*guid)
		if err != nil {
			return usagef("build: --disk-guid: %v", err)
		}
		o.DiskGUID = &g
	}
	if s, ok := os.LookupEnv("SOURCE_DATE_EPOCH"); ok && s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return usagef("build: SOURCE_DATE_EPOCH=%q is not a number of seconds since 1970", s)
		}
		o.SourceDateEpoch = n
	} else {
		o.SourceDateEpoch = time.Now().Unix()
		fmt.Fprintf(stderr, "imgbuild: SOURCE_DATE_EPOCH is not set: the file systems' times are %d (set it to that to build the same bytes again)\n", o.SourceDateEpoch)
	}
	if *verbose {
		o.Log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	if err := o.Check(); err != nil {
		if errors.Is(err, image.ErrOptions) || errors.Is(err, image.ErrCompression) {
			return usagef("build: %v", err)
		}
		return err
	}
	res, err := image.Build(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted; nothing was written to %s: %w", o.Out, err)
		}
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(stderr, "imgbuild: warning: %s\n", w)
	}
	if *asJSON {
		return cli.WriteJSON(stdout, map[string]any{"dir": res.Dir, "files": res.Files, "release": res.Release})
	}
	printRelease(stdout, res)
	if o.UEFI {
		printESP(stdout, res)
	}
	return nil
}

func mib(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func printRelease(w io.Writer, res *image.Result) {
	r := res.Release
	fmt.Fprintf(w, "built %s %s %s %s in %s (SOURCE_DATE_EPOCH=%d)\n", r.Name, r.Variant, r.Arch, r.Version, res.Dir, r.SourceDateEpoch)
	if r.Disk != nil {
		fmt.Fprintf(w, "disk image %s: %s, disk GUID %s, set A holds %s\n", r.Disk.File, mib(r.Disk.Size), r.Disk.DiskGUID, r.Version)
	} else {
		fmt.Fprintf(w, "no disk image (--no-disk); the partition plan it is built for:\n")
	}
	for _, p := range r.Partitions {
		used := ""
		if p.Used > 0 {
			used = fmt.Sprintf("  %s used (%.0f%%)", mib(p.Used), 100*float64(p.Used)/float64(p.Bytes))
		}
		fmt.Fprintf(w, "  %2d  %-24s %11s%s\n", p.Number, p.Name, mib(p.Bytes), used)
	}
	fmt.Fprintf(w, "update artifacts (%s):\n", r.Compression)
	for _, a := range []image.Artifact{r.Images.Boot, r.Images.Root, r.Images.Hash} {
		fmt.Fprintf(w, "  %-50s %11s -> %s\n", a.Target, mib(a.Size), mib(a.Length))
	}
	fmt.Fprintf(w, "root file system %s; dm-verity root hash %s, salt %s, %d data blocks\n", r.RootFS, r.Verity.RootHash, r.Verity.Salt, r.Verity.DataBlocks)
	fmt.Fprintf(w, "%s: publish with: updata add-update MANIFEST --from-release %s/%s\n", image.ReleaseFileName, res.Dir, image.ReleaseFileName)
}

// printESP says what the ESP of a UEFI-bootable image holds.
func printESP(w io.Writer, res *image.Result) {
	r := res.Release
	for _, p := range r.Partitions {
		if p.Name == "EFI-SYSTEM" {
			fmt.Fprintf(w, "UEFI: EFI-SYSTEM is %s and holds GRUB (/%s), its /%s and stage one (/%s, /%s): %s\n",
				mib(p.Bytes), image.ESPBootLoaderFor(r.Arch), image.ESPGrubConfig, image.ESPKernel, image.ESPInitrd, mib(p.Used))
		}
	}
}
