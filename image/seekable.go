package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/delta"
)

// The zstd seekable format (zstd's contrib/seekable_format): independent
// frames, then a seek table in a skippable frame, which decoders that do
// not know it skip. The seek table: the skippable frame's magic and size,
// one entry per frame (compressed size, decompressed size, both u32
// little-endian; no checksums), then the footer: the number of frames
// (u32), a descriptor byte (0: no checksums) and the seekable magic.
const (
	seekTableMagic = 0x184D2A5E
	seekableMagic  = 0x8F92EAB1
	seekEntryBytes = 8
	seekFooter     = 9
)

// AppendSeekTable appends the seek table of frames (compressed and
// decompressed sizes) to b.
func AppendSeekTable(b []byte, clen, dlen []uint32) []byte {
	b = binary.LittleEndian.AppendUint32(b, seekTableMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(clen)*seekEntryBytes+seekFooter))
	for i := range clen {
		b = binary.LittleEndian.AppendUint32(b, clen[i])
		b = binary.LittleEndian.AppendUint32(b, dlen[i])
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(clen)))
	b = append(b, 0)
	return binary.LittleEndian.AppendUint32(b, seekableMagic)
}

// ErrSeekable means the seekable writer was misused (written after Close,
// or given an image that is not a whole number of blocks).
var ErrSeekable = errors.New("image: seekable writer")

// SeekableOptions configure a SeekableWriter.
type SeekableOptions struct {
	// FrameSize is each frame's output (default delta.DefaultFrameSize):
	// a multiple of BlockSize.
	FrameSize int
	// BlockSize (default delta.BlockSize) and Salt are those of the frame
	// ids: each block's digest is sha256(salt || block), dm-verity's.
	BlockSize int
	Salt      []byte
	// Workers bounds the compressing goroutines (0: GOMAXPROCS).
	Workers int
	// FileBlocks, when set, are the digests of the file data of the tree
	// the image was made from: the index then gets an appendix of the
	// frames that mix file data with other blocks (see delta.Mixed), of
	// at most AppendixMax bytes (the frames past it are left out).
	FileBlocks  *FileBlocks
	AppendixMax int
}

// seekBatch is how many frames a worker compresses at a time.
const seekBatch = 16

// SeekableWriter compresses what is written to it into w as a zstd
// seekable file (independent frames of FrameSize bytes of output, then
// the seek table), and computes each frame's id for the delta index. The
// frames are compressed in parallel and written in order; at most
// Workers+1 batches of 16 frames are in flight. It has the tar.Writer
// shape: Write (and WriteZeros), then Close, with a sticky error.
type SeekableWriter struct {
	o      SeekableOptions
	w      io.Writer
	sum    hash.Hash
	enc    *zstd.Encoder
	cur    []byte
	queue  chan *seekJob
	sem    chan struct{}
	done   chan struct{}
	failed chan struct{}
	werr   error
	err    error
	closed bool
	size   int64 // bytes written to it
	length int64 // bytes written to w

	mu     sync.Mutex
	frames []delta.Frame
	dlens  []uint32
	// The appendix, and its encoded size.
	mixed   []delta.Mixed
	apxSize int
	// zeroDigest is the digest of a block of zeros.
	zeroDigest [delta.IDSize]byte

	zeroOnce sync.Once
	zero     []byte // a whole frame of zeros, compressed
	zeroID   [delta.IDSize]byte
}

type seekJob struct {
	in     []byte // nil: seekBatch whole frames of zeros
	zeros  int
	out    []byte
	frames []delta.Frame
	dlens  []uint32
	// mixed are the job's mixed frames, numbered from the job's first.
	mixed []delta.Mixed
	ready chan struct{}
}

