package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/verity"
)

// testDiskSize is a small disk that leaves the root a useful size: with
// the unified plan's DATA (272/16 = 17 MiB), (272 - 207 - 17) / 2 = 24 MiB
// per ROOT partition.
const testDiskSize = 272 << 20

// testInputs writes a kernel, an initrd and a root file system tree into
// dir and returns build options for them, the output at dir/out.
func testInputs(t testing.TB, dir string) BuildOptions {
	t.Helper()
	testutil.Tool(t, "mke2fs")
	kernel := filepath.Join(dir, "vmlinuz")
	k := bytes.Repeat([]byte("not really a kernel "), 50000)
	if err := os.WriteFile(kernel, k, 0o644); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd")
	if err := os.WriteFile(initrd, []byte("an initrd"), 0o644); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	writeTree(t, rootfs)
	return BuildOptions{Kernel: kernel, Initrd: initrd, RootFS: rootfs, Variant: "test", Arch: "x86_64", Version: "1.0.0",
		DiskSize: testDiskSize, SourceDateEpoch: 1700000000, Out: filepath.Join(dir, "out"), Cmdline: "console=ttyS0"}
}

// partition returns the bytes of the named partition of a disk image.
func partition(t *testing.T, disk, name string) []byte {
	t.Helper()
	d, err := blockdev.Open(disk, blockdev.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := gptprio.Read(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tb.Used() {
		if p.Name() == name {
			b := make([]byte, p.Sectors()*512)
			if _, err := d.ReadAt(b, int64(p.FirstLBA)*512); err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no partition %s", name)
	return nil
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBuild builds a release and checks every part of it against the
// tools that will read it: the GPT and set A's bits, each artifact against
// its partition, the verity tree (ours, and veritysetup's when installed),
// e2fsck on both file systems, boot.conf, fsck.fat on the ESP.
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	res, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Release
	disk := filepath.Join(o.Out, r.Disk.File)
	wantFiles := []string{"release.json", r.Disk.File, r.Images.Boot.Target, r.Images.Root.Target, r.Images.Hash.Target,
		r.Delta.Seekable.Target, r.Delta.Index.Target}
	ents, _ := os.ReadDir(o.Out)
	if len(ents) != len(wantFiles) {
		t.Errorf("files %v, want %v", ents, wantFiles)
	}
	if r.Images.Root.Target != "updog-test-x86_64-1.0.0-root.ext4.zst" || r.Images.Hash.Target != "updog-test-x86_64-1.0.0-root.verity.zst" ||
		r.Images.Boot.Target != "updog-test-x86_64-1.0.0-boot.ext4.zst" || r.Disk.File != "updog-test-x86_64-1.0.0.img" {
		t.Errorf("names %+v %+v", r.Images, r.Disk)
	}
	js, err := safefile.ReadFile(filepath.Join(o.Out, ReleaseFileName), MaxReleaseFile)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := ParseRelease(js); err != nil || back.Verity != r.Verity {
		t.Fatalf("release.json: %v %+v", err, back)
	}
	if r.Verity.Salt != hex.EncodeToString(DefaultSalt("test")) {
		t.Errorf("salt %s is not the variant's", r.Verity.Salt)
	}

	// The table: set A priority 1, successful; B empty.
	d, err := blockdev.Open(disk, blockdev.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	tb, err := gptprio.Read(d)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	l, err := gptprio.FindLayout(tb)
	if err != nil {
		t.Fatal(err)
	}
	if a := gptprio.Attrs(tb, l, gptprio.SetA); a.Priority() != 1 || !a.Successful() {
		t.Errorf("set A %v", a)
	}
	if b := gptprio.Attrs(tb, l, gptprio.SetB); b.Priority() != 0 {
		t.Errorf("set B %v", b)
	}
	sgdisk := testutil.Tool(t, "sgdisk")
	if out, _ := exec.Command(sgdisk, "-v", disk).CombinedOutput(); !strings.Contains(string(out), "No problems found") {
		t.Errorf("sgdisk -v: %s", out)
	}
	// The unified plan's DATA partition ends the disk: Bottlerocket's type
	// and preferred unique GUID, named, a sixteenth of the disk, ending
	// 1 MiB before the end (room for the backup GPT), as sgdisk reads it.
	used := tb.Used()
	data := used[len(used)-1]
	if data.Type != TypeData || data.Name() != "BOTTLEROCKET-DATA" || data.ID != DataPartitionID ||
		int64(data.LastLBA+1)*512 != testDiskSize-1<<20 || int64(data.Sectors())*512 < testDiskSize/16 ||
		int64(data.Sectors())*512 > testDiskSize/16+1<<20 || data.Number != 13 || tb.Partition(12).Name() != "BOTTLEROCKET-PRIVATE" {
		t.Errorf("the last partition is %d %q type %v GUID %v, LBA %d-%d", data.Number, data.Name(), data.Type, data.ID, data.FirstLBA, data.LastLBA)
	}
	info, err := exec.Command(sgdisk, "-i", "13", disk).CombinedOutput()
	if err != nil {
		t.Fatalf("sgdisk -i 13: %v\n%s", err, info)
	}
	for _, want := range []string{"Partition GUID code: 626F7474-6C65-6474-6861-726D61726B73", "Partition unique GUID: 5B94E8DF-28B8-485C-9D19-362263B5944C",
		"Partition name: 'BOTTLEROCKET-DATA'", "Partition size: " + itoa(uint64(data.Sectors())) + " sectors"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("sgdisk -i 13 lacks %q:\n%s", want, info)
		}
	}
	if rel := r.Partitions[len(r.Partitions)-1]; rel.Name != "BOTTLEROCKET-DATA" || rel.Bytes != int64(data.Sectors())*512 {
		t.Errorf("release.json's last partition: %+v", rel)
	}

	// Each artifact, decompressed, is its partition's content, and has the
	// length and sha256 release.json says.
	art := map[string][]byte{}
	for kind, a := range map[string]Artifact{"boot": r.Images.Boot, "root": r.Images.Root, "hash": r.Images.Hash} {
		b, err := os.ReadFile(filepath.Join(o.Out, a.Target))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); int64(len(b)) != a.Length || hex.EncodeToString(sum[:]) != a.SHA256 {
			t.Errorf("%s: length %d sha256 %x, release.json says %d %s", kind, len(b), sum, a.Length, a.SHA256)
		}
		art[kind] = decompress(t, r.Compression, b)
		if int64(len(art[kind])) != a.Size {
			t.Errorf("%s: %d bytes, release.json says %d", kind, len(art[kind]), a.Size)
		}
	}
	if !bytes.Equal(art["boot"], partition(t, disk, "BOTTLEROCKET-BOOT-A")) {
		t.Error("the boot artifact is not BOOT-A")
	}
	if !bytes.Equal(art["root"], partition(t, disk, "BOTTLEROCKET-ROOT-A")) {
		t.Error("the root artifact is not ROOT-A")
	}
	if h := partition(t, disk, "BOTTLEROCKET-HASH-A"); !bytes.Equal(art["hash"], h[:len(art["hash"])]) {
		t.Error("the hash artifact is not at the start of HASH-A")
	}

	// The tree verifies the root, with the parameters in its superblock.
	sb, err := verity.ReadSuperblock(bytes.NewReader(art["hash"]), 0)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := hex.DecodeString(r.Verity.RootHash)
	if err := verity.Verify(context.Background(), bytes.NewReader(art["root"]), int64(len(art["root"])), bytes.NewReader(art["hash"]), sb.Params(0), root); err != nil {
		t.Fatalf("verity: %v", err)
	}
	rootImg, hashImg, bootImg := writeTemp(t, art["root"]), writeTemp(t, art["hash"]), writeTemp(t, art["boot"])
	if out, err := exec.Command(testutil.Tool(t, "veritysetup"), "verify", rootImg, hashImg, r.Verity.RootHash).CombinedOutput(); err != nil {
		t.Errorf("veritysetup verify: %v\n%s", err, out)
	}

	// Both file systems are clean; the root holds the tree, the boot
	// partition the kernel, the initrd and boot.conf.
	e2fsck, debugfs := testutil.Tool(t, "e2fsck"), testutil.Tool(t, "debugfs")
	for _, img := range []string{rootImg, bootImg} {
		if out, err := exec.Command(e2fsck, "-fn", img).CombinedOutput(); err != nil {
			t.Errorf("e2fsck: %v\n%s", err, out)
		}
	}
	cat := func(img, p string) string {
		out, err := exec.Command(debugfs, "-R", "cat "+p, img).Output()
		if err != nil {
			t.Fatalf("debugfs cat %s: %v", p, err)
		}
		return string(out)
	}
	if got := cat(rootImg, "/etc/hostname"); got != "testhost\n" {
		t.Errorf("/etc/hostname in the root: %q", got)
	}
	if k, _ := os.ReadFile(o.Kernel); cat(bootImg, "/vmlinuz") != string(k) || cat(bootImg, "/initrd.img") != "an initrd" {
		t.Error("the boot file system does not hold the kernel and the initrd")
	}
	bc, err := ParseBootConfig([]byte(cat(bootImg, "/boot.conf")))
	if err != nil {
		t.Fatal(err)
	}
	p0 := tb.Partition(l.Sets[0].Boot).ID.String()
	cl := bc.KernelCmdline(p0)
	for _, want := range []string{"root=/dev/dm-0", "rootfstype=ext4", "console=ttyS0",
		`dm-mod.create="root,,,ro,0 ` + itoa(r.Verity.DataBlocks*8) + " verity 1 PARTUUID=" + p0 + "/PARTNROFF=1 PARTUUID=" + p0 + "/PARTNROFF=2 4096 4096 " +
			itoa(r.Verity.DataBlocks) + " 1 sha256 " + r.Verity.RootHash + " " + r.Verity.Salt + ` 2 restart_on_corruption ignore_zero_blocks"`} {
		if !strings.Contains(cl, want) {
			t.Errorf("kernel command line %q lacks %q", cl, want)
		}
	}
	if bc.Version != "1.0.0" || bc.RootHash != r.Verity.RootHash || bc.Initrd != BootInitrdName {
		t.Errorf("boot.conf %+v", bc)
	}

	// The ESP is a FAT file system.
	if out, err := exec.Command(testutil.Tool(t, "fsck.fat"), "-n", writeTemp(t, partition(t, disk, "EFI-SYSTEM"))).CombinedOutput(); err != nil {
		t.Errorf("fsck.fat: %v\n%s", err, out)
	}
	// Nothing but the output is left beside it.
	if ents, _ := os.ReadDir(dir); len(ents) != 4 {
		t.Errorf("left beside the output: %v", ents)
	}
}

func itoa(n uint64) string { return strings.TrimSpace(strings.Repeat(" ", 0) + uintString(n)) }

func uintString(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// copyTree copies a tree (files, links, FIFOs) with fresh times.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	out, err := exec.Command("cp", "-a", "--no-preserve=timestamps", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
}

// TestBuildReproducible builds twice from copies of the inputs whose times
// differ, and compares every output byte for byte; for each root file
// system type, and with each compression.
func TestBuildReproducible(t *testing.T) {
	for _, c := range []struct {
		fs   string
		comp Compression
		tool string
	}{{FSExt4, CompressZstd, ""}, {FSErofs, CompressLZ4, "mkfs.erofs"}, {FSSquashfs, CompressZstd, "mksquashfs"}, {FSExt4, CompressNone, ""}} {
		t.Run(c.fs+"-"+string(c.comp), func(t *testing.T) {
			if c.tool != "" {
				testutil.Tool(t, c.tool)
			}
			base := t.TempDir()
			os.MkdirAll(filepath.Join(base, "inputs"), 0o755)
			o := testInputs(t, filepath.Join(base, "inputs"))
			var outs []string
			for i := 0; i < 2; i++ {
				in := filepath.Join(base, "copy"+itoa(uint64(i)))
				if i == 0 {
					os.Rename(filepath.Join(base, "inputs"), in)
				} else {
					copyTree(t, filepath.Join(base, "copy0"), in)
					// Other modification and access times (and, being a copy,
					// other change times and inode numbers).
					old := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
					filepath.Walk(in, func(p string, fi os.FileInfo, err error) error {
						if err == nil && fi.Mode()&os.ModeSymlink == 0 {
							os.Chtimes(p, old, old)
						}
						return nil
					})
				}
				oi := o
				oi.Kernel, oi.Initrd, oi.RootFS = filepath.Join(in, "vmlinuz"), filepath.Join(in, "initrd"), filepath.Join(in, "rootfs")
				oi.Out, oi.RootFSType, oi.Compression = filepath.Join(base, "out"+itoa(uint64(i))), c.fs, c.comp
				oi.NoDisk = c.comp == CompressNone
				if _, err := Build(context.Background(), oi); err != nil {
					t.Fatal(err)
				}
				outs = append(outs, oi.Out)
			}
			if n := len(listing(t, outs[0])); n < 4 {
				t.Fatalf("only %d files", n)
			}
			for _, d := range outputDiffs(t, outs[0], outs[1]) {
				t.Error(d)
			}
		})
	}
}

// listing returns "name size mode" for each entry of dir, in name order.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d %v", e.Name(), fi.Size(), fi.Mode()))
	}
	return out
}

// outputDiffs says how two build outputs differ: their listings (names,
// sizes, modes: a file only one build made counts), then the bytes of
// each file.
func outputDiffs(t *testing.T, a, b string) []string {
	t.Helper()
	var diffs []string
	la, lb := listing(t, a), listing(t, b)
	if strings.Join(la, "\n") != strings.Join(lb, "\n") {
		diffs = append(diffs, fmt.Sprintf("the two builds made different files:\n  %s\nand\n  %s", strings.Join(la, "\n  "), strings.Join(lb, "\n  ")))
	}
	ents, _ := os.ReadDir(a)
	for _, e := range ents {
		x, _ := os.ReadFile(filepath.Join(a, e.Name()))
		y, err := os.ReadFile(filepath.Join(b, e.Name()))
		if err != nil || !bytes.Equal(x, y) {
			diffs = append(diffs, fmt.Sprintf("%s differs between the two builds (%v)", e.Name(), err))
		}
	}
	return diffs
}

// TestOutputDiffs: the reproducibility check sees a file only the second
// build made, one of another size, and other bytes.
func TestOutputDiffs(t *testing.T) {
	mk := func(files map[string]string) string {
		d := t.TempDir()
		for n, body := range files {
			if err := os.WriteFile(filepath.Join(d, n), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	base := map[string]string{"a.img": "disk", "release.json": "{}"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for n, b := range base {
			if n != k {
				m[n] = b
			}
		}
		return m
	}
	a := mk(base)
	if d := outputDiffs(t, a, mk(base)); len(d) != 0 {
		t.Errorf("equal outputs: %v", d)
	}
	for name, b := range map[string]map[string]string{
		"extra file":  with("stray.tmp", "x"),
		"other size":  with("a.img", "disk!"),
		"other bytes": with("a.img", "DISK"),
	} {
		if d := outputDiffs(t, a, mk(b)); len(d) == 0 {
			t.Errorf("%s: no difference seen", name)
		}
	}
}

// nothingLeft checks that dir holds only the entries named.
func nothingLeft(t *testing.T, dir string, want ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s holds %v, want %v", dir, got, want)
	}
}

// TestBuildBadInput: each bad input is a clear error matching its sentinel,
// and leaves nothing beside the inputs.
func TestBuildBadInput(t *testing.T) {
	dir := t.TempDir()
	base := testInputs(t, dir)
	big := filepath.Join(dir, "big")
	os.Mkdir(big, 0o755)
	f, _ := os.Create(filepath.Join(big, "huge"))
	f.Truncate(100 << 20) // sparse, but 100 MiB of file to the file system
	f.Close()
	full := filepath.Join(dir, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	notDir := filepath.Join(dir, "notdir")
	os.WriteFile(notDir, []byte("x"), 0o644)
	os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644)
	f, _ = os.Create(filepath.Join(dir, "bigkernel"))
	f.Truncate(50 << 20)
	f.Close()
	badTar := filepath.Join(dir, "bad.tar")
	os.WriteFile(badTar, makeTarFile(t, entry{name: "../../etc/cron.d/x", body: "x"}), 0o644)
	for _, c := range []struct {
		name string
		edit func(o *BuildOptions)
		want error
		text string
	}{
		{"missing kernel", func(o *BuildOptions) { o.Kernel = filepath.Join(dir, "nope") }, fs.ErrNotExist, "kernel"},
		{"kernel is a directory", func(o *BuildOptions) { o.Kernel = dir }, safefile.ErrNotRegular, "kernel"},
		{"empty kernel", func(o *BuildOptions) { o.Kernel = filepath.Join(dir, "empty") }, nil, "empty"},
		{"missing rootfs", func(o *BuildOptions) { o.RootFS = filepath.Join(dir, "nope") }, fs.ErrNotExist, "root file system"},
		{"rootfs too big", func(o *BuildOptions) { o.RootFS = big }, ErrTooBig, "ROOT partition"},
		{"unknown compression", func(o *BuildOptions) { o.Compression = "gzip" }, ErrCompression, "gzip"},
		{"unknown fs", func(o *BuildOptions) { o.RootFSType = "btrfs" }, ErrOptions, "btrfs"},
		{"size too small", func(o *BuildOptions) { o.DiskSize = 200 << 20 }, ErrOptions, "too small"},
		{"size not sectors", func(o *BuildOptions) { o.DiskSize = testDiskSize + 1 }, ErrOptions, "sectors"},
		{"bad version", func(o *BuildOptions) { o.Version = "1.0" }, ErrOptions, "1.0"},
		{"bad variant", func(o *BuildOptions) { o.Variant = "a/b" }, ErrOptions, "variant"},
		{"output not empty", func(o *BuildOptions) { o.Out = full }, ErrOutput, "not empty"},
		{"output a file", func(o *BuildOptions) { o.Out = notDir }, ErrOutput, "not a directory"},
		{"output parent missing", func(o *BuildOptions) { o.Out = filepath.Join(dir, "no", "out") }, ErrOutput, "parent"},
		{"tarball with ..", func(o *BuildOptions) { o.RootFS = badTar }, ErrUnsafeTar, "../../etc/cron.d/x"},
		{"kernel too big", func(o *BuildOptions) { o.Kernel = filepath.Join(dir, "bigkernel") }, ErrTooBig, "BOOT partition"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.edit(&o)
			_, err := Build(context.Background(), o)
			if err == nil || c.want != nil && !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("got %v, want %v mentioning %q", err, c.want, c.text)
			}
			var tb *TooBigError
			if errors.As(err, &tb) && (tb.Need <= tb.Have || tb.Have == 0) {
				t.Errorf("too big: %+v does not name both sizes", tb)
			}
			nothingLeft(t, dir, "bad.tar", "big", "bigkernel", "empty", "full", "initrd", "notdir", "rootfs", "vmlinuz")
			nothingLeft(t, full, "x")
		})
	}
}

func makeTarFile(t *testing.T, ents ...entry) []byte { return makeTar(t, ents...) }

// TestBuildTarball builds from a gzip-compressed tarball of the tree and
// from the tree itself: same root file system (the tarball's files are
// root's, as the tree's are when the test runs as root).
func TestBuildTarball(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	tarball := filepath.Join(dir, "rootfs.tar.gz")
	if out, err := exec.Command("tar", "-C", o.RootFS, "--owner=0", "--group=0", "--numeric-owner", "-czf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	o.NoDisk = true
	ot := o
	ot.RootFS, ot.Out = tarball, filepath.Join(dir, "out-tar")
	rt, err := Build(context.Background(), ot)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: the tree's files are not root's, so the images differ in their owners")
	}
	rd, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if rt.Release.Verity.RootHash != rd.Release.Verity.RootHash {
		t.Error("the tarball and the tree gave different root file systems")
	}
}

// TestBuildCompactFS builds erofs and squashfs roots into a disk image and
// checks the image in ROOT-A is the artifact, and the tools read it.
func TestBuildCompactFS(t *testing.T) {
	for fsType, check := range map[string][]string{FSErofs: {"mkfs.erofs", "fsck.erofs"}, FSSquashfs: {"mksquashfs", "unsquashfs"}} {
		t.Run(fsType, func(t *testing.T) {
			testutil.Tool(t, check[0])
			dir := t.TempDir()
			o := testInputs(t, dir)
			o.RootFSType = fsType
			res, err := Build(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			r := res.Release
			b, _ := os.ReadFile(filepath.Join(o.Out, r.Images.Root.Target))
			root := decompress(t, r.Compression, b)
			if len(root)%4096 != 0 || !bytes.HasPrefix(partition(t, filepath.Join(o.Out, r.Disk.File), "BOTTLEROCKET-ROOT-A"), root) {
				t.Fatal("ROOT-A does not hold the root image")
			}
			if r.Verity.DataBlocks != uint64(len(root)/4096) {
				t.Errorf("%d data blocks for %d bytes", r.Verity.DataBlocks, len(root))
			}
			tool := testutil.Tool(t, check[1])
			args := []string{writeTemp(t, root)}
			if fsType == FSSquashfs {
				args = []string{"-l", args[0]}
			}
			if out, err := exec.Command(tool, args...).CombinedOutput(); err != nil || fsType == FSSquashfs && !strings.Contains(string(out), "etc/hostname") {
				t.Errorf("%s: %v\n%s", tool, err, out)
			}
		})
	}
}

// TestHostileBuildFIFOInputs: a FIFO where the kernel, the initrd or a
// tarball is expected is refused at once, without blocking.
func TestHostileBuildFIFOInputs(t *testing.T) {
	dir := t.TempDir()
	base := testInputs(t, dir)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, edit := range []func(o *BuildOptions){
		func(o *BuildOptions) { o.Kernel = fifo },
		func(o *BuildOptions) { o.Initrd = fifo },
		func(o *BuildOptions) { o.RootFS = fifo },
	} {
		o := base
		edit(&o)
		done := make(chan error, 1)
		go func() { _, err := Build(context.Background(), o); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, safefile.ErrNotRegular) {
				t.Errorf("a FIFO input: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Build blocked on a FIFO")
		}
		nothingLeft(t, dir, "fifo", "initrd", "rootfs", "vmlinuz")
	}
}

// stepHandler cancels a context when a log message starting with prefix
// is logged.
type stepHandler struct {
	slog.Handler
	prefix string
	cancel func()
	once   sync.Once
}

func (h *stepHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *stepHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.once.Do(h.cancel)
	}
	return nil
}

// TestHostileBuildCancelled: a build cancelled (SIGINT, SIGTERM) at each
// of its steps stops with the context's error and leaves nothing: no
// output directory, no temporary one.
func TestHostileBuildCancelled(t *testing.T) {
	dir := t.TempDir()
	base := testInputs(t, dir)
	for _, step := range []string{"", "making the root", "hashing and compressing", "making the boot"} {
		ctx, cancel := context.WithCancel(context.Background())
		o := base
		if step == "" {
			cancel()
		} else {
			o.Log = slog.New(&stepHandler{prefix: step, cancel: cancel})
		}
		_, err := Build(ctx, o)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled at %q: %v", step, err)
		}
		nothingLeft(t, dir, "initrd", "rootfs", "vmlinuz")
	}
}

