package updater

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

const (
	// fuzzMaxIn is the largest fuzz input decoded: larger ones only slow
	// the fuzzer (and its minimizing) down.
	fuzzMaxIn = 4 << 10
	// fuzzMaxOut is the most output a fuzz input is decoded to: past it
	// the source is closed (RLE blocks expand 32768 times).
	fuzzMaxOut = 1 << 20
)

// fuzzData is n bytes of sparse text: they compress well, so seeds of
// several frames or blocks stay small.
func fuzzData(n int) []byte {
	b := make([]byte, n)
	for off := 0; off < n; off += 200 {
		copy(b[off:], fmt.Sprintf("block %d of the root file system\n", off))
	}
	return b
}

// lz4HandFrame builds an LZ4 frame (64 KiB blocks at most) whose blocks
// hold the given contents, however small (the seeds of the fuzzer stay
// small and fast), compressed where that is smaller, with block and
// content checksums; indep says whether its blocks are independent.
func lz4HandFrame(indep bool, blocks ...[]byte) []byte {
	flg := byte(0x40 | 0x10 | 0x04) // version 01, block checksums, content checksum
	if indep {
		flg |= 0x20
	}
	out := binary.LittleEndian.AppendUint32(nil, lz4Magic)
	out = append(out, flg, 4<<4)
	out = append(out, byte(xxh32Sum(out[4:6])>>8))
	var all []byte
	for _, b := range blocks {
		all = append(all, b...)
		c := make([]byte, lz4.CompressBlockBound(len(b)))
		n, err := lz4.CompressBlock(b, c, nil)
		blk, size := c[:n], uint32(n)
		if err != nil || n == 0 || n >= len(b) {
			blk, size = b, uint32(len(b))|1<<31
		}
		out = binary.LittleEndian.AppendUint32(out, size)
		out = append(out, blk...)
		out = binary.LittleEndian.AppendUint32(out, xxh32Sum(blk))
	}
	out = binary.LittleEndian.AppendUint32(out, 0)
	return binary.LittleEndian.AppendUint32(out, xxh32Sum(all))
}

// drained is what reading a source to its end gave.
type drained struct {
	out    []byte
	points []restartPoint
	err    error
	capped bool // stopped at fuzzMaxOut
}

// drainSource reads a source of n input bytes from offsets in and out to
// its end, in its own goroutine with a deadline, checking what every piece
// says: no piece larger than a frame, restart points in order, each at the
// output so far and inside the input. A source that does not end (or
// close) in time is a hang.
func drainSource(t *testing.T, in, out, n int64, open func(ctx context.Context) (source, error)) drained {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := make(chan drained, 1)
	go func() {
		var d drained
		defer func() { res <- d }()
		src, err := open(ctx)
		if err != nil {
			d.err = err
			return
		}
		defer src.close()
		lastIn := in
		for {
			pc, err := src.next()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					d.err = err
				}
				return
			}
			if len(pc.p) > maxParallelFrame {
				d.err = errors.New("a piece larger than a frame")
			}
			d.out = append(d.out, pc.p...)
			pc.done()
			if rp := pc.restart; rp != nil {
				if rp.Out != out+int64(len(d.out)) || rp.In < lastIn || rp.In > in+n {
					d.err = errors.New("a restart point out of place")
					t.Errorf("restart point %+v after %d bytes out from %d, %d in before, of %d from %d",
						*rp, len(d.out), out, lastIn, n, in)
					return
				}
				lastIn = rp.In
				d.points = append(d.points, *rp)
			}
			if d.err != nil {
				return
			}
			if len(d.out) > fuzzMaxOut {
				d.capped = true
				return
			}
		}
	}()
	select {
	case d := <-res:
		if ctx.Err() != nil {
			t.Fatalf("decoding %d bytes took more than 10 s", n)
		}
		return d
	case <-time.After(20 * time.Second):
		t.Fatalf("decoding %d bytes hangs", n)
	}
	return drained{}
}

// FuzzZstdFrames: the frame splitter, over arbitrary bytes, neither
// panics nor hangs; its pieces and restart points are in order; what it
// decodes to the end is what klauspost/compress decodes; and it restarts
// at a restart point with exactly the rest.
func FuzzZstdFrames(f *testing.F) {
	data := fuzzData(4 << 10)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		f.Fatal(err)
	}
	framed := zstdFrames(f, data, 1<<10)
	f.Add(framed, uint8(2))
	f.Add(framed[:len(framed)/2], uint8(1))
	f.Add(enc.EncodeAll(data[:1000], nil), uint8(0))
	// One frame without a content size (the streaming encoder's), and a
	// skippable frame before a frame.
	f.Add(compress(f, CodecZstd, data[:2000]), uint8(3))
	skip := binary.LittleEndian.AppendUint32(nil, zstdSkippableLow+3)
	skip = binary.LittleEndian.AppendUint32(skip, 5)
	f.Add(append(append(skip, "hello"...), enc.EncodeAll(data[:100], nil)...), uint8(1))
	// An RLE block: 4 bytes of block for 16 KiB of output.
	f.Add(enc.EncodeAll(make([]byte, 16<<10), nil), uint8(2))
	f.Add([]byte{}, uint8(0))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd}, uint8(0))
	enc.Close()
	ref, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(fuzzMaxOut), zstd.WithDecoderMaxWindow(maxZstdWindow))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte, workers uint8) {
		if len(in) > fuzzMaxIn {
			return
		}
		open := func(ctx context.Context, comp []byte, off, out int64, _ []byte) (source, error) {
			return newZstdSource(ctx, bytes.NewReader(comp), off, out, 1+int(workers%4), nil, false)
		}
		fuzzAgainst(t, in, open, "klauspost/compress", func() ([]byte, bool) {
			want, err := ref.DecodeAll(in, nil)
			return want, err == nil
		})
	})
}

// FuzzLZ4Frames: the LZ4 frame decoder, over arbitrary bytes and an
// arbitrary restart state, neither panics nor hangs; its pieces and
// restart points are in order; what it decodes to the end from the start
// is what pierrec/lz4 decodes; and it restarts at a restart point (with
// its state) with exactly the rest.
func FuzzLZ4Frames(f *testing.F) {
	data := fuzzData(4 << 10)
	indep := lz4HandFrame(true, data[:300], data[300:700], data[700:1000])
	f.Add(indep, []byte(nil))
	f.Add(indep[:len(indep)/2], []byte(nil))
	f.Add(lz4HandFrame(false, data[:300], data[300:700]), []byte(nil))
	f.Add(compress(f, CodecLZ4, data[:1000]), []byte(nil))
	if p, err := exec.LookPath("lz4"); err == nil {
		for _, flags := range [][]string{{"-BD"}, {"-9", "--content-size"}, {"-BX", "--no-frame-crc"}} {
			cmd := exec.Command(p, append(flags, "-c")...)
			cmd.Stdin = bytes.NewReader(data[:2000])
			if out, err := cmd.Output(); err == nil {
				f.Add(out, []byte(nil))
			}
		}
	}
	// A skippable frame, two frames, and a restart state taken inside a
	// frame with what follows it.
	skip := binary.LittleEndian.AppendUint32(nil, lz4SkippableLow+1)
	skip = binary.LittleEndian.AppendUint32(skip, 3)
	f.Add(append(append(skip, "abc"...), compress(f, CodecLZ4, data[:500])...), []byte(nil))
	f.Add(append(compress(f, CodecLZ4, data[:500]), compress(f, CodecLZ4, data[500:900])...), []byte(nil))
	ctx := context.Background()
	if src, err := newLZ4Source(ctx, bytes.NewReader(indep), 0, 0, nil, nil); err == nil {
		for {
			pc, err := src.next()
			if err != nil {
				break
			}
			pc.done()
			if rp := pc.restart; rp != nil && len(rp.codec) > 0 {
				f.Add(indep[rp.In:], rp.codec)
				break
			}
		}
		src.close()
	}
	f.Add([]byte{}, []byte(nil))
	f.Add([]byte{0x04, 0x22, 0x4d, 0x18}, []byte(nil))
	f.Fuzz(func(t *testing.T, in, state []byte) {
		if len(in) > fuzzMaxIn {
			return
		}
		open := func(ctx context.Context, comp []byte, off, out int64, st []byte) (source, error) {
			s, err := newLZ4Source(ctx, bytes.NewReader(comp), off, out, st, nil)
			if err != nil {
				return nil, err
			}
			return s, nil
		}
		if len(state) > 0 {
			// Going on from a restart state (a checkpoint's): the output
			// starts where the state says.
			var out int64
			if fr, err := unmarshalLZ4Frame(state); err == nil {
				out = fr.out
			}
			drainSource(t, 1<<20, out, int64(len(in)), opening(open, in, 1<<20, out, state))
			return
		}
		fuzzAgainst(t, in, open, "pierrec/lz4", func() ([]byte, bool) {
			want, err := io.ReadAll(io.LimitReader(lz4.NewReader(bytes.NewReader(in)), fuzzMaxOut+1))
			return want, err == nil && len(want) <= fuzzMaxOut
		})
	})
}

