package updater

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/internal/blockdev"
)

// A zstd stream is a sequence of frames (imgbuild writes independent frames
// of at most 8 MiB of output each). Splitting the stream at frame
// boundaries, without decoding, gives two things: restart points (an
// install interrupted after frame i goes on at the compressed offset after
// it, with a fresh decoder), and parallel decoding (one reader decodes
// small frames at 0.6 GB/s here; frames decoded side by side on every
// core go as fast as the cores allow).
//
// The frame format (RFC 8878): magic, frame header descriptor, optional
// window descriptor, dictionary id and content size, then blocks, each
// with a 3-byte header (last flag, type, size), and an optional 4-byte
// checksum. Skippable frames (magic 0x184D2A5?) carry a size and are
// skipped.

const (
	zstdMagic        = 0xFD2FB528
	zstdSkippableLow = 0x184D2A50
	// zstdMaxBlock is the largest block the format allows.
	zstdMaxBlock = 128 << 10
	// maxParallelFrame: frames whose declared content size is at most this
	// are decoded whole, in parallel; larger or undeclared ones are
	// streamed (and can restart only at their end).
	maxParallelFrame = 8 << 20
	// maxFrameCompressed is the most a frame of maxParallelFrame bytes can
	// take compressed: raw blocks, each with its header, the frame header
	// and the checksum.
	maxFrameCompressed = maxParallelFrame + (maxParallelFrame/zstdMaxBlock+1)*4 + 64
	// maxFrameWorkers bounds the frames decoded side by side (each holds
	// an output buffer of maxParallelFrame bytes): four decode faster
	// than any disk writes.
	maxFrameWorkers = 4
	// streamWorkers is the concurrency of the decoder of a streamed
	// (large) frame: two pipeline its blocks, more only cost memory.
	streamWorkers = 2
	// readAhead bounds the compressed bytes read past the settled
	// position: where an interruption goes on from (the last checkpoint),
	// plus at most CheckpointEvery. No frame is started while this much
	// is read past it, so an interruption loses at most CheckpointEvery
	// plus readAhead plus the frame being read. It covers the frames
	// being decoded and written and the bytes written but not yet synced
	// (syncing in batches keeps the disk streaming), and bounds how much
	// of the partition is written ahead of its last sync.
	readAhead = 6 << 20
)

// ErrZstdFrame means the stream is not a well-formed sequence of zstd
// frames.
var ErrZstdFrame = errors.New("updater: malformed zstd frame")

// restartPoint says decoding can start again with a fresh decoder at
// compressed offset In, which produces output from offset Out.
type restartPoint struct {
	In, Out int64
	// state is the compressed stream's hash state at In (for the
	// checkpoint), when the source was given a snapshot function.
	state map[string][]byte
	// codec is what the decoder needs to go on from here besides the
	// offsets (an LZ4 frame's header and content checksum state, an xz
	// stream's check type and blocks so far; nil at a frame or stream
	// boundary and for zstd).
	codec []byte
}

// snapshotFunc returns the verified stream's position and hash states.
type snapshotFunc func() (int64, map[string][]byte, error)

// at makes a restart point at the current position.
func at(snap snapshotFunc, in, out int64) (restartPoint, error) {
	rp := restartPoint{In: in, Out: out}
	if snap == nil {
		return rp, nil
	}
	pos, st, err := snap()
	if err != nil {
		return rp, err
	}
	if pos != in {
		return rp, fmt.Errorf("updater: internal error: the stream is at byte %d at a restart point at %d", pos, in)
	}
	rp.state = st
	return rp, nil
}

// piece is a run of decoded output; restart, when set, is a restart point
// right after it.
type piece struct {
	p []byte
	// written: the source wrote p itself, where the last piece ended
	// (zstdSource.writeTo); it goes to the sinks only.
	written bool
	restart *restartPoint
	done    func() // gives the buffer back
}

// zframer reads frames from r without ever reading past the end of the
// frame it is in, so that the bytes consumed (and hashed, below it) at a
// frame's end are exactly the stream's bytes up to there.
type zframer struct {
	r  io.Reader
	in int64 // compressed bytes consumed
}

