package updater

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/updog/updog/delta"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/verity"
)

// How the delta install fetches.
const (
	// deltaInFlight is how many range requests run at once.
	deltaInFlight = 4
	// deltaRunQueue is how many decoded frames each request holds ahead
	// of the writer: memory is about deltaInFlight × (deltaRunQueue+2)
	// frames.
	deltaRunQueue = 4
	// deltaTries is how often a frame may fail before the delta install
	// gives up (and, with delta = "auto", installs in full).
	deltaTries = 2
)

// errDeltaFallback ends a delta install that cannot go on; the root is
// then installed in full (or, with delta = "required", the update fails).
var errDeltaFallback = errors.New("the delta install cannot go on")

// deltaStep is the install loop's hook (installFrom): with a delta plan in
// use, the hash image is not downloaded (it is made from the root, after
// it) and the root image is installed by delta. It reports whether it did
// the image; when the delta install falls back, it writes the hash image
// in full and reports false, so the loop installs the root in full.
func (s *session) deltaStep(ctx context.Context, c *tufclient.Client, plan *Plan, img PlannedImage, parts map[string]*partition,
	cp *checkpoint, save func() error, got map[string]written, params *verity.Params, rootHash *[]byte) (bool, error) {
	d := plan.Delta
	if d == nil || !d.Use || (img.Kind != KindHash && img.Kind != KindRoot) {
		return false, nil
	}
	if img.Kind == KindHash {
		return true, nil
	}
	mv := plan.update.Images.Verity
	res, err := s.installRootDelta(ctx, c, d, mv, parts[KindRoot].dev, parts[KindHash].dev)
	if err == nil {
		got[KindRoot], got[KindHash] = res.root, res.hash
		*params, *rootHash = res.params, res.rootHash
		for kind, w := range map[string]written{KindRoot: res.root, KindHash: res.hash} {
			ip := cp.Images[kind]
			ip.Done, ip.In, ip.Out, ip.InState, ip.OutState = true, ip.Length, w.n, nil, nil
			ip.OutSHA256 = hex.EncodeToString(w.sha256)
		}
		return true, save()
	}
	if !errors.Is(err, errDeltaFallback) {
		return false, err
	}
	d.FellBack = err.Error()
	if s.u.cfg.Delta == DeltaRequired {
		return false, fmt.Errorf("%w: %w", ErrDeltaRequired, err)
	}
	s.u.log.Warn("the delta install falls back to a full install of the root image", "reason", err)
	// The full path needs the hash image first: its tree checks the root
	// as it is written.
	ip := cp.Images[KindHash]
	if !ip.Done {
		var hashImg PlannedImage
		for _, im := range plan.Images {
			if im.Kind == KindHash {
				hashImg = im
			}
		}
		w, err := s.writeImage(ctx, c, hashImg, parts[KindHash].dev, nil, nil, nil, ip, save)
		if err != nil {
			return false, err
		}
		if err := parts[KindHash].dev.Sync(); err != nil {
			return false, fmt.Errorf("syncing the hash partition: %w", err)
		}
		got[KindHash] = w
		ip.Done, ip.In, ip.Out, ip.InState, ip.OutState = true, ip.Length, w.n, nil, nil
		ip.OutSHA256 = hex.EncodeToString(w.sha256)
	} else {
		sum, err := hex.DecodeString(ip.OutSHA256)
		if err != nil {
			return false, err
		}
		got[KindHash] = written{n: ip.Out, sha256: sum}
	}
	// The root starts over: the delta wrote checked frames, not a prefix
	// the full path's checkpoint describes.
	rp := cp.Images[KindRoot]
	rp.Done, rp.In, rp.Out, rp.InState, rp.OutState, rp.Codec = false, 0, 0, nil, nil, ""
	return false, save()
}

// deltaResult is what a delta install of the root wrote.
type deltaResult struct {
	root, hash written
	params     verity.Params
	rootHash   []byte
}

