package blockdev

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/testutil"
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

// TestHostileSpecialFilesAsDisk gives Open a FIFO, a directory and a
// character device: each is refused at once (a FIFO used to block open(2)
// forever).
func TestHostileSpecialFilesAsDisk(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, p := range []string{fifo, dir, "/dev/zero"} {
		for _, ro := range []bool{true, false} {
			done := make(chan error, 1)
			go func() {
				d, err := Open(p, Options{ReadOnly: ro})
				if err == nil {
					d.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, safefile.ErrNotRegular) {
					t.Errorf("Open(%s, read-only %v): %v, want an error matching safefile.ErrNotRegular", p, ro, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Open(%s, read-only %v) blocked", p, ro)
			}
		}
	}
}

// TestExclusiveRegularFile: O_EXCL without O_CREAT does nothing to a
// regular file on Linux, so two exclusive opens of an image both work.
func TestExclusiveRegularFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := Open(p, Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(p, Options{Exclusive: true})
	if err != nil {
		t.Fatalf("second exclusive open of a regular file: %v", err)
	}
	b.Close()
}

// TestExclusiveLoopDevice checks that Options.Exclusive really opens a block
// device with O_EXCL: while one exclusive open holds a loop device, a
// second exclusive open fails with EBUSY, a plain open still works, and
// once the holder closes it the exclusive open succeeds. It needs root and
// losetup(8) (a loop device over an image file): it skips without them,
// and fails under CI.
func TestExclusiveLoopDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Missing(t, "loop devices need root")
	}
	losetup := testutil.Tool(t, "losetup")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 8<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", img).CombinedOutput()
	if err != nil {
		testutil.Missing(t, "losetup --find --show: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "--detach", loop).Run() })

	held, err := Open(loop, Options{Exclusive: true})
	if err != nil {
		t.Fatalf("first exclusive open of %s: %v", loop, err)
	}
	if !held.IsBlockDevice() || held.Size() != 8<<20 || held.SectorSize() != 512 {
		t.Errorf("%s: block %v size %d sector %d", loop, held.IsBlockDevice(), held.Size(), held.SectorSize())
	}
	if d, err := Open(loop, Options{Exclusive: true}); !errors.Is(err, syscall.EBUSY) {
		if err == nil {
			d.Close()
		}
		t.Fatalf("second exclusive open while held: %v, want EBUSY", err)
	}
	plain, err := Open(loop, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("plain open while held exclusively: %v", err)
	}
	plain.Close()
	held.Close()
	again, err := Open(loop, Options{Exclusive: true})
	if err != nil {
		t.Fatalf("exclusive open after the holder closed: %v", err)
	}
	again.Close()
}

// fakeDisks builds sysfs trees for three disks whose partition nodes are
// named three ways: sda (sda3), nvme0n1 (nvme0n1p3) and loop0 (loop0p3),
// each with partitions 1, 3 and 10 listed in no particular order, beside
// directories that are not partitions.
func fakeDisks(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	mk := func(rel, content string) {
		p := filepath.Join(root, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []struct{ name, dev, sep string }{
		{"sda", "devices/pci0000:00/ata1/host0/target0:0:0/0:0:0:0/block/sda", ""},
		{"nvme0n1", "devices/pci0000:00/nvme/nvme0/nvme0n1", "p"},
		{"loop0", "devices/virtual/block/loop0", "p"},
	} {
		mk("sys/"+d.dev+"/dev", "8:0\n")
		mk("sys/"+d.dev+"/queue/logical_block_size", "512\n")
		mk("sys/"+d.dev+"/holders/.keep", "")
		for _, n := range []string{"10", "1", "3"} {
			mk("sys/"+d.dev+"/"+d.name+d.sep+n+"/partition", n+"\n")
		}
		os.MkdirAll(filepath.Join(root, "sys/class/block"), 0o755)
		if err := os.Symlink("../../"+d.dev, filepath.Join(root, "sys/class/block", d.name)); err != nil {
			t.Fatal(err)
		}
		mk("dev/"+d.name, "")
	}
	// A by-id link, as udev makes.
	os.MkdirAll(filepath.Join(root, "dev/disk/by-id"), 0o755)
	os.Symlink("../../nvme0n1", filepath.Join(root, "dev/disk/by-id/nvme-Amazon_EBS"))
	return root
}

func TestPartitionNode(t *testing.T) {
	root := fakeDisks(t)
	dev := func(name string) string { return filepath.Join(root, "dev", name) }
	for _, c := range []struct {
		disk string
		n    int
		want string
	}{
		{dev("sda"), 3, dev("sda3")},
		{dev("sda"), 1, dev("sda1")},
		{dev("sda"), 10, dev("sda10")},
		{dev("nvme0n1"), 3, dev("nvme0n1p3")},
		{dev("loop0"), 3, dev("loop0p3")},
		{dev("disk/by-id/nvme-Amazon_EBS"), 10, dev("nvme0n1p10")},
	} {
		got, err := PartitionNode(root, c.disk, c.n)
		if err != nil || got != c.want {
			t.Errorf("PartitionNode(%s, %d) = %q, %v; want %q", c.disk, c.n, got, err, c.want)
		}
	}
	if _, err := PartitionNode(root, dev("sda"), 2); !errors.Is(err, ErrNoPartitionNode) {
		t.Errorf("missing partition 2: %v", err)
	}
	if _, err := PartitionNode(root, dev("sda"), 0); err == nil {
		t.Error("partition 0 accepted")
	}
	if _, err := PartitionNode(root, filepath.Join(root, "dev", "sdz"), 1); err == nil {
		t.Error("a disk that does not exist resolved")
	}
	// A partition is not a disk.
	os.WriteFile(dev("sda3"), nil, 0o644)
	os.Symlink("../../devices/pci0000:00/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda3", filepath.Join(root, "sys/class/block/sda3"))
	if _, err := PartitionNode(root, dev("sda3"), 1); err == nil {
		t.Error("a partition used as a disk")
	}
}

func TestSameFile(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a")
	os.WriteFile(a, nil, 0o644)
	os.Symlink("a", filepath.Join(dir, "link"))
	os.WriteFile(filepath.Join(dir, "b"), nil, 0o644)
	if !SameFile(a, filepath.Join(dir, "link")) || SameFile(a, filepath.Join(dir, "b")) || SameFile(a, filepath.Join(dir, "none")) {
		t.Fatal("SameFile")
	}
}