func (z *zframer) read(p []byte) error {
	n, err := io.ReadFull(z.r, p)
	z.in += int64(n)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the stream ends inside a frame", ErrZstdFrame)
	}
	return err
}

// frameHeader reads a frame's header (after its magic) and appends the
// whole header, magic included, to buf. It returns the content size (-1
// when not declared) and whether a checksum follows the blocks.
func (z *zframer) frameHeader(buf []byte) (hdr []byte, contentSize int64, checksum bool, err error) {
	var fhd [1]byte
	if err := z.read(fhd[:]); err != nil {
		return nil, 0, false, err
	}
	d := fhd[0]
	if d&0x08 != 0 {
		return nil, 0, false, fmt.Errorf("%w: reserved bit set in the frame header", ErrZstdFrame)
	}
	single := d&0x20 != 0
	checksum = d&0x04 != 0
	didSize := []int{0, 1, 2, 4}[d&3]
	fcsSize := []int{0, 2, 4, 8}[d>>6]
	if d>>6 == 0 && single {
		fcsSize = 1
	}
	n := didSize + fcsSize
	if !single {
		n++
	}
	var restBuf [14]byte
	rest := restBuf[:n]
	if err := z.read(rest); err != nil {
		return nil, 0, false, err
	}
	fcs := rest[n-fcsSize:]
	contentSize = -1
	switch fcsSize {
	case 1:
		contentSize = int64(fcs[0])
	case 2:
		contentSize = int64(binary.LittleEndian.Uint16(fcs)) + 256
	case 4:
		contentSize = int64(binary.LittleEndian.Uint32(fcs))
	case 8:
		v := binary.LittleEndian.Uint64(fcs)
		if v > 1<<62 {
			return nil, 0, false, fmt.Errorf("%w: content size %d", ErrZstdFrame, v)
		}
		contentSize = int64(v)
	}
	hdr = append(append(append(buf, 0x28, 0xb5, 0x2f, 0xfd), d), rest...)
	return hdr, contentSize, checksum, nil
}

// blocks reads the frame's blocks (and checksum): each header and each
// payload is read into the slice of n bytes next returns.
func (z *zframer) blocks(checksum bool, next func(n int) ([]byte, error)) error {
	for {
		h, err := next(3)
		if err == nil {
			err = z.read(h)
		}
		if err != nil {
			return err
		}
		v := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
		last, typ, size := v&1 == 1, (v>>1)&3, int(v>>3)
		switch typ {
		case 0, 2: // raw, compressed
		case 1: // RLE: one byte
			size = 1
		default:
			return fmt.Errorf("%w: reserved block type", ErrZstdFrame)
		}
		if size > zstdMaxBlock {
			return fmt.Errorf("%w: a %d-byte block", ErrZstdFrame, size)
		}
		p, err := next(size)
		if err == nil {
			err = z.read(p)
		}
		if err != nil {
			return err
		}
		if last {
			break
		}
	}
	if checksum {
		c, err := next(4)
		if err == nil {
			err = z.read(c)
		}
		return err
	}
	return nil
}