// installRootDelta writes the root image into dst by delta, then makes
// the hash image from it into hashDev and checks it. An errDeltaFallback
// error means the root can still be installed in full.
func (s *session) installRootDelta(ctx context.Context, c *tufclient.Client, d *DeltaPlan, mv *manifest.Verity,
	dst, hashDev blockdev.Device) (deltaResult, error) {
	var res deltaResult
	x := d.x
	if x.ImageSize > dst.Size() {
		return res, fmt.Errorf("%w: the root image is %d bytes, its partition %d", ErrImageTooLarge, x.ImageSize, dst.Size())
	}
	if x.Verity.Length > hashDev.Size() {
		return res, fmt.Errorf("%w: the hash image is %d bytes, its partition %d", ErrImageTooLarge, x.Verity.Length, hashDev.Size())
	}
	active, closeA, err := s.readPartition(d.activeNum)
	if err != nil {
		return res, err
	}
	defer closeA()
	prog := s.u.o.Progress
	prog.Start(KindRoot, "delta", x.ImageSize)
	e := &deltaExec{ctx: ctx, x: x, p: d.p, offs: x.Offsets(), url: c.URL(d.seekTF), total: d.seekTF.Length,
		f: s.u.fetcher, dst: dst, seeds: []io.ReaderAt{active, dst}, fails: map[int]int{}, prog: prog}
	err = e.run()
	d.Fetched, d.Made, d.Streamed, d.Unassembled = e.fetched.Load(), int(e.requests.Load()), e.streamed, e.unassembled
	prog.Done(KindRoot, err)
	if err != nil {
		return res, err
	}
	if err := dst.Sync(); err != nil {
		return res, fmt.Errorf("syncing the root partition: %w", err)
	}
	s.u.log.Info("root image installed by delta", "fetched", d.Fetched, "requests", d.Made, "full", d.FullBytes, "streamed", d.Streamed)

	// The hash image, made here from the written root with our builder:
	// its sha256 must be the signed index's and its root hash the
	// manifest's.
	p := verity.DefaultParams()
	if mv.Hash != "" {
		p.Hash = mv.Hash
	}
	p.DataBlockSize, p.HashBlockSize, p.UUID = x.BlockSize, x.Verity.HashBlockSize, x.Verity.UUID
	p.DataBlocks = uint64(x.ImageSize / int64(x.BlockSize))
	if p.Salt, err = hex.DecodeString(mv.Salt); err != nil {
		return res, fmt.Errorf("%w: manifest verity salt: %w", ErrUntrusted, err)
	}
	want, err := hex.DecodeString(mv.RootHash)
	if err != nil {
		return res, fmt.Errorf("%w: manifest root hash: %w", ErrUntrusted, err)
	}
	prog.Start(KindHash, "build", x.ImageSize)
	tree, err := verity.Format(ctx, readerAtCounter{ctx: ctx, r: dst, add: func(n int64) { prog.Add(KindHash, n) }}, x.ImageSize, hashDev, p)
	prog.Done(KindHash, err)
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, fmt.Errorf("making the hash image from the written root: %w", err)
	}
	if subtle.ConstantTimeCompare(tree.RootHash, want) != 1 {
		return res, fmt.Errorf("%w: the root written by delta has root hash %x, the release's is %x", ErrCorrupt, tree.RootHash, want)
	}
	if tree.HashDeviceSize != x.Verity.Length {
		return res, fmt.Errorf("%w: the hash image made is %d bytes, the index says %d", ErrCorrupt, tree.HashDeviceSize, x.Verity.Length)
	}
	if err := hashDev.Sync(); err != nil {
		return res, fmt.Errorf("syncing the hash partition: %w", err)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, ctxReader{ctx, io.NewSectionReader(hashDev, 0, x.Verity.Length)}, make([]byte, pipeChunk)); err != nil {
		return res, fmt.Errorf("reading the hash image back: %w", err)
	}
	sum := h.Sum(nil)
	if subtle.ConstantTimeCompare(sum, x.Verity.SHA256[:]) != 1 {
		return res, fmt.Errorf("%w: the hash image made on the host has sha256 %x, the signed index says %x", ErrCorrupt, sum, x.Verity.SHA256)
	}
	p.DataBlocks = tree.DataBlocks
	res.root = written{n: x.ImageSize}
	res.hash = written{n: x.Verity.Length, sha256: sum}
	res.params, res.rootHash = p, tree.RootHash
	return res, nil
}

