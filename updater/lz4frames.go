package updater

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"

	"github.com/pierrec/lz4/v4"
)

// An LZ4 stream (the frame format, lz4_Frame_format.md) is a sequence of
// frames, each a header, data blocks of at most its block size, an end
// mark and an optional checksum of the content. Bottlerocket ships
// `lz4 -9` frames: independent blocks of 4 MiB and a content checksum.
// A frame of independent blocks restarts at any block boundary with what
// its header said and the content checksum's running state (the codec
// state of a restart point, kept in the checkpoint); a frame of linked
// blocks restarts only at its end.
//
// Header: magic, FLG (version 01, block independence, block checksum,
// content size, content checksum, a reserved bit, dictionary id), BD
// (block maximum size 4..7: 64 KiB..4 MiB), the content size (8 bytes)
// and dictionary id (4 bytes) when flagged, and HC, the second byte of
// the xxh32 of the descriptor. Block: a 4-byte size (high bit: stored
// uncompressed; 0: the end mark), the data, a 4-byte xxh32 of the data
// when flagged. Skippable frames (magic 0x184D2A5?) carry a size and are
// skipped. The legacy format (magic 0x184C2102) is not recognised as lz4.

const (
	lz4Magic        = 0x184D2204
	lz4SkippableLow = 0x184D2A50
	lz4MaxBlock     = 4 << 20
	lz4DictWindow   = 64 << 10
	// lz4OutBuffers is how many decoded blocks wait for the copy.
	lz4OutBuffers = 3
)

// ErrLZ4Frame means the stream is not a well-formed sequence of LZ4
// frames.
var ErrLZ4Frame = errors.New("updater: malformed lz4 frame")

// lz4Frame is what a frame's header says, and where its decoding is.
type lz4Frame struct {
	indep, blockSum, contentSum bool
	maxBlock                    int
	contentSize                 int64 // -1: not declared
	out                         int64 // content decoded so far
	sum                         xxh32
}

// lz4StateLen is the length of an encoded lz4Frame (restartPoint.codec).
const lz4StateLen = 1 + 1 + 4 + 8 + 8 + xxh32StateLen

// marshal encodes f for a checkpoint.
func (f *lz4Frame) marshal() []byte {
	b := make([]byte, 0, lz4StateLen)
	b = append(b, 1) // version
	var flags byte
	for i, v := range []bool{f.indep, f.blockSum, f.contentSum} {
		if v {
			flags |= 1 << i
		}
	}
	b = append(b, flags)
	b = binary.LittleEndian.AppendUint32(b, uint32(f.maxBlock))
	b = binary.LittleEndian.AppendUint64(b, uint64(f.contentSize))
	b = binary.LittleEndian.AppendUint64(b, uint64(f.out))
	return f.sum.appendState(b)
}

// unmarshalLZ4Frame decodes a checkpoint's codec state.
func unmarshalLZ4Frame(b []byte) (*lz4Frame, error) {
	if len(b) != lz4StateLen || b[0] != 1 || b[1]&^7 != 0 {
		return nil, fmt.Errorf("%w: a restart state of %d bytes", ErrLZ4Frame, len(b))
	}
	f := &lz4Frame{indep: b[1]&1 != 0, blockSum: b[1]&2 != 0, contentSum: b[1]&4 != 0,
		maxBlock: int(binary.LittleEndian.Uint32(b[2:])), contentSize: int64(binary.LittleEndian.Uint64(b[6:])),
		out: int64(binary.LittleEndian.Uint64(b[14:]))}
	switch {
	case !f.indep:
		return nil, fmt.Errorf("%w: a restart state inside a frame of linked blocks", ErrLZ4Frame)
	case f.maxBlock != 64<<10 && f.maxBlock != 256<<10 && f.maxBlock != 1<<20 && f.maxBlock != 4<<20:
		return nil, fmt.Errorf("%w: a restart state with %d-byte blocks", ErrLZ4Frame, f.maxBlock)
	case f.out < 0 || f.contentSize < -1 || f.contentSize >= 0 && f.out > f.contentSize:
		return nil, fmt.Errorf("%w: a restart state at %d of %d bytes", ErrLZ4Frame, f.out, f.contentSize)
	}
	if err := f.sum.setState(b[22:]); err != nil {
		return nil, err
	}
	return f, nil
}