// zstdSource decodes a zstd stream frame by frame: small frames whole, on
// up to maxFrameWorkers goroutines side by side, large ones streamed,
// output in order, with a restart point after every frame.
//
// Given a partition to write to (writeTo, before the first next), the
// workers write the frames they decode themselves, at their offsets, as
// soon as they are decoded, and next hands out pieces saying so (for the
// sinks only). Otherwise next hands out pieces to write.
//
// Memory: each worker decodes into a buffer of its own (maxParallelFrame
// bytes at most), held until its piece is done; without writeTo, a
// frame's buffer is held until its piece is done, and there is one more
// buffer, taken in frame order so the oldest frame always has one.
// Compressed frames are read into as many buffers as there are workers:
// a buffer comes back as soon as its frame is decoded, so the splitter
// reads the next frame while that worker writes (one more buffer gained no
// speed and held up to 8 MiB more: at 4 GiB, with the other buffers, the
// heap sat at the runtime's memory limit and the collector ran 1,400
// times). Every buffer is allocated on first use and reused (one grown for
// an incompressible frame only while such frames come, recycleComp), so
// the source makes little garbage as it goes. A streamed frame
// uses pipeDepth buffers of pipeChunk and one decoder, reused from frame
// to frame.
//
// Read-ahead: the splitter starts no frame while readAhead compressed
// bytes are read past the settled position. Without hold, a restart point
// settles the bytes before it as next hands it out; with hold, only
// settle does (copyImage settles the bytes a synced checkpoint covers).
type zstdSource struct {
	readAheadGate

	ctx     context.Context
	cancel  context.CancelFunc
	start   func() // starts the splitter (at the first next)
	started bool
	checked bool        // the output is checked as written: no frame checksums
	direct  io.WriterAt // writeTo's partition
	limit   int64       // and its size
	writeMu sync.Mutex  // the workers write one at a time
	// concurrent: direct takes writes side by side (blockdev.ConcurrentWrites).
	concurrent bool
	out        chan job
	work       chan *frameJob
	wg         sync.WaitGroup
	cur        *job
	err        error
	dec        *zstd.Decoder // DecodeAll, for whole frames
	comps      chan []byte   // compressed frame buffers
	outs       chan []byte   // output buffers taken in frame order (without writeTo)
	chunks     chan []byte   // streamed frames' output buffers
	stream     *zstd.Decoder // the streamed frames' decoder (splitter goroutine only)
}

// frameJob is a frame for a worker to decode: its compressed bytes, where
// its output goes, and where the result is sent.
type frameJob struct {
	comp     []byte
	out      []byte // the output buffer taken for it (without writeTo)
	at, size int64
	res      chan result
}

// job is one frame's output: either one decoded buffer (res) or a stream
// of pieces (stream).
type job struct {
	res    chan result
	stream chan result
	end    restartPoint
}

type result struct {
	p []byte
	// written: p is in the partition already (writeTo).
	written bool
	err     error
	done    func()
	state   map[string][]byte
	// end, on the last result of a streamed frame, is its restart point.
	end *restartPoint
}

// copyError is a failure of writing the output (not of the stream): the
// copy aborts the download for it.
type copyError struct{ err error }

func (e *copyError) Error() string { return e.err.Error() }
func (e *copyError) Unwrap() error { return e.err }

// newZstdSource makes a source decoding r, whose first byte is at
// compressed offset in and whose output starts at offset out (a restart
// point). It starts reading at the first next.
func newZstdSource(ctx context.Context, r io.Reader, in, out int64, workers int, snap snapshotFunc, checked bool) (*zstdSource, error) {
	workers = min(max(workers, 1), maxFrameWorkers)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(workers), zstd.WithDecoderMaxWindow(maxZstdWindow),
		zstd.WithDecoderMaxMemory(maxParallelFrame), zstd.WithDecoderLowmem(true), zstd.IgnoreChecksum(checked))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &zstdSource{ctx: ctx, cancel: cancel, checked: checked, out: make(chan job, workers+2), work: make(chan *frameJob),
		dec: dec, comps: make(chan []byte, workers), outs: make(chan []byte, workers+1),
		chunks: make(chan []byte, pipeDepth)}
	for i := 0; i < workers; i++ {
		s.comps <- nil // allocated on first use
	}
	for i := 0; i < workers+1; i++ {
		s.outs <- nil
	}
	for i := 0; i < pipeDepth; i++ {
		s.chunks <- nil
	}
	s.initGate(ctx, in)
	s.start = func() {
		for i := 0; i < workers; i++ {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.worker()
			}()
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(s.out)
			s.split(&zframer{r: r, in: in}, out, snap, min(workers, streamWorkers))
		}()
	}
	return s, nil
}

// writeTo makes the workers write the frames they decode into dst
// themselves, refusing any byte at or past limit (ErrImageTooLarge). It
// must come before the first next.
func (s *zstdSource) writeTo(dst io.WriterAt, limit int64) {
	if s.started {
		panic("updater: zstdSource.writeTo after next")
	}
	s.direct, s.limit, s.concurrent = dst, limit, blockdev.ConcurrentWrites(dst)
}

