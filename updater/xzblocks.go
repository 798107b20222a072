package updater

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// An xz stream (the .xz file format 1.2.0) is a stream header, blocks, an
// index of the blocks and a stream footer; streams may be concatenated
// with zero padding between them. A block is a header (its size, flags,
// optional compressed and uncompressed sizes, filters, CRC32), LZMA2
// data, padding to 4 bytes and a check of the uncompressed data (none,
// CRC32, CRC64 or SHA-256, as the stream header says). Blocks are
// independent: `xz -T` (and `--block-size`) writes streams of many blocks
// with their sizes in the headers, and decoding restarts at any block
// boundary with only what the index check needs (the records seen so
// far, summarised). A block whose header has no compressed size (`xz`
// single-threaded writes one such block for the whole file) cannot be read
// exactly without decoding it: from there on the stream is read through a
// buffer and has no restart points.
//
// The LZMA2 data is decoded by ulikunitz/xz's lzma package, fed through a
// buffer (it reads a byte at a time), bounded to the block's compressed
// size; the framing is parsed and checked here.

// ErrXZStream means the stream is not a well-formed xz stream, or uses
// what updog does not decode (filters other than LZMA2).
var ErrXZStream = errors.New("updater: malformed xz stream")

var xzHeaderMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

var crc64Table = crc64.MakeTable(crc64.ECMA)

// xzStream is where the decoding of a stream is, as far as its index
// check needs: the check type and the records of the blocks so far.
type xzStream struct {
	flags        [2]byte
	records      uint64
	unpadded     uint64
	uncompressed uint64
	sum          hash.Hash // sha256 of the records, as the index encodes them
}

func newXZStream(flags [2]byte) *xzStream {
	return &xzStream{flags: flags, sum: sha256.New()}
}

// checkSize is the size of the block check.
func (x *xzStream) checkSize() int {
	switch x.flags[1] {
	case 1:
		return 4
	case 4:
		return 8
	case 10:
		return 32
	}
	return 0
}

func (x *xzStream) check() hash.Hash {
	switch x.flags[1] {
	case 1:
		return crc32.NewIEEE()
	case 4:
		return crc64.New(crc64Table)
	case 10:
		return sha256.New()
	}
	return nil
}

func (x *xzStream) record(unpadded, uncompressed uint64) {
	x.records++
	x.unpadded += unpadded
	x.uncompressed += uncompressed
	x.sum.Write(binary.AppendUvarint(binary.AppendUvarint(nil, unpadded), uncompressed))
}

// marshal encodes x for a checkpoint (restartPoint.codec).
func (x *xzStream) marshal() ([]byte, error) {
	st, err := x.sum.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := []byte{1, x.flags[0], x.flags[1]}
	b = binary.LittleEndian.AppendUint64(b, x.records)
	b = binary.LittleEndian.AppendUint64(b, x.unpadded)
	b = binary.LittleEndian.AppendUint64(b, x.uncompressed)
	return append(b, st...), nil
}

func unmarshalXZStream(b []byte) (*xzStream, error) {
	if len(b) < 27 || b[0] != 1 {
		return nil, fmt.Errorf("%w: a restart state of %d bytes", ErrXZStream, len(b))
	}
	x := newXZStream([2]byte{b[1], b[2]})
	if err := checkXZFlags(x.flags); err != nil {
		return nil, err
	}
	x.records = binary.LittleEndian.Uint64(b[3:])
	x.unpadded = binary.LittleEndian.Uint64(b[11:])
	x.uncompressed = binary.LittleEndian.Uint64(b[19:])
	if err := x.sum.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[27:]); err != nil {
		return nil, fmt.Errorf("%w: a restart state: %v", ErrXZStream, err)
	}
	return x, nil
}

func checkXZFlags(f [2]byte) error {
	if f[0] != 0 || f[1]&0xf0 != 0 {
		return fmt.Errorf("%w: reserved stream flags 0x%02x%02x", ErrXZStream, f[0], f[1])
	}
	switch f[1] {
	case 0, 1, 4, 10:
		return nil
	}
	return fmt.Errorf("%w: check type %d is not one updog knows", ErrXZStream, f[1])
}

// xzSource decodes an xz stream block by block in its own goroutine,
// reading its input exactly (while block headers give compressed sizes),
// and hands out pieces of at most pipeChunk bytes, with a restart point
// after every block and at the end. One stream only: bytes after it are
// left over (trailing data). Read-ahead: readAheadGate.
type xzSource struct {
	decodeLoop
	r       io.Reader // exact until inexact is set
	br      *bufio.Reader
	inexact bool  // reading through br: no restart points
	in, pos int64 // compressed offset read (while exact); output offset
	snap    snapshotFunc
	cur     *xzStream // the stream being decoded (nil: between streams)
	outs    chan []byte
	left    int
	// first says whether the stream restarts at its first block boundary.
	first bool
	// pending is the first block's header, read when the source opened.
	pending []byte
}

