package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/updog/updog/bootconf"
	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/verity"
)

// Build turns a kernel, an initrd and a root file system tree into a
// release: a bootable A/B disk image whose set A holds it, and the three
// compressed update artifacts and release.json that publish it. See
// BuildOptions for the inputs and Build for the steps.

// ErrOutput means the output directory cannot be used.
var ErrOutput = errors.New("image: output directory")

// ErrOptions means the build options are wrong.
var ErrOptions = errors.New("image: bad build options")

// BuildOptions are a build's inputs.
type BuildOptions struct {
	// Kernel and Initrd (optional) are the files put in the BOOT file
	// system as vmlinuz and initrd.img.
	Kernel, Initrd string
	// RootFS is a directory, or a tarball (plain, gzip, zstd or xz).
	RootFS string
	// RootFSType is ext4 (the default), erofs or squashfs.
	RootFSType string
	// Name (default "updog"), Variant, Arch and Version name the release
	// and its files: <name>-<variant>-<arch>-<version>...
	Name, Variant, Arch, Version string
	// DiskSize is the disk image's size (default 2 GiB); the partition
	// plan is BottlerocketPlanFor(DiskSize, Plan) even when NoDisk is set.
	DiskSize int64
	// Plan is the partition plan (default PlanUnified: DATA at the end of
	// the disk; PlanSplit: Bottlerocket's OS disk, whose DATA is on
	// another disk). Build every release of a variant with the same plan
	// and DiskSize: the root image fills ROOT.
	Plan       PartitionPlan
	SectorSize int // 512 (default) or 4096
	// NoDisk builds only the update artifacts and release.json.
	NoDisk bool
	// Compression of the artifacts (default zstd).
	Compression Compression
	// NoDelta leaves out the delta artifacts (the seekable root image and
	// its index, see delta.go); DeltaFrameSize is their frame size
	// (default 64 KiB).
	NoDelta        bool
	DeltaFrameSize int
	// Cmdline is added to the kernel command line.
	Cmdline string
	// Salt is the dm-verity salt: nil for DefaultSalt(Variant), empty
	// (not nil) for none.
	Salt []byte
	// DiskGUID, when set, is the disk's GUID; else derived from the inputs.
	DiskGUID *gptprio.GUID
	// SourceDateEpoch is the time written into the file systems.
	SourceDateEpoch int64
	// Out is the output directory: it must not exist, or be empty.
	Out string
	// UEFI makes the disk image boot on UEFI firmware by itself: the EFI
	// system partition gets GRUB at /EFI/BOOT/BOOTX64.EFI (GrubEFI, or
	// one made with grub-mkimage), its grub.cfg beside it, and stage one,
	// the boot selector's kernel and initramfs (StageOneKernel and
	// StageOneInitrd, default Kernel and Initrd), in /EFI/updog, which
	// grub.cfg starts from the ESP itself with Cmdline. See uefi.go.
	UEFI                           bool
	StageOneKernel, StageOneInitrd string
	GrubEFI                        string
	// ESPSize is the EFI system partition's size in whole MiB (default
	// DefaultESPBytes, UEFIESPBytes with UEFI; see WithESPSize). Build
	// every release of a variant with the same ESPSize: the ROOT
	// partitions give up what the ESP grows.
	ESPSize int64
	// Workers bounds the compression and hashing goroutines (0:
	// GOMAXPROCS).
	Workers int
	// AsRoot says whether a rootfs tarball may have device nodes and
	// other owners than root (nil: whether we run as root).
	AsRoot *bool
	// Log receives progress messages (nil: none).
	Log *slog.Logger
}

// Result is what a build made.
type Result struct {
	// Dir is the output directory, Release what release.json says.
	Dir     string
	Release *Release
	// Files are the paths of the files made, in Dir.
	Files []string
	// Warnings are things the build did not carry over or doubts.
	Warnings []string
}

// Names of the files in the BOOT file system.
const (
	BootKernelName = "vmlinuz"
	BootInitrdName = "initrd.img"
)

// DefaultName is the name a release's files start with unless given one.
const DefaultName = "updog"

