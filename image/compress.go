package image

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// Compression is how an update artifact is compressed.
type Compression string

// The compressions imgbuild writes. updog recognises each by its magic
// bytes.
const (
	CompressZstd Compression = "zstd"
	CompressXZ   Compression = "xz"
	CompressLZ4  Compression = "lz4"
	CompressNone Compression = "none"
)

// ErrCompression means a compression name imgbuild does not know.
var ErrCompression = errors.New("image: unknown compression")

// ParseCompression reads a --compress value.
func ParseCompression(s string) (Compression, error) {
	switch c := Compression(s); c {
	case CompressZstd, CompressXZ, CompressLZ4, CompressNone:
		return c, nil
	}
	return "", fmt.Errorf("%w %q (want zstd, xz, lz4 or none)", ErrCompression, s)
}

// Ext is the file name extension of an artifact so compressed, without
// the dot ("" for none).
func (c Compression) Ext() string {
	switch c {
	case CompressZstd:
		return "zst"
	case CompressXZ:
		return "xz"
	case CompressLZ4:
		return "lz4"
	}
	return ""
}

// MaxFrameBytes is the most compressed bytes one zstd frame (or one xz
// stream) of an artifact holds. Each frame is independent and records its
// uncompressed size in its header, so a reader that lost its place can
// restart at any frame boundary with a bounded buffer.
const MaxFrameBytes = 8 << 20

// frameInput is the input of one frame: small enough that even
// incompressible data, with zstd's worst-case expansion (an 1/256th plus a
// header), stays within MaxFrameBytes, and a whole number of 4 KiB blocks.
const frameInput = MaxFrameBytes - 64<<10

// ErrClosed is returned by a Compressor used after Close.
var ErrClosed = errors.New("image: compressor already closed")

// Compressor compresses what is written to it into w: zstd and xz as
// independent frames (streams) of frameInput bytes each, compressed in
// parallel and written in order; lz4 as one frame with pierrec/lz4's own
// parallel block compression; none as it is. Memory is bounded: at most
// workers+1 frames are in flight. It has the tar.Writer shape: Write, then
// Close (which flushes), with a sticky error.
type Compressor struct {
	c       Compression
	w       io.Writer
	sum     hash.Hash
	cur     []byte
	queue   chan *frame
	sem     chan struct{}
	done    chan struct{} // closed when the writer goroutine ends
	werr    error         // the writer goroutine's error; read after done
	failed  chan struct{} // closed on the writer goroutine's first error
	encode  func(dst, src []byte) ([]byte, error)
	lz      *lz4.Writer
	err     error
	closed  bool
	written int64
	// zero is the encoding of a whole frame of zeros, made once: most of a
	// fresh file system image is zeros.
	free     chan []byte // input buffers to reuse
	freeOut  chan []byte // output buffers to reuse
	zeroOnce sync.Once
	zero     []byte
	zeroErr  error
}

type frame struct {
	in, out []byte
	shared  bool // out is the cached zero frame: not to be reused
	err     error
	ready   chan struct{}
}

// outCap is an output buffer's capacity: the most a frame can take, so the
// encoder never grows (and copies) it.
const outCap = MaxFrameBytes + 64<<10

// NewCompressor returns a Compressor writing to w; workers <= 0 means
// GOMAXPROCS. When sum is not nil, everything written to w is written to
// sum as well (for zstd and xz on a goroutine of its own, off the path of
// the writes); it is complete when Close returns.
func NewCompressor(w io.Writer, c Compression, workers int, sum hash.Hash) (*Compressor, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	z := &Compressor{c: c, w: w, sum: sum}
	if sum != nil && (c == CompressNone || c == CompressLZ4) {
		z.w = io.MultiWriter(w, sum)
	}
	switch c {
	case CompressNone:
		return z, nil
	case CompressLZ4:
		z.lz = lz4.NewWriter(z.w)
		if err := z.lz.Apply(lz4.ConcurrencyOption(workers), lz4.BlockSizeOption(lz4.Block4Mb)); err != nil {
			return nil, fmt.Errorf("image: lz4: %w", err)
		}
		return z, nil
	case CompressZstd:
		// Entropy-coded literals even where there are no matches: without
		// it, text with no repeats (base64, say) is stored raw.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(workers), zstd.WithEncoderLevel(zstd.SpeedDefault),
			zstd.WithEncoderCRC(true), zstd.WithSingleSegment(true), zstd.WithAllLitEntropyCompression(true))
		if err != nil {
			return nil, fmt.Errorf("image: zstd: %w", err)
		}
		z.encode = func(dst, src []byte) ([]byte, error) { return enc.EncodeAll(src, dst), nil }
	case CompressXZ:
		// A 1 MiB dictionary: twice as fast as 8 MiB with ulikunitz/xz,
		// for about 2% more bytes; decoders need only that much memory.
		cfg := xz.WriterConfig{DictCap: 1 << 20}
		if err := cfg.Verify(); err != nil {
			return nil, fmt.Errorf("image: xz: %w", err)
		}
		z.encode = func(dst, src []byte) ([]byte, error) {
			buf := bytes.NewBuffer(dst)
			xw, err := cfg.NewWriter(buf)
			if err == nil {
				_, err = xw.Write(src)
			}
			if err == nil {
				err = xw.Close()
			}
			return buf.Bytes(), err
		}
	default:
		return nil, fmt.Errorf("%w %q", ErrCompression, c)
	}
	z.queue = make(chan *frame, workers)
	z.free = make(chan []byte, workers+2)
	z.freeOut = make(chan []byte, workers+2)
	z.sem = make(chan struct{}, workers)
	z.done = make(chan struct{})
	z.failed = make(chan struct{})
	go z.writeFrames()
	return z, nil
}