// NewSeekableWriter returns a SeekableWriter writing to w.
func NewSeekableWriter(w io.Writer, o SeekableOptions) (*SeekableWriter, error) {
	if o.BlockSize == 0 {
		o.BlockSize = delta.BlockSize
	}
	if o.FrameSize == 0 {
		o.FrameSize = delta.DefaultFrameSize
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.BlockSize < delta.MinBlockSize || o.BlockSize > delta.MaxBlockSize || o.BlockSize&(o.BlockSize-1) != 0 ||
		o.FrameSize < o.BlockSize || o.FrameSize > delta.MaxFrameSize || o.FrameSize%o.BlockSize != 0 {
		return nil, fmt.Errorf("%w: frame size %d and block size %d (want a power-of-two block and a frame of whole blocks up to %d)",
			ErrSeekable, o.FrameSize, o.BlockSize, delta.MaxFrameSize)
	}
	// Single-segment frames declare their size and need no window beyond
	// it; no checksum (each frame's id checks it, stronger).
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(o.Workers), zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderCRC(false), zstd.WithSingleSegment(true), zstd.WithAllLitEntropyCompression(true), zstd.WithLowerEncoderMem(true))
	if err != nil {
		return nil, fmt.Errorf("image: zstd: %w", err)
	}
	s := &SeekableWriter{o: o, sum: sha256.New(), enc: enc, queue: make(chan *seekJob, o.Workers),
		sem: make(chan struct{}, o.Workers), done: make(chan struct{}), failed: make(chan struct{})}
	s.w = io.MultiWriter(w, s.sum)
	copy(s.zeroDigest[:], delta.NewHasher(o.Salt, o.BlockSize).AppendDigests(nil, make([]byte, o.BlockSize)))
	go s.writeJobs()
	return s, nil
}

func (s *SeekableWriter) writeJobs() {
	defer close(s.done)
	for j := range s.queue {
		<-j.ready
		if s.werr != nil {
			continue
		}
		n, err := s.w.Write(j.out)
		s.length += int64(n)
		if err != nil {
			s.werr = err
			close(s.failed)
			continue
		}
		s.mu.Lock()
		first := len(s.frames)
		s.frames = append(s.frames, j.frames...)
		s.dlens = append(s.dlens, j.dlens...)
		for _, m := range j.mixed {
			n := m.EncodedSize()
			if len(s.mixed) == 0 {
				n += 4 // the entry count
			}
			if s.apxSize+n > s.o.AppendixMax {
				continue
			}
			m.Frame += first
			s.mixed = append(s.mixed, m)
			s.apxSize += n
		}
		s.mu.Unlock()
	}
}

func (s *SeekableWriter) batchBytes() int { return seekBatch * s.o.FrameSize }

// Write compresses p.
func (s *SeekableWriter) Write(p []byte) (int, error) {
	if s.closed {
		return 0, fmt.Errorf("%w: write after Close", ErrSeekable)
	}
	if s.err != nil {
		return 0, s.err
	}
	n := len(p)
	for len(p) > 0 {
		if s.cur == nil {
			s.cur = make([]byte, 0, s.batchBytes())
		}
		k := min(len(p), s.batchBytes()-len(s.cur))
		s.cur = append(s.cur, p[:k]...)
		p = p[k:]
		if len(s.cur) == s.batchBytes() {
			if err := s.flush(); err != nil {
				return n - len(p), err
			}
		}
	}
	s.size += int64(n)
	return n, nil
}

// WriteZeros compresses n zero bytes without being given them: whole
// batches of zero frames reuse one compressed zero frame.
func (s *SeekableWriter) WriteZeros(n int64) error {
	if s.closed {
		return fmt.Errorf("%w: write after Close", ErrSeekable)
	}
	bb := int64(s.batchBytes())
	for n > 0 {
		if s.err != nil {
			return s.err
		}
		if len(s.cur) == 0 && n >= bb {
			if err := s.enqueue(&seekJob{zeros: seekBatch, ready: make(chan struct{})}); err != nil {
				return err
			}
			s.size += bb
			n -= bb
			continue
		}
		k := min(n, bb-int64(len(s.cur)), int64(len(zeroChunk)))
		if _, err := s.Write(zeroChunk[:k]); err != nil {
			return err
		}
		n -= k
	}
	return s.err
}

func (s *SeekableWriter) flush() error {
	if len(s.cur) == 0 {
		return nil
	}
	j := &seekJob{in: s.cur, ready: make(chan struct{})}
	s.cur = nil
	return s.enqueue(j)
}

