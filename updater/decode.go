package updater

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// Codec names a compression format recognised by its magic bytes.
type Codec string

// The codecs updog installs.
const (
	CodecZstd Codec = "zstd"
	CodecXZ   Codec = "xz"
	CodecLZ4  Codec = "lz4"
	CodecGzip Codec = "gzip"
	CodecRaw  Codec = "raw"
)

// Limits on decoders, so a hostile stream cannot make them allocate
// without bound.
const (
	// maxZstdWindow bounds the zstd window (imgbuild writes 8 MiB frames;
	// zstd -19 --long uses up to 128 MiB windows, which we refuse).
	maxZstdWindow = 32 << 20
	// maxXZDict bounds the xz dictionary (xz -9 uses 64 MiB).
	maxXZDict = 64 << 20
	// peekBytes is how much is read to recognise a format.
	peekBytes = 6
)

var magics = []struct {
	codec Codec
	magic []byte
}{
	{CodecZstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{CodecXZ, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
	{CodecLZ4, []byte{0x04, 0x22, 0x4d, 0x18}},
	{CodecGzip, []byte{0x1f, 0x8b}},
}

// Sniff recognises a codec from the first bytes of a stream.
func Sniff(head []byte) Codec {
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.codec
		}
	}
	return CodecRaw
}

// decoded is an image's output as a source, and what is known of its
// input.
type decoded struct {
	src   source
	codec Codec
	// leftover is how many input bytes were read ahead and not consumed
	// by the decoder (after its end: bytes past the compressed stream).
	leftover func() int
	// restartable: the source's pieces carry restart points (zstd frame
	// boundaries, LZ4 blocks of a frame of independent blocks, xz blocks
	// with their sizes in their headers, raw anywhere); gzip streams, LZ4
	// frames of linked blocks and single-block xz streams restart from
	// zero after a process restart.
	restartable bool
}

// openSource recognises the format of r by its magic bytes (or, when
// resuming at a restart point, takes the codec it was) and returns its
// decoded output. r is the verified stream, positioned at compressed
// offset in; the output starts at offset out. Restartable codecs (zstd,
// LZ4, xz and raw) read r exactly, never ahead, so the bytes hashed below
// them at a restart point are exactly the stream up to it.
func openSource(ctx context.Context, r io.Reader, codec Codec, in, out int64, workers int, snap snapshotFunc) (*decoded, error) {
	return openSourceAt(ctx, r, codec, in, out, nil, workers, snap, false)
}

// openSourceAt is openSource going on from a restart point whose codec
// state (restartPoint.codec) is state. checked says the output is checked
// against a signed hash as it is written (the root's data blocks, against
// its dm-verity tree; the compressed bytes are always checked against
// their signed sha256): then zstd's own frame checksums, a weaker check
// of the same bytes, are not computed.
func openSourceAt(ctx context.Context, r io.Reader, codec Codec, in, out int64, state []byte, workers int, snap snapshotFunc, checked bool) (*decoded, error) {
	if codec == "" {
		head := make([]byte, peekBytes)
		n, err := io.ReadFull(r, head)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return nil, err
		}
		head = head[:n]
		codec = Sniff(head)
		r = io.MultiReader(bytes.NewReader(head), r)
	}
	none := func() int { return 0 }
	switch codec {
	case CodecZstd:
		zs, err := newZstdSource(ctx, r, in, out, workers, snap, checked)
		if err != nil {
			return nil, err
		}
		return &decoded{src: zs, codec: codec, leftover: none, restartable: true}, nil
	case CodecXZ:
		xs, err := newXZSource(ctx, r, in, out, state, snap)
		if err != nil {
			return nil, err
		}
		return &decoded{src: xs, codec: codec, leftover: xs.leftover, restartable: xs.restartable()}, nil
	case CodecLZ4:
		ls, err := newLZ4Source(ctx, r, in, out, state, snap)
		if err != nil {
			return nil, err
		}
		return &decoded{src: ls, codec: codec, leftover: ls.leftover, restartable: ls.restartable()}, nil
	case CodecRaw:
		if in != out {
			return nil, fmt.Errorf("updater: a raw image cannot restart at input %d, output %d", in, out)
		}
		return &decoded{src: newReaderSource(ctx, r, true, out, snap), codec: codec, leftover: none, restartable: true}, nil
	}
	d, err := newDecoder(r, workers)
	if err != nil {
		return nil, err
	}
	if d.codec != codec {
		return nil, fmt.Errorf("updater: the stream is %s, not %s", d.codec, codec)
	}
	rs := newReaderSource(ctx, d, false, out, nil)
	return &decoded{src: closing{rs, d.close}, codec: codec, leftover: d.leftover}, nil
}

// closing is a source that releases a decoder after its reader stops.
type closing struct {
	*readerSource
	release func()
}

func (c closing) close() {
	c.readerSource.close()
	c.release()
}