// lz4Source decodes an LZ4 stream block by block in its own goroutine
// (LZ4 decodes faster than any disk writes: one core is enough), reading
// its input exactly, never past the block it is in, so the bytes hashed
// below it at a restart point are exactly the stream up to there. It
// hands out one piece per block, with a restart point after every block
// of a frame of independent blocks and after every frame.
//
// Read-ahead (readAheadGate): no block is started while readAhead
// compressed bytes are read past the settled position.
//
// Memory: one compressed block buffer and lz4OutBuffers output buffers
// of the frame's block size (4 MiB at most), allocated on first use.
type lz4Source struct {
	decodeLoop
	r       io.Reader
	in, pos int64 // compressed offset read; output offset decoded
	snap    snapshotFunc
	cur     *lz4Frame // the frame being decoded (nil: between frames)
	dict    []byte    // linked blocks: the last 64 KiB decoded
	comp    []byte
	outs    chan []byte
	// left counts bytes read after the last frame that start no frame
	// (trailing data: leftover reports them).
	left int
	// first is the first frame's header when the stream was opened at its
	// start (restartable says whether it restarts inside it).
	first *lz4Frame
}

// newLZ4Source makes a source decoding r, whose first byte is at
// compressed offset in and whose output starts at offset out; state is
// the restart point's codec state (empty: between frames). At offset 0 it
// reads the first frame's header before returning.
func newLZ4Source(ctx context.Context, r io.Reader, in, out int64, state []byte, snap snapshotFunc) (*lz4Source, error) {
	s := &lz4Source{r: r, in: in, pos: out, snap: snap, outs: make(chan []byte, lz4OutBuffers)}
	s.initLoop(ctx, in, s.run)
	for range lz4OutBuffers {
		s.outs <- nil
	}
	if len(state) > 0 {
		f, err := unmarshalLZ4Frame(state)
		if err != nil {
			s.cancel()
			return nil, err
		}
		s.cur = f
	} else if in == 0 {
		f, eof, err := s.frame()
		if err != nil || eof {
			s.cancel()
			if err == nil {
				err = fmt.Errorf("%w: no frame", ErrLZ4Frame)
			}
			return nil, err
		}
		s.cur, s.first = f, f
	}
	return s, nil
}

// restartable says whether the stream restarts inside its first frame.
func (s *lz4Source) restartable() bool { return s.first == nil || s.first.indep }

func (s *lz4Source) read(p []byte) error {
	n, err := io.ReadFull(s.r, p)
	s.in += int64(n)
	if errors.Is(err, io.ErrUnexpectedEOF) || s.cur != nil && errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: the stream ends inside a frame", ErrLZ4Frame)
	}
	return err
}

// frame reads up to the next frame's header (skipping skippable frames)
// and parses it. eof: the stream ended, or what follows is no frame (its
// bytes are counted in left).
func (s *lz4Source) frame() (f *lz4Frame, eof bool, err error) {
	for {
		var m [4]byte
		n, err := io.ReadFull(s.r, m[:])
		s.in += int64(n)
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, true, nil
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			s.left = n
			return nil, true, nil
		}
		if err != nil {
			return nil, false, err
		}
		magic := binary.LittleEndian.Uint32(m[:])
		if magic&^0xf == lz4SkippableLow {
			if err := s.read(m[:]); err != nil {
				return nil, false, err
			}
			size := int64(binary.LittleEndian.Uint32(m[:]))
			k, err := io.CopyN(io.Discard, s.r, size)
			s.in += k
			if err != nil {
				return nil, false, fmt.Errorf("%w: a skippable frame is cut short", ErrLZ4Frame)
			}
			continue
		}
		if magic != lz4Magic {
			s.left = n
			return nil, true, nil
		}
		break
	}
	s.cur = &lz4Frame{contentSize: -1} // inside a frame from here (read's errors)
	var d [2]byte
	if err := s.read(d[:]); err != nil {
		return nil, false, err
	}
	flg, bd := d[0], d[1]
	if flg>>6 != 1 {
		return nil, false, fmt.Errorf("%w: version %d", ErrLZ4Frame, flg>>6)
	}
	if flg&2 != 0 || bd&0x8f != 0 {
		return nil, false, fmt.Errorf("%w: reserved bits set in its header", ErrLZ4Frame)
	}
	if flg&1 != 0 {
		return nil, false, fmt.Errorf("%w: it needs a dictionary", ErrLZ4Frame)
	}
	size := (bd >> 4) & 7
	if size < 4 {
		return nil, false, fmt.Errorf("%w: block size code %d", ErrLZ4Frame, size)
	}
	f = &lz4Frame{indep: flg&0x20 != 0, blockSum: flg&0x10 != 0, contentSum: flg&4 != 0,
		maxBlock: 1 << (8 + 2*size), contentSize: -1}
	desc := append([]byte(nil), flg, bd)
	if flg&8 != 0 {
		var c [8]byte
		if err := s.read(c[:]); err != nil {
			return nil, false, err
		}
		desc = append(desc, c[:]...)
		cs := binary.LittleEndian.Uint64(c[:])
		if cs > 1<<62 {
			return nil, false, fmt.Errorf("%w: content size %d", ErrLZ4Frame, cs)
		}
		f.contentSize = int64(cs)
	}
	var hc [1]byte
	if err := s.read(hc[:]); err != nil {
		return nil, false, err
	}
	if want := byte(xxh32Sum(desc) >> 8); hc[0] != want {
		return nil, false, fmt.Errorf("%w: header checksum 0x%02x, not 0x%02x", ErrLZ4Frame, hc[0], want)
	}
	f.sum.reset()
	s.dict = s.dict[:0]
	return f, false, nil
}

