package updater

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
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

// wrappedRoot is an updater of the fixture's disk whose root partition
// goes through wrap (nil: as it is).
func wrappedRoot(t *testing.T, f *fixture, wrap func(blockdev.Device) blockdev.Device) *Updater {
	t.Helper()
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now },
		Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }, Retries: 3},
		WrapPartition: func(kind string, d blockdev.Device) blockdev.Device {
			if kind == KindRoot && wrap != nil {
				return wrap(d)
			}
			return d
		}})
	if err != nil {
		t.Fatal(err)
	}
	return u
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
				_, err := wrappedRoot(t, f, func(d blockdev.Device) blockdev.Device { return lyingDisk{d, flip} }).
					Update(context.Background(), UpdateOptions{Apply: true})
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

// failingDisk fails every write that reaches past limit, as a disk that
// went away would.
type failingDisk struct {
	blockdev.Device
	limit int64
}

func (d failingDisk) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > d.limit {
		return 0, errors.New("injected I/O error")
	}
	return d.Device.WriteAt(p, off)
}

// TestReadBackAfterResume: an install resumed from its checkpoint did not
// see the first part of the root as it was written in this run, so its
// read-back checks the root against the dm-verity tree instead of the
// CRC-32Cs of what was written. A byte stored wrong before the
// interruption is caught there.
func TestReadBackAfterResume(t *testing.T) {
	t.Parallel()
	f := newFixtureRoot(t, 32)
	f.codec = CodecRaw
	f.rootBytes = 24 << 20
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	before := f.snapshotActive()
	run := func(wrap func(blockdev.Device) blockdev.Device) error {
		_, err := wrappedRoot(t, f, wrap).Update(context.Background(), UpdateOptions{Apply: true})
		return err
	}
	// The first run stores byte 5 wrong and stops at 16 MiB.
	err := run(func(d blockdev.Device) blockdev.Device { return failingDisk{lyingDisk{d, 5}, 16 << 20} })
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("the first run: %v", err)
	}
	cp := readCheckpointFile(t, filepath.Join(f.cfg.StateDir, checkpointFile))
	if cp == nil || cp.Images[KindRoot] == nil || cp.Images[KindRoot].Out <= 5 {
		t.Fatalf("the first run left no checkpoint past byte 5: %+v", cp)
	}
	// The second goes on from the checkpoint, on an honest disk.
	err = run(nil)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "reading back") {
		t.Fatalf("the resumed install: %v", err)
	}
	f.assertSafe(before)
	// Repaired by hand, the next run installs (from the start: the
	// checkpoint's bytes failed).
	if err := run(nil); err != nil {
		t.Fatalf("the run after the failed read-back: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, f.releases["1.1.0"])
}

// TestWrittenSums: the CRC-32C of each 64 KiB as written, whatever the
// pieces, and the read-back's comparison: a changed byte anywhere (first,
// at a chunk's edge, in the partial last chunk) and a short read fail,
// naming the bytes.
func TestWrittenSums(t *testing.T) {
	data := make([]byte, 3*sumChunk+1234)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	w := newWrittenSums(int64(len(data)))
	for p, k := data, 1; len(p) > 0; k = k*3 + 1 {
		n := min(k, len(p))
		w.Write(p[:n])
		p = p[n:]
	}
	if !w.done(int64(len(data))) || len(w.sums) != 4 {
		t.Fatalf("done: %d sums over %d bytes", len(w.sums), w.n)
	}
	for i, s := range w.sums {
		end := min((i+1)*sumChunk, len(data))
		if want := crc32.Checksum(data[i*sumChunk:end], castagnoli); s != want {
			t.Fatalf("chunk %d: %08x, want %08x", i, s, want)
		}
	}
	ctx := context.Background()
	if err := w.verify(ctx, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{0, sumChunk - 1, sumChunk, len(data) - 1} {
		bad := bytes.Clone(data)
		bad[at] ^= 1
		err := w.verify(ctx, bytes.NewReader(bad), int64(len(data)))
		chunk := at / sumChunk * sumChunk
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("bytes %d-", chunk)) {
			t.Errorf("byte %d changed: %v", at, err)
		}
	}
	if err := w.verify(ctx, bytes.NewReader(data[:len(data)-1]), int64(len(data))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short read: %v", err)
	}
	if w2 := newWrittenSums(10); w2.done(10) {
		t.Error("sums of nothing cover 10 bytes")
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
