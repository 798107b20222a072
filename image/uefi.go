package image

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// A UEFI-bootable image (BuildOptions.UEFI) carries its whole first boot
// stage on the EFI system partition, which updates never write:
//
//	/EFI/BOOT/BOOTX64.EFI   GRUB (BOOTAA64.EFI on aarch64), the removable-media path every UEFI firmware tries
//	/EFI/BOOT/grub.cfg      starts stage one, below, from this same partition
//	/EFI/updog/vmlinuz      stage one: the kernel ...
//	/EFI/updog/initrd.img   ... and bootsel's initramfs, which chooses the set
//
// GRUB never reads a BOOT partition: updog rewrites the inactive one during
// an update, and a boot loader that read it could find it half-written
// after a power cut. The boot selector reads the chosen BOOT partition only
// after the GPT says it is complete.

// Paths of the files on the ESP of a UEFI-bootable image (ESPBootLoader is
// x86_64's; see ESPBootLoaderFor).
const (
	ESPBootLoader = "EFI/BOOT/BOOTX64.EFI"
	ESPGrubConfig = "EFI/BOOT/grub.cfg"
	ESPKernel     = "EFI/updog/vmlinuz"
	ESPInitrd     = "EFI/updog/initrd.img"
)

// GrubPrefix is the prefix built into the GRUB image imgbuild makes: a
// path without a device, so GRUB takes the device it was started from (the
// ESP) as its root and reads GrubPrefix/grub.cfg there.
const GrubPrefix = "/EFI/BOOT"

// GrubModules are the GRUB modules built into the GRUB image: GPT, FAT,
// the configuration file, the linux loader and the firmware's graphics
// (for the kernel's boot frame buffer); no file system a BOOT partition
// uses (ext2) and no search.
var GrubModules = []string{"part_gpt", "fat", "normal", "linux", "echo", "boot", "efi_gop"}

// uefiArch is a UEFI architecture's removable-media boot loader name and
// GRUB platform.
type uefiArch struct{ bootLoader, grubTarget string }

var uefiArches = map[string]uefiArch{
	"x86_64":  {"BOOTX64.EFI", "x86_64-efi"},
	"aarch64": {"BOOTAA64.EFI", "arm64-efi"},
}

// ESPBootLoaderFor is the path of the boot loader on the ESP for arch
// (x86_64 or aarch64).
func ESPBootLoaderFor(arch string) string { return "EFI/BOOT/" + uefiArches[arch].bootLoader }

// GrubConfig returns the grub.cfg of a UEFI-bootable image: it starts the
// boot selector's kernel and initramfs from the ESP GRUB was started from,
// with cmdline (which holds no quotes or backslashes: GRUB would pass them
// on escaped).
func GrubConfig(cmdline string) (string, error) {
	words, err := grubWords(cmdline)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString(`# Written by imgbuild. GRUB reads this file from the EFI system partition
# it was started from (its prefix names no device) and starts updog's stage
# one, the boot selector, from that same partition, which updates never
# write. No BOOT partition is read here: the boot selector chooses the set
# by the GPT priority, tries and successful bits and reads its BOOT
# partition itself.
set timeout=0
echo "updog: UEFI: GRUB starts the boot selector from the EFI system partition"
`)
	fmt.Fprintf(&b, "linux /%s%s\n", ESPKernel, words)
	fmt.Fprintf(&b, "initrd /%s\n", ESPInitrd)
	b.WriteString("boot\n")
	return b.String(), nil
}

// grubWords writes a kernel command line as GRUB script words, each with
// a leading space: a word with a character GRUB's parser gives a meaning
// is single-quoted.
func grubWords(cmdline string) (string, error) {
	if strings.ContainsAny(cmdline, "'\"\\\n\r\x00") {
		return "", fmt.Errorf("the kernel command line %q has a quote, backslash or line break, which GRUB would not pass on as it is", cmdline)
	}
	var b strings.Builder
	for _, w := range strings.Fields(cmdline) {
		b.WriteByte(' ')
		if strings.Trim(w, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.,:=/+@%-") != "" {
			w = "'" + w + "'"
		}
		b.WriteString(w)
	}
	return b.String(), nil
}

// checkUEFI checks the UEFI and ESP options and fills in their defaults.
func (o *BuildOptions) checkUEFI() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrOptions, fmt.Sprintf(format, a...))
	}
	if o.ESPSize == 0 {
		o.ESPSize = DefaultESPBytes
		if o.UEFI {
			o.ESPSize = UEFIESPBytes
		}
	}
	if !o.UEFI {
		if o.StageOneKernel != "" || o.StageOneInitrd != "" || o.GrubEFI != "" {
			return bad("a stage-one kernel or initramfs or a GRUB image is for a UEFI-bootable image (--uefi)")
		}
	} else {
		if _, ok := uefiArches[o.Arch]; !ok {
			return bad("a UEFI-bootable image for %s: only x86_64 and aarch64 are known", o.Arch)
		}
		if o.StageOneInitrd == "" && o.Initrd == "" {
			return bad("a UEFI-bootable image needs stage one's initramfs (bootsel mkinitramfs): --initrd or --uefi-initrd")
		}
		if _, err := grubWords(o.Cmdline); err != nil {
			return bad("%v", err)
		}
	}
	if o.ESPSize > 1<<30 {
		return bad("an EFI system partition of %d bytes: at most 1 GiB (a FAT16 file system)", o.ESPSize)
	}
	if _, err := o.partitionPlan(); err != nil {
		return fmt.Errorf("%w: %w", ErrOptions, err)
	}
	return nil
}