// deltaExec writes the frames of an index in order: each from a seed
// (read again and checked against its id), or from the range requests.
// Frames are written strictly in order, so a frame copied from the target
// itself (at or after its own offset, as planned) is read before anything
// is written over it.
type deltaExec struct {
	ctx   context.Context
	x     *delta.Index
	p     *delta.Plan
	offs  []int64
	url   string
	total int64
	f     *fetch.Fetcher
	dst   blockdev.Device
	seeds []io.ReaderAt
	fails map[int]int
	prog  Progress

	h   *delta.Hasher
	dec *delta.FrameDecoder
	buf []byte

	requests    atomic.Int64
	fetched     atomic.Int64
	streamed    bool
	unassembled int

	// stream is the whole seekable file, once a server ignored a Range
	// request: read from pos on.
	stream       io.ReadCloser
	streamPos    int64
	streamCancel context.CancelFunc
}

// fetchedFrame is one frame a range request delivered (data checked), or
// why the request stopped at frame i.
type fetchedFrame struct {
	i     int
	data  []byte
	err   error
	whole *fetch.RangeBody
}

// runFetch is one range request in flight.
type runFetch struct {
	r      delta.Run
	ch     chan fetchedFrame
	cancel context.CancelFunc
}

// framePool holds *[]byte (a pointer: putting a slice in an interface
// allocates).
var framePool = sync.Pool{}

func (e *deltaExec) frameBuf() []byte {
	if p, ok := framePool.Get().(*[]byte); ok && cap(*p) >= e.x.FrameSize {
		return (*p)[:0]
	}
	return make([]byte, 0, e.x.FrameSize)
}

func (e *deltaExec) run() error {
	e.h = e.x.NewHasher()
	var err error
	if e.dec, err = delta.NewFrameDecoder(e.x.FrameSize); err != nil {
		return err
	}
	defer e.dec.Close()
	e.buf = make([]byte, e.x.FrameSize)
	defer func() {
		if e.stream != nil {
			e.stream.Close()
		}
		if e.streamCancel != nil {
			e.streamCancel()
		}
	}()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	runs := e.p.Runs
	var inflight []*runFetch
	next := 0 // the next run to start
	start := func() {
		for next < len(runs) && len(inflight) < deltaInFlight && e.stream == nil {
			rf := e.startRun(ctx, runs[next])
			inflight = append(inflight, rf)
			next++
		}
	}
	defer func() {
		for _, rf := range inflight {
			rf.cancel()
			for f := range rf.ch {
				if f.whole != nil {
					f.whole.Close()
				}
			}
		}
	}()
	start()
	n := len(e.x.Frames)
	for i := 0; i < n; i++ {
		if err := e.ctx.Err(); err != nil {
			return err
		}
		off, size := e.x.FrameRange(i)
		var data []byte
		if e.stream != nil {
			if data, err = e.streamFrame(i); err != nil {
				return err
			}
		} else if len(inflight) > 0 && i >= inflight[0].r.First {
			rf := inflight[0]
			f, ok := <-rf.ch
			switch {
			case !ok:
				f.err = fmt.Errorf("%w: the range request for frames %d-%d ended early", delta.ErrFrame, rf.r.First, rf.r.End-1)
				fallthrough
			case f.err != nil:
				rf.cancel()
				for range rf.ch {
				}
				if e.ctx.Err() != nil {
					return e.ctx.Err()
				}
				// Repaired by asking again for the rest of the run.
				e.fails[i]++
				if e.fails[i] >= deltaTries {
					return fmt.Errorf("%w: frame %d failed %d times: %v", errDeltaFallback, i, e.fails[i], f.err)
				}
				inflight[0] = e.startRun(ctx, delta.Run{First: i, End: rf.r.End, Off: e.offs[i], Len: e.offs[rf.r.End] - e.offs[i]})
				i--
				continue
			case f.whole != nil:
				// The server ignores Range: this body is the whole file.
				// Stop the other requests and stream it from here on (its
				// own request is cancelled when the install ends).
				for _, o := range inflight[1:] {
					o.cancel()
				}
				e.stream, e.streamed = f.whole, true
				if data, err = e.streamFrame(i); err != nil {
					return err
				}
			default:
				data = f.data
			}
			if i == rf.r.End-1 && e.stream == nil {
				inflight = inflight[1:]
				start()
			}
		} else {
			data, err = e.fromSeed(i, off, size)
			if err != nil {
				return err
			}
			if data == nil { // in place, checked
				e.prog.Add(KindRoot, size)
				continue
			}
		}
		if _, err := e.dst.WriteAt(data, off); err != nil {
			return fmt.Errorf("writing the root image at %d: %w", off, err)
		}
		if cap(data) == e.x.FrameSize && &data[:1][0] != &e.buf[0] {
			b := data[:0]
			framePool.Put(&b)
		}
		e.prog.Add(KindRoot, size)
	}
	return nil
}

