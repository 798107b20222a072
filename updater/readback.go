package updater

import (
	"context"
	"io"
	"sync"

	"github.com/updog/updog/verity"
)

// rootReadBack reads the root back from the disk and verifies it against
// the hash partition and the root hash while the rest of it is still
// being downloaded: each range as soon as a sync has made it durable
// (checkpoints.durable), so the second pass over the root overlaps the
// download instead of following it. What it verifies is what the
// read-back after the install would (verity.VerifyReader over the
// partition read back); only the time differs. Its verdict comes after
// finish, once the whole root is written and synced.
type rootReadBack struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done is closed

	mu      sync.Mutex
	cond    *sync.Cond
	durable int64 // bytes from the start known durable
	final   bool  // durable is the end: no more will come
	stopped bool
	read    int64       // bytes read back so far
	add     func(int64) // progress, once finish gave it
}

// startRootReadBack starts verifying data (the root read back, n bytes of
// data blocks by p) against hash and root, from the first durable bytes.
func startRootReadBack(ctx context.Context, data, hash io.ReaderAt, p verity.Params, root []byte, durable int64) *rootReadBack {
	ctx, cancel := context.WithCancel(ctx)
	rb := &rootReadBack{cancel: cancel, done: make(chan struct{}), durable: durable}
	rb.cond = sync.NewCond(&rb.mu)
	stopWake := context.AfterFunc(ctx, func() {
		rb.mu.Lock()
		rb.stopped = true
		rb.cond.Broadcast()
		rb.mu.Unlock()
	})
	go func() {
		defer close(rb.done)
		defer stopWake()
		need := int64(p.DataBlocks) * int64(p.DataBlockSize)
		rb.err = verity.VerifyReader(ctx, &durableReader{rb: rb, r: data, ctx: ctx}, need, hash, p, root)
	}()
	return rb
}

// madeDurable records that every byte before off is durable.
func (rb *rootReadBack) madeDurable(off int64) {
	rb.mu.Lock()
	if off > rb.durable && !rb.final {
		rb.durable = off
		rb.cond.Broadcast()
	}
	rb.mu.Unlock()
}

// finish says the root is written and synced up to end, reports the
// bytes verified so far and from now on to add, and returns the verdict.
func (rb *rootReadBack) finish(end int64, add func(int64)) error {
	rb.mu.Lock()
	rb.durable, rb.final = end, true
	add(rb.read)
	rb.add = add
	rb.cond.Broadcast()
	rb.mu.Unlock()
	<-rb.done
	return rb.err
}

// stop abandons the read-back and waits for it.
func (rb *rootReadBack) stop() {
	rb.cancel()
	<-rb.done
}

// durableReader reads the root back in order, never past what is
// durable: it waits for more.
type durableReader struct {
	rb  *rootReadBack
	r   io.ReaderAt
	ctx context.Context
	pos int64
}

func (d *durableReader) Read(p []byte) (int, error) {
	rb := d.rb
	rb.mu.Lock()
	for rb.durable <= d.pos && !rb.final && !rb.stopped {
		rb.cond.Wait()
	}
	avail, final := rb.durable-d.pos, rb.final
	rb.mu.Unlock()
	if err := d.ctx.Err(); err != nil {
		return 0, err
	}
	if avail <= 0 {
		if final {
			return 0, io.ErrUnexpectedEOF // the root ended before its data blocks
		}
		return 0, d.ctx.Err()
	}
	n, err := d.r.ReadAt(p[:min(int64(len(p)), avail)], d.pos)
	d.pos += int64(n)
	rb.mu.Lock()
	rb.read += int64(n)
	if rb.add != nil {
		rb.add(int64(n))
	}
	rb.mu.Unlock()
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}
