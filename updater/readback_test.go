package updater

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/repo"
	"github.com/updog/updog/verity"
)

// guardedReaderAt fails any read past the durable mark it is given.
type guardedReaderAt struct {
	b       []byte
	durable atomic.Int64
	bad     atomic.Int64 // a read past the mark, +1
}

func (g *guardedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > g.durable.Load() {
		g.bad.Store(off + int64(len(p)) + 1)
	}
	return bytes.NewReader(g.b).ReadAt(p, off)
}

// TestRootReadBackFollowsDurable: the root's read-back reads (and
// verifies) each range as soon as it is durable and never past it, gives
// its verdict only at finish (a bad block ends the reading early), and
// stops when abandoned.
func TestRootReadBackFollowsDurable(t *testing.T) {
	t.Parallel()
	root := make([]byte, 8<<20)
	rand.New(rand.NewSource(2)).Read(root)
	p := verity.DefaultParams()
	p.Salt = bytes.Repeat([]byte{7}, 32)
	hash := &memWriterAt{}
	tree, err := verity.Format(context.Background(), bytes.NewReader(root), int64(len(root)), hash, p)
	if err != nil {
		t.Fatal(err)
	}
	p.DataBlocks = uint64(len(root) / 4096)
	for _, flip := range []int64{-1, 100, 6<<20 + 1} {
		data := &guardedReaderAt{b: bytes.Clone(root)}
		if flip >= 0 {
			data.b[flip] ^= 1
		}
		rb := startRootReadBack(context.Background(), data, bytes.NewReader(hash.b), p, tree.RootHash, 0)
		for _, mark := range []int64{1 << 20, 3<<20 + 4096, 5 << 20} {
			data.durable.Store(mark)
			rb.madeDurable(mark)
			deadline := time.Now().Add(10 * time.Second)
			for flip < 0 { // a bad block stops the reading early
				rb.mu.Lock()
				read := rb.read
				rb.mu.Unlock()
				if read == mark {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("flip %d: %d bytes read back after %d were made durable", flip, read, mark)
				}
				time.Sleep(time.Millisecond)
			}
		}
		if flip < 0 {
			select {
			case <-rb.done:
				t.Fatalf("a verdict before finish: %v", rb.err)
			default:
			}
		}
		data.durable.Store(int64(len(root)))
		var reported int64
		err := rb.finish(int64(len(root)), func(n int64) { reported += n })
		if data.bad.Load() != 0 {
			t.Fatalf("flip %d: read up to %d past the durable mark", flip, data.bad.Load()-1)
		}
		if flip < 0 && (err != nil || reported != int64(len(root))) {
			t.Fatalf("an intact root: %v, %d bytes reported", err, reported)
		}
		if flip >= 0 && !errors.Is(err, verity.ErrCorrupt) {
			t.Fatalf("flip %d: %v", flip, err)
		}
	}
	// Abandoned half-way: stop returns, with a context error.
	data := &guardedReaderAt{b: root}
	data.durable.Store(1 << 20)
	rb := startRootReadBack(context.Background(), data, bytes.NewReader(hash.b), p, tree.RootHash, 1<<20)
	rb.stop()
	if !errors.Is(rb.err, context.Canceled) {
		t.Fatalf("stopped: %v", rb.err)
	}
}

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
// the read-back, whether that ran as the root became durable or after;
// the active set is untouched and set B not bootable.
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