// split reads frames and hands them out in order.
func (s *zstdSource) split(z *zframer, out int64, snap snapshotFunc, streamConc int) {
	send := func(j job) bool {
		select {
		case s.out <- j:
			return true
		case <-s.ctx.Done():
			return false
		}
	}
	fail := func(err error) {
		j := job{res: make(chan result, 1)}
		j.res <- result{err: err}
		send(j)
	}
	var hbuf [18]byte
	for {
		// Read no further while readAhead compressed bytes are read past
		// the settled position: they are what an interruption loses.
		s.wait(s.ctx, z.in)
		if s.ctx.Err() != nil {
			return
		}
		var m [4]byte
		n, err := io.ReadFull(z.r, m[:])
		z.in += int64(n)
		if n == 0 && errors.Is(err, io.EOF) {
			return // the end of the stream, at a frame boundary
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w: %d stray bytes at the end", ErrZstdFrame, n)
			}
			fail(err)
			return
		}
		magic := binary.LittleEndian.Uint32(m[:])
		if magic&^0xf == zstdSkippableLow {
			var sz [4]byte
			if err := z.read(sz[:]); err != nil {
				fail(err)
				return
			}
			if _, err := io.CopyN(io.Discard, z.r, int64(binary.LittleEndian.Uint32(sz[:]))); err != nil {
				fail(fmt.Errorf("%w: a skippable frame is cut short", ErrZstdFrame))
				return
			}
			z.in += int64(binary.LittleEndian.Uint32(sz[:]))
			continue
		}
		if magic != zstdMagic {
			fail(fmt.Errorf("%w: magic 0x%08x at byte %d", ErrZstdFrame, magic, z.in-4))
			return
		}
		hdr, size, checksum, err := z.frameHeader(hbuf[:0])
		if err != nil {
			fail(err)
			return
		}
		if size >= 0 && size <= maxParallelFrame {
			if !s.whole(z, hdr, size, checksum, &out, snap, send, fail) {
				return
			}
			continue
		}
		if !s.streamed(z, hdr, size, checksum, &out, snap, send, streamConc) {
			return
		}
	}
}