func (s *lz4Source) run() error {
	for {
		s.wait(s.ctx, s.in)
		if err := s.ctx.Err(); err != nil {
			return err
		}
		if s.cur == nil {
			f, eof, err := s.frame()
			if err != nil {
				return err
			}
			if eof {
				return nil
			}
			s.cur = f
			continue
		}
		done, err := s.block()
		if err != nil || done {
			return err
		}
	}
}

// block decodes the next block of the current frame and hands it out,
// or ends the frame at its end mark. done: the source is stopping.
func (s *lz4Source) block() (done bool, err error) {
	f := s.cur
	var h [4]byte
	if err := s.read(h[:]); err != nil {
		return false, err
	}
	v := binary.LittleEndian.Uint32(h[:])
	if v == 0 {
		if f.contentSum {
			if err := s.read(h[:]); err != nil {
				return false, err
			}
			if got, want := binary.LittleEndian.Uint32(h[:]), f.sum.sum(); got != want {
				return false, fmt.Errorf("%w: content checksum 0x%08x, the content's is 0x%08x", ErrLZ4Frame, got, want)
			}
		}
		if f.contentSize >= 0 && f.out != f.contentSize {
			return false, fmt.Errorf("%w: a frame declares %d bytes and decodes to %d", ErrLZ4Frame, f.contentSize, f.out)
		}
		s.cur = nil
		rp, err := at(s.snap, s.in, s.pos)
		if err != nil {
			return false, err
		}
		return !s.send(result{end: &rp}), nil
	}
	stored, n := v&(1<<31) != 0, int(v&^(1<<31))
	if n > f.maxBlock {
		return false, fmt.Errorf("%w: a %d-byte block in a frame of %d-byte blocks", ErrLZ4Frame, n, f.maxBlock)
	}
	if cap(s.comp) < n {
		s.comp = make([]byte, f.maxBlock)
	}
	comp := s.comp[:n]
	if err := s.read(comp); err != nil {
		return false, err
	}
	if f.blockSum {
		if err := s.read(h[:]); err != nil {
			return false, err
		}
		if got, want := binary.LittleEndian.Uint32(h[:]), xxh32Sum(comp); got != want {
			return false, fmt.Errorf("%w: block checksum 0x%08x, the block's is 0x%08x", ErrLZ4Frame, got, want)
		}
	}
	var out []byte
	select {
	case out = <-s.outs:
	case <-s.ctx.Done():
		return true, nil
	}
	if cap(out) < f.maxBlock {
		out = make([]byte, f.maxBlock)
	}
	out = out[:f.maxBlock]
	var k int
	switch {
	case stored:
		k = copy(out, comp)
	case f.indep:
		k, err = lz4.UncompressBlock(comp, out)
	default:
		k, err = lz4.UncompressBlockWithDict(comp, out, s.dict)
	}
	if err != nil {
		s.outs <- out[:0]
		return false, fmt.Errorf("%w: a block does not decode: %v", ErrLZ4Frame, err)
	}
	out = out[:k]
	if f.contentSize >= 0 && f.out+int64(k) > f.contentSize {
		s.outs <- out[:0]
		return false, fmt.Errorf("%w: a frame declares %d bytes and decodes to more", ErrLZ4Frame, f.contentSize)
	}
	f.out += int64(k)
	s.pos += int64(k)
	if f.contentSum {
		f.sum.write(out)
	}
	if !f.indep {
		if len(out) >= lz4DictWindow {
			s.dict = append(s.dict[:0], out[len(out)-lz4DictWindow:]...)
		} else {
			s.dict = append(s.dict, out...)
			if d := len(s.dict) - lz4DictWindow; d > 0 {
				s.dict = append(s.dict[:0], s.dict[d:]...)
			}
		}
	}
	r := result{p: out, done: func() { s.outs <- out[:0] }}
	if f.indep {
		rp, err := at(s.snap, s.in, s.pos)
		if err != nil {
			s.outs <- out[:0]
			return false, err
		}
		rp.codec = f.marshal()
		r.end = &rp
	}
	return !s.send(r), nil
}

