package vmtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/testutil"
)

// Test parameters.
const (
	variant = "vmtest"
	arch    = "x86_64"
	// diskSize gives ROOT partitions of 61 MiB (the unified plan: DATA at
	// the end takes a sixteenth): room for the test's root
	// file system (updog and the guest's init) and quick to write under
	// emulation.
	diskSize = "352MiB"
	// sourceDateEpoch makes the builds reproducible.
	sourceDateEpoch = "1767225600"
	// flipOffset is the byte of a root image the corruption tests flip:
	// in the ext4 superblock (block 0), which every mount reads.
	flipOffset = 1024 + 0x78
)

// lab is everything the phases share: tools, the kernel, the binaries,
// the signing keys and the releases.
type lab struct {
	t         *testing.T
	dir       string // scratch (t.TempDir())
	artifacts string // kept after the test: consoles, protocol logs
	bin       string
	kernel    string // vmlinuz
	modules   string // lib/modules/<version>
	initrd    string // bootsel's initramfs
	qemu      string
	mke2fs    string
	keys      []string
	root      string // root.json
	// buildArgs are added to every imgbuild build (TestVMUEFI's --uefi).
	buildArgs []string
}

func (l *lab) run(name string, args ...string) string {
	l.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = l.dir
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH="+sourceDateEpoch)
	out, err := cmd.CombinedOutput()
	if err != nil {
		l.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newLab checks the tools, fetches the kernel, builds the binaries and
// makes the signing keys and the trusted root.
func newLab(t *testing.T) *lab {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		testutil.Missing(t, "the VM test runs on linux/amd64 (this is %s/%s)", runtime.GOOS, runtime.GOARCH)
	}
	l := &lab{t: t, dir: t.TempDir()}
	l.qemu = testutil.Tool(t, "qemu-system-x86_64")
	l.mke2fs = testutil.Tool(t, "mke2fs")
	testutil.Tool(t, "apt-cache")
	testutil.Tool(t, "apt-get")
	testutil.Tool(t, "dpkg-deb")
	l.artifacts = os.Getenv("UPDOG_VM_ARTIFACTS")
	if l.artifacts == "" {
		l.artifacts = filepath.Join(os.TempDir(), "updog-vmtest", time.Now().Format("20060102-150405"))
	}
	if err := os.MkdirAll(l.artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("consoles and protocol logs are kept in %s", l.artifacts)
	l.fetchKernel()
	l.buildBinaries()
	l.initrd = filepath.Join(l.dir, "initrd.img")
	out := l.run(filepath.Join(l.bin, "bootsel"), "mkinitramfs", "--modules", l.modules, "--out", l.initrd)
	t.Logf("%s", strings.TrimSpace(out))
	l.makeKeys()
	return l
}

// fetchKernel gets Debian's kernel package, the one linux-image-amd64
// depends on, with apt-get download, into a cache kept between runs
// ($UPDOG_VM_CACHE, else the user's cache directory), and unpacks it.
func (l *lab) fetchKernel() {
	t := l.t
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").CombinedOutput()
	if err != nil {
		testutil.Missing(t, "apt-cache depends linux-image-amd64: %v\n%s", err, out)
	}
	pkg := ""
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
			pkg = f[1]
			break
		}
	}
	if pkg == "" {
		testutil.Missing(t, "apt-cache depends linux-image-amd64 names no linux-image package:\n%s", out)
	}
	cache := os.Getenv("UPDOG_VM_CACHE")
	if cache == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			c = os.TempDir()
		}
		cache = filepath.Join(c, "updog-vmtest")
	}
	unpacked := filepath.Join(cache, pkg)
	if _, err := os.Stat(filepath.Join(unpacked, ".done")); err != nil {
		if err := os.MkdirAll(cache, 0o755); err != nil {
			t.Fatal(err)
		}
		debs, _ := filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
		if len(debs) == 0 {
			cmd := exec.Command("apt-get", "download", pkg)
			cmd.Dir = cache
			if out, err := cmd.CombinedOutput(); err != nil {
				testutil.Missing(t, "apt-get download %s: %v\n%s", pkg, err, out)
			}
			debs, _ = filepath.Glob(filepath.Join(cache, pkg+"_*.deb"))
		}
		if len(debs) == 0 {
			t.Fatalf("apt-get download %s left no .deb in %s", pkg, cache)
		}
		os.RemoveAll(unpacked)
		if out, err := exec.Command("dpkg-deb", "-x", debs[0], unpacked).CombinedOutput(); err != nil {
			t.Fatalf("dpkg-deb -x %s: %v\n%s", debs[0], err, out)
		}
		os.WriteFile(filepath.Join(unpacked, ".done"), nil, 0o644)
	}
	ks, _ := filepath.Glob(filepath.Join(unpacked, "boot", "vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(unpacked, "lib", "modules", "*"))
	if len(ks) != 1 || len(mods) != 1 {
		t.Fatalf("%s: want one boot/vmlinuz-* and one lib/modules/*, found %v and %v", unpacked, ks, mods)
	}
	l.kernel, l.modules = ks[0], mods[0]
	t.Logf("kernel: %s (package %s)", l.kernel, pkg)
}

// buildBinaries builds the commands (static, as the guest needs them).
func (l *lab) buildBinaries() {
	l.bin = filepath.Join(l.dir, "bin")
	for pkg, name := range map[string]string{"./cmd/bootsel": "bootsel", "./cmd/updog": "updog", "./cmd/imgbuild": "imgbuild",
		"./cmd/tuftool": "tuftool", "./cmd/updata": "updata", "./vmtest/guestinit": "guestinit"} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", filepath.Join(l.bin, name), pkg)
		cmd.Dir = testutil.ProjectRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			l.t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
}

func (l *lab) tool(name string) string { return filepath.Join(l.bin, name) }

// makeKeys makes one ed25519 key per role and a signed root.json, as the
// demo does.
func (l *lab) makeKeys() {
	l.root = filepath.Join(l.dir, "root.json")
	l.run(l.tool("tuftool"), "root", "init", l.root, "--expires", "in 52 weeks")
	for _, role := range []string{"root", "targets", "snapshot", "timestamp"} {
		k := filepath.Join(l.dir, "keys", role+".pem")
		os.MkdirAll(filepath.Dir(k), 0o700)
		l.run(l.tool("tuftool"), "gen-key", "--type", "ed25519", "--out", k)
		l.run(l.tool("tuftool"), "root", "add-key", l.root, "-k", k, "--role", role)
		l.keys = append(l.keys, "-k", k)
	}
	l.run(l.tool("tuftool"), "root", "sign", l.root, "-k", filepath.Join(l.dir, "keys", "root.pem"))
}

// release is a built release.
type release struct {
	version string
	dir     string // imgbuild's output
	image   string // the disk image ("" with --no-disk)
}

// buildRelease builds a release of the test image: the guest's init,
// updog, its configuration (the repository on the second disk), the
// trusted root, os-release, and a health check that passes when healthy.
func (l *lab) buildRelease(version, name string, healthy, disk bool) release {
	t := l.t
	root := filepath.Join(l.dir, "rootfs-"+name)
	for _, d := range []string{"sbin", "usr/bin", "etc/updog/health.d", "etc/vmtest", "usr/share/updog", "proc", "sys", "dev", "run", "tmp", "var", "mnt/usb"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(t, l.tool("guestinit"), filepath.Join(root, "sbin/init"), 0o755)
	copyFile(t, l.tool("updog"), filepath.Join(root, "usr/bin/updog"), 0o755)
	copyFile(t, l.root, filepath.Join(root, "usr/share/updog/root.json"), 0o644)
	os.Symlink("/sbin/init", filepath.Join(root, "etc/updog/health.d/10-vmtest"))
	health := "ok\n"
	if !healthy {
		health = "fail: release " + name + " is built to fail its health check\n"
	}
	write(t, filepath.Join(root, "etc/vmtest/health"), health)
	write(t, filepath.Join(root, "etc/os-release"), fmt.Sprintf("NAME=updog-vmtest\nID=updog\nVARIANT_ID=%s\nVERSION_ID=%s\nPRETTY_NAME=\"updog VM test %s (%s)\"\n", variant, version, version, name))
	write(t, filepath.Join(root, "etc/updog.toml"), `# The repository is on the second disk, the "USB stick", mounted on /mnt/usb.
metadata_base_url = "/mnt/usb/repo/metadata"
targets_base_url = "/mnt/usb/repo/targets"
seed = 0
ignore_waves = true
`)
	r := release{version: version, dir: filepath.Join(l.dir, "build-"+name)}
	args := []string{"build", "--kernel", l.kernel, "--initrd", l.initrd, "--rootfs", root, "--variant", variant, "--arch", arch,
		"--version", version, "--size", diskSize, "--cmdline", "console=ttyS0 quiet", "--out", r.dir}
	args = append(args, l.buildArgs...)
	if !disk {
		args = append(args, "--no-disk")
	} else {
		r.image = filepath.Join(r.dir, fmt.Sprintf("updog-%s-%s-%s.img", variant, arch, version))
	}
	l.run(l.tool("imgbuild"), args...)
	return r
}

// corruptRoot flips one byte of a release's root image after its verity
// tree was made, and recompresses it: the artifact is what the publisher
// signs, so only the dm-verity check on the host can catch it.
func (l *lab) corruptRoot(r release) {
	t := l.t
	relPath := filepath.Join(r.dir, "release.json")
	var rel map[string]any
	raw, err := os.ReadFile(relPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &rel); err != nil {
		t.Fatal(err)
	}
	rootArt := rel["images"].(map[string]any)["root"].(map[string]any)
	art := filepath.Join(r.dir, rootArt["target"].(string))
	in, err := os.Open(art)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(dec)
	dec.Close()
	in.Close()
	if err != nil {
		t.Fatal(err)
	}
	data[flipOffset] ^= 0xff
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf)
	enc.Write(data)
	enc.Close()
	write(t, art, buf.String())
	sum := sha256.Sum256(buf.Bytes())
	rootArt["length"], rootArt["sha256"] = buf.Len(), hex.EncodeToString(sum[:])
	out, _ := json.MarshalIndent(rel, "", "  ")
	write(t, relPath, string(out))
}

// repository publishes releases: a manifest holding them and their
// artifacts, signed; on top of base (a repository whose metadata the
// guest already trusts, which `tuftool update` continues) when it is set.
func (l *lab) repository(name, base string, rels ...release) string {
	t := l.t
	targets := filepath.Join(l.dir, "targets-"+name)
	os.MkdirAll(targets, 0o755)
	manifest := filepath.Join(targets, "manifest.json")
	l.run(l.tool("updata"), "init", manifest)
	for _, r := range rels {
		l.run(l.tool("updata"), "add-update", manifest, "--from-release", filepath.Join(r.dir, "release.json"))
		arts, _ := filepath.Glob(filepath.Join(r.dir, "*.zst"))
		for _, a := range arts {
			copyFile(t, a, filepath.Join(targets, filepath.Base(a)), 0o644)
		}
	}
	out := filepath.Join(l.dir, "repo-"+name)
	if base == "" {
		l.run(l.tool("tuftool"), append(append([]string{"create", "--root", l.root}, l.keys...), "--add-targets", targets, "--outdir", out)...)
	} else {
		l.run(l.tool("tuftool"), append(append([]string{"update", "--root", l.root}, l.keys...),
			"--metadata-url", filepath.Join(base, "metadata"), "--add-targets", targets, "--outdir", out)...)
	}
	return out
}

// usbDisk makes the second disk: an ext4 image holding the repository and
// the plan.
func (l *lab) usbDisk(name, repo string, p any) string {
	t := l.t
	dir := filepath.Join(l.dir, "usb-"+name)
	copyTree(t, repo, filepath.Join(dir, "repo"))
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "plan.json"), string(b))
	img := filepath.Join(l.dir, "usb-"+name+".img")
	l.run(l.mke2fs, "-q", "-F", "-t", "ext4", "-L", "USB", "-d", dir, img, fmt.Sprintf("%dk", (treeSize(t, dir)*2+16<<20)/1024))
	return img
}

