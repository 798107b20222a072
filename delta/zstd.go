package delta

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// ErrFrame means a fetched frame does not decode to its frame's length
// (corrupt, truncated, or more output than the frame holds).
var ErrFrame = errors.New("delta: bad compressed frame")

// FrameDecoder decodes the frames of a seekable file one at a time, with
// the output bounded to the frame size whatever the frame's header says:
// a hostile frame cannot make it allocate more. One per goroutine.
type FrameDecoder struct {
	d   *zstd.Decoder
	buf []byte
}

// NewFrameDecoder returns a decoder for frames of at most frameSize bytes
// of output.
func NewFrameDecoder(frameSize int) (*FrameDecoder, error) {
	if frameSize <= 0 || frameSize > MaxFrameSize {
		return nil, fmt.Errorf("%w: frame size %d", ErrIndex, frameSize)
	}
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(frameSize)), zstd.WithDecoderMaxWindow(uint64(max(frameSize, zstd.MinWindowSize))))
	if err != nil {
		return nil, fmt.Errorf("delta: zstd: %w", err)
	}
	return &FrameDecoder{d: d, buf: make([]byte, 0, frameSize)}, nil
}

// Decode decodes src, which must be exactly one frame's bytes, and
// returns its output, which must be exactly want bytes. The result is
// valid until the next call.
func (f *FrameDecoder) Decode(src []byte, want int) ([]byte, error) {
	if want > cap(f.buf) {
		return nil, fmt.Errorf("%w: a frame of %d bytes is larger than the decoder's %d", ErrFrame, want, cap(f.buf))
	}
	out, err := f.d.DecodeAll(src, f.buf[:0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFrame, err)
	}
	if len(out) != want {
		return nil, fmt.Errorf("%w: it decodes to %d bytes, not %d", ErrFrame, len(out), want)
	}
	if cap(out) == cap(f.buf) {
		f.buf = out[:0]
	}
	return out, nil
}

// Close releases the decoder.
func (f *FrameDecoder) Close() { f.d.Close() }

// MixedBlocks decodes the blob of the appendix entry m, its output bounded
// to m's blocks, and checks each block against its digest. It returns the
// blocks in the order of m.Blocks, valid until the decoder's next call. A
// blob that does not decode to exactly those blocks is an ErrFrame error;
// a block that is not the one its digest names, a *MismatchError
// (ErrMismatch).
func (x *Index) MixedBlocks(dec *FrameDecoder, h *Hasher, m *Mixed) ([]byte, error) {
	want := len(m.Blocks) * x.BlockSize
	out, err := dec.Decode(m.Blob, want)
	if err != nil {
		return nil, fmt.Errorf("the appendix blob of frame %d: %w", m.Frame, err)
	}
	h.digests = h.AppendDigests(h.digests[:0], out)
	for j, p := range m.Blocks {
		got := h.digests[j*IDSize : (j+1)*IDSize]
		if int(p)*IDSize+IDSize > len(m.Digests) || !bytes.Equal(got, m.Digests[int(p)*IDSize:int(p)*IDSize+IDSize]) {
			off, _ := x.FrameRange(m.Frame)
			return nil, &MismatchError{Frame: m.Frame, Offset: off + int64(p)*int64(x.BlockSize)}
		}
	}
	return out, nil
}
