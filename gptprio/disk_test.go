package gptprio

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/flock"
)

// noHost is a HostInfo with no running system behind it.
var noHost = HostInfo{SysRoot: "/nonexistent", RootDevice: func() (uint32, uint32, error) {
	return 0, 0, errors.New("not a host")
}}

// abImage writes the small A/B layout to a sparse image file.
func abImage(t *testing.T, dir string, ss int) string {
	t.Helper()
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 64*mib); err != nil {
		t.Fatal(err)
	}
	d, err := blockdev.Open(path, blockdev.Options{SectorSize: ss})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := Write(d, layoutTable(t, 64, ss, abParts)); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeHost makes a sysfs tree in which the root filesystem (dm-0) is over
// partition rootPart of disk "sdx", whose device node is an image holding
// the A/B layout (ROOT-A is partition 4, ROOT-B partition 7).
func fakeHost(t *testing.T, rootPart string) (HostInfo, string) {
	t.Helper()
	root := t.TempDir()
	rel := "devices/pci0000:00/ata1/block/sdx"
	part := "sdx" + rootPart
	for _, dir := range []string{"dev", "sys/" + rel + "/" + part, "sys/devices/virtual/block/dm-0/dm",
		"sys/devices/virtual/block/dm-0/slaves/" + part, "sys/class/block", "sys/dev/block"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "sys", rel, part, "partition"), []byte(rootPart+"\n"), 0o644)
	os.Symlink("../../"+rel+"/"+part, filepath.Join(root, "sys/class/block", part))
	os.Symlink("../../devices/virtual/block/dm-0", filepath.Join(root, "sys/dev/block/253:0"))
	disk := abImage(t, filepath.Join(root, "dev"), 512)
	os.Rename(disk, filepath.Join(root, "dev", "sdx"))
	return HostInfo{SysRoot: root, RootDevice: func() (uint32, uint32, error) { return 253, 0, nil }},
		filepath.Join(root, "dev", "sdx")
}

func TestOpenDiskActive(t *testing.T) {
	ctx := context.Background()
	host, disk := fakeHost(t, "7") // booted from B
	for _, path := range []string{"", disk} {
		d, err := OpenDisk(ctx, path, OpenOptions{Host: host, ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if d.Path != disk || !d.OnHost || d.Active == nil || *d.Active != SetB {
			t.Errorf("OpenDisk(%q) on a host booted from B: path %s on host %v active %v", path, d.Path, d.OnHost, d.Active)
		}
		d.Close()
	}
	d, err := OpenDisk(ctx, "", OpenOptions{Host: host, Active: "b"})
	if err != nil {
		t.Fatalf("a true claim: %v", err)
	}
	d.Close()
	_, err = OpenDisk(ctx, disk, OpenOptions{Host: host, Active: "a"})
	var me *ActiveMismatchError
	if !errors.Is(err, ErrActiveMismatch) || !errors.As(err, &me) || me.Claimed != SetA || me.Running != SetB || me.Partition != 7 {
		t.Fatalf("a claim contradicting /sys: %v", err)
	}

	// The same image seen as a plain file (no running system on it).
	img := abImage(t, t.TempDir(), 512)
	for claim, want := range map[string]*Set{"": nil, "a": new(SetA), "b": new(SetB)} {
		d, err := OpenDisk(ctx, img, OpenOptions{Host: host, Active: claim})
		if err != nil {
			t.Fatal(err)
		}
		if d.OnHost || (d.Active == nil) != (want == nil) || (want != nil && *d.Active != *want) {
			t.Errorf("image, claim %q: on host %v, active %v", claim, d.OnHost, d.Active)
		}
		d.Close()
	}
	if _, err := OpenDisk(ctx, img, OpenOptions{Host: noHost, Active: "c"}); err == nil {
		t.Error("claim c accepted")
	}
	if _, err := OpenDisk(ctx, "", OpenOptions{Host: noHost}); !errors.Is(err, ErrNoHostDisk) {
		t.Errorf("no disk and no host: %v", err)
	}
	// The root on a partition that is in no set.
	host, _ = fakeHost(t, "9")
	if _, err := OpenDisk(ctx, "", OpenOptions{Host: host}); !errors.Is(err, ErrRootNotInSet) {
		t.Errorf("root on PRIVATE: %v", err)
	}
}

// TestUpdateReReadsUnderTheLock: many writers, each with its own Disk
// (flock locks belong to the open file, so they exclude each other as
// processes do), increment a counter kept in the attribute bits of
// partition 1. Without the lock, or without re-reading the table under
// it, increments are lost.
func TestUpdateReReadsUnderTheLock(t *testing.T) {
	ctx := context.Background()
	img := abImage(t, t.TempDir(), 512)
	const writers, rounds = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := OpenDisk(ctx, img, OpenOptions{Host: noHost})
			if err != nil {
				errs <- err
				return
			}
			defer d.Close()
			for i := 0; i < rounds; i++ {
				_, _, err := d.Update(ctx, func(t *Table, _ Layout) (*Table, error) {
					t.Partitions[0].Attributes++
					return t, nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d, err := OpenDisk(ctx, img, OpenOptions{Host: noHost, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, _, err := d.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := tb.Partitions[0].Attributes; got != writers*rounds {
		t.Fatalf("counter is %d after %d increments: updates were lost", got, writers*rounds)
	}
	if tb.BackupStale || tb.RecoveredFromBackup {
		t.Fatal("copies disagree")
	}
}

// TestHostileLockHeldElsewhere: while someone else holds the disk's lock,
// Update and Read give up after the bounded wait with an error matching
// flock.ErrLocked, and a cancelled context stops the wait.
func TestHostileLockHeldElsewhere(t *testing.T) {
	ctx := context.Background()
	img := abImage(t, t.TempDir(), 512)
	holder, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	if err := flock.Lock(ctx, holder, flock.Exclusive, 0); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDisk(ctx, img, OpenOptions{Host: noHost, SectorSize: 512, LockWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	edit := func(t *Table, l Layout) (*Table, error) { return ClearInactive(t, SetA) }
	if _, _, err := d.Update(ctx, edit); !errors.Is(err, flock.ErrLocked) {
		t.Errorf("Update with the lock held elsewhere: %v", err)
	}
	if _, _, err := d.Read(ctx); !errors.Is(err, flock.ErrLocked) {
		t.Errorf("Read with an exclusive lock held elsewhere: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	long, err := OpenDisk(ctx, img, OpenOptions{Host: noHost, SectorSize: 512, LockWait: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	done := make(chan error, 1)
	go func() { _, _, err := long.Update(cctx, edit); done <- err }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled wait: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a cancelled context did not stop the lock wait")
	}
	// A shared lock held elsewhere lets readers in and keeps writers out.
	flock.Unlock(holder)
	if err := flock.Lock(ctx, holder, flock.Shared, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Read(ctx); err != nil {
		t.Errorf("Read beside another reader: %v", err)
	}
	if _, _, err := d.Update(ctx, edit); !errors.Is(err, flock.ErrLocked) {
		t.Errorf("Update beside another reader: %v", err)
	}
}

func TestUpdateDryRunFormat(t *testing.T) {
	ctx := context.Background()
	img := abImage(t, t.TempDir(), 4096)
	raw := func() []byte {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	orig := raw()
	ro, err := OpenDisk(ctx, img, OpenOptions{Host: noHost, ReadOnly: true, Active: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if ro.Device().SectorSize() != 4096 {
		t.Fatalf("the sector size was not found: %d", ro.Device().SectorSize())
	}
	mark := func(t *Table, _ Layout) (*Table, error) { return MarkInactiveValid(t, SetA, 3) }
	if _, _, err := ro.Update(ctx, mark); !errors.Is(err, ErrDiskReadOnly) {
		t.Errorf("Update on a read-only Disk: %v", err)
	}
	before, after, err := ro.DryRun(ctx, mark)
	if err != nil || Attrs(after, mustLayout(t, after), SetB).Tries() != 3 || Attrs(before, mustLayout(t, before), SetB).Tries() != 0 {
		t.Fatalf("DryRun: %v", err)
	}
	if !bytes.Equal(orig, raw()) {
		t.Fatal("DryRun wrote")
	}

	d, err := OpenDisk(ctx, img, OpenOptions{Host: noHost, Active: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// An edit that fails, or that has nothing to do, writes nothing.
	if _, _, err := d.Update(ctx, func(t *Table, _ Layout) (*Table, error) { return UpgradeToInactive(t, SetA) }); !errors.Is(err, ErrInactiveNotValid) {
		t.Errorf("failing edit: %v", err)
	}
	if b, a, err := d.Update(ctx, func(*Table, Layout) (*Table, error) { return nil, nil }); err != nil || a != b {
		t.Errorf("empty edit: %v", err)
	}
	// An edit that breaks the table is refused by Validate.
	if _, _, err := d.Update(ctx, func(t *Table, _ Layout) (*Table, error) {
		t.Partitions[3].LastLBA = t.LastUsableLBA + 10
		return t, nil
	}); !errors.Is(err, ErrInvalidTable) {
		t.Errorf("invalid edit: %v", err)
	}
	// A cancelled context writes nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := d.Update(cctx, mark); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Update: %v", err)
	}
	if !bytes.Equal(orig, raw()) {
		t.Fatal("a refused Update wrote")
	}
	if _, after, err := d.Update(ctx, mark); err != nil || Attrs(after, mustLayout(t, after), SetB).Tries() != 3 {
		t.Fatalf("Update: %v", err)
	}
	if tb, _, _ := ro.Read(ctx); Attrs(tb, mustLayout(t, tb), SetB).Tries() != 3 {
		t.Fatal("the update is not on disk")
	}

	// Format writes a table over a blank file.
	blank := filepath.Join(t.TempDir(), "blank.img")
	os.WriteFile(blank, nil, 0o644)
	os.Truncate(blank, 64*mib)
	f, err := OpenDisk(ctx, blank, OpenOptions{Host: noHost, SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, _, err := f.Read(ctx); !errors.Is(err, ErrNoValidTable) {
		t.Fatalf("blank disk: %v", err)
	}
	if err := f.Format(ctx, layoutTable(t, 64, 512, abParts)); err != nil {
		t.Fatal(err)
	}
	if _, l, err := f.Read(ctx); err != nil || !l.Dual() {
		t.Fatalf("after Format: %v", err)
	}
}

func mustLayout(t *testing.T, tb *Table) Layout {
	t.Helper()
	l, err := FindLayout(tb)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestHostileSpecialFilesAsDisk: OpenDisk refuses a FIFO, a directory and
// a character device at once.
func TestHostileSpecialFilesAsDisk(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, p := range []string{fifo, dir, "/dev/zero"} {
		done := make(chan error, 1)
		go func() {
			d, err := OpenDisk(context.Background(), p, OpenOptions{Host: noHost, ReadOnly: true})
			if err == nil {
				d.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s opened as a disk", p)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("OpenDisk(%s) hangs", p)
		}
	}
}