// newXZSource makes a source decoding r from compressed offset in and
// output offset out; state is the restart point's codec state (empty
// past the start: after the stream's end). At offset 0 it reads the stream header and peeks at
// the first block header before returning.
func newXZSource(ctx context.Context, r io.Reader, in, out int64, state []byte, snap snapshotFunc) (*xzSource, error) {
	s := &xzSource{r: r, in: in, pos: out, snap: snap, first: true, outs: make(chan []byte, pipeDepth)}
	s.initLoop(ctx, in, s.run)
	for range pipeDepth {
		s.outs <- nil
	}
	fail := func(err error) (*xzSource, error) { s.cancel(); return nil, err }
	switch {
	case len(state) > 0:
		x, err := unmarshalXZStream(state)
		if err != nil {
			return fail(err)
		}
		s.cur = x
	case in == 0:
		if err := s.stream(); err != nil {
			return fail(err)
		}
		var c [1]byte
		if err := s.read(c[:]); err != nil {
			return fail(err)
		}
		if c[0] == 0 {
			s.pending = c[:] // an empty stream: its index
			break
		}
		h, err := s.blockHeader(c[0])
		if err != nil {
			return fail(err)
		}
		s.pending, s.first = h, h[1]&0x40 != 0
	}
	return s, nil
}

func (s *xzSource) restartable() bool { return s.first }

// reader is where the input comes from now.
func (s *xzSource) reader() io.Reader {
	if s.inexact {
		return s.br
	}
	return s.r
}

func (s *xzSource) read(p []byte) error {
	n, err := io.ReadFull(s.reader(), p)
	s.in += int64(n)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: the stream is cut short", ErrXZStream)
	}
	return err
}

// stream reads the stream header and parses it.
func (s *xzSource) stream() error {
	var b [12]byte
	if err := s.read(b[:]); err != nil {
		return err
	}
	if !bytes.Equal(b[:6], xzHeaderMagic) {
		return fmt.Errorf("%w: a stream header's magic", ErrXZStream)
	}
	flags := [2]byte{b[6], b[7]}
	if crc32.ChecksumIEEE(flags[:]) != binary.LittleEndian.Uint32(b[8:]) {
		return fmt.Errorf("%w: a stream header's CRC32", ErrXZStream)
	}
	if err := checkXZFlags(flags); err != nil {
		return err
	}
	s.cur = newXZStream(flags)
	return nil
}

// restart makes a restart point here, when the input is read exactly.
func (s *xzSource) restart() (*restartPoint, error) {
	if s.inexact {
		return nil, nil
	}
	rp, err := at(s.snap, s.in, s.pos)
	if err != nil {
		return nil, err
	}
	if s.cur != nil {
		if rp.codec, err = s.cur.marshal(); err != nil {
			return nil, err
		}
	}
	return &rp, nil
}

func (s *xzSource) run() error {
	for {
		if !s.inexact {
			s.wait(s.ctx, s.in)
		}
		if err := s.ctx.Err(); err != nil {
			return err
		}
		if s.cur == nil {
			// After the stream: one stream only (concatenated streams and
			// stream padding are legal xz, but no image tool makes them),
			// so any byte here is trailing data.
			var b [4]byte
			n, err := io.ReadFull(s.reader(), b[:])
			s.in += int64(n)
			s.left = n
			if n > 0 || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		h := s.pending
		s.pending = nil
		if h == nil {
			var b [1]byte
			if err := s.read(b[:]); err != nil {
				return err
			}
			if h = b[:]; b[0] != 0 {
				var err error
				if h, err = s.blockHeader(b[0]); err != nil {
					return err
				}
			}
		}
		if h[0] == 0 {
			if err := s.index(); err != nil {
				return err
			}
			s.cur = nil
		} else if err := s.block(h); err != nil {
			return err
		}
		rp, err := s.restart()
		if err != nil {
			return err
		}
		if rp != nil && !s.send(result{end: rp}) {
			return nil
		}
	}
}

// uvarint reads a multibyte integer of the xz format from h (a block
// header or the index), at most 9 bytes, no superfluous zero byte.
func uvarint(r io.ByteReader) (uint64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("%w: a number is cut short", ErrXZStream)
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if c == 0 && i > 0 {
				return 0, fmt.Errorf("%w: a number with a superfluous zero byte", ErrXZStream)
			}
			return v, nil
		}
	}
	return 0, fmt.Errorf("%w: a number of more than 9 bytes", ErrXZStream)
}