// FuzzXZStream: the xz block parser (xzblocks.go) on arbitrary bytes and
// restart states: no panic or hang, bounded output, the same bytes as
// ulikunitz/xz's own reader when both accept, and a restart from any
// restart point gives the rest.
func FuzzXZStream(f *testing.F) {
	data := fuzzData(4 << 10)
	if p, err := exec.LookPath("xz"); err == nil {
		for _, flags := range [][]string{{"-0", "-T2", "--block-size=1000"}, {"-1", "-T2", "--block-size=700", "--check=sha256"},
			{"-0", "-T2", "--block-size=1500", "--check=crc32"}, {"-0", "-T1"}} {
			cmd := exec.Command(p, append(flags, "-c")...)
			cmd.Stdin = bytes.NewReader(data[:3000])
			if out, err := cmd.Output(); err == nil {
				f.Add(out, []byte(nil))
				f.Add(out[:len(out)/2], []byte(nil))
			}
		}
	}
	f.Add(compress(f, CodecXZ, data[:1000]), []byte(nil))
	f.Add([]byte{}, []byte(nil))
	f.Add(xzHeaderMagic, []byte(nil))
	f.Fuzz(func(t *testing.T, in, state []byte) {
		if len(in) > fuzzMaxIn {
			return
		}
		open := func(ctx context.Context, comp []byte, off, out int64, st []byte) (source, error) {
			s, err := newXZSource(ctx, bytes.NewReader(comp), off, out, st, nil)
			if err != nil {
				return nil, err
			}
			return s, nil
		}
		if len(state) > 0 {
			drainSource(t, 1<<20, 1<<20, int64(len(in)), opening(open, in, 1<<20, 1<<20, state))
			return
		}
		fuzzAgainst(t, in, open, "ulikunitz/xz", func() ([]byte, bool) {
			xr, err := (xz.ReaderConfig{SingleStream: true}).NewReader(bytes.NewReader(in))
			if err != nil {
				return nil, false
			}
			want, err := io.ReadAll(io.LimitReader(xr, fuzzMaxOut+1))
			return want, err == nil && len(want) <= fuzzMaxOut
		})
	})
}

// sourceAt opens a source over comp, whose first byte is at compressed
// offset off and whose output starts at out, going on with a restart
// point's codec state.
type sourceAt func(ctx context.Context, comp []byte, off, out int64, state []byte) (source, error)

// opening is open's arguments bound, for drainSource.
func opening(open sourceAt, comp []byte, off, out int64, state []byte) func(ctx context.Context) (source, error) {
	return func(ctx context.Context) (source, error) { return open(ctx, comp, off, out, state) }
}

// fuzzAgainst drains a source over in from its start; when it decodes
// in whole, its output must be what the reference decoder makes of in
// (want, when that accepts it), and restarting at its middle restart
// point must give exactly the rest.
func fuzzAgainst(t *testing.T, in []byte, open sourceAt, reference string, want func() ([]byte, bool)) {
	t.Helper()
	d := drainSource(t, 0, 0, int64(len(in)), opening(open, in, 0, 0, nil))
	if d.err != nil || d.capped {
		return
	}
	if w, ok := want(); ok && !bytes.Equal(d.out, w) {
		t.Fatalf("decoded %d bytes, %s decodes %d other ones", len(d.out), reference, len(w))
	}
	if len(d.points) == 0 {
		return
	}
	rp := d.points[len(d.points)/2]
	again := drainSource(t, rp.In, rp.Out, int64(len(in))-rp.In, opening(open, in[rp.In:], rp.In, rp.Out, rp.codec))
	if again.err != nil || !bytes.Equal(again.out, d.out[rp.Out:]) {
		t.Fatalf("restarting at %+v: %v, %d bytes, want %d", rp, again.err, len(again.out), len(d.out)-int(rp.Out))
	}
}
