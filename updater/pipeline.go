package updater

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/updog/updog/internal/blockdev"
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

// syncEvery is the most output copyImage writes between two syncs of the
// partition. Restart points also start one, every CheckpointEvery of
// compressed input, or readAhead/2 when that is less: so the sync and
// checkpoint comes before the read-ahead runs out, and an install
// without checkpoints syncs as often as one with the default interval.
// Syncing as the image is written keeps the disk busy from the first
// byte, instead of leaving all the writing to a sync at the end; the
// copy goes on while a sync runs.
const syncEvery = 32 << 20

// checkpoints is what copyImage needs to checkpoint an install as it goes.
type checkpoints struct {
	// every is the least compressed input between two checkpoints; from
	// is where the copy starts (the last checkpoint's restart point).
	every, from int64
	// sync makes every byte written durable (the partition's Sync).
	sync func() error
	// capture, when set, returns what a checkpoint records of the output
	// side at a restart point (the output hash's state). It is called on
	// the copying goroutine, right after the bytes before the restart
	// point went to the sinks.
	capture func() ([]byte, error)
	// save records a restart point whose bytes are synced, with what
	// capture returned there. It is called on another goroutine, one call
	// at a time, never after copyImage returns.
	save func(rp restartPoint, captured []byte) error
	// synced, when set, is told after each sync that the first out bytes
	// of the output are durable (the read-behind). It is called on the
	// syncer's goroutine and must not block.
	synced func(out int64)
}

// settler is a source whose read-ahead is bounded from a position the
// copy settles (zstdSource).
type settler interface {
	hold()
	settle(in int64)
}

// syncer syncs the partition in the background as copyImage writes it,
// and saves a checkpoint after each sync: at the last restart point whose
// bytes were written before the sync started, so that a checkpoint never
// claims bytes a power cut could lose. The copy goes on writing while a
// sync runs; what it may read past the last checkpoint is bounded (the
// source's read-ahead, settled here).
type syncer struct {
	ck  *checkpoints
	set settler // nil: the writer itself waits for checkpoints

	mu      sync.Mutex
	cond    *sync.Cond
	written int64 // output offset written
	from    int64 // output offset when the last sync started
	latest  *marked
	lastIn  int64 // the compressed offset of latest
	syncIn  int64 // lastIn when the last sync started
	durable int64 // the compressed offset of the last checkpoint saved
	stop    bool
	err     error
	done    chan struct{}
}

// marked is a restart point written, with what capture returned there.
type marked struct {
	rp       restartPoint
	captured []byte
}

func newSyncer(ctx context.Context, ck *checkpoints, set settler, start int64) *syncer {
	sy := &syncer{ck: ck, set: set, written: start, from: start, lastIn: ck.from, syncIn: ck.from, durable: ck.from,
		done: make(chan struct{})}
	sy.cond = sync.NewCond(&sy.mu)
	stopWake := context.AfterFunc(ctx, func() {
		sy.mu.Lock()
		sy.cond.Broadcast()
		sy.mu.Unlock()
	})
	if set != nil {
		set.hold()
		set.settle(ck.from)
	}
	go func() {
		defer close(sy.done)
		defer stopWake()
		sy.run()
	}()
	return sy
}

// due says a sync should start (with mu held): see syncEvery.
func (sy *syncer) due() bool {
	return sy.written-sy.from >= syncEvery || sy.latest != nil && sy.lastIn-sy.syncIn >= min(sy.ck.every, readAhead/2)
}

func (sy *syncer) run() {
	for {
		sy.mu.Lock()
		for !sy.stop && !sy.due() {
			sy.cond.Wait()
		}
		if sy.stop {
			sy.mu.Unlock()
			return
		}
		var cand *marked
		if sy.latest != nil && sy.latest.rp.In-sy.durable >= sy.ck.every {
			cand = sy.latest
		}
		sy.from, sy.syncIn = sy.written, sy.lastIn
		upto := sy.written
		sy.mu.Unlock()
		// Every byte before cand was written before this sync started.
		err := sy.ck.sync()
		if err == nil && sy.ck.synced != nil {
			sy.ck.synced(upto)
		}
		if err == nil && cand != nil {
			err = sy.ck.save(cand.rp, cand.captured)
		}
		sy.mu.Lock()
		if err != nil {
			sy.err = err
			sy.cond.Broadcast()
			sy.mu.Unlock()
			return
		}
		if cand != nil {
			sy.durable = cand.rp.In
			sy.settleLocked()
			sy.cond.Broadcast()
		}
		sy.mu.Unlock()
	}
}