// TestHostileBuildOutputFilledMeanwhile: if someone puts a file in the
// empty output directory during the build, the build fails rather than
// mixing with it, and removes its own files.
func TestHostileBuildOutputFilledMeanwhile(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	if err := os.Mkdir(o.Out, 0o755); err != nil {
		t.Fatal(err)
	}
	o.Log = slog.New(&stepHandler{prefix: "making the boot", cancel: func() { os.WriteFile(filepath.Join(o.Out, "intruder"), nil, 0o644) }})
	if _, err := Build(context.Background(), o); !errors.Is(err, ErrOutput) {
		t.Fatalf("%v", err)
	}
	nothingLeft(t, o.Out, "intruder")
	nothingLeft(t, dir, "initrd", "out", "rootfs", "vmlinuz")
}

// TestBuildRootTooBigAfterMkfs: a tree the size estimate lets through but
// the file system cannot hold (more files than inodes for ext4; an erofs
// image larger than ROOT) is the same clear error, naming both sizes.
func TestBuildRootTooBigAfterMkfs(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	many := filepath.Join(dir, "many")
	os.Mkdir(many, 0o755)
	for i := 0; i < 4000; i++ { // a 24 MiB ext4 has 1536 inodes
		os.WriteFile(filepath.Join(many, "f"+itoa(uint64(i))), nil, 0o644)
	}
	o.RootFS = many
	_, err := Build(context.Background(), o)
	var tb *TooBigError
	if !errors.As(err, &tb) || tb.Have != 24<<20 || tb.Need <= tb.Have || !strings.Contains(err.Error(), many) {
		t.Fatalf("too many files: %v", err)
	}
	nothingLeft(t, dir, "initrd", "many", "rootfs", "vmlinuz")
	testutil.Tool(t, "mkfs.erofs")
	big := filepath.Join(dir, "big")
	os.Mkdir(big, 0o755)
	f, _ := os.Create(filepath.Join(big, "random"))
	b := make([]byte, 1<<20)
	for i := 0; i < 30; i++ {
		for j := range b {
			b[j] = byte(i*7 + j*j>>3)
		}
		f.Write(b)
	}
	f.Close()
	o.RootFS, o.RootFSType = big, FSErofs
	if _, err := Build(context.Background(), o); !errors.As(err, &tb) || tb.Need <= 24<<20 || tb.Have != 24<<20 {
		t.Fatalf("erofs too big: %v", err)
	}
	nothingLeft(t, dir, "big", "initrd", "many", "rootfs", "vmlinuz")
}

// TestHostileBuildTwoAtOnce: two builds into the same output at once:
// exactly one wins, the other fails without touching its output, and no
// temporary directory is left.
func TestHostileBuildTwoAtOnce(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		oi := o
		oi.Version = []string{"1.0.0", "2.0.0"}[i]
		go func() { _, err := Build(context.Background(), oi); errs <- err }()
	}
	var failed []error
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) != 1 || !errors.Is(failed[0], ErrOutput) {
		t.Fatalf("errors %v: want exactly one ErrOutput", failed)
	}
	nothingLeft(t, dir, "initrd", "out", "rootfs", "vmlinuz")
	ents, _ := os.ReadDir(o.Out)
	if len(ents) != 7 {
		t.Errorf("the output holds %d files", len(ents))
	}
	js, _ := os.ReadFile(filepath.Join(o.Out, ReleaseFileName))
	r, err := ParseRelease(js)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != ReleaseFileName && !strings.Contains(e.Name(), "-"+r.Version) {
			t.Errorf("%s is not of release %s: the two builds mixed", e.Name(), r.Version)
		}
	}
}