// ArtifactNames returns the file names of a release's disk image and its
// boot, root and hash artifacts (Bottlerocket's naming).
func ArtifactNames(name, variant, arch, version, rootFS string, c Compression) (disk, boot, root, hash string) {
	base := fmt.Sprintf("%s-%s-%s-%s", name, variant, arch, version)
	ext := ""
	if e := c.Ext(); e != "" {
		ext = "." + e
	}
	return base + ".img", base + "-boot.ext4" + ext, base + "-root." + rootFS + ext, base + "-root.verity" + ext
}

// Check validates the options that need no file system access, filling
// in the defaults. Its errors match ErrOptions (or ErrCompression).
func (o *BuildOptions) Check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrOptions, fmt.Sprintf(format, a...))
	}
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.RootFSType == "" {
		o.RootFSType = FSExt4
	}
	if o.Compression == "" {
		o.Compression = CompressZstd
	}
	if o.DiskSize == 0 {
		o.DiskSize = 2 << 30
	}
	if o.Plan == "" {
		o.Plan = PlanUnified
	}
	if o.SectorSize == 0 {
		o.SectorSize = 512
	}
	switch {
	case o.Kernel == "":
		return bad("a kernel is needed")
	case o.RootFS == "":
		return bad("a root file system is needed")
	case o.Out == "":
		return bad("an output directory is needed")
	}
	if _, err := ParseCompression(string(o.Compression)); err != nil {
		return err
	}
	switch o.RootFSType {
	case FSExt4, FSErofs, FSSquashfs:
	default:
		return bad("root file system type %q (want ext4, erofs or squashfs)", o.RootFSType)
	}
	if err := manifest.CheckVariant(o.Variant); err != nil {
		return bad("%v", err)
	}
	if err := manifest.CheckArch(o.Arch); err != nil {
		return bad("%v", err)
	}
	if _, err := manifest.ParseVersion(o.Version); err != nil {
		return bad("%v", err)
	}
	if err := manifest.CheckVariant(o.Name); err != nil {
		return bad("name: %v", err)
	}
	disk, boot, root, hash := ArtifactNames(o.Name, o.Variant, o.Arch, o.Version, o.RootFSType, o.Compression)
	for _, n := range []string{disk, boot, root, hash} {
		if err := manifest.CheckTargetName(n); err != nil {
			return bad("%v", err)
		}
	}
	if o.SectorSize != 512 && o.SectorSize != 4096 {
		return bad("sector size %d (want 512 or 4096)", o.SectorSize)
	}
	if o.DiskSize <= 0 || o.DiskSize%int64(o.SectorSize) != 0 {
		return bad("disk size %d is not a whole number of %d-byte sectors", o.DiskSize, o.SectorSize)
	}
	if _, err := BottlerocketPlanFor(o.DiskSize, o.Plan); err != nil {
		return fmt.Errorf("%w: %w", ErrOptions, err)
	}
	if len(o.Salt) > verity.MaxSaltSize {
		return bad("a salt of %d bytes is longer than %d", len(o.Salt), verity.MaxSaltSize)
	}
	if strings.ContainsAny(o.Cmdline, "\n\r\x00") {
		return bad("the kernel command line has a line break or NUL")
	}
	if o.DiskGUID != nil && o.DiskGUID.IsZero() {
		return bad("the all-zero disk GUID")
	}
	if err := o.checkUEFI(); err != nil {
		return err
	}
	return o.checkDelta()
}

// builder holds a build in progress.
type builder struct {
	o      BuildOptions
	log    *slog.Logger
	tmp    string // the directory being built, renamed to o.Out at the end
	seed   [32]byte
	plan   []PartSpec
	table  *gptprio.Table
	disk   *os.File // nil with NoDisk
	part   map[string]partPlace
	res    *Result
	mke2fs string
	conf   string
	asRoot bool
	esp    []espFile // staged for the ESP (UEFI)
}

type partPlace struct {
	number    int
	off, size int64
}

// region is where a file system image is: a partition of the disk image,
// or a file of its own.
type region struct {
	f         *os.File
	off, size int64
	inDisk    bool
}

func (r region) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	if int64(len(p)) > r.size-off {
		n, err := r.f.ReadAt(p[:r.size-off], r.off+off)
		if err == nil {
			err = io.EOF
		}
		return n, err
	}
	return r.f.ReadAt(p, r.off+off)
}

func (r region) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || int64(len(p)) > r.size-off {
		return 0, fmt.Errorf("image: a write of %d bytes at %d is outside a %d-byte region", len(p), off, r.size)
	}
	return r.f.WriteAt(p, r.off+off)
}