// settleLocked lets the source read readAhead past the last restart point
// written, but never past CheckpointEvery beyond the last checkpoint.
func (sy *syncer) settleLocked() {
	if sy.set != nil {
		sy.set.settle(min(sy.lastIn, sy.durable+sy.ck.every))
	}
}

// wrote records the output written up to off, and a restart point there
// (rp, when not nil) with what capture returned.
func (sy *syncer) wrote(off int64, rp *restartPoint, captured []byte) {
	sy.mu.Lock()
	defer sy.mu.Unlock()
	sy.written = off
	if rp != nil {
		sy.latest = &marked{rp: *rp, captured: captured}
		sy.lastIn = rp.In
		sy.settleLocked()
	}
	if sy.due() {
		sy.cond.Broadcast()
	}
}

// wait returns the syncer's error, after waiting, for a source that does
// not settle, while the restart points written are more than
// CheckpointEvery plus readAhead past the last checkpoint.
func (sy *syncer) wait(ctx context.Context) error {
	sy.mu.Lock()
	defer sy.mu.Unlock()
	for sy.err == nil && ctx.Err() == nil && sy.set == nil && sy.lastIn-sy.durable >= sy.ck.every+readAhead {
		sy.cond.Wait()
	}
	return sy.err
}

// close stops the syncer, waiting for a sync (and checkpoint) under way,
// and returns its error.
func (sy *syncer) close() error {
	sy.mu.Lock()
	sy.stop = true
	sy.cond.Broadcast()
	sy.mu.Unlock()
	<-sy.done
	return sy.err
}

// copyImage writes src's pieces into dst from offset start, never past
// limit bytes in all, and feeds every byte to the sinks (hashers, the
// verity check). Each piece goes to the sinks first, then to a
// write-behind goroutine that writes it (see writeBehind), so the disk
// write of one piece overlaps the sinks' work on the next. With ck, the
// partition is synced in the background as it is written and checkpoints
// are saved (see syncer), at restart points whose bytes are written;
// restart points without a hash state are never checkpointed. When the
// copy fails on this side (a write, the limit, ctx, a sync or a
// checkpoint), abort is called to unblock a source stuck in the network
// (by closing the stream); when the source or a sink fails, abort is not
// called, so the caller can still ask the stream for its hash verdict. It
// returns the offset written up to; more than limit is ErrImageTooLarge,
// and no byte past limit is ever written.
func copyImage(ctx context.Context, src source, dst io.WriterAt, start, limit int64, sinks []io.Writer, progress func(int64),
	abort func(), ck *checkpoints) (int64, error) {
	off := start // the offset of the next piece
	var sy *syncer
	set, _ := src.(settler)
	if ck != nil {
		sy = newSyncer(ctx, ck, set, start)
	}
	wb := newWriteBehind(dst, start, progress, sy, set)
	// A source that decodes side by side writes what it decodes itself,
	// as soon as it is decoded; the sinks still take it in order.
	if dw, ok := src.(directWriter); ok {
		dw.writeTo(dst, limit)
	}
	end := func(err error, aborting bool) (int64, error) {
		if werr := wb.close(); werr != nil && (err == nil || !aborting) {
			err, aborting = werr, true
		}
		if sy != nil {
			if serr := sy.close(); serr != nil && err == nil {
				err, aborting = serr, true
			}
		}
		if aborting && abort != nil {
			abort()
		}
		src.close()
		return wb.off, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return end(err, true)
		}
		if err := wb.failed(); err != nil {
			return end(nil, true) // end reports the write's error
		}
		if sy != nil {
			if err := sy.wait(ctx); err != nil {
				return end(err, true)
			}
		}
		pc, err := src.next()
		if err != nil {
			var ce *copyError
			switch {
			case errors.Is(err, io.EOF):
				return end(nil, false)
			case ctx.Err() != nil:
				return end(ctx.Err(), true)
			case errors.As(err, &ce):
				return end(ce.err, true)
			}
			return end(err, false)
		}
		n := len(pc.p)
		if off+int64(n) > limit {
			pc.done()
			return end(fmt.Errorf("%w: the image is larger than the %d bytes of its partition", ErrImageTooLarge, limit), true)
		}
		for _, s := range sinks {
			if _, err := s.Write(pc.p); err != nil {
				pc.done()
				// The stream itself is fine so far: leave it open, so
				// the caller can still ask it for its hash verdict.
				return end(&sinkError{err}, false)
			}
		}
		at := off
		off += int64(n)
		rp := pc.restart
		if rp != nil && rp.Out != off {
			pc.done()
			return end(fmt.Errorf("updater: internal error: restart point at output %d, written %d", rp.Out, off), true)
		}
		var captured []byte
		if sy != nil && rp != nil && rp.state != nil && ck.capture != nil {
			if captured, err = ck.capture(); err != nil {
				pc.done()
				return end(err, true)
			}
		}
		wb.q <- wbItem{pc: pc, at: at, captured: captured}
	}
}

