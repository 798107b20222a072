package updater

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Pipeline sizes: a reader fills up to pipeDepth buffers of pipeChunk
// bytes ahead of the writer, so decoding, writing and hashing overlap with
// a fixed amount of memory.
const (
	pipeChunk = 1 << 20
	pipeDepth = 4
)

// source is decoded image output, in order, in pieces.
type source interface {
	// next returns the next piece, io.EOF after the last.
	next() (piece, error)
	// close stops the source's goroutines and waits for them.
	close()
}

// readerSource is a source over an io.Reader, read in its own goroutine
// with pipeDepth buffers. With restartEvery, every piece ends at a restart
// point (raw images: input and output are the same bytes, counted from
// base).
type readerSource struct {
	full     chan result
	free     chan []byte
	stop     chan struct{}
	wg       sync.WaitGroup
	restarts bool
	pos      int64
	err      error
}

func newReaderSource(ctx context.Context, r io.Reader, restartEvery bool, base int64, snap snapshotFunc) *readerSource {
	s := &readerSource{full: make(chan result, pipeDepth), free: make(chan []byte, pipeDepth), stop: make(chan struct{}),
		restarts: restartEvery, pos: base}
	for i := 0; i < pipeDepth; i++ {
		s.free <- make([]byte, pipeChunk)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(s.full)
		for {
			var buf []byte
			select {
			case buf = <-s.free:
			case <-s.stop:
				return
			}
			if err := ctx.Err(); err != nil {
				s.full <- result{err: err}
				return
			}
			n, err := io.ReadFull(r, buf)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			var st map[string][]byte
			if restartEvery && snap != nil && n > 0 {
				var serr error
				if _, st, serr = snap(); serr != nil && err == nil {
					err = serr
				}
			}
			select {
			case s.full <- result{p: buf[:n], err: err, state: st}:
			case <-s.stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return s
}

func (s *readerSource) next() (piece, error) {
	for {
		if s.err != nil {
			return piece{}, s.err
		}
		r, ok := <-s.full
		if !ok {
			s.err = io.EOF
			return piece{}, io.EOF
		}
		if r.err != nil {
			s.err = r.err
			if len(r.p) == 0 {
				return piece{}, s.err
			}
		}
		if len(r.p) == 0 {
			s.free <- r.p[:cap(r.p)]
			continue
		}
		p := piece{p: r.p, done: func() { s.free <- r.p[:cap(r.p)] }}
		s.pos += int64(len(r.p))
		if s.restarts {
			p.restart = &restartPoint{In: s.pos, Out: s.pos, state: r.state}
		}
		return p, nil
	}
}

func (s *readerSource) close() {
	close(s.stop)
	go func() {
		for range s.full {
		}
	}()
	s.wg.Wait()
}

// copyImage writes src's pieces into dst from offset start, never past
// limit bytes in all, and feeds every byte to the sinks (hashers, the
// verity check) after it is written. After a piece that ends at a restart
// point, onRestart (when set) is called with it (the checkpoint). When the
// copy fails on this side (a write, the limit, ctx, onRestart), abort is
// called to unblock a source stuck in the network (by closing the
// stream); when the source or a sink fails, abort is not called, so the
// caller can still ask the stream for its hash verdict. It returns the
// offset reached; more than limit is ErrImageTooLarge, and no byte past
// limit is ever written.
func copyImage(ctx context.Context, src source, dst io.WriterAt, start, limit int64, sinks []io.Writer, progress func(int64),
	abort func(), onRestart func(restartPoint) error) (int64, error) {
	off := start
	end := func(err error, aborting bool) (int64, error) {
		if aborting && abort != nil {
			abort()
		}
		src.close()
		return off, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return end(err, true)
		}
		pc, err := src.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return end(nil, false)
			}
			if ctx.Err() != nil {
				return end(ctx.Err(), true)
			}
			return end(err, false)
		}
		if n := len(pc.p); n > 0 {
			if off+int64(n) > limit {
				pc.done()
				return end(fmt.Errorf("%w: the image is larger than the %d bytes of its partition", ErrImageTooLarge, limit), true)
			}
			if _, err := dst.WriteAt(pc.p, off); err != nil {
				pc.done()
				return end(fmt.Errorf("writing at offset %d: %w", off, err), true)
			}
			for _, s := range sinks {
				if _, err := s.Write(pc.p); err != nil {
					pc.done()
					// The stream itself is fine so far: leave it open, so
					// the caller can still ask it for its hash verdict.
					return end(&sinkError{err}, false)
				}
			}
			off += int64(n)
			if progress != nil {
				progress(int64(n))
			}
		}
		// The checkpoint comes before the piece is given back: a source
		// counts what it has read ahead until then, so nothing it reads
		// meanwhile can be lost by an interruption beyond its bound.
		if pc.restart != nil && onRestart != nil {
			if pc.restart.Out != off {
				pc.done()
				return end(fmt.Errorf("updater: internal error: restart point at output %d, written %d", pc.restart.Out, off), true)
			}
			if err := onRestart(*pc.restart); err != nil {
				pc.done()
				return end(err, true)
			}
		}
		pc.done()
	}
}

// sinkError is a failure of a sink (a hasher, the verity check), not of
// the stream: the bytes arrived as they were signed, but are not right.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }
