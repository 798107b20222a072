package updater

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/repo"
)

// The loop-device tier: the same updates on a real block device, a loop
// device over the fixture's image file, with its partitions added by partx
// (this kernel has no GPT partition parser, so losetup -P adds none). It
// exercises the block-device ioctls, O_EXCL on the inactive partitions,
// O_DIRECT read-back and the active set found through the real /sys.

func loopDisk(t *testing.T, f *fixture) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Missing(t, "the loop-device tier needs root")
	}
	losetup, partx := testutil.Tool(t, "losetup"), testutil.Tool(t, "partx")
	out, err := exec.Command(losetup, "-f", "--show", f.disk).CombinedOutput()
	if err != nil {
		testutil.Missing(t, "losetup: %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		exec.Command(partx, "-d", dev).Run()
		exec.Command(losetup, "-d", dev).Run()
	})
	if out, err := exec.Command(partx, "-a", dev).CombinedOutput(); err != nil {
		t.Fatalf("partx -a %s: %v %s", dev, err, out)
	}
	// devtmpfs makes the nodes; wait for them.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := blockdev.PartitionNode("/", dev, 13); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the partitions of %s did not appear", dev)
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.disk = dev
	return dev
}

func TestLoopDeviceUpdate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	dev := loopDisk(t, f)
	before := f.snapshotActive()
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update on %s: %v", dev, err)
	}
	f.assertSetHolds(gptprio.SetB, r)
	after := f.snapshotActive()
	for n, s := range before.sums {
		if after.sums[n] != s {
			t.Fatalf("the active set's partition %d changed", n)
		}
	}
}

// TestLoopDeviceUpdateDirectIO: direct_io on a block device. The inactive
// partitions are opened exclusively (O_EXCL) and written through a second
// descriptor with O_DIRECT (the node reopened without O_EXCL, which the
// kernel would refuse while the first holds it); set B is exact, the
// active set untouched, and the root written is not in the partition's
// page cache. Without direct_io the same check sees it there, so the test
// can fail.
func TestLoopDeviceUpdateDirectIO(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{true, false} {
		f := newFixtureRoot(t, 16)
		f.codec = CodecZstd
		f.cfg.DirectIO = direct
		r := f.addRelease("1.1.0", nil)
		f.publish(repo.Options{})
		dev := loopDisk(t, f)
		_, l := f.table()
		node, err := blockdev.PartitionNode("/", dev, l.Sets[gptprio.SetB].Root)
		if err != nil {
			t.Fatal(err)
		}
		// The last close of a block device drops its page cache: hold
		// the node open (not exclusively) so that what the update left
		// there stays to be seen.
		hold, err := os.Open(node)
		if err != nil {
			t.Fatal(err)
		}
		defer hold.Close()
		before := f.snapshotActive()
		if _, err := f.updater().Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
			t.Fatalf("direct_io %v: update on %s: %v", direct, dev, err)
		}
		// Before anything reads set B back through the page cache.
		res, total := residentPages(t, node, 0, int64(len(r.root)))
		t.Logf("direct_io %v: %d of the %d pages of the root written are in %s's page cache", direct, res, total, node)
		if direct && res*4 > total || !direct && res*4 < total {
			t.Fatalf("direct_io %v: %d of %d pages of the root in the page cache", direct, res, total)
		}
		f.assertSetHolds(gptprio.SetB, r)
		after := f.snapshotActive()
		for n, s := range before.sums {
			if after.sums[n] != s {
				t.Fatalf("direct_io %v: the active set's partition %d changed", direct, n)
			}
		}
	}
}

// TestLoopDeviceExclusive: an inactive partition held by someone else
// (mounted, or opened exclusively) makes the update fail before it writes
// a byte, naming the partition.
func TestLoopDeviceExclusive(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	dev := loopDisk(t, f)
	_, l := f.table()
	node, err := blockdev.PartitionNode("/", dev, l.Sets[1].Root)
	if err != nil {
		t.Fatal(err)
	}
	held, err := blockdev.Open(node, blockdev.Options{Exclusive: true, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	before := f.snapshotActive()
	u := f.updater()
	_, err = u.Update(context.Background(), UpdateOptions{Apply: true})
	if !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), node) {
		t.Fatalf("update with %s held: %v", node, err)
	}
	f.assertSafe(before)
}

// TestLoopDeviceActiveFromSys: with the "root file system" on ROOT-B of
// the loop device, the real /sys tells the active set: B. An --active a
// that contradicts it is refused, and an update writes set A.
func TestLoopDeviceActiveFromSys(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	dev := loopDisk(t, f)
	_, l := f.table()
	rootB, err := blockdev.PartitionNode("/", dev, l.Sets[1].Root)
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(rootB, &st); err != nil {
		t.Fatal(err)
	}
	major, minor := uint32(st.Rdev>>8)&0xfff, uint32(st.Rdev&0xff)|uint32(st.Rdev>>12)&^0xff
	host := gptprio.HostInfo{SysRoot: "/", RootDevice: func() (uint32, uint32, error) { return major, minor, nil }}
	// Make set B the booted, good one.
	d, err := gptprio.OpenDisk(context.Background(), dev, gptprio.OpenOptions{Active: "a"})
	if err != nil {
		t.Fatal(err)
	}
	d.Update(context.Background(), func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		nt, err := gptprio.MarkInactiveValid(t, gptprio.SetA, 1)
		if err != nil {
			return nil, err
		}
		nt, err = gptprio.UpgradeToInactive(nt, gptprio.SetA)
		if err != nil {
			return nil, err
		}
		return gptprio.MarkSuccessfulBoot(nt, gptprio.SetB)
	})
	d.Close()
	mk := func(active string) *Updater {
		u, err := New(Options{Config: f.cfg, Disk: dev, Active: active, Host: host, Now: func() time.Time { return f.now },
			Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }}})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	u := mk("a")
	if err := u.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); !errors.Is(err, gptprio.ErrActiveMismatch) {
		t.Fatalf("--active a on a host running B: %v", err)
	}
	u.Unlock()
	u = mk("")
	u.Lock(context.Background())
	defer u.Unlock()
	stt, err := u.Status(context.Background())
	if err != nil || stt.Active != "b" {
		t.Fatalf("active from /sys: %+v %v", stt, err)
	}
	f.active = gptprio.SetB
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update from B: %v", err)
	}
	f.assertSetHolds(gptprio.SetA, r)
}
