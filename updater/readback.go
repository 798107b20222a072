package updater

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync"

	"github.com/updog/updog/internal/blockdev"
)

// sumChunk is the span of the read-back's CRC-32Cs of the root image.
const sumChunk = 64 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// writtenSums is a sink that records the CRC-32C of each 64 KiB of an
// image as it is written, for the read-back.
//
// The root image's bytes are checked against their dm-verity tree as they
// are written; what the read-back must then show is that the disk holds
// those same bytes (no lost, misdirected or corrupted write). Comparing each
// 64 KiB read back with the CRC-32C of what was written shows that (CRC-32C
// catches every burst of up to 32 bits and all but 2^-32 of other
// corruptions) at a small part of the cost of hashing the root with sha256
// a second time: about a fifth of the install's CPU on two cores. It needs
// the whole image written in this run; an install resumed from a checkpoint
// or written by a delta is read back against the tree instead.
// Memory: 4 bytes per 64 KiB (256 KiB for a 4 GiB root).
//
// Write and done are called by one goroutine (the copy). A readBehind
// reads sums[i] from another: only chunks the copy wrote before a sync
// that the readBehind was told of, and the slice itself never changes
// after newWrittenSums, so the two never touch the same memory at once.
type writtenSums struct {
	sums []uint32 // one per chunk of the partition
	k    int      // chunks recorded
	cur  uint32
	n    int64
}

func newWrittenSums(size int64) *writtenSums {
	return &writtenSums{sums: make([]uint32, (size+sumChunk-1)/sumChunk)}
}

func (w *writtenSums) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), int(sumChunk-w.n%sumChunk))
		w.cur = crc32.Update(w.cur, castagnoli, p[:k])
		w.n += int64(k)
		p = p[k:]
		if w.n%sumChunk == 0 {
			if w.k == len(w.sums) {
				return n - len(p), fmt.Errorf("updater: internal error: more than the %d bytes of the partition written", int64(len(w.sums))*sumChunk)
			}
			w.sums[w.k] = w.cur
			w.k++
			w.cur = 0
		}
	}
	return n, nil
}

// done finishes the last partial chunk; it returns false when the sums do
// not cover exactly n bytes.
func (w *writtenSums) done(n int64) bool {
	if w.n%sumChunk != 0 && int64(w.k) == w.n/sumChunk && w.k < len(w.sums) {
		w.sums[w.k] = w.cur
		w.k++
	}
	return w.n == n
}

// check compares p, the bytes read back from off (a chunk boundary), with
// the sums: whole chunks, and a partial one only at n, the image's end.
func (w *writtenSums) check(p []byte, off, n int64) error {
	for len(p) > 0 {
		k := min(int64(len(p)), sumChunk, n-off)
		if k <= 0 {
			return fmt.Errorf("updater: internal error: reading back past byte %d", n)
		}
		if got, want := crc32.Checksum(p[:k], castagnoli), w.sums[off/sumChunk]; got != want {
			return fmt.Errorf("bytes %d-%d read back differ from those written (CRC-32C %08x, written %08x)", off, off+k-1, got, want)
		}
		p, off = p[k:], off+k
	}
	return nil
}

// verify reads bytes from..n of the image from r (in order, r positioned at
// from, a chunk boundary) and compares each 64 KiB with the CRC-32C
// recorded as it was written.
func (w *writtenSums) verify(ctx context.Context, r io.Reader, from, n int64) error {
	buf := make([]byte, sumChunk)
	for off := from; off < n; off += sumChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(sumChunk, n-off)
		if _, err := io.ReadFull(r, buf[:k]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("reading back bytes %d-%d: %w", off, off+k-1, err)
		}
		if err := w.check(buf[:k], off, n); err != nil {
			return err
		}
	}
	return nil
}

// readBehindBuf is what a readBehind reads at a time (O_DIRECT where the
// reader was opened so): a multiple of sumChunk.
const readBehindBuf = 256 << 10

// readBehind reads the image back as the install goes: after each of the
// periodic syncs (see syncer), the whole chunks that sync made durable are
// read from the disk and compared with their CRC-32Cs, on a goroutine of
// its own, while the copy goes on. The read-back after the final sync then
// only has the last few MiB left, instead of the whole image: on two
// cores, that took a tenth of a 1 GiB install's wall time.
//
// What this gives up: a later write misdirected onto bytes already read
// back is not seen before the switch. dm-verity still refuses those bytes
// at their first read after it, and a set that fails to boot falls back.
type readBehind struct {
	sums *writtenSums
	r    io.ReaderAt
	fail func(error)

	mu      sync.Mutex
	cond    *sync.Cond
	durable int64 // bytes made durable, as the syncer reported
	next    int64 // bytes read back and found right
	err     error
	stop    bool
	done    chan struct{}
}

// readBehind starts reading back, from r, the bytes the syncs report
// (synced) until close. On the first difference or read error it calls
// fail (the install stops: the disk does not hold what was written) and
// stops.
func (w *writtenSums) readBehind(ctx context.Context, r io.ReaderAt, fail func(error)) *readBehind {
	b := &readBehind{sums: w, r: r, fail: fail, done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	stopWake := context.AfterFunc(ctx, func() {
		b.mu.Lock()
		b.cond.Broadcast()
		b.mu.Unlock()
	})
	go func() {
		defer close(b.done)
		defer stopWake()
		b.run(ctx)
	}()
	return b
}

// synced says the first off bytes written are durable (every one of them
// went through the sums before the sync started).
func (b *readBehind) synced(off int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if off > b.durable {
		b.durable = off
		b.cond.Broadcast()
	}
}

// close stops the reading and returns how many bytes were read back and
// found right, and the first difference or read error.
func (b *readBehind) close() (int64, error) {
	b.mu.Lock()
	b.stop = true
	b.cond.Broadcast()
	b.mu.Unlock()
	<-b.done
	return b.next, b.err
}

func (b *readBehind) run(ctx context.Context) {
	buf := blockdev.AlignedBuffer(readBehindBuf)
	for {
		b.mu.Lock()
		for !b.stop && ctx.Err() == nil && b.durable/sumChunk*sumChunk <= b.next {
			b.cond.Wait()
		}
		if b.stop || ctx.Err() != nil {
			b.mu.Unlock()
			return
		}
		off, to := b.next, b.durable/sumChunk*sumChunk
		b.mu.Unlock()
		for off < to {
			k := min(int64(len(buf)), to-off)
			n, err := b.r.ReadAt(buf[:k], off)
			if int64(n) == k {
				err = nil // ReadAt may say io.EOF with every byte read
			} else if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			if err != nil {
				err = fmt.Errorf("reading back bytes %d-%d: %w", off, off+k-1, err)
			} else {
				err = b.sums.check(buf[:k], off, to)
			}
			b.mu.Lock()
			if err == nil {
				off += k
				b.next = off
			} else if ctx.Err() == nil {
				b.err = err
			}
			stop := b.stop || err != nil
			b.mu.Unlock()
			if err != nil && ctx.Err() == nil {
				b.fail(err)
			}
			if stop {
				return
			}
		}
	}
}
