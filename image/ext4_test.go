package image

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
)

// writeTree makes a small root file system tree in dir: files, a
// directory, a symbolic link, a hard link, a FIFO, an empty file.
func writeTree(t testing.TB, dir string) {
	t.Helper()
	for name, body := range map[string]string{
		"etc/hostname":           "testhost\n",
		"etc/os-release":         "VARIANT_ID=test\nVERSION_ID=1.0.0\n",
		"usr/bin/tool":           strings.Repeat("#!/bin/sh\necho tool\n", 100),
		"usr/share/doc/big":      strings.Repeat("documentation ", 40000),
		"var/empty-file":         "",
		"usr/lib/deep/er/and/on": "deep\n",
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/usr/bin/tool", filepath.Join(dir, "usr/bin/alias")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "etc/hostname"), filepath.Join(dir, "etc/hostname.link")); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("mkfifo", filepath.Join(dir, "var/fifo")).Run(); err != nil {
		t.Fatal(err)
	}
}

// mkTestExt4 makes an ext4 image of dir as a build does, and returns its
// path.
func mkTestExt4(t testing.TB, dir string, size int64) string {
	t.Helper()
	tool := testutil.Tool(t, "mke2fs")
	conf := filepath.Join(t.TempDir(), "mke2fs.conf")
	if err := os.WriteFile(conf, []byte(mke2fsConf), 0o644); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "fs.ext4")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	seed := idSeed("test")
	err := mkExt4(context.Background(), ext4Job{tool: tool, conf: conf, src: dir, target: img, size: size,
		uuid: uuidFor(seed, "u"), hashSeed: uuidFor(seed, "h"), epoch: 1700000000})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func openRW(t testing.TB, p string) (*os.File, region) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	return f, region{f: f, size: fi.Size()}
}

// TestNormalizeExt4: after normalizing, every inode has the given times,
// e2fsck finds nothing wrong (so the checksums were recomputed right), and
// two trees that differ only in their times give the same image.
func TestNormalizeExt4(t *testing.T) {
	e2fsck := testutil.Tool(t, "e2fsck")
	debugfs := testutil.Tool(t, "debugfs")
	var imgs, raw []string
	for i, mtime := range []time.Time{time.Unix(1000000000, 0), time.Now()} {
		dir := t.TempDir()
		writeTree(t, dir)
		filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode()&os.ModeSymlink == 0 {
				os.Chtimes(p, mtime, mtime.Add(time.Duration(i)*time.Hour))
			}
			return nil
		})
		img := mkTestExt4(t, dir, 16<<20)
		b, _ := os.ReadFile(img)
		raw = append(raw, string(b))
		_, r := openRW(t, img)
		st, err := NormalizeExt4(context.Background(), r, Ext4Options{Time: 1700000000})
		if err != nil {
			t.Fatal(err)
		}
		if st.Inodes < 15 || st.BlockSize != 4096 || st.Blocks != 4096 || st.UsedBytes() <= 0 {
			t.Errorf("stats %+v", st)
		}
		if out, err := exec.Command(e2fsck, "-fn", img).CombinedOutput(); err != nil {
			t.Fatalf("e2fsck after normalizing: %v\n%s", err, out)
		}
		out, _ := exec.Command(debugfs, "-R", "stat /usr/share/doc/big", img).CombinedOutput()
		for _, field := range []string{"ctime", "atime", "mtime", "crtime"} {
			if !strings.Contains(string(out), field+": 0x6553f100:00000000") {
				t.Errorf("%s not normalized:\n%s", field, out)
			}
		}
		imgs = append(imgs, img)
	}
	if raw[0] == raw[1] {
		t.Error("mke2fs -d gave the same image for trees with different times: this test shows nothing")
	}
	a, _ := os.ReadFile(imgs[0])
	b, _ := os.ReadFile(imgs[1])
	if string(a) != string(b) {
		t.Error("two trees differing only in their times gave different images")
	}
}

func TestNormalizeExt4AllRoot(t *testing.T) {
	debugfs := testutil.Tool(t, "debugfs")
	dir := t.TempDir()
	writeTree(t, dir)
	if err := os.Lchown(filepath.Join(dir, "etc/os-release"), 1234, 5678); err != nil {
		t.Skipf("cannot chown (not root?): %v", err)
	}
	img := mkTestExt4(t, dir, 16<<20)
	out, _ := exec.Command(debugfs, "-R", "stat /etc/os-release", img).CombinedOutput()
	if !strings.Contains(string(out), "User:  1234   Group:  5678") {
		t.Fatalf("mke2fs did not copy the owner:\n%s", out)
	}
	_, r := openRW(t, img)
	if _, err := NormalizeExt4(context.Background(), r, Ext4Options{Time: 5, AllRoot: true}); err != nil {
		t.Fatal(err)
	}
	out, _ = exec.Command(debugfs, "-R", "stat /etc/os-release", img).CombinedOutput()
	if !strings.Contains(string(out), "User:     0   Group:     0") {
		t.Fatalf("not made root's:\n%s", out)
	}
}

// TestHostileNormalizeExt4Corrupt: an inode whose checksum does not match
// is refused (never rewritten with a fresh checksum over damaged bytes),
// and so are bytes that are not ext4.
func TestHostileNormalizeExt4Corrupt(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir)
	img := mkTestExt4(t, dir, 16<<20)
	f, r := openRW(t, img)
	// Find the inode table of group 0 and damage inode 12 (the first file).
	sb := make([]byte, 1024)
	f.ReadAt(sb, 1024)
	gd := make([]byte, 64)
	f.ReadAt(gd, 4096)
	table := int64(binary.LittleEndian.Uint32(gd[8:])) * 4096
	f.WriteAt([]byte{0xAA}, table+11*256+0x20)
	if _, err := NormalizeExt4(context.Background(), r, Ext4Options{Time: 1}); !errors.Is(err, ErrExt4) || !strings.Contains(err.Error(), "inode 12") {
		t.Fatalf("a damaged inode: %v", err)
	}
	for name, b := range map[string][]byte{"zeros": make([]byte, 1<<20), "short": make([]byte, 1500)} {
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, b, 0o644)
		_, r := openRW(t, p)
		if _, err := NormalizeExt4(context.Background(), r, Ext4Options{}); !errors.Is(err, ErrExt4) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// memFS is an in-memory file system image for the fuzz target.
type memFS []byte

func (m memFS) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(m)) {
		return 0, errors.New("out of range")
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, errors.New("short")
	}
	return n, nil
}

func (m memFS) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("out of range")
	}
	return copy(m[off:], p), nil
}

// FuzzNormalizeExt4: whatever the bytes, NormalizeExt4 returns (an error or
// not) without panicking or writing outside the image.
func FuzzNormalizeExt4(f *testing.F) {
	if _, err := exec.LookPath("mke2fs"); err == nil || fileExists("/usr/sbin/mke2fs") || fileExists("/sbin/mke2fs") {
		dir := f.TempDir()
		writeTree(f, dir)
		img, err := os.ReadFile(mkTestExt4(f, dir, 1<<20))
		if err == nil {
			f.Add(img[:256<<10])
		}
	}
	f.Add(make([]byte, 4096))
	f.Fuzz(func(t *testing.T, b []byte) {
		NormalizeExt4(context.Background(), memFS(b), Ext4Options{Time: 7, AllRoot: true})
	})
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