// blockHeader reads the rest of a block header whose size byte is c and
// checks its CRC32.
func (s *xzSource) blockHeader(c byte) ([]byte, error) {
	hlen := (int(c) + 1) * 4
	h := make([]byte, hlen)
	h[0] = c
	if err := s.read(h[1:]); err != nil {
		return nil, err
	}
	if crc32.ChecksumIEEE(h[:hlen-4]) != binary.LittleEndian.Uint32(h[hlen-4:]) {
		return nil, fmt.Errorf("%w: a block header's CRC32", ErrXZStream)
	}
	return h, nil
}

// block decodes one block, its header h read.
func (s *xzSource) block(h []byte) error {
	hlen := len(h)
	hr := bytes.NewReader(h[2 : hlen-4])
	flags := h[1]
	if flags&0x3c != 0 {
		return fmt.Errorf("%w: reserved block flags 0x%02x", ErrXZStream, flags)
	}
	csize, usize := int64(-1), int64(-1)
	if flags&0x40 != 0 {
		v, err := uvarint(hr)
		if err != nil {
			return err
		}
		if v == 0 || v > 1<<62 {
			return fmt.Errorf("%w: a block of compressed size %d", ErrXZStream, v)
		}
		csize = int64(v)
	}
	if flags&0x80 != 0 {
		v, err := uvarint(hr)
		if err != nil {
			return err
		}
		if v > 1<<62 {
			return fmt.Errorf("%w: a block of uncompressed size %d", ErrXZStream, v)
		}
		usize = int64(v)
	}
	if flags&3 != 0 {
		return fmt.Errorf("%w: a block with %d filters (updog decodes LZMA2 alone)", ErrXZStream, flags&3+1)
	}
	id, err := uvarint(hr)
	if err != nil {
		return err
	}
	plen, err := uvarint(hr)
	if err != nil {
		return err
	}
	if id != 0x21 || plen != 1 {
		return fmt.Errorf("%w: filter 0x%x (updog decodes LZMA2 alone)", ErrXZStream, id)
	}
	prop, err := hr.ReadByte()
	if err != nil {
		return fmt.Errorf("%w: a filter is cut short", ErrXZStream)
	}
	if prop > 40 {
		return fmt.Errorf("%w: LZMA2 dictionary code %d", ErrXZStream, prop)
	}
	dict := int64(0xffffffff)
	if prop < 40 {
		dict = int64(2|prop&1) << (prop/2 + 11)
	}
	if dict > maxXZDict {
		return fmt.Errorf("%w: an xz stream needs a %d MiB dictionary, more than %d MiB", ErrImageTooLarge, dict>>20, maxXZDict>>20)
	}
	for hr.Len() > 0 {
		if b, _ := hr.ReadByte(); b != 0 {
			return fmt.Errorf("%w: a block header's padding is not zero", ErrXZStream)
		}
	}
	// The LZMA2 data: bounded to its compressed size when the header has
	// it (read exactly), else through a buffer for the rest of the
	// stream.
	var lr *io.LimitedReader
	src := &countReader{}
	if csize >= 0 && !s.inexact {
		lr = &io.LimitedReader{R: s.r, N: csize}
		src.r = bufio.NewReaderSize(lr, 64<<10)
	} else {
		if !s.inexact {
			s.br = bufio.NewReaderSize(s.r, 256<<10)
			s.inexact = true
		}
		src.r = s.br
	}
	dec, err := lzma.Reader2Config{DictCap: int(max(dict, lzma.MinDictCap))}.NewReader2(src)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrXZStream, err)
	}
	sum := s.cur.check()
	var n int64
	for {
		var out []byte
		select {
		case out = <-s.outs:
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
		if cap(out) < pipeChunk {
			out = make([]byte, pipeChunk)
		}
		out = out[:pipeChunk]
		k, rerr := io.ReadFull(dec, out)
		out = out[:k]
		if k > 0 {
			if sum != nil {
				sum.Write(out)
			}
			n += int64(k)
			s.pos += int64(k)
			if usize >= 0 && n > usize {
				s.outs <- out[:0]
				return fmt.Errorf("%w: a block declares %d bytes and decodes to more", ErrXZStream, usize)
			}
			o := out
			if !s.send(result{p: o, done: func() { s.outs <- o[:0] }}) {
				return nil
			}
		} else {
			s.outs <- out[:0]
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: a block does not decode: %v", ErrXZStream, rerr)
		}
	}
	if !dec.EOS() {
		return fmt.Errorf("%w: a block's LZMA2 data is cut short", ErrXZStream)
	}
	consumed := src.n
	if lr != nil && (lr.N != 0 || src.r.Buffered() != 0) || csize >= 0 && consumed != csize {
		return fmt.Errorf("%w: a block's data is not the %d bytes its header says", ErrXZStream, csize)
	}
	s.in += consumed
	if usize >= 0 && n != usize {
		return fmt.Errorf("%w: a block declares %d bytes and decodes to %d", ErrXZStream, usize, n)
	}
	if pad := (4 - (int64(hlen)+consumed)%4) % 4; pad > 0 {
		p := make([]byte, pad)
		if err := s.read(p); err != nil {
			return err
		}
		if !bytes.Equal(p, make([]byte, pad)) {
			return fmt.Errorf("%w: a block's padding is not zero", ErrXZStream)
		}
	}
	if cs := s.cur.checkSize(); cs > 0 {
		p := make([]byte, cs)
		if err := s.read(p); err != nil {
			return err
		}
		var got []byte
		if s.cur.flags[1] == 4 {
			got = binary.LittleEndian.AppendUint64(nil, sum.(hash.Hash64).Sum64())
		} else if s.cur.flags[1] == 1 {
			got = binary.LittleEndian.AppendUint32(nil, sum.(hash.Hash32).Sum32())
		} else {
			got = sum.Sum(nil)
		}
		if !bytes.Equal(p, got) {
			return fmt.Errorf("%w: a block's check does not match its content", ErrXZStream)
		}
	}
	s.cur.record(uint64(int64(hlen)+consumed+int64(s.cur.checkSize())), uint64(n))
	return nil
}

