package updater

import (
	"context"
	"io"
	"sync"
)

// readAheadGate bounds how far a source's reading goroutine reads past the
// settled position: the compressed offset an interruption would go on
// from. Without hold, a restart point settles the bytes before it as the
// source hands it out (autoSettle); with hold, only settle does (copyImage
// settles the bytes a synced checkpoint covers). The zstd, LZ4 and xz
// sources embed it; it makes them settlers.
type readAheadGate struct {
	mu      sync.Mutex
	cond    *sync.Cond
	settled int64
	manual  bool
}

// initGate starts the gate settled at in; ending ctx wakes a wait.
func (g *readAheadGate) initGate(ctx context.Context, in int64) {
	g.settled = in
	g.cond = sync.NewCond(&g.mu)
	context.AfterFunc(ctx, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
}

// wait blocks while readAhead bytes or more are read past the settled
// position (in is the offset read), until ctx ends.
func (g *readAheadGate) wait(ctx context.Context, in int64) {
	g.mu.Lock()
	for in-g.settled >= readAhead && ctx.Err() == nil {
		g.cond.Wait()
	}
	g.mu.Unlock()
}

// hold makes only settle settle bytes.
func (g *readAheadGate) hold() {
	g.mu.Lock()
	g.manual = true
	g.mu.Unlock()
}

// settle says an interruption would now go on from compressed offset in
// (or later): the bytes before it no longer count against readAhead.
func (g *readAheadGate) settle(in int64) {
	g.mu.Lock()
	if in > g.settled {
		g.settled = in
		g.cond.Broadcast()
	}
	g.mu.Unlock()
}

// autoSettle settles at a restart point handed out, unless held.
func (g *readAheadGate) autoSettle(in int64) {
	g.mu.Lock()
	manual := g.manual
	g.mu.Unlock()
	if !manual {
		g.settle(in)
	}
}

// decodeLoop is the part the sequential decoders (LZ4, xz) share: one
// goroutine, started at the first next, runs the decoder, which sends its
// pieces (and restart points) one at a time; next hands them out in order
// and settles at each restart point; close stops the goroutine and waits.
type decodeLoop struct {
	readAheadGate
	ctx     context.Context
	cancel  context.CancelFunc
	run     func() error // the decoder; an error ends the output
	results chan result
	wg      sync.WaitGroup
	started bool
	err     error
}

// initLoop readies the loop for run, reading from compressed offset in.
func (l *decodeLoop) initLoop(ctx context.Context, in int64, run func() error) {
	l.ctx, l.cancel = context.WithCancel(ctx)
	l.run, l.results = run, make(chan result, 1)
	l.initGate(l.ctx, in)
}

// send hands a result out; false when the source is stopping.
func (l *decodeLoop) send(r result) bool {
	select {
	case l.results <- r:
		return true
	case <-l.ctx.Done():
		return false
	}
}

// next returns the next piece of output, io.EOF at the end.
func (l *decodeLoop) next() (piece, error) {
	if !l.started {
		l.started = true
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer close(l.results)
			if err := l.run(); err != nil {
				l.results <- result{err: err}
			}
		}()
	}
	if l.err != nil {
		return piece{}, l.err
	}
	var r result
	var ok bool
	select {
	case r, ok = <-l.results:
	case <-l.ctx.Done():
		l.err = l.ctx.Err()
		return piece{}, l.err
	}
	if !ok {
		l.err = io.EOF
		return piece{}, io.EOF
	}
	if r.err != nil {
		l.err = r.err
		return piece{}, r.err
	}
	if r.end != nil {
		l.autoSettle(r.end.In)
	}
	done := r.done
	if done == nil {
		done = func() {}
	}
	return piece{p: r.p, restart: r.end, done: done}, nil
}

// close stops the decoding goroutine and waits for it.
func (l *decodeLoop) close() {
	l.cancel()
	if !l.started {
		l.started = true
		close(l.results)
	}
	go func() {
		for range l.results {
		}
	}()
	l.wg.Wait()
}