// fromSeed reads frame i from its planned seed and checks it, or
// assembles it; nil data means it is already in place. A frame the seed no
// longer holds, or that cannot be assembled as planned, is fetched on its
// own.
func (e *deltaExec) fromSeed(i int, off, size int64) ([]byte, error) {
	src := e.p.Sources[i]
	if src.Kind == delta.Assemble {
		if b, err := e.assemble(i, size); err == nil {
			return b, nil
		}
		e.unassembled++
		return e.fetchOne(i)
	}
	if src.Kind != delta.Missing && int(src.Seed) < len(e.seeds) {
		at := src.Offset
		if src.Kind == delta.InPlace {
			at = off
		}
		b := e.buf[:size]
		if k, _ := e.seeds[src.Seed].ReadAt(b, at); k == int(size) {
			if e.x.Check(e.h, i, b) == nil {
				if src.Kind == delta.InPlace {
					return nil, nil
				}
				return b, nil
			}
		}
	}
	return e.fetchOne(i)
}

// assemble makes frame i from its appendix blocks (decoded with the
// output bounded to them, each checked against its digest) and single
// blocks of the seeds (each read again and checked against its digest),
// then checks the whole frame against its id. It writes nothing: the
// frame, in e.buf, is written by the caller only when every check passed.
func (e *deltaExec) assemble(i int, size int64) ([]byte, error) {
	a := e.p.Assembly(i)
	if a == nil || a.Mixed < 0 || a.Mixed >= len(e.x.Mixed) {
		return nil, fmt.Errorf("updater: no assembly of frame %d", i)
	}
	m := &e.x.Mixed[a.Mixed]
	bs := e.x.BlockSize
	b := e.buf[:size]
	if m.Frame != i || len(a.Parts)*bs != int(size) || len(m.Digests) != len(a.Parts)*delta.IDSize {
		return nil, fmt.Errorf("updater: the assembly of frame %d does not fit it", i)
	}
	blob, err := e.x.MixedBlocks(e.dec, e.h, m)
	if err != nil {
		return nil, err
	}
	for j, p := range m.Blocks {
		copy(b[int(p)*bs:int(p+1)*bs], blob[j*bs:(j+1)*bs])
	}
	// The seed blocks, in runs of blocks that follow each other in one
	// seed, each block checked.
	var dig []byte
	for p := 0; p < len(a.Parts); {
		pt := a.Parts[p]
		if pt.Seed == delta.FromAppendix {
			p++
			continue
		}
		q := p + 1
		for q < len(a.Parts) && a.Parts[q].Seed == pt.Seed && a.Parts[q].Offset == pt.Offset+int64(q-p)*int64(bs) {
			q++
		}
		if int(pt.Seed) < 0 || int(pt.Seed) >= len(e.seeds) {
			return nil, fmt.Errorf("updater: frame %d: no seed %d", i, pt.Seed)
		}
		run := b[p*bs : q*bs]
		if k, err := e.seeds[pt.Seed].ReadAt(run, pt.Offset); k != len(run) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("updater: frame %d: reading seed %d at %d: %w", i, pt.Seed, pt.Offset, err)
		}
		dig = e.h.AppendDigests(dig[:0], run)
		if subtle.ConstantTimeCompare(dig, m.Digests[p*delta.IDSize:q*delta.IDSize]) != 1 {
			return nil, fmt.Errorf("updater: frame %d: seed %d at %d: %w", i, pt.Seed, pt.Offset, delta.ErrMismatch)
		}
		p = q
	}
	if err := e.x.Check(e.h, i, b); err != nil {
		return nil, err
	}
	return b, nil
}

// fetchOne fetches frame i on its own (a seed that changed, a frame
// outside every run), at most deltaTries times.
func (e *deltaExec) fetchOne(i int) ([]byte, error) {
	for {
		data, err := e.tryOne(i)
		if err == nil || e.ctx.Err() != nil {
			if e.ctx.Err() != nil {
				return nil, e.ctx.Err()
			}
			return data, nil
		}
		if errors.Is(err, errDeltaFallback) {
			return nil, err
		}
		e.fails[i]++
		if e.fails[i] >= deltaTries {
			return nil, fmt.Errorf("%w: frame %d failed %d times: %v", errDeltaFallback, i, e.fails[i], err)
		}
	}
}