// Build makes a release in o.Out:
//
//  1. the kernel and initrd are copied into a staging directory (refusing
//     FIFOs and other non-files), a rootfs tarball is extracted (see
//     ExtractTar);
//  2. the disk image is created sparse and its GPT written through
//     gptprio's locked Format;
//  3. the root file system is made with mke2fs -d (straight into ROOT-A
//     of the disk image, through -E offset), mkfs.erofs or mksquashfs,
//     and, for ext4, its times normalized (NormalizeExt4);
//  4. the root image is read once, in order: the dm-verity tree is built
//     and the root artifact compressed from the same bytes, in parallel
//     (and an erofs or squashfs image copied into ROOT-A on the way);
//  5. the hash image (superblock and tree) goes into HASH-A and becomes
//     the hash artifact; the BOOT file system gets boot.conf with the
//     dm-verity table, goes into BOOT-A and becomes the boot artifact; the
//     ESP gets a FAT file system, empty, or with UEFI holding GRUB and
//     stage one (staged in step 1, see uefi.go);
//  6. release.json is written, everything synced, and the directory
//     renamed to o.Out.
//
// Everything is built in a hidden directory beside o.Out; an error or a
// cancelled ctx (the external tools are killed) removes it, so nothing
// half-written is ever at o.Out.
func Build(ctx context.Context, o BuildOptions) (res *Result, err error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	b := &builder{o: o, log: o.Log, part: map[string]partPlace{}, res: &Result{}}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if o.AsRoot != nil {
		b.asRoot = *o.AsRoot
	} else {
		b.asRoot = os.Geteuid() == 0
	}
	out, err := checkOutput(o.Out)
	if err != nil {
		return nil, err
	}
	if b.mke2fs, err = findTool("mke2fs"); err != nil {
		return nil, err
	}
	var compactTool string
	switch o.RootFSType {
	case FSErofs:
		compactTool, err = findTool("mkfs.erofs")
	case FSSquashfs:
		compactTool, err = findTool("mksquashfs")
	}
	if err != nil {
		return nil, err
	}
	parent, base := filepath.Split(out)
	if parent == "" {
		parent = "."
	}
	b.tmp, err = os.MkdirTemp(parent, "."+base+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrOutput, err)
	}
	defer func() {
		if b.disk != nil {
			b.disk.Close()
		}
		if err != nil {
			os.RemoveAll(b.tmp)
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w: %w", ctx.Err(), err)
			}
		}
	}()
	if err := b.build(ctx, compactTool); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.Chmod(b.tmp, 0o755); err != nil {
		return nil, err
	}
	// The commit point: the finished release appears at o.Out whole. A
	// rename over an empty directory replaces it; over one that someone
	// filled meanwhile, it fails.
	if err := os.Rename(b.tmp, out); err != nil {
		return nil, fmt.Errorf("%w: moving the finished build to %s: %w", ErrOutput, out, err)
	}
	if err := atomicfile.SyncDir(parent); err != nil {
		return nil, err
	}
	b.res.Dir = out
	for i, f := range b.res.Files {
		b.res.Files[i] = filepath.Join(out, f)
	}
	return b.res, nil
}

// checkOutput accepts an output directory that does not exist (its parent
// must) or is an empty directory, and returns the path to rename the build
// to (a symbolic link's target).
func checkOutput(out string) (string, error) {
	out = filepath.Clean(out)
	fi, err := os.Stat(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if li, lerr := os.Lstat(out); lerr == nil && li.Mode()&fs.ModeSymlink != 0 {
			return "", fmt.Errorf("%w: %s is a symbolic link to nothing", ErrOutput, out)
		}
		if pi, err := os.Stat(filepath.Dir(out)); err != nil || !pi.IsDir() {
			return "", fmt.Errorf("%w: the parent directory of %s does not exist", ErrOutput, out)
		}
		return out, nil
	case err != nil:
		return "", fmt.Errorf("%w: %w", ErrOutput, err)
	case !fi.IsDir():
		return "", fmt.Errorf("%w: %s exists and is not a directory", ErrOutput, out)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrOutput, err)
	}
	if len(ents) > 0 {
		return "", fmt.Errorf("%w: %s is not empty (it holds %s%s): a build goes into a new or empty directory",
			ErrOutput, out, ents[0].Name(), map[bool]string{true: " and more", false: ""}[len(ents) > 1])
	}
	return filepath.EvalSymlinks(out)
}

