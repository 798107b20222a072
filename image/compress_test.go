package image

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// testData is n bytes mixing the three kinds of content an image holds:
// incompressible runs, text and zeros.
func testData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for off := 0; off < n; off += 64 << 10 {
		end := min(off+64<<10, n)
		switch r.IntN(3) {
		case 0:
			for i := off; i < end; i++ {
				b[i] = byte(r.Uint32())
			}
		case 1:
			for i := off; i < end; i++ {
				b[i] = "the quick brown fox jumps over the lazy dog\n"[i%44]
			}
		}
	}
	return b
}

// frameLog records each Write it gets: the Compressor writes each zstd
// frame or xz stream in one Write.
type frameLog struct{ frames [][]byte }

func (f *frameLog) Write(p []byte) (int, error) {
	f.frames = append(f.frames, bytes.Clone(p))
	return len(p), nil
}

func (f *frameLog) all() []byte { return bytes.Join(f.frames, nil) }

func compressAll(t *testing.T, c Compression, data []byte, writes int) *frameLog {
	t.Helper()
	var out frameLog
	z, err := NewCompressor(&out, c, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Written in uneven pieces, as readOnce's chunks and a sink's would be.
	for len(data) > 0 {
		k := min(len(data), writes)
		if _, err := z.Write(data[:k]); err != nil {
			t.Fatal(err)
		}
		data = data[k:]
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	return &out
}

func decompress(t *testing.T, c Compression, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch c {
	case CompressZstd:
		d, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	case CompressXZ:
		x, err := xz.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		r = x
	case CompressLZ4:
		r = lz4.NewReader(bytes.NewReader(b))
	default:
		return b
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	return out
}

func TestCompressorRoundTrip(t *testing.T) {
	data := testData(frameInput+12345, 1)
	data = append(data, make([]byte, frameInput)...) // a whole frame of zeros
	for _, c := range []Compression{CompressZstd, CompressXZ, CompressLZ4, CompressNone} {
		t.Run(string(c), func(t *testing.T) {
			data := data
			if c == CompressXZ {
				// ulikunitz/xz is slow on random data: text, then zeros.
				data = append(bytes.Repeat([]byte("text compresses quickly\n"), frameInput/24+99), make([]byte, frameInput)...)
			}
			out := compressAll(t, c, data, 3<<20+17)
			if got := decompress(t, c, out.all()); !bytes.Equal(got, data) {
				t.Fatalf("round trip: %d bytes back, want %d", len(got), len(data))
			}
			// Deterministic: the same input gives the same bytes, whatever
			// the pieces it was written in.
			if again := compressAll(t, c, data, 1<<20); !bytes.Equal(again.all(), out.all()) {
				t.Fatal("compressing the same data twice gave different bytes")
			}
		})
	}
}

// TestCompressorFrames: zstd output is independent frames of at most
// MaxFrameBytes, each decodable alone and recording its content size; even
// incompressible data stays within the bound.
func TestCompressorFrames(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	random := make([]byte, frameInput+1000)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	data := append(random, testData(frameInput, 3)...)
	data = append(data, make([]byte, frameInput)...)
	out := compressAll(t, CompressZstd, data, 1<<20)
	if len(out.frames) != 4 {
		t.Fatalf("%d frames, want 4", len(out.frames))
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var back []byte
	for i, f := range out.frames {
		if len(f) > MaxFrameBytes {
			t.Errorf("frame %d is %d bytes, more than %d", i, len(f), MaxFrameBytes)
		}
		var h zstd.Header
		if err := h.Decode(f); err != nil || !h.HasFCS {
			t.Errorf("frame %d: header %+v %v: no content size", i, h, err)
		}
		got, err := dec.DecodeAll(f, nil)
		if err != nil {
			t.Fatalf("frame %d alone: %v", i, err)
		}
		if uint64(len(got)) != h.FrameContentSize {
			t.Errorf("frame %d: %d bytes, header says %d", i, len(got), h.FrameContentSize)
		}
		back = append(back, got...)
	}
	if !bytes.Equal(back, data) {
		t.Fatal("the frames do not decode to the data")
	}
}

type failWriter struct{ n int }

var errFail = errors.New("disk full")

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errFail
	}
	f.n--
	return len(p), nil
}

// TestCompressorErrors: a failing writer's error comes back from Write or
// Close and stays; a Compressor used after Close says so.
func TestCompressorErrors(t *testing.T) {
	for _, c := range []Compression{CompressZstd, CompressXZ, CompressNone} {
		z, err := NewCompressor(&failWriter{n: 1}, c, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, frameInput) // zeros: quick to compress
		var werr error
		for i := 0; i < 8 && werr == nil; i++ {
			_, werr = z.Write(data)
		}
		cerr := z.Close()
		if !errors.Is(werr, errFail) && !errors.Is(cerr, errFail) {
			t.Errorf("%s: write %v, close %v: the writer's error was lost", c, werr, cerr)
		}
		if _, err := z.Write([]byte{1}); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: write after close: %v", c, err)
		}
		if err := z.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: second close: %v", c, err)
		}
	}
}