// partitionPlan is the build's plan: BottlerocketPlanFor(DiskSize, Plan)
// with the ESP grown to ESPSize.
func (o *BuildOptions) partitionPlan() ([]PartSpec, error) {
	p, err := BottlerocketPlanFor(o.DiskSize, o.Plan)
	if err != nil || o.ESPSize == 0 {
		return p, err
	}
	return WithESPSize(p, o.ESPSize)
}

// espFile is a file staged for the ESP.
type espFile struct {
	path string // on the ESP
	src  string // in the build directory
	size int64
}

// stageESP copies stage one's kernel and initramfs and the GRUB image (or
// makes one with grub-mkimage) into the build directory with grub.cfg,
// checks they fit the ESP, and adds them to the build's seed. It does
// nothing unless UEFI is set.
func (b *builder) stageESP(ctx context.Context) error {
	o := &b.o
	if !o.UEFI {
		return nil
	}
	dir := filepath.Join(b.tmp, ".esp")
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	kernel, initrd := o.StageOneKernel, o.StageOneInitrd
	if kernel == "" {
		kernel = o.Kernel
	}
	if initrd == "" {
		initrd = o.Initrd
	}
	fields := []string{hex.EncodeToString(b.seed[:]), "uefi", strconv.FormatInt(o.ESPSize, 10)}
	stage := func(what, src, espPath string) error {
		dst := filepath.Join(dir, path.Base(espPath))
		sum, n, err := copyInput(ctx, what, src, dst)
		if err != nil {
			return err
		}
		b.esp = append(b.esp, espFile{path: espPath, src: dst, size: n})
		fields = append(fields, espPath, hex.EncodeToString(sum))
		return nil
	}
	loader := ESPBootLoaderFor(o.Arch)
	if o.GrubEFI != "" {
		if err := stage("GRUB EFI image", o.GrubEFI, loader); err != nil {
			return err
		}
	} else {
		made := filepath.Join(dir, ".grub.efi")
		if err := makeGrubEFI(ctx, uefiArches[o.Arch].grubTarget, made); err != nil {
			return err
		}
		b.log.Info("made the GRUB EFI image with grub-mkimage", "modules", strings.Join(GrubModules, " "), "prefix", GrubPrefix)
		if err := stage("GRUB EFI image", made, loader); err != nil {
			return err
		}
		os.Remove(made)
	}
	cfg, err := GrubConfig(o.Cmdline)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrOptions, err)
	}
	cfgFile := filepath.Join(dir, "grub.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return err
	}
	b.esp = append(b.esp, espFile{path: ESPGrubConfig, src: cfgFile, size: int64(len(cfg))})
	fields = append(fields, ESPGrubConfig, cfg)
	if err := stage("stage-one kernel", kernel, ESPKernel); err != nil {
		return err
	}
	if err := stage("stage-one initramfs", initrd, ESPInitrd); err != nil {
		return err
	}
	// FAT's own tables and directories take well under espOverhead
	// with clusters of up to 4 KiB at these sizes.
	const espOverhead = 1 << 20
	var need int64
	for _, f := range b.esp {
		need += (f.size + 4095) &^ 4095
	}
	if need += espOverhead; need > o.ESPSize {
		return &TooBigError{What: "GRUB, grub.cfg and stage one's kernel and initramfs", Need: need, Have: o.ESPSize,
			Where: "the EFI system partition (--esp-size, with 1 MiB for the file system)"}
	}
	b.log.Info("the EFI system partition holds GRUB and stage one", "bytes", o.ESPSize, "files", need-espOverhead)
	b.seed = idSeed(fields...)
	return nil
}

// espUsed is how many bytes the ESP's files take.
func (b *builder) espUsed() int64 {
	var n int64
	for _, f := range b.esp {
		n += f.size
	}
	return n
}

// espFiles opens the staged ESP files for WriteFAT; close closes them.
func (b *builder) espFiles() (files []FATFile, close func(), err error) {
	var open []*os.File
	close = func() {
		for _, f := range open {
			f.Close()
		}
	}
	for _, e := range b.esp {
		f, err := os.Open(e.src)
		if err != nil {
			close()
			return nil, nil, err
		}
		open = append(open, f)
		files = append(files, FATFile{Path: e.path, Size: e.size, Data: f})
	}
	return files, close, nil
}

// makeGrubEFI makes a GRUB EFI image for target (x86_64-efi, arm64-efi)
// with grub-mkimage (Debian package grub-common) from the modules of
// Debian's grub-efi-amd64-bin or grub-efi-arm64-bin, with GrubModules built
// in and GrubPrefix as its prefix. grub-mkimage writes the same bytes for
// the same modules (grub-mkstandalone does not: its memdisk is a tar
// archive with the time of the build).
func makeGrubEFI(ctx context.Context, target, out string) error {
	tool, err := findTool("grub-mkimage")
	if err != nil {
		return &MissingToolError{Tool: "grub-mkimage", Package: "grub-common"}
	}
	mods := filepath.Join("/usr/lib/grub", target)
	if _, err := os.Stat(filepath.Join(mods, "moddep.lst")); err != nil {
		pkg := "grub-efi-amd64-bin"
		if target == "arm64-efi" {
			pkg = "grub-efi-arm64-bin"
		}
		return &MissingToolError{Tool: "GRUB's " + target + " modules (" + mods + ")", Package: pkg}
	}
	args := append([]string{"-O", target, "-d", mods, "-p", GrubPrefix, "-o", out}, GrubModules...)
	if _, err := runTool(ctx, nil, tool, args...); err != nil {
		return fmt.Errorf("making the GRUB EFI image: %w", err)
	}
	return nil
}
