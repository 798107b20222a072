package updater

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/repo"
)

// lyingDisk writes one byte wrong, silently: the sinks saw the right
// bytes, so only reading the partition back can tell.
type lyingDisk struct {
	blockdev.Device
	flip int64
}

func (d lyingDisk) WriteAt(p []byte, off int64) (int, error) {
	if d.flip >= off && d.flip < off+int64(len(p)) {
		q := bytes.Clone(p)
		q[d.flip-off] ^= 0x10
		return d.Device.WriteAt(q, off)
	}
	return d.Device.WriteAt(p, off)
}

// TestReadBackCatchesLyingDisk: a root partition that stores one byte
// wrong (early, in the middle, in the last block) fails the install at
// the read-back (the write-time check saw the right bytes); the active
// set is untouched and set B not bootable.
func TestReadBackCatchesLyingDisk(t *testing.T) {
	t.Parallel()
	for _, c := range []Codec{CodecRaw, CodecZstd} {
		for _, flip := range []int64{5, 11<<20 + 77, 24<<20 - 1} {
			t.Run(string(c), func(t *testing.T) {
				t.Parallel()
				f := newFixtureRoot(t, 32)
				f.codec = c
				f.rootBytes = 24 << 20
				f.addRelease("1.1.0", nil)
				f.publish(repo.Options{})
				before := f.snapshotActive()
				u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now },
					Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }, Retries: 3},
					WrapPartition: func(kind string, d blockdev.Device) blockdev.Device {
						if kind == KindRoot {
							return lyingDisk{d, flip}
						}
						return d
					}})
				if err != nil {
					t.Fatal(err)
				}
				_, err = u.Update(context.Background(), UpdateOptions{Apply: true})
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "reading back") {
					t.Fatalf("flip at %d: %v", flip, err)
				}
				f.assertSafe(before)
				tb, l := f.table()
				if a := gptprio.Attrs(tb, l, gptprio.SetB); a.Priority() != 0 && a.Tries() != 0 {
					t.Fatalf("set B bootable after a failed read-back: %v", a)
				}
			})
		}
	}
}

// TestFailedSessionReleasesDiskLock: a session that fails after taking the
// disk's lock (here: an image file with no --active) gives it back, so the
// next updog in the same process is not told another one holds the disk.
func TestFailedSessionReleasesDiskLock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := u.Apply(context.Background(), false); !errors.Is(err, ErrActiveUnknown) {
		t.Fatalf("apply without an active set: %v", err)
	}
	u.Unlock()
	err = f.updater().Apply(context.Background(), false)
	var le *LockedError
	if errors.As(err, &le) {
		t.Fatalf("the failed session kept the disk's lock: %v", err)
	}
}