// index reads the index (its indicator byte already read) and the stream
// footer, and checks them against the blocks seen.
func (s *xzSource) index() error {
	crc := crc32.NewIEEE()
	crc.Write([]byte{0})
	size := int64(1)
	br := &countingByteReader{s: s, h: crc}
	count, err := uvarint(br)
	if err != nil {
		return err
	}
	if count != s.cur.records {
		return fmt.Errorf("%w: the index lists %d blocks, the stream has %d", ErrXZStream, count, s.cur.records)
	}
	sum := sha256.New()
	for i := uint64(0); i < count; i++ {
		u, err := uvarint(br)
		if err != nil {
			return err
		}
		c, err := uvarint(br)
		if err != nil {
			return err
		}
		sum.Write(binary.AppendUvarint(binary.AppendUvarint(nil, u), c))
	}
	if !bytes.Equal(sum.Sum(nil), s.cur.sum.Sum(nil)) {
		return fmt.Errorf("%w: the index does not describe the blocks", ErrXZStream)
	}
	size += br.n
	for ; size%4 != 0; size++ {
		c, err := br.ReadByte()
		if err != nil {
			return err
		}
		if c != 0 {
			return fmt.Errorf("%w: the index's padding is not zero", ErrXZStream)
		}
	}
	want := crc.Sum32()
	var f [16]byte
	if err := s.read(f[:]); err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(f[:]) != want {
		return fmt.Errorf("%w: the index's CRC32", ErrXZStream)
	}
	foot := f[4:]
	if crc32.ChecksumIEEE(foot[4:10]) != binary.LittleEndian.Uint32(foot) {
		return fmt.Errorf("%w: the stream footer's CRC32", ErrXZStream)
	}
	if back := (int64(binary.LittleEndian.Uint32(foot[4:])) + 1) * 4; back != size+4 { // with its CRC32
		return fmt.Errorf("%w: the footer says the index is %d bytes, it is %d", ErrXZStream, back, size+4)
	}
	if foot[8] != s.cur.flags[0] || foot[9] != s.cur.flags[1] || foot[10] != 'Y' || foot[11] != 'Z' {
		return fmt.Errorf("%w: the stream footer", ErrXZStream)
	}
	return nil
}

// countReader counts the bytes the LZMA2 decoder takes from a buffer.
type countReader struct {
	r *bufio.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.n++
	}
	return b, err
}

// countingByteReader reads the index a byte at a time from the source,
// hashing and counting what it reads.
type countingByteReader struct {
	s *xzSource
	h hash.Hash
	n int64
}

func (c *countingByteReader) ReadByte() (byte, error) {
	var b [1]byte
	if err := c.s.read(b[:]); err != nil {
		return 0, err
	}
	c.h.Write(b[:])
	c.n++
	return b[0], nil
}

// leftover is the bytes read after the stream (and, after a block
// without its size, what the buffer read ahead).
func (s *xzSource) leftover() int {
	if s.inexact {
		return s.left + s.br.Buffered()
	}
	return s.left
}