func (b *builder) build(ctx context.Context, compactTool string) error {
	o := &b.o
	diskName, bootName, rootName, hashName := ArtifactNames(o.Name, o.Variant, o.Arch, o.Version, o.RootFSType, o.Compression)
	b.conf = filepath.Join(b.tmp, ".mke2fs.conf")
	if err := os.WriteFile(b.conf, []byte(mke2fsConf), 0o644); err != nil {
		return err
	}
	// 1. Inputs.
	bootDir := filepath.Join(b.tmp, ".boot")
	if err := os.Mkdir(bootDir, 0o755); err != nil {
		return err
	}
	kernelSum, kernelSize, err := copyInput(ctx, "kernel", o.Kernel, filepath.Join(bootDir, BootKernelName))
	if err != nil {
		return err
	}
	var initrdSum []byte
	var initrdSize int64
	if o.Initrd != "" {
		if initrdSum, initrdSize, err = copyInput(ctx, "initrd", o.Initrd, filepath.Join(bootDir, BootInitrdName)); err != nil {
			return err
		}
	}
	salt := o.Salt
	if salt == nil {
		salt = DefaultSalt(o.Variant)
	}
	b.seed = idSeed(o.Name, o.Variant, o.Arch, o.Version, o.RootFSType, strconv.FormatInt(o.DiskSize, 10), string(o.Plan),
		strconv.Itoa(o.SectorSize), hex.EncodeToString(kernelSum), hex.EncodeToString(initrdSum), o.Cmdline,
		hex.EncodeToString(salt), strconv.FormatInt(o.SourceDateEpoch, 10))
	if err := b.stageESP(ctx); err != nil {
		return err
	}

	if b.plan, err = o.partitionPlan(); err != nil {
		return err
	}
	guid := guidFor(b.seed, "disk guid")
	if o.DiskGUID != nil {
		guid = *o.DiskGUID
	}
	if b.table, err = NewTable(o.DiskSize, o.SectorSize, b.plan, guid); err != nil {
		return err
	}
	ss := int64(o.SectorSize)
	for _, p := range b.table.Used() {
		b.part[p.Name()] = partPlace{number: p.Number, off: int64(p.FirstLBA) * ss, size: int64(p.Sectors()) * ss}
	}
	bootPart, rootPart, hashPart := b.part["BOTTLEROCKET-BOOT-A"], b.part["BOTTLEROCKET-ROOT-A"], b.part["BOTTLEROCKET-HASH-A"]
	if need := kernelSize + initrdSize + 2<<20; need > bootPart.size {
		return &TooBigError{What: "the kernel and initrd", Need: need, Have: bootPart.size,
			Where: "the BOOT partition (with 2 MiB for the file system)"}
	}

	rootSrc := o.RootFS
	allRoot := false
	fi, err := os.Stat(o.RootFS)
	if err != nil {
		return fmt.Errorf("root file system: %w", err)
	}
	if !fi.IsDir() {
		rootSrc = filepath.Join(b.tmp, ".rootfs")
		if err := os.Mkdir(rootSrc, 0o755); err != nil {
			return err
		}
		b.log.Info("extracting the rootfs tarball", "tarball", o.RootFS)
		r, closeTar, err := openTarball(o.RootFS, func(p string) (*os.File, error) { return safefile.Open(p, os.O_RDONLY, 0) })
		if err != nil {
			return fmt.Errorf("root file system: %w", err)
		}
		st, err := ExtractTar(ctx, r, rootSrc, TarOptions{AsRoot: b.asRoot, MaxBytes: rootPart.size})
		closeTar()
		if err != nil {
			return err
		}
		allRoot = st.AllRoot
		if st.XattrsSkipped > 0 {
			b.res.Warnings = append(b.res.Warnings, fmt.Sprintf("%d entries of the rootfs tarball have extended attributes, which are not carried over", st.XattrsSkipped))
		}
	}

	// 2. The disk image and its partition table.
	if !o.NoDisk {
		if b.disk, err = b.createDisk(ctx, filepath.Join(b.tmp, diskName)); err != nil {
			return err
		}
		b.res.Files = append(b.res.Files, diskName)
	}

	// 3. The root file system.
	var root region
	var rootUsed int64
	switch o.RootFSType {
	case FSExt4:
		est, err := treeSize(ctx, rootSrc, 0)
		if err != nil {
			return fmt.Errorf("root file system: %w", err)
		}
		if est > rootPart.size {
			return &TooBigError{What: "the root file system tree " + o.RootFS, Need: est, Have: rootPart.size,
				Where: fmt.Sprintf("the ROOT partition of a %d MiB disk", o.DiskSize>>20)}
		}
		if root, err = b.fsRegion(rootPart, ".root.ext4"); err != nil {
			return err
		}
		b.log.Info("making the root file system", "type", "ext4", "bytes", root.size)
		st, err := b.mkExt4(ctx, rootSrc, root, "root", allRoot)
		if tb := (*TooBigError)(nil); errors.As(err, &tb) {
			return &TooBigError{What: "the root file system tree " + o.RootFS, Need: max(est, tb.Need), Have: tb.Have, AtLeast: est <= tb.Have,
				Where: fmt.Sprintf("the ROOT partition of a %d MiB disk", o.DiskSize>>20), Detail: tb.Detail}
		}
		if err != nil {
			return err
		}
		rootUsed = st.UsedBytes()
	default:
		p := filepath.Join(b.tmp, ".root."+o.RootFSType)
		b.log.Info("making the root file system", "type", o.RootFSType)
		if err := mkCompactFS(ctx, o.RootFSType, compactTool, rootSrc, p, uuidFor(b.idSeedFor("root"), "root fs uuid"), o.SourceDateEpoch, allRoot); err != nil {
			return err
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		size := (fi.Size() + 4095) &^ 4095
		if size > rootPart.size {
			return &TooBigError{What: "the " + o.RootFSType + " image of " + o.RootFS, Need: size, Have: rootPart.size,
				Where: fmt.Sprintf("the ROOT partition of a %d MiB disk", o.DiskSize>>20)}
		}
		if err := f.Truncate(size); err != nil {
			return err
		}
		root, rootUsed = region{f: f, size: size}, size
	}

	// 4. One pass over the root image: verity tree, root artifact and (for
	// an image made outside the disk) the copy into ROOT-A.
	p := verity.DefaultParams()
	p.Salt = salt
	p.UUID = uuidFor(b.seed, "verity uuid")
	vb, err := verity.NewBuilder(p)
	if err != nil {
		return err
	}
	b.log.Info("hashing and compressing the root image", "bytes", root.size)
	var extra []io.Writer
	if b.disk != nil && !root.inDisk {
		extra = append(extra, &sparseWriter{w: b.disk, off: rootPart.off})
	}
	dl, err := b.startDelta(ctx, salt, rootSrc, root.size)
	if err != nil {
		return err
	}
	defer dl.close()
	rootArt, err := b.artifact(ctx, rootName, root, append(append(extra, vb), dl.rootSinks()...)...)
	tree, verr := vb.Close()
	if err != nil {
		return err
	}
	if verr != nil {
		return verr
	}

	// 5. The hash image, the boot file system, the ESP.
	if tree.HashDeviceSize > hashPart.size {
		return &TooBigError{What: "the dm-verity hash tree", Need: tree.HashDeviceSize, Have: hashPart.size, Where: "the HASH partition"}
	}
	hf, err := os.Create(filepath.Join(b.tmp, ".root.verity"))
	if err != nil {
		return err
	}
	defer hf.Close()
	if err := hf.Truncate(tree.HashDeviceSize); err != nil {
		return err
	}
	if err := tree.WriteTo(hf); err != nil {
		return err
	}
	if b.disk != nil {
		if err := tree.WriteTo(io.NewOffsetWriter(b.disk, hashPart.off)); err != nil {
			return err
		}
	}
	hashArt, err := b.artifact(ctx, hashName, region{f: hf, size: tree.HashDeviceSize}, dl.hashSinks()...)
	if err != nil {
		return err
	}

	saltHex := hex.EncodeToString(tree.Salt)
	if saltHex == "" {
		saltHex = "-"
	}
	cmdline := strings.TrimSpace(strings.Join([]string{
		"root=/dev/dm-0 rootwait ro rootfstype=" + o.RootFSType,
		"dm-mod.waitfor=" + bootconf.PartRef(1) + "," + bootconf.PartRef(2),
		// Quoted, as Bottlerocket's GRUB configuration writes it: the kernel
		// splits its command line at spaces outside double quotes.
		`dm-mod.create="root,,,ro,` + tree.Table(bootconf.PartRef(1), bootconf.PartRef(2), verity.BottlerocketOptions...) + `"`,
		o.Cmdline,
	}, " "))
	bc := bootconf.Config{Format: 1, Name: o.Name, Variant: o.Variant, Arch: o.Arch, Version: o.Version,
		Kernel: BootKernelName, RootFS: o.RootFSType, RootHash: hex.EncodeToString(tree.RootHash), Salt: saltHex, Cmdline: cmdline}
	if o.Initrd != "" {
		bc.Initrd = BootInitrdName
	}
	conf, err := bc.MarshalText()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bootDir, bootconf.FileName), conf, 0o644); err != nil {
		return err
	}
	boot, err := b.fsRegion(bootPart, ".boot.ext4")
	if err != nil {
		return err
	}
	b.log.Info("making the boot file system", "bytes", boot.size)
	bootSt, err := b.mkExt4(ctx, bootDir, boot, "boot", true)
	if tb := (*TooBigError)(nil); errors.As(err, &tb) {
		return &TooBigError{What: "the kernel, initrd and boot.conf", Need: tb.Need, Have: tb.Have, AtLeast: true,
			Where: "the BOOT partition", Detail: tb.Detail}
	}
	if err != nil {
		return err
	}
	bootArt, err := b.artifact(ctx, bootName, boot)
	if err != nil {
		return err
	}
	if b.disk != nil {
		esp := b.part["EFI-SYSTEM"]
		serial := derive(b.seed, "esp serial")
		files, closeFiles, err := b.espFiles()
		if err != nil {
			return err
		}
		err = WriteFAT(io.NewOffsetWriter(b.disk, esp.off), FATOptions{Size: esp.size, SectorSize: o.SectorSize,
			Serial:        uint32(serial[0]) | uint32(serial[1])<<8 | uint32(serial[2])<<16 | uint32(serial[3])<<24,
			HiddenSectors: uint32(esp.off / ss), Files: files, Time: o.SourceDateEpoch})
		closeFiles()
		if err != nil {
			return err
		}
		if err := b.disk.Sync(); err != nil {
			return fmt.Errorf("syncing the disk image: %w", err)
		}
	}

	// 6. release.json.
	rootArt.Size, hashArt.Size, bootArt.Size = root.size, tree.HashDeviceSize, boot.size
	rel := &Release{Format: ReleaseFormat, Name: o.Name, Variant: o.Variant, Arch: o.Arch, Version: o.Version,
		SourceDateEpoch: o.SourceDateEpoch, RootFS: o.RootFSType, Compression: o.Compression,
		Images: ReleaseImages{Boot: bootArt, Root: rootArt, Hash: hashArt},
		Verity: ReleaseVerity{RootHash: hex.EncodeToString(tree.RootHash), Salt: hex.EncodeToString(tree.Salt), Hash: tree.Hash,
			DataBlockSize: tree.DataBlockSize, HashBlockSize: tree.HashBlockSize, DataBlocks: tree.DataBlocks,
			HashStart: tree.HashStart, UUID: verity.FormatUUID(tree.UUID)},
		Cmdline: cmdline,
	}
	if rel.Delta, err = b.finishDelta(dl, tree); err != nil {
		return err
	}
	if b.disk != nil {
		rel.Disk = &ReleaseDisk{File: diskName, Size: o.DiskSize, SectorSize: o.SectorSize, DiskGUID: guid.String()}
	}
	used := map[string]int64{"BOTTLEROCKET-BOOT-A": bootSt.UsedBytes(), "BOTTLEROCKET-ROOT-A": rootUsed,
		"BOTTLEROCKET-HASH-A": tree.HashDeviceSize, "EFI-SYSTEM": b.espUsed()}
	for _, p := range b.table.Used() {
		n := p.Name()
		if n == "" {
			n = "(marker)"
		}
		rel.Partitions = append(rel.Partitions, ReleasePartition{Number: p.Number, Name: n, Bytes: int64(p.Sectors()) * ss, Used: used[p.Name()]})
	}
	if err := rel.Validate(); err != nil {
		return fmt.Errorf("image: the release built does not validate: %w", err)
	}
	js, err := rel.MarshalIndent()
	if err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(b.tmp, ReleaseFileName), js); err != nil {
		return err
	}
	b.res.Files = append(b.res.Files, bootName, rootName, hashName, ReleaseFileName)
	b.res.Release = rel
	// Only the outputs stay.
	for _, n := range []string{".boot", ".rootfs", ".root.ext4", ".boot.ext4", ".root.erofs", ".root.squashfs", ".root.verity", ".mke2fs.conf", ".esp"} {
		if err := os.RemoveAll(filepath.Join(b.tmp, n)); err != nil {
			return err
		}
	}
	b.log.Info("syncing")
	return syncDirFiles(b.tmp)
}

