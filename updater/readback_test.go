package updater

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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
// CRC-32Cs of what was written. A byte that went wrong on the disk before
// the resumed run (after the first run's read-behind had read it back) is
// caught there.
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
	// The first run stops at 16 MiB; then byte 5 of the root goes wrong.
	err := run(func(d blockdev.Device) blockdev.Device { return failingDisk{d, 16 << 20} })
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("the first run: %v", err)
	}
	cp := readCheckpointFile(t, filepath.Join(f.cfg.StateDir, checkpointFile))
	if cp == nil || cp.Images[KindRoot] == nil || cp.Images[KindRoot].Out <= 5 {
		t.Fatalf("the first run left no checkpoint past byte 5: %+v", cp)
	}
	tb, l := f.table()
	fh, err := os.OpenFile(f.disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	at := int64(tb.Partition(l.Sets[gptprio.SetB].Root).FirstLBA)*int64(tb.SectorSize) + 5
	b := []byte{0}
	if _, err := fh.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x10
	if _, err := fh.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
	fh.Close()
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
	if !w.done(int64(len(data))) || w.k != 4 {
		t.Fatalf("done: %d sums over %d bytes", w.k, w.n)
	}
	for i, s := range w.sums {
		end := min((i+1)*sumChunk, len(data))
		if want := crc32.Checksum(data[i*sumChunk:end], castagnoli); s != want {
			t.Fatalf("chunk %d: %08x, want %08x", i, s, want)
		}
	}
	ctx := context.Background()
	if err := w.verify(ctx, bytes.NewReader(data), 0, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	for _, at := range []int{0, sumChunk - 1, sumChunk, len(data) - 1} {
		bad := bytes.Clone(data)
		bad[at] ^= 1
		err := w.verify(ctx, bytes.NewReader(bad), 0, int64(len(data)))
		chunk := at / sumChunk * sumChunk
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("bytes %d-", chunk)) {
			t.Errorf("byte %d changed: %v", at, err)
		}
	}
	if err := w.verify(ctx, bytes.NewReader(data[:len(data)-1]), 0, int64(len(data))); !errors.Is(err, io.ErrUnexpectedEOF) {
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

// TestReadBehind: the read-behind reads back, as the syncs report bytes
// durable, the whole chunks below them, and stops at the first chunk that
// differs from what was written or fails to read, naming its bytes; close
// says how far it got, so the final read-back starts there.
func TestReadBehind(t *testing.T) {
	data := make([]byte, 40*sumChunk+999)
	for i := range data {
		data[i] = byte(i*13 + i>>11)
	}
	w := newWrittenSums(int64(len(data)))
	w.Write(data)
	ctx := context.Background()
	// waitFor polls until the read-behind got to n or failed.
	waitFor := func(b *readBehind, n int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			b.mu.Lock()
			next, err := b.next, b.err
			b.mu.Unlock()
			if next >= n || err != nil {
				return
			}
		}
		t.Fatalf("the read-behind did not get to byte %d", n)
	}

	var failed error
	b := w.readBehind(ctx, bytes.NewReader(data), func(err error) { failed = err })
	b.synced(10*sumChunk + 100) // a partial chunk waits for the next sync
	waitFor(b, 10*sumChunk)
	b.synced(25 * sumChunk)
	waitFor(b, 25*sumChunk)
	n, err := b.close()
	if n != 25*sumChunk || err != nil || failed != nil {
		t.Fatalf("honest disk: read back %d bytes, %v, failed %v", n, err, failed)
	}
	w.done(int64(len(data)))
	r := bytes.NewReader(data)
	r.Seek(n, io.SeekStart)
	if err := w.verify(ctx, r, n, int64(len(data))); err != nil {
		t.Fatalf("the rest: %v", err)
	}

	bad := bytes.Clone(data)
	bad[7*sumChunk+5] ^= 1
	b = w.readBehind(ctx, bytes.NewReader(bad), func(err error) { failed = err })
	b.synced(20 * sumChunk)
	waitFor(b, 20*sumChunk)
	n, err = b.close()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("bytes %d-", 7*sumChunk)) || failed != err || n > 7*sumChunk {
		t.Fatalf("a changed byte in chunk 7: read back %d bytes, %v (told %v)", n, err, failed)
	}

	failed = nil
	b = w.readBehind(ctx, io.NewSectionReader(bytes.NewReader(data), 0, 3*sumChunk), func(err error) { failed = err })
	b.synced(8 * sumChunk)
	waitFor(b, 8*sumChunk)
	if n, err = b.close(); !errors.Is(err, io.ErrUnexpectedEOF) || failed == nil || n != 0 {
		t.Fatalf("a disk shorter than what was synced: %d bytes, %v", n, err)
	}

	// Nothing synced: nothing read; a cancelled context stops it quietly.
	b = w.readBehind(ctx, bytes.NewReader(bad), func(error) { t.Error("fail called") })
	if n, err = b.close(); n != 0 || err != nil {
		t.Fatalf("nothing synced: %d, %v", n, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	b = w.readBehind(cctx, bytes.NewReader(data), func(error) { t.Error("fail called") })
	cancel()
	b.synced(5 * sumChunk)
	if _, err = b.close(); err != nil {
		t.Fatalf("cancelled: %v", err)
	}
}

// slowDisk takes its time over every write past slowFrom, as a slow disk
// would, and counts the bytes written.
type slowDisk struct {
	blockdev.Device
	slowFrom int64
	written  *atomic.Int64
}

func (d slowDisk) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > d.slowFrom {
		time.Sleep(20 * time.Millisecond)
	}
	n, err := d.Device.WriteAt(p, off)
	d.written.Add(int64(n))
	return n, err
}

// TestReadBehindStopsTheInstall: a root partition that stores its fifth
// byte wrong is found out by the read-behind after the first sync, and the
// install stops there instead of writing the rest of the image; the error
// says the disk, not the release, is at fault, and the active set is
// untouched.
func TestReadBehindStopsTheInstall(t *testing.T) {
	t.Parallel()
	f := newFixtureRoot(t, 64)
	f.codec = CodecRaw
	f.rootBytes = 48 << 20
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	before := f.snapshotActive()
	var written atomic.Int64
	_, err := wrappedRoot(t, f, func(d blockdev.Device) blockdev.Device {
		return slowDisk{lyingDisk{d, 5}, 8 << 20, &written}
	}).Update(context.Background(), UpdateOptions{Apply: true})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "as it was written") || !strings.Contains(err.Error(), "bytes 0-") {
		t.Fatalf("lying disk: %v", err)
	}
	var bad *badRelease
	if errors.As(err, &bad) {
		t.Fatalf("the disk's fault blamed on the release: %v", err)
	}
	if n := written.Load(); n >= int64(f.rootBytes) {
		t.Fatalf("the whole root (%d bytes) was written before the install stopped", n)
	} else {
		t.Logf("stopped after %d of %d bytes", n, f.rootBytes)
	}
	f.assertSafe(before)
}