// whole reads a small frame and hands it to a worker. It returns false
// when splitting must stop.
func (s *zstdSource) whole(z *zframer, hdr []byte, size int64, checksum bool, out *int64, snap snapshotFunc,
	send func(job) bool, fail func(error)) bool {
	var comp []byte
	select {
	case comp = <-s.comps:
	case <-s.ctx.Done():
		return false
	}
	if cap(comp) < int(size/2) {
		comp = make([]byte, 0, size/2+64<<10)
	}
	frame := append(comp[:0], hdr...)
	err := z.blocks(checksum, func(n int) ([]byte, error) {
		if len(frame)+n > maxFrameCompressed {
			return nil, fmt.Errorf("%w: a frame of %d bytes is larger compressed than it could be", ErrZstdFrame, size)
		}
		l := len(frame)
		if cap(frame)-l < n {
			// A frame that hardly compresses: the buffer grows once to
			// the most any frame needs and is kept (growing it step by
			// step, and allocating it again for the next such frame,
			// cost 8 % of an install's CPU in page faults and copies).
			frame = append(make([]byte, 0, maxFrameCompressed), frame...)
		}
		frame = frame[:l+n]
		return frame[l:], nil
	})
	if err != nil {
		s.comps <- frame[:0]
		fail(err)
		return false
	}
	fj := &frameJob{comp: frame, at: *out, size: size, res: make(chan result, 1)}
	*out += size
	end, err := at(snap, z.in, *out)
	if err != nil {
		s.comps <- frame[:0]
		fail(err)
		return false
	}
	if s.direct == nil {
		// The output buffers go to the frames in order.
		select {
		case fj.out = <-s.outs:
		case <-s.ctx.Done():
			return false
		}
	}
	if !send(job{res: fj.res, end: end}) {
		return false
	}
	select {
	case s.work <- fj:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// recycleComp hands a compressed frame's buffer back for the next frame.
// A buffer grown for a frame that hardly compressed (to
// maxFrameCompressed) is dropped once a frame that compressed well has
// used it: kept, one per frame in flight, they would hold the heap near the
// runtime's memory limit for the rare frame that needs one, and the
// garbage collector would run without pause (seen at 4 GiB: 1,400
// collections with 46 MiB live).
func (s *zstdSource) recycleComp(b []byte, size int64) {
	if cap(b) > int(size/2+64<<10) && int64(len(b)) <= size/2 {
		b = nil
	}
	s.comps <- b[:0]
}

// worker decodes frames: into its own buffer, writing them (writeTo) and
// waiting for the piece to be done before the next, or into the buffer
// the frame was given.
func (s *zstdSource) worker() {
	var own []byte
	release := make(chan struct{}, 1)
	for {
		var fj *frameJob
		select {
		case fj = <-s.work:
		case <-s.ctx.Done():
			return
		}
		buf := fj.out
		if s.direct != nil {
			buf = own
		}
		if cap(buf) < int(fj.size) {
			buf = make([]byte, 0, fj.size)
		}
		p, err := s.dec.DecodeAll(fj.comp, buf[:0])
		s.recycleComp(fj.comp, fj.size)
		if err == nil && int64(len(p)) != fj.size {
			err = fmt.Errorf("%w: a frame declares %d bytes and decodes to %d", ErrZstdFrame, fj.size, len(p))
		}
		if err != nil {
			p = buf[:0] // never keep what a bad frame made
		}
		if s.direct == nil {
			if err != nil {
				s.outs <- p
				fj.res <- result{err: err}
			} else {
				fj.res <- result{p: p, done: func() { s.outs <- p[:0] }}
			}
			continue
		}
		own = p[:0]
		if err == nil {
			if fj.at+fj.size > s.limit {
				err = &copyError{fmt.Errorf("%w: the image is larger than the %d bytes of its partition", ErrImageTooLarge, s.limit)}
			} else {
				// One write at a time unless the partition takes them
				// side by side (a File does; a test's writer need not).
				if !s.concurrent {
					s.writeMu.Lock()
				}
				_, werr := s.direct.WriteAt(p, fj.at)
				if !s.concurrent {
					s.writeMu.Unlock()
				}
				if werr == nil {
					blockdev.StartWriteback(s.direct, fj.at, int64(len(p)))
				}
				if werr != nil {
					err = &copyError{fmt.Errorf("writing at offset %d: %w", fj.at, werr)}
				}
			}
		}
		if err != nil {
			fj.res <- result{err: err}
			continue
		}
		// The sinks take the bytes from this buffer, in order: it is not
		// used again before they have.
		fj.res <- result{p: p, written: true, done: func() { release <- struct{}{} }}
		select {
		case <-release:
		case <-s.ctx.Done():
			return
		}
	}
}

// streamed decodes a large (or undeclared) frame as it arrives, in
// pieces; it can restart only at its end. It returns false when splitting
// must stop.
func (s *zstdSource) streamed(z *zframer, hdr []byte, size int64, checksum bool, out *int64, snap snapshotFunc,
	send func(job) bool, conc int) bool {
	j := job{stream: make(chan result, pipeDepth)}
	if !send(j) {
		return false
	}
	defer close(j.stream)
	// Every send to the consumer gives up when the source is closed.
	put := func(r result) bool {
		select {
		case j.stream <- r:
			return true
		case <-s.ctx.Done():
			return false
		}
	}
	pr, pw := io.Pipe()
	fed := make(chan error, 1) // the frame's bytes, all read (or not)
	go func() {
		_, err := pw.Write(hdr)
		if err == nil {
			// Each part read goes to the decoder before the next is read.
			buf := make([]byte, zstdMaxBlock)
			var part []byte
			flush := func() error {
				_, err := pw.Write(part)
				part = nil
				return err
			}
			err = z.blocks(checksum, func(n int) ([]byte, error) {
				if err := flush(); err != nil {
					return nil, err
				}
				part = buf[:n]
				return part, nil
			})
			if err == nil {
				err = flush()
			}
		}
		pw.CloseWithError(err)
		fed <- err
	}()
	var err error
	if s.stream == nil {
		s.stream, err = zstd.NewReader(pr, zstd.WithDecoderConcurrency(conc), zstd.WithDecoderMaxWindow(maxZstdWindow),
			zstd.WithDecoderLowmem(true), zstd.IgnoreChecksum(s.checked))
	} else {
		err = s.stream.Reset(pr)
	}
	ok := err == nil
	if !ok {
		put(result{err: err})
	}
	var produced int64
	for ok {
		var buf []byte
		select {
		case buf = <-s.chunks:
		case <-s.ctx.Done():
			ok = false
			continue
		}
		if buf == nil {
			buf = make([]byte, pipeChunk)
		}
		n, err := io.ReadFull(s.stream, buf)
		produced += int64(n)
		if n > 0 {
			if !put(result{p: buf[:n], done: func() { s.chunks <- buf }}) {
				ok = false
				break
			}
		} else {
			s.chunks <- buf
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = nil
			}
			if err == nil && size >= 0 && produced != size {
				err = fmt.Errorf("%w: a frame declares %d bytes and decodes to %d", ErrZstdFrame, size, produced)
			}
			if err != nil {
				put(result{err: err})
				ok = false
			}
			break
		}
	}
	pr.CloseWithError(io.ErrClosedPipe)
	// The next frame starts where this one's bytes end: wait for them to
	// be read to the end before going on.
	if ferr := <-fed; ferr != nil && ok {
		put(result{err: ferr})
		ok = false
	}
	*out += produced
	if ok {
		// The restart point travels with the last (empty) result.
		if end, err := at(snap, z.in, *out); err != nil {
			put(result{err: err})
			ok = false
		} else if !put(result{end: &end}) {
			ok = false
		}
	}
	return ok
}

// next returns the next piece of output, io.EOF at the end.
func (s *zstdSource) next() (piece, error) {
	if !s.started {
		s.started = true
		s.start()
	}
	if s.err != nil {
		return piece{}, s.err
	}
	for {
		if s.cur == nil {
			select {
			case j, ok := <-s.out:
				if !ok {
					s.err = io.EOF
					return piece{}, io.EOF
				}
				s.cur = &j
			case <-s.ctx.Done():
				s.err = s.ctx.Err()
				return piece{}, s.err
			}
		}
		j := s.cur
		if j.res != nil {
			var r result
			select {
			case r = <-j.res:
			case <-s.ctx.Done():
				s.err = s.ctx.Err()
				return piece{}, s.err
			}
			s.cur = nil
			if r.err != nil {
				s.err = r.err
				return piece{}, r.err
			}
			end := j.end
			s.autoSettle(end.In)
			done := r.done
			if done == nil {
				done = func() {}
			}
			return piece{p: r.p, written: r.written, restart: &end, done: done}, nil
		}
		var r result
		var ok bool
		select {
		case r, ok = <-j.stream:
		case <-s.ctx.Done():
			s.err = s.ctx.Err()
			return piece{}, s.err
		}
		if !ok {
			s.cur = nil
			continue
		}
		if r.err != nil {
			s.err = r.err
			return piece{}, r.err
		}
		if r.end != nil {
			s.autoSettle(r.end.In)
			return piece{restart: r.end, done: func() {}}, nil
		}
		done := r.done
		if done == nil {
			done = func() {}
		}
		return piece{p: r.p, done: done}, nil
	}
}

// close stops the workers and waits for them.
func (s *zstdSource) close() {
	s.cancel()
	if !s.started {
		s.started = true
		close(s.out)
	}
	go func() { // unblock a splitter stuck sending
		for j := range s.out {
			_ = j
		}
	}()
	s.wg.Wait()
	s.dec.Close()
	if s.stream != nil {
		s.stream.Close()
	}
}