// hostDisk copies a release's disk image and formats its PRIVATE
// partition (ext4, for /var: updog's state) as a first boot would.
func (l *lab) hostDisk(r release, name string) string {
	t := l.t
	disk := filepath.Join(l.dir, name)
	l.run("cp", "--sparse=always", r.image, disk)
	d, err := blockdev.Open(disk, blockdev.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := gptprio.Read(d)
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	lay, err := gptprio.FindLayout(tbl)
	if err != nil || lay.Private == 0 {
		t.Fatalf("%s: no PRIVATE partition: %v", disk, err)
	}
	p := tbl.Partition(lay.Private)
	off := int64(p.FirstLBA) * int64(tbl.SectorSize)
	size := int64(p.Sectors()) * int64(tbl.SectorSize)
	l.run(l.mke2fs, "-q", "-F", "-t", "ext4", "-L", "PRIVATE", "-E", fmt.Sprintf("offset=%d", off), disk, fmt.Sprintf("%dk", size/1024))
	return disk
}

// snapshot copies a disk image (sparse).
func (l *lab) snapshot(disk, name string) string {
	out := filepath.Join(l.dir, name)
	l.run("cp", "--sparse=always", disk, out)
	return out
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies the regular files and directories under src (following
// the hard links tuftool update makes).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case fi.IsDir():
			return os.MkdirAll(target, 0o755)
		case fi.Mode().IsRegular():
			copyFile(t, p, target, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func treeSize(t *testing.T, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
