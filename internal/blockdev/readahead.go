package blockdev

import (
	"context"
	"io"
	"sync"
)

// readAheadChunk and readAheadDepth size ReadAhead: what one read asks
// for, and how many chunks it reads before the caller takes them.
const (
	readAheadChunk = 1 << 20
	readAheadDepth = 3
)

// ReadAhead returns a reader of the n bytes of r from off, read by a
// goroutine of its own up to a few MiB ahead of the caller, into aligned
// buffers (so a File opened with Options.Direct reads straight into them).
// A sequential consumer that does work on what it reads (hashing it) gets
// the next bytes from the disk while it works. Close stops the goroutine;
// it must be called. Reads stop with ctx's error once it is done.
func ReadAhead(ctx context.Context, r io.ReaderAt, off, n int64) io.ReadCloser {
	ra := &readAhead{full: make(chan raChunk, readAheadDepth), free: make(chan *[]byte, readAheadDepth), stop: make(chan struct{})}
	for i := 0; i < readAheadDepth; i++ {
		ra.free <- alignedBuf(readAheadChunk)
	}
	ra.wg.Add(1)
	go func() {
		defer ra.wg.Done()
		defer close(ra.full)
		for pos := int64(0); pos < n; {
			var bp *[]byte
			select {
			case bp = <-ra.free:
			case <-ra.stop:
				return
			}
			c := raChunk{buf: bp}
			if c.err = ctx.Err(); c.err == nil {
				want := min(int64(len(*bp)), n-pos)
				var k int
				k, c.err = r.ReadAt((*bp)[:want], off+pos)
				c.p = (*bp)[:k]
				pos += int64(k)
				if c.err == io.EOF && pos == n {
					c.err = nil
				} else if c.err == nil && int64(k) < want {
					c.err = io.ErrUnexpectedEOF
				} else if c.err == io.EOF {
					c.err = io.ErrUnexpectedEOF
				}
			}
			select {
			case ra.full <- c:
			case <-ra.stop:
				return
			}
			if c.err != nil {
				return
			}
		}
	}()
	return ra
}

type raChunk struct {
	buf *[]byte
	p   []byte
	err error
}

type readAhead struct {
	full chan raChunk
	free chan *[]byte
	stop chan struct{}
	once sync.Once
	wg   sync.WaitGroup
	cur  raChunk
	err  error
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur.p) == 0 {
		if ra.err != nil {
			return 0, ra.err
		}
		if ra.cur.buf != nil {
			ra.free <- ra.cur.buf
			ra.cur.buf = nil
		}
		c, ok := <-ra.full
		if !ok {
			ra.err = io.EOF
			return 0, io.EOF
		}
		ra.cur = c
		if c.err != nil {
			ra.err = c.err
		}
	}
	n := copy(p, ra.cur.p)
	ra.cur.p = ra.cur.p[n:]
	return n, nil
}

func (ra *readAhead) Close() error {
	ra.once.Do(func() { close(ra.stop) })
	ra.wg.Wait()
	return nil
}