// createDisk makes the sparse disk image and writes its GPT under
// gptprio's lock, then opens it for the partitions' contents.
func (b *builder) createDisk(ctx context.Context, p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(b.o.DiskSize); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	d, err := gptprio.OpenDisk(ctx, p, gptprio.OpenOptions{SectorSize: b.o.SectorSize})
	if err != nil {
		return nil, err
	}
	err = d.Format(ctx, b.table)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	return os.OpenFile(p, os.O_RDWR, 0)
}

// fsRegion is where an ext4 file system for partition pp is made: in the
// disk image, or in a file of its own under the build directory.
func (b *builder) fsRegion(pp partPlace, name string) (region, error) {
	if b.disk != nil {
		return region{f: b.disk, off: pp.off, size: pp.size, inDisk: true}, nil
	}
	f, err := os.OpenFile(filepath.Join(b.tmp, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return region{}, err
	}
	if err := f.Truncate(pp.size); err != nil {
		f.Close()
		return region{}, err
	}
	return region{f: f, size: pp.size}, nil
}

// mkExt4 makes an ext4 file system of src in r and normalizes it.
func (b *builder) mkExt4(ctx context.Context, src string, r region, purpose string, allRoot bool) (Ext4Stats, error) {
	err := mkExt4(ctx, ext4Job{tool: b.mke2fs, conf: b.conf, src: src, target: r.f.Name(), off: r.off, size: r.size,
		uuid: uuidFor(b.idSeedFor(purpose), purpose+" fs uuid"), hashSeed: uuidFor(b.idSeedFor(purpose), purpose+" hash seed"), epoch: b.o.SourceDateEpoch})
	if err != nil {
		return Ext4Stats{}, err
	}
	st, err := NormalizeExt4(ctx, r, Ext4Options{Time: b.o.SourceDateEpoch, AllRoot: allRoot})
	if err != nil {
		return st, fmt.Errorf("normalizing the %s file system: %w", purpose, err)
	}
	return st, nil
}

// passChunk is how much of an image is read at a time.
const passChunk = 4 << 20

// holeStep is the most of a hole passed on at a time (between two checks
// of the context).
const holeStep = 64 << 20

// artifact reads src once, in order, compressing it into the artifact
// file name and writing it to every sink as well. It returns the
// artifact's length and sha256.
func (b *builder) artifact(ctx context.Context, name string, src region, sinks ...io.Writer) (Artifact, error) {
	a := Artifact{Target: name}
	f, err := os.OpenFile(filepath.Join(b.tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return a, err
	}
	defer f.Close()
	h := sha256.New()
	cw := &countWriter{w: f}
	comp, err := NewCompressor(cw, b.o.Compression, b.o.Workers, h)
	if err != nil {
		return a, err
	}
	err = readOnce(ctx, src, append(sinks, comp)...)
	if cerr := comp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return a, fmt.Errorf("making %s: %w", name, err)
	}
	a.Length, a.SHA256 = cw.n, hex.EncodeToString(h.Sum(nil))
	return a, nil
}

// readOnce reads src from start to end in passChunk pieces and writes each
// to every sink. The holes of a sparse file (most of a fresh file system
// image) are not read: SEEK_DATA and SEEK_HOLE find them, and the sinks get
// zeros from memory, which spares the kernel zero-filling page after page.
func readOnce(ctx context.Context, src region, sinks ...io.Writer) error {
	buf := make([]byte, passChunk)
	emit := func(p []byte) error {
		for _, s := range sinks {
			if _, err := s.Write(p); err != nil {
				return err
			}
		}
		return nil
	}
	ext := newExtents(src)
	for off := int64(0); off < src.size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, end := ext.next(off)
		n := min(int64(len(buf)), end-off)
		if !data {
			n = min(end-off, holeStep) // the sinks that can skip zeros do
			for _, s := range sinks {
				if z, ok := s.(zeroWriter); ok {
					if err := z.WriteZeros(n); err != nil {
						return err
					}
					continue
				}
				for done := int64(0); done < n; {
					k := min(n-done, int64(len(zeroChunk)))
					if _, err := s.Write(zeroChunk[:k]); err != nil {
						return err
					}
					done += k
				}
			}
			off += n
			continue
		}
		if _, err := src.f.ReadAt(buf[:n], src.off+off); err != nil {
			return err
		}
		if err := emit(buf[:n]); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// zeroWriter is a sink that takes a run of zeros without being given the
// bytes.
type zeroWriter interface {
	WriteZeros(n int64) error
}

// zeroChunk is passChunk zeros, never written to.
var zeroChunk = make([]byte, passChunk)

// extents finds the data and the holes of a region of a file.
type extents struct {
	r      region
	noSeek bool
}

func newExtents(r region) *extents { return &extents{r: r} }

// next says whether the region at off holds data (else a hole) and where
// that run ends (at most the region's end). Where the file system cannot
// say, everything is data.
func (e *extents) next(off int64) (data bool, end int64) {
	if e.noSeek {
		return true, e.r.size
	}
	abs := e.r.off + off
	d, ok, unsupported := nextData(e.r.f, abs)
	switch {
	case unsupported:
		e.noSeek = true
		return true, e.r.size
	case !ok:
		return false, e.r.size // no data from here to the end of the file
	case d > abs:
		return false, min(d-e.r.off, e.r.size)
	}
	h, err := nextHole(e.r.f, abs)
	if err != nil || h <= abs {
		e.noSeek = true
		return true, e.r.size
	}
	return true, min(h-e.r.off, e.r.size)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// sparseWriter writes what it is given at consecutive offsets of w,
// skipping whole 4 KiB blocks of zeros (the disk image is sparse and
// already zero there).
type sparseWriter struct {
	w   io.WriterAt
	off int64
}

func (s *sparseWriter) Write(p []byte) (int, error) {
	const blk = 4096
	start := -1
	flush := func(end int) error {
		if start >= 0 {
			if _, err := s.w.WriteAt(p[start:end], s.off+int64(start)); err != nil {
				return err
			}
			start = -1
		}
		return nil
	}
	for i := 0; i < len(p); i += blk {
		end := min(i+blk, len(p))
		if isZero(p[i:end]) {
			if err := flush(i); err != nil {
				return 0, err
			}
		} else if start < 0 {
			start = i
		}
	}
	if err := flush(len(p)); err != nil {
		return 0, err
	}
	s.off += int64(len(p))
	return len(p), nil
}

// isZero reports whether b is all zeros (memequal against zeroChunk is
// many times faster than a loop).
// WriteZeros skips n bytes: the disk image is already zero there.
func (s *sparseWriter) WriteZeros(n int64) error {
	s.off += n
	return nil
}

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroChunk))
		if !bytes.Equal(b[:n], zeroChunk[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// copyInput copies an input file (a regular file only: a FIFO is refused
// without blocking) to dst and returns its sha256 and size.
func copyInput(ctx context.Context, what, src, dst string) ([]byte, int64, error) {
	in, err := safefile.Open(src, os.O_RDONLY, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", what, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, 0, err
	}
	defer out.Close()
	h := sha256.New()
	n, err := copyCtx(ctx, io.MultiWriter(out, h), in, make([]byte, 1<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("%s %s: %w", what, src, err)
	}
	if n == 0 {
		return nil, 0, fmt.Errorf("%s %s is empty", what, src)
	}
	return h.Sum(nil), n, out.Close()
}

func writeSynced(p string, data []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDirFiles fsyncs every file in dir, then dir.
func syncDirFiles(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("syncing %s: %w", e.Name(), err)
		}
	}
	return atomicfile.SyncDir(dir)
}
