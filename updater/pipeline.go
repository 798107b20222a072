package updater

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Pipeline sizes: the decoder fills up to pipeDepth buffers of pipeChunk
// bytes ahead of the writer, so decoding, writing and hashing overlap with
// a fixed amount of memory.
const (
	pipeChunk = 1 << 20
	pipeDepth = 4
)

type chunk struct {
	buf []byte
	n   int
	err error
}

// copyImage streams src (decompressed image bytes) into dst from offset 0,
// never past limit bytes, and feeds every byte to the sinks (hashers, the
// verity builder) after it is written. Reading and decoding run in their
// own goroutine, writing and hashing in the caller's, with pipeDepth
// buffers between them. When the copy fails on the writing side (a write
// error, the limit, ctx), abort is called to unblock a reader stuck in the
// network (by closing the stream); when the reader fails, it has stopped
// already and abort is not called, so the caller can still ask the stream
// for its verdict. It returns the bytes written; more than limit is
// ErrImageTooLarge, and no byte past limit is ever written.
func copyImage(ctx context.Context, src io.Reader, dst io.WriterAt, limit int64, sinks []io.Writer, progress func(int64), abort func()) (int64, error) {
	free := make(chan []byte, pipeDepth)
	for i := 0; i < pipeDepth; i++ {
		free <- make([]byte, pipeChunk)
	}
	full := make(chan chunk, pipeDepth)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(full)
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			if err := ctx.Err(); err != nil {
				return
			}
			n, err := io.ReadFull(src, buf)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			select {
			case full <- chunk{buf: buf, n: n, err: err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	end := func(err error, aborting bool) error {
		close(stop)
		if aborting && abort != nil {
			abort()
		}
		go func() { // never leave the reader stuck sending
			for range full {
			}
		}()
		wg.Wait()
		return err
	}
	var off int64
	for {
		var c chunk
		var ok bool
		select {
		case c, ok = <-full:
		case <-ctx.Done():
			return off, end(ctx.Err(), true)
		}
		if !ok {
			if err := ctx.Err(); err != nil {
				return off, end(err, true)
			}
			return off, end(nil, false)
		}
		if c.n > 0 {
			if off+int64(c.n) > limit {
				return off, end(fmt.Errorf("%w: the image is larger than the %d bytes of its partition", ErrImageTooLarge, limit), true)
			}
			if _, err := dst.WriteAt(c.buf[:c.n], off); err != nil {
				return off, end(fmt.Errorf("writing at offset %d: %w", off, err), true)
			}
			for _, s := range sinks {
				if _, err := s.Write(c.buf[:c.n]); err != nil {
					// The stream itself is fine so far: leave it open, so
					// the caller can still ask it for its hash verdict.
					return off, end(&sinkError{err}, false)
				}
			}
			off += int64(c.n)
			if progress != nil {
				progress(int64(c.n))
			}
		}
		if c.err != nil {
			if errors.Is(c.err, io.EOF) {
				return off, end(nil, false)
			}
			return off, end(c.err, false)
		}
		free <- c.buf
	}
}

// sinkError is a failure of a sink (a hasher, the verity check), not of
// the stream: the bytes arrived as they were signed, but are not right.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }
