package blockdev

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestFileAndWindow(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(p, Options{SectorSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 8192 || d.SectorSize() != 4096 || d.IsBlockDevice() {
		t.Fatalf("size %d sector %d block %v", d.Size(), d.SectorSize(), d.IsBlockDevice())
	}
	w := Window(d, 4096, 1024)
	if _, err := w.WriteAt([]byte("hello"), 1020); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write across the window end: %v", err)
	}
	if _, err := w.WriteAt([]byte("hello"), 10); err != nil {
		t.Fatal(err)
	}
	if err := w.Sync(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	if _, err := d.ReadAt(b, 4106); err != nil || string(b) != "hello" {
		t.Fatalf("read %q, %v", b, err)
	}
	big := make([]byte, 2000)
	if n, err := w.ReadAt(big, 0); n != 1024 || !errors.Is(err, io.EOF) {
		t.Fatalf("read past window end: %d, %v", n, err)
	}
	ro, _ := Open(p, Options{ReadOnly: true})
	defer ro.Close()
	if _, err := ro.WriteAt(b, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write on read-only: %v", err)
	}
	if _, err := Open(p, Options{SectorSize: 1000}); err == nil {
		t.Fatal("sector size 1000 accepted")
	}
	if _, err := Open(t.TempDir(), Options{}); err == nil {
		t.Fatal("a directory opened as a device")
	}
}

// fakeSys builds a sysfs tree: nvme0n1 with partitions p4 (root) and p9,
// and dm-0 (dm-verity) over p4.
func fakeSys(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	mk := func(rel, content string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, rel string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	rel := "devices/pci0000:00/nvme/nvme0/nvme0n1"
	disk := "sys/" + rel
	mk(disk+"/dev", "259:0\n")
	mk(disk+"/nvme0n1p4/partition", "4\n")
	mk(disk+"/nvme0n1p9/partition", "9\n")
	mk("sys/devices/virtual/block/dm-0/dm/name", "root\n")
	link("../../../../../"+rel+"/nvme0n1p4", "sys/devices/virtual/block/dm-0/slaves/nvme0n1p4")
	link("../../"+rel+"/nvme0n1p4", "sys/class/block/nvme0n1p4")
	link("../../"+rel, "sys/class/block/nvme0n1")
	link("../../devices/virtual/block/dm-0", "sys/dev/block/253:0")
	link("../../"+rel+"/nvme0n1p9", "sys/dev/block/259:9")
	link("../../"+rel, "sys/dev/block/259:1")
	return root
}

func TestResolveBacking(t *testing.T) {
	root := fakeSys(t)
	b, err := ResolveBacking(root, 253, 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.Number != 4 || b.Partition != "nvme0n1p4" || b.Mapper != "dm-0" || b.Disk != filepath.Join(root, "dev", "nvme0n1") {
		t.Fatalf("through dm-verity: %+v", b)
	}
	b, err = ResolveBacking(root, 259, 9)
	if err != nil || b.Number != 9 || b.Mapper != "" {
		t.Fatalf("plain partition: %+v, %v", b, err)
	}
	if _, err := ResolveBacking(root, 259, 1); !errors.Is(err, ErrNotPartition) {
		t.Fatalf("whole disk: %v", err)
	}
	if _, err := ResolveBacking(root, 8, 0); err == nil {
		t.Fatal("unknown device resolved")
	}
}