// leftover is the bytes read after the last frame that start no frame.
func (s *lz4Source) leftover() int { return s.left }

// xxh32 is the 32-bit xxHash (seed 0) of the LZ4 frame format, with a
// state that a checkpoint can keep.
type xxh32 struct {
	v     [4]uint32
	total uint64
	mem   [16]byte
	n     int
}

const (
	xxhP1 uint32 = 2654435761
	xxhP2 uint32 = 2246822519
	xxhP3 uint32 = 3266489917
	xxhP4 uint32 = 668265263
	xxhP5 uint32 = 374761393
	// xxh32StateLen is the length of an encoded state.
	xxh32StateLen = 16 + 8 + 16 + 1
)

func (x *xxh32) reset() {
	p1, p2 := xxhP1, xxhP2 // wrapping arithmetic, as the algorithm wants
	*x = xxh32{v: [4]uint32{p1 + p2, p2, 0, 0 - p1}}
}

func xxhRound(acc, in uint32) uint32 {
	return bits.RotateLeft32(acc+in*xxhP2, 13) * xxhP1
}

func (x *xxh32) stripe(b []byte) {
	x.v[0] = xxhRound(x.v[0], binary.LittleEndian.Uint32(b))
	x.v[1] = xxhRound(x.v[1], binary.LittleEndian.Uint32(b[4:]))
	x.v[2] = xxhRound(x.v[2], binary.LittleEndian.Uint32(b[8:]))
	x.v[3] = xxhRound(x.v[3], binary.LittleEndian.Uint32(b[12:]))
}

func (x *xxh32) write(p []byte) {
	x.total += uint64(len(p))
	if x.n > 0 {
		k := copy(x.mem[x.n:], p)
		x.n += k
		p = p[k:]
		if x.n < 16 {
			return
		}
		x.stripe(x.mem[:])
		x.n = 0
	}
	for len(p) >= 16 {
		x.stripe(p)
		p = p[16:]
	}
	x.n = copy(x.mem[:], p)
}

func (x *xxh32) sum() uint32 {
	var h uint32
	if x.total >= 16 {
		h = bits.RotateLeft32(x.v[0], 1) + bits.RotateLeft32(x.v[1], 7) + bits.RotateLeft32(x.v[2], 12) + bits.RotateLeft32(x.v[3], 18)
	} else {
		h = x.v[2] + xxhP5 // the seed
	}
	h += uint32(x.total)
	p := x.mem[:x.n]
	for ; len(p) >= 4; p = p[4:] {
		h += binary.LittleEndian.Uint32(p) * xxhP3
		h = bits.RotateLeft32(h, 17) * xxhP4
	}
	for _, b := range p {
		h += uint32(b) * xxhP5
		h = bits.RotateLeft32(h, 11) * xxhP1
	}
	h ^= h >> 15
	h *= xxhP2
	h ^= h >> 13
	h *= xxhP3
	h ^= h >> 16
	return h
}

func (x *xxh32) appendState(b []byte) []byte {
	for _, v := range x.v {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	b = binary.LittleEndian.AppendUint64(b, x.total)
	b = append(b, x.mem[:]...)
	return append(b, byte(x.n))
}

func (x *xxh32) setState(b []byte) error {
	if len(b) != xxh32StateLen || b[len(b)-1] >= 16 || int(b[len(b)-1]) != int(binary.LittleEndian.Uint64(b[16:])%16) {
		return fmt.Errorf("%w: a content checksum state that cannot be", ErrLZ4Frame)
	}
	for i := range x.v {
		x.v[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	x.total = binary.LittleEndian.Uint64(b[16:])
	copy(x.mem[:], b[24:40])
	x.n = int(b[40])
	return nil
}

// xxh32Sum is the xxh32 of b.
func xxh32Sum(b []byte) uint32 {
	var x xxh32
	x.reset()
	x.write(b)
	return x.sum()
}