// decoder is a decompressing reader and what to release when done.
type decoder struct {
	io.Reader
	codec Codec
	close func()
	br    *bufio.Reader
}

// leftover is how many input bytes the buffer read ahead that the decoder
// did not consume: after the decoder's end, bytes past the compressed
// stream.
func (d *decoder) leftover() int { return d.br.Buffered() }

// newDecoder recognises the format of r by its magic bytes and returns a
// reader of the decompressed bytes. It never reads more than the decoder
// needs past the magic.
func newDecoder(r io.Reader, concurrency int) (*decoder, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	head, err := br.Peek(peekBytes)
	if err != nil && len(head) == 0 {
		if err == io.EOF {
			return &decoder{Reader: br, codec: CodecRaw, close: func() {}, br: br}, nil
		}
		return nil, err
	}
	codec := Sniff(head)
	d := &decoder{codec: codec, close: func() {}, br: br}
	switch codec {
	case CodecZstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(concurrency), zstd.WithDecoderMaxWindow(maxZstdWindow),
			zstd.WithDecoderMaxMemory(maxZstdWindow*4), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		d.Reader, d.close = zr, zr.Close
	case CodecXZ:
		// ulikunitz/xz reads a byte at a time: br buffers its input. One
		// stream only: its single-stream mode refuses any byte after it
		// (concatenated streams are legal xz but no image tool makes them;
		// the multi-stream mode silently ignores short trailing garbage).
		if err := checkXZDict(br); err != nil {
			return nil, err
		}
		xr, err := xz.ReaderConfig{SingleStream: true}.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		d.Reader = xr
	case CodecLZ4:
		// One goroutine: pierrec/lz4's concurrent mode leaks its goroutines
		// when a reader is abandoned before its end (a failed install).
		d.Reader = lz4.NewReader(br)
	case CodecGzip:
		// One member at a time, so bytes after the last one stay in br.
		next := func() (io.Reader, error) {
			gr, err := gzip.NewReader(br)
			if err != nil {
				return nil, fmt.Errorf("gzip: %w", err)
			}
			gr.Multistream(false)
			return gr, nil
		}
		mr, err := newMembers(br, magics[3].magic, next)
		if err != nil {
			return nil, err
		}
		d.Reader = mr
	default:
		d.Reader = br
	}
	return d, nil
}

// members reads a stream of concatenated members (gzip members), each
// started by its magic, and stops at the first byte that
// does not start another one, leaving it unread.
type members struct {
	br    *bufio.Reader
	magic []byte
	cur   io.Reader
	next  func() (io.Reader, error)
}

func newMembers(br *bufio.Reader, magic []byte, next func() (io.Reader, error)) (*members, error) {
	cur, err := next()
	if err != nil {
		return nil, err
	}
	return &members{br: br, magic: magic, cur: cur, next: next}, nil
}

func (m *members) Read(p []byte) (int, error) {
	for {
		n, err := m.cur.Read(p)
		if err != io.EOF {
			return n, err
		}
		if n > 0 {
			return n, nil
		}
		head, _ := m.br.Peek(len(m.magic))
		if !bytes.Equal(head, m.magic) {
			return 0, io.EOF
		}
		if m.cur, err = m.next(); err != nil {
			return 0, err
		}
	}
}

// checkXZDict refuses an xz stream whose first block asks for a
// dictionary larger than maxXZDict (the decoder would allocate it), by
// reading the stream header and the first block header without consuming
// them.
func checkXZDict(br *bufio.Reader) error {
	const streamHeader = 12
	b, err := br.Peek(streamHeader + 1)
	if err != nil {
		return nil // too short: the decoder reports it
	}
	hsize := (int(b[streamHeader]) + 1) * 4
	if b[streamHeader] == 0 {
		return nil // an index: no blocks
	}
	h, err := br.Peek(streamHeader + hsize)
	if err != nil {
		return nil
	}
	blk := h[streamHeader:]
	flags := blk[1]
	i := 2
	skipVarint := func() {
		for i < len(blk) && blk[i]&0x80 != 0 {
			i++
		}
		i++
	}
	if flags&0x40 != 0 {
		skipVarint() // compressed size
	}
	if flags&0x80 != 0 {
		skipVarint() // uncompressed size
	}
	nf := int(flags&0x03) + 1
	for f := 0; f < nf && i+2 < len(blk); f++ {
		id := blk[i]
		props := int(blk[i+1])
		i += 2
		if id == 0x21 && props == 1 && i < len(blk) {
			c := blk[i]
			if c > 40 {
				return fmt.Errorf("xz: bad LZMA2 dictionary code %d", c)
			}
			dict := uint64(2|(c&1)) << (c/2 + 11)
			if dict > maxXZDict {
				return fmt.Errorf("xz: the stream asks for a %d MiB dictionary, more than the %d MiB accepted", dict>>20, maxXZDict>>20)
			}
		}
		i += props
	}
	return nil
}
