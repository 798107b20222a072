package delta

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"
)

// MismatchError says which frame failed its id check.
type MismatchError struct {
	Frame int
	// Offset is the frame's offset in the image.
	Offset int64
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("delta: frame %d (image offset %d) does not match its id", e.Frame, e.Offset)
}

// Is makes a MismatchError match ErrMismatch.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// Hasher computes block digests (hash(salt || block), dm-verity's) and
// frame ids for one salt and block size. It is not safe for concurrent
// use; make one per goroutine.
type Hasher struct {
	salt      []byte
	blockSize int
	h         hash.Hash
	digests   []byte
}

// NewHasher returns a Hasher for the index's salt and block size.
func (x *Index) NewHasher() *Hasher { return NewHasher(x.Salt, x.BlockSize) }

// NewHasher returns a Hasher for a salt and block size.
func NewHasher(salt []byte, blockSize int) *Hasher {
	return &Hasher{salt: salt, blockSize: blockSize, h: sha256.New()}
}

// AppendDigests appends the digest of each whole block of data to dst.
// A partial block at the end is ignored.
func (h *Hasher) AppendDigests(dst, data []byte) []byte {
	for len(data) >= h.blockSize {
		h.h.Reset()
		h.h.Write(h.salt)
		h.h.Write(data[:h.blockSize])
		dst = h.h.Sum(dst)
		data = data[h.blockSize:]
	}
	return dst
}

// FrameID is the id of a frame's content: the sha256 of its block
// digests. data must be a whole number of blocks.
func (h *Hasher) FrameID(data []byte) ([IDSize]byte, error) {
	if len(data) == 0 || len(data)%h.blockSize != 0 {
		return [IDSize]byte{}, fmt.Errorf("delta: a frame of %d bytes is not a whole number of %d-byte blocks", len(data), h.blockSize)
	}
	h.digests = h.AppendDigests(h.digests[:0], data)
	return sha256.Sum256(h.digests), nil
}

// WindowID is the id of a window of block digests (IDSize bytes each).
func WindowID(digests []byte) [IDSize]byte { return sha256.Sum256(digests) }

// Check verifies that data is frame i of the index: exactly the frame's
// length, with its id. A mismatch is a *MismatchError (ErrMismatch).
func (x *Index) Check(h *Hasher, i int, data []byte) error {
	if i < 0 || i >= len(x.Frames) {
		return fmt.Errorf("%w: no frame %d", ErrIndex, i)
	}
	off, n := x.FrameRange(i)
	if int64(len(data)) != n {
		return &MismatchError{Frame: i, Offset: off}
	}
	id, err := h.FrameID(data)
	if err != nil {
		return &MismatchError{Frame: i, Offset: off}
	}
	if subtle.ConstantTimeCompare(id[:], x.Frames[i].ID[:]) != 1 {
		return &MismatchError{Frame: i, Offset: off}
	}
	return nil
}

// digestChunk is how much data a DigestReader reads at a time.
const digestChunk = 1 << 20

// DigestReader reads an image and yields the digest of each of its whole
// blocks, in order: the stream a Seed is made of when no hash tree gives
// the digests.
type DigestReader struct {
	ctx  context.Context
	r    io.ReaderAt
	size int64
	off  int64
	h    *Hasher
	buf  []byte
	digs []byte // digest buffer
	out  []byte // digests not yet returned (a tail of digs)
	err  error
}

// NewDigestReader returns a reader of the digests of r's blocks, for its
// first size bytes (whole blocks only). Reading stops with ctx's error
// when ctx is done.
func NewDigestReader(ctx context.Context, r io.ReaderAt, size int64, salt []byte, blockSize int) *DigestReader {
	return &DigestReader{ctx: ctx, r: r, size: size - size%int64(blockSize), h: NewHasher(salt, blockSize)}
}

// Read implements io.Reader.
func (d *DigestReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		if d.off >= d.size {
			d.err = io.EOF
			return 0, io.EOF
		}
		if err := d.ctx.Err(); err != nil {
			d.err = err
			return 0, err
		}
		n := min(int64(digestChunk), d.size-d.off)
		if d.buf == nil {
			d.buf = make([]byte, digestChunk)
		}
		k, err := d.r.ReadAt(d.buf[:n], d.off)
		if int64(k) < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			d.err = fmt.Errorf("delta: reading the seed at %d: %w", d.off, err)
			return 0, d.err
		}
		d.off += n
		d.digs = d.h.AppendDigests(d.digs[:0], d.buf[:n])
		d.out = d.digs
	}
	k := copy(p, d.out)
	d.out = d.out[k:]
	return k, nil
}