func (s *SeekableWriter) enqueue(j *seekJob) error {
	select {
	case s.queue <- j:
	case <-s.failed:
		s.err = s.werr
		return s.err
	}
	go func() {
		s.sem <- struct{}{}
		defer func() { <-s.sem; close(j.ready) }()
		h := delta.NewHasher(s.o.Salt, s.o.BlockSize)
		if j.in == nil {
			s.zeroOnce.Do(func() {
				z := make([]byte, s.o.FrameSize)
				s.zero = s.enc.EncodeAll(z, nil)
				s.zeroID, _ = h.FrameID(z)
			})
			for range j.zeros {
				j.out = append(j.out, s.zero...)
				j.frames = append(j.frames, delta.Frame{ID: s.zeroID, CLen: uint32(len(s.zero))})
				j.dlens = append(j.dlens, uint32(s.o.FrameSize))
			}
			return
		}
		var digests []byte
		for in := j.in; len(in) > 0; {
			f := in[:min(len(in), s.o.FrameSize)]
			in = in[len(f):]
			before := len(j.out)
			j.out = s.enc.EncodeAll(f, j.out)
			fr := delta.Frame{CLen: uint32(len(j.out) - before)}
			// A partial block (only at the very end) is refused by Close;
			// the id covers whole blocks.
			whole := f[:len(f)-len(f)%s.o.BlockSize]
			digests = h.AppendDigests(digests[:0], whole)
			fr.ID = delta.WindowID(digests)
			if m, ok := s.mixedFrame(whole, digests); ok {
				m.Frame = len(j.frames)
				j.mixed = append(j.mixed, m)
			}
			j.frames = append(j.frames, fr)
			j.dlens = append(j.dlens, uint32(len(f)))
		}
	}()
	return nil
}

// mixedFrame returns the appendix entry of a frame (whole blocks, with
// their digests) when it mixes file data with other blocks: metadata
// (a block that is neither zeros nor a block of a file) and zeros. The
// blob holds every block that is not file data.
func (s *SeekableWriter) mixedFrame(f, digests []byte) (delta.Mixed, bool) {
	fb := s.o.FileBlocks
	if fb == nil || s.o.AppendixMax <= 0 {
		return delta.Mixed{}, false
	}
	bs := s.o.BlockSize
	var blocks []uint16
	var meta, data int
	for b := 0; b*bs < len(f); b++ {
		d := digests[b*delta.IDSize : (b+1)*delta.IDSize]
		switch {
		case fb.Has(d):
			data++
			continue
		case [delta.IDSize]byte(d) != s.zeroDigest:
			meta++
		}
		blocks = append(blocks, uint16(b))
	}
	if meta == 0 || data == 0 {
		return delta.Mixed{}, false
	}
	raw := make([]byte, 0, len(blocks)*bs)
	for _, b := range blocks {
		raw = append(raw, f[int(b)*bs:int(b+1)*bs]...)
	}
	return delta.Mixed{Digests: bytes.Clone(digests), Blocks: blocks, Blob: s.enc.EncodeAll(raw, nil)}, true
}

// Close compresses what is left and writes the seek table. It does not
// close the underlying writer. The image must be a whole number of
// blocks.
func (s *SeekableWriter) Close() error {
	if s.closed {
		return fmt.Errorf("%w: closed twice", ErrSeekable)
	}
	s.closed = true
	if s.err == nil && s.size%int64(s.o.BlockSize) != 0 {
		s.err = fmt.Errorf("%w: the image is %d bytes, not a whole number of %d-byte blocks", ErrSeekable, s.size, s.o.BlockSize)
	}
	if s.err == nil && s.size == 0 {
		s.err = fmt.Errorf("%w: an empty image", ErrSeekable)
	}
	if s.err == nil {
		s.err = s.flush()
	}
	close(s.queue)
	<-s.done
	s.enc.Close()
	if s.err == nil {
		s.err = s.werr
	}
	if s.err != nil {
		return s.err
	}
	clen := make([]uint32, len(s.frames))
	for i, f := range s.frames {
		clen[i] = f.CLen
	}
	tab := AppendSeekTable(nil, clen, s.dlens)
	n, err := s.w.Write(tab)
	s.length += int64(n)
	s.err = err
	return err
}

// Index returns the delta index of what was written, once Close
// succeeded, naming the seekable file name.
func (s *SeekableWriter) Index(name string) (*delta.Index, error) {
	if !s.closed || s.err != nil {
		return nil, fmt.Errorf("%w: the index of an unfinished file", ErrSeekable)
	}
	x := &delta.Index{BlockSize: s.o.BlockSize, FrameSize: s.o.FrameSize, Hash: delta.HashSHA256, Salt: s.o.Salt,
		ImageSize: s.size, Seekable: delta.File{Name: name, Length: s.length}, Frames: s.frames, Mixed: s.mixed}
	copy(x.Seekable.SHA256[:], s.sum.Sum(nil))
	return x, x.Validate()
}