func (e *deltaExec) tryOne(i int) ([]byte, error) {
	rf := e.startRun(e.ctx, delta.Run{First: i, End: i + 1, Off: e.offs[i], Len: e.offs[i+1] - e.offs[i]})
	f, ok := <-rf.ch
	for range rf.ch {
	}
	switch {
	case !ok:
		rf.cancel()
		return nil, fmt.Errorf("%w: no answer for frame %d", delta.ErrFrame, i)
	case f.whole != nil:
		// Its request is cancelled when the install ends.
		e.stream, e.streamed, e.streamCancel = f.whole, true, rf.cancel
		return e.streamFrame(i)
	}
	rf.cancel()
	return f.data, f.err
}

// startRun starts one single-range request for a run; its frames, decoded
// and checked, come on the channel in order. The channel is closed after
// the last frame or the first error.
func (e *deltaExec) startRun(ctx context.Context, r delta.Run) *runFetch {
	ctx, cancel := context.WithCancel(ctx)
	rf := &runFetch{r: r, ch: make(chan fetchedFrame, deltaRunQueue), cancel: cancel}
	go func() {
		defer close(rf.ch)
		send := func(f fetchedFrame) bool {
			select {
			case rf.ch <- f:
				return true
			case <-ctx.Done():
				return false
			}
		}
		e.requests.Add(1)
		body, err := e.f.OpenRange(ctx, e.url, r.Off, r.Len, e.total)
		if err != nil {
			send(fetchedFrame{i: r.First, err: err})
			return
		}
		if body.Whole {
			if !send(fetchedFrame{i: r.First, whole: body}) {
				body.Close()
			}
			return
		}
		defer body.Close()
		dec, err := delta.NewFrameDecoder(e.x.FrameSize)
		if err != nil {
			send(fetchedFrame{i: r.First, err: err})
			return
		}
		defer dec.Close()
		h := e.x.NewHasher()
		comp := make([]byte, 0, delta.MaxCompressedFrame(e.x.FrameSize))
		for j := r.First; j < r.End; j++ {
			clen := e.offs[j+1] - e.offs[j]
			comp = comp[:clen]
			if _, err := io.ReadFull(body, comp); err != nil {
				send(fetchedFrame{i: j, err: fmt.Errorf("reading frame %d: %w", j, err)})
				return
			}
			e.fetched.Add(clen)
			_, size := e.x.FrameRange(j)
			out, err := dec.Decode(comp, int(size))
			if err == nil {
				err = e.x.Check(h, j, out)
			}
			if err != nil {
				send(fetchedFrame{i: j, err: err})
				return
			}
			buf := append(e.frameBuf(), out...)
			if !send(fetchedFrame{i: j, data: buf}) {
				return
			}
		}
	}()
	return rf
}

// streamFrame reads frame i from the whole seekable file a server sent
// instead of a range, skipping what comes before it, and checks it. A
// frame that fails here fails the delta install.
func (e *deltaExec) streamFrame(i int) ([]byte, error) {
	if skip := e.offs[i] - e.streamPos; skip > 0 {
		k, err := io.CopyN(io.Discard, ctxReader{e.ctx, e.stream}, skip)
		e.streamPos += k
		e.fetched.Add(k)
		if err != nil {
			return nil, fmt.Errorf("%w: reading the whole seekable file: %v", errDeltaFallback, err)
		}
	} else if skip < 0 {
		return nil, fmt.Errorf("%w: the whole seekable file is past frame %d", errDeltaFallback, i)
	}
	clen := e.offs[i+1] - e.offs[i]
	comp := make([]byte, clen)
	k, err := io.ReadFull(ctxReader{e.ctx, e.stream}, comp)
	e.streamPos += int64(k)
	e.fetched.Add(int64(k))
	if err != nil {
		if e.ctx.Err() != nil {
			return nil, e.ctx.Err()
		}
		return nil, fmt.Errorf("%w: reading the whole seekable file: %v", errDeltaFallback, err)
	}
	_, size := e.x.FrameRange(i)
	out, err := e.dec.Decode(comp, int(size))
	if err == nil {
		err = e.x.Check(e.h, i, out)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: frame %d of the whole seekable file: %v", errDeltaFallback, i, err)
	}
	return append(e.frameBuf(), out...), nil
}