// writeFrames writes finished frames in order, and hands them to the
// output hash's goroutine, which hashes and recycles them.
func (z *Compressor) writeFrames() {
	hashQ := make(chan *frame, cap(z.freeOut))
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for f := range hashQ {
			if z.sum != nil && f.err == nil {
				z.sum.Write(f.out)
			}
			if !f.shared {
				select {
				case z.freeOut <- f.out[:0]:
				default:
				}
			}
		}
	}()
	defer func() {
		close(hashQ)
		<-hashed
		close(z.done)
	}()
	for f := range z.queue {
		<-f.ready
		if z.werr != nil {
			continue // drain
		}
		err := f.err
		if err == nil && len(f.out) > MaxFrameBytes {
			err = fmt.Errorf("image: a %s frame of %d bytes is larger than %d", z.c, len(f.out), MaxFrameBytes)
		}
		if err == nil {
			_, err = z.w.Write(f.out)
		}
		if err != nil {
			z.werr = err
			close(z.failed)
			continue
		}
		hashQ <- f
	}
}

// Write compresses p.
func (z *Compressor) Write(p []byte) (int, error) {
	if z.closed {
		return 0, ErrClosed
	}
	if z.err != nil {
		return 0, z.err
	}
	switch {
	case z.c == CompressNone:
		n, err := z.w.Write(p)
		z.written += int64(n)
		z.err = err
		return n, err
	case z.lz != nil:
		n, err := z.lz.Write(p)
		z.written += int64(n)
		z.err = err
		return n, err
	}
	n := len(p)
	for len(p) > 0 {
		if z.cur == nil {
			select {
			case z.cur = <-z.free:
			default:
				z.cur = make([]byte, 0, frameInput)
			}
		}
		k := min(len(p), frameInput-len(z.cur))
		z.cur = append(z.cur, p[:k]...)
		p = p[k:]
		if len(z.cur) == frameInput {
			if err := z.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	z.written += int64(n)
	return n, nil
}

// WriteZeros compresses n zero bytes, as Write would, without the caller
// (or, for whole frames, the Compressor) touching n bytes of memory: the
// holes of a sparse image cost nothing.
func (z *Compressor) WriteZeros(n int64) error {
	if z.closed {
		return ErrClosed
	}
	if z.encode == nil { // lz4, none: as it is
		return z.writeZeroBytes(n)
	}
	// Up to the next frame boundary, through the buffer.
	if len(z.cur) > 0 {
		k := min(n, int64(frameInput-len(z.cur)))
		if err := z.writeZeroBytes(k); err != nil {
			return err
		}
		n -= k
	}
	for ; n >= frameInput; n -= frameInput {
		if z.err != nil {
			return z.err
		}
		if err := z.enqueue(&frame{ready: make(chan struct{})}); err != nil {
			return err
		}
		z.written += frameInput
	}
	return z.writeZeroBytes(n)
}

// writeZeroBytes writes n zeros through Write.
func (z *Compressor) writeZeroBytes(n int64) error {
	for n > 0 {
		k := min(n, int64(len(zeroChunk)))
		if _, err := z.Write(zeroChunk[:k]); err != nil {
			return err
		}
		n -= k
	}
	return z.err
}

// flush hands the current frame to a worker.
func (z *Compressor) flush() error {
	if len(z.cur) == 0 {
		return nil
	}
	f := &frame{in: z.cur, ready: make(chan struct{})}
	z.cur = nil
	return z.enqueue(f)
}

// enqueue queues f for writing, in order, and has a worker compress it. A
// frame with no input is a whole frame of zeros.
func (z *Compressor) enqueue(f *frame) error {
	select {
	case z.queue <- f:
	case <-z.failed:
		z.err = z.werr
		return z.err
	}
	go func() {
		z.sem <- struct{}{}
		if f.in == nil || len(f.in) == frameInput && isZero(f.in) {
			z.zeroOnce.Do(func() { z.zero, z.zeroErr = z.encode(nil, make([]byte, frameInput)) })
			f.out, f.err, f.shared = z.zero, z.zeroErr, true
		} else {
			var dst []byte
			select {
			case dst = <-z.freeOut:
			default:
				dst = make([]byte, 0, outCap)
			}
			f.out, f.err = z.encode(dst, f.in)
		}
		if f.in != nil {
			select {
			case z.free <- f.in[:0]:
			default:
			}
		}
		f.in = nil
		<-z.sem
		close(f.ready)
	}()
	return nil
}

// Close compresses what is left and writes the end of the stream. It does
// not close the underlying writer.
func (z *Compressor) Close() error {
	if z.closed {
		return ErrClosed
	}
	z.closed = true
	switch {
	case z.c == CompressNone:
		return z.err
	case z.lz != nil:
		if err := z.lz.Close(); z.err == nil {
			z.err = err
		}
		return z.err
	}
	if z.err == nil {
		z.err = z.flush()
	}
	close(z.queue)
	<-z.done
	if z.err == nil {
		z.err = z.werr
	}
	return z.err
}