// writeBehind writes the pieces handed to it, in order, in a goroutine of
// its own, and only then releases them, reports progress and tells the
// syncer (so a checkpoint never claims bytes not yet written). Writes
// around the page cache wait for the disk: written behind, they overlap
// the decoding and hashing of what follows instead of stalling it. At most
// writeBehindDepth pieces wait; the source's own buffers bound the rest.
type writeBehind struct {
	dst      io.WriterAt
	progress func(int64)
	sy       *syncer
	set      settler
	q        chan wbItem
	done     chan struct{}
	mu       sync.Mutex
	err      error // the first write's failure
	off      int64 // written up to here (read after close)
}

const writeBehindDepth = 2

type wbItem struct {
	pc       piece
	at       int64 // where pc.p goes
	captured []byte
}

func newWriteBehind(dst io.WriterAt, start int64, progress func(int64), sy *syncer, set settler) *writeBehind {
	wb := &writeBehind{dst: dst, progress: progress, sy: sy, set: set, q: make(chan wbItem, writeBehindDepth),
		done: make(chan struct{}), off: start}
	go wb.run()
	return wb
}

func (wb *writeBehind) run() {
	defer close(wb.done)
	for it := range wb.q {
		if wb.failed() != nil {
			it.pc.done()
			continue
		}
		n := int64(len(it.pc.p))
		if !it.pc.written && n > 0 {
			if _, err := wb.dst.WriteAt(it.pc.p, it.at); err != nil {
				it.pc.done()
				wb.mu.Lock()
				wb.err = fmt.Errorf("writing at offset %d: %w", it.at, err)
				wb.mu.Unlock()
				continue
			}
			blockdev.StartWriteback(wb.dst, it.at, n)
		}
		it.pc.done()
		wb.off = it.at + n
		if wb.progress != nil && n > 0 {
			wb.progress(n)
		}
		if wb.sy == nil {
			continue
		}
		rp := it.pc.restart
		if rp != nil && rp.state == nil {
			// Not a checkpoint: only the read-ahead moves on.
			if wb.set != nil {
				wb.set.settle(rp.In)
			}
			rp = nil
		}
		wb.sy.wrote(wb.off, rp, it.captured)
	}
}

// failed returns the first write's failure.
func (wb *writeBehind) failed() error {
	wb.mu.Lock()
	defer wb.mu.Unlock()
	return wb.err
}

// close waits for the pieces handed over to be written (or released,
// after a failure) and returns the first failure.
func (wb *writeBehind) close() error {
	close(wb.q)
	<-wb.done
	return wb.failed()
}

// directWriter is a source that can write its output into the partition
// itself (zstdSource).
type directWriter interface {
	writeTo(dst io.WriterAt, limit int64)
}

// sinkError is a failure of a sink (a hasher, the verity check), not of
// the stream: the bytes arrived as they were signed, but are not right.
type sinkError struct{ err error }

func (e *sinkError) Error() string { return e.err.Error() }
func (e *sinkError) Unwrap() error { return e.err }