func TestParseCompression(t *testing.T) {
	for _, s := range []string{"zstd", "xz", "lz4", "none"} {
		if c, err := ParseCompression(s); err != nil || string(c) != s {
			t.Errorf("%s: %v %v", s, c, err)
		}
	}
	for _, s := range []string{"", "gzip", "ZSTD", "zst"} {
		if _, err := ParseCompression(s); !errors.Is(err, ErrCompression) {
			t.Errorf("%q accepted: %v", s, err)
		}
	}
	if _, err := NewCompressor(io.Discard, "brotli", 1, nil); !errors.Is(err, ErrCompression) {
		t.Errorf("NewCompressor(brotli): %v", err)
	}
}

// TestCompressorWriteZeros: zeros given by WriteZeros compress to the same
// bytes as the zeros written, wherever the run starts and ends.
func TestCompressorWriteZeros(t *testing.T) {
	for _, c := range []Compression{CompressZstd, CompressLZ4, CompressNone} {
		for _, run := range [][2]int{{0, 3 * frameInput}, {1000, frameInput}, {frameInput - 5, 2*frameInput + 9}, {77, 3}, {0, frameInput + 5<<20}, {1, 5 << 20}} {
			head := testData(run[0], 9)
			tail := []byte("the end")
			var want, got bytes.Buffer
			a, _ := NewCompressor(&want, c, 2, nil)
			a.Write(head)
			a.Write(make([]byte, run[1]))
			a.Write(tail)
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			b, _ := NewCompressor(&got, c, 2, nil)
			b.Write(head)
			if err := b.WriteZeros(int64(run[1])); err != nil {
				t.Fatal(err)
			}
			b.Write(tail)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want.Bytes()) {
				t.Errorf("%s %v: WriteZeros gave other bytes", c, run)
			}
		}
	}
}

// TestCompressorSum: the hash given to NewCompressor sees exactly the
// bytes written, in order, for every compression.
func TestCompressorSum(t *testing.T) {
	data := append(testData(frameInput+5000, 11), make([]byte, 2*frameInput)...)
	for _, c := range []Compression{CompressZstd, CompressLZ4, CompressNone, CompressXZ} {
		if c == CompressXZ {
			data = append(bytes.Repeat([]byte("xz text\n"), 1000), make([]byte, frameInput)...)
		}
		var out bytes.Buffer
		h := sha256.New()
		z, err := NewCompressor(&out, c, 2, h)
		if err != nil {
			t.Fatal(err)
		}
		z.Write(data)
		if err := z.Close(); err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(out.Bytes()); !bytes.Equal(h.Sum(nil), want[:]) {
			t.Errorf("%s: the sum is not of the bytes written", c)
		}
	}
}
