package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/updog/updog/delta"
)

// TestHashFileBlocks: the set holds the digest of every 4 KiB chunk of
// every regular file (the last one padded with zeros), in
// subdirectories too, and nothing of symbolic links or other blocks.
func TestHashFileBlocks(t *testing.T) {
	dir := t.TempDir()
	salt := []byte("salt")
	h := delta.NewHasher(salt, delta.BlockSize)
	var want [][]byte
	for i, n := range []int{0, 1, 4096, 5000, 3*fileChunk + 100} {
		b := bytes.Repeat([]byte{byte('a' + i), byte(i)}, n/2+1)[:n]
		p := filepath.Join(dir, "d", string(rune('a'+i)))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		padded := append(b, make([]byte, (delta.BlockSize-len(b)%delta.BlockSize)%delta.BlockSize)...)
		d := h.AppendDigests(nil, padded)
		for j := 0; j < len(d); j += delta.IDSize {
			want = append(want, d[j:j+delta.IDSize])
		}
	}
	if err := os.Symlink("/a/target/that/is/metadata", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	// A FIFO in the tree is not a file's data, and is never opened (it
	// would block).
	if err := syscall.Mkfifo(filepath.Join(dir, "d", "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	fb, err := HashFileBlocks(context.Background(), dir, salt, delta.BlockSize, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range want {
		if !fb.Has(d) {
			t.Errorf("digest %d is not in the set", i)
		}
	}
	for _, other := range [][]byte{make([]byte, delta.BlockSize), bytes.Repeat([]byte("/a/target"), 512)[:delta.BlockSize]} {
		if fb.Has(h.AppendDigests(nil, other)) {
			t.Errorf("a block that is no file's chunk is in the set")
		}
	}
	if fb.Len() > len(want) {
		t.Errorf("%d digests in the set, %d chunks", fb.Len(), len(want))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := HashFileBlocks(ctx, dir, salt, delta.BlockSize, 1); err == nil {
		t.Error("a cancelled context is not an error")
	}
	if _, err := HashFileBlocks(context.Background(), filepath.Join(dir, "none"), salt, delta.BlockSize, 1); err == nil {
		t.Error("a missing tree is not an error")
	}
}

// TestSeekableWriterAppendix: the index's appendix has the frames that mix
// file data with metadata (zeros going into the blob with the metadata),
// not those of file data and zeros only or of metadata and zeros only,
// and leaves out the entries past AppendixMax.
func TestSeekableWriterAppendix(t *testing.T) {
	const bs = delta.BlockSize
	salt := []byte("salt")
	dir := t.TempDir()
	file := make([]byte, 40*bs)
	for i := range file {
		file[i] = byte(i/bs) + 'A'
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), file, 0o644); err != nil {
		t.Fatal(err)
	}
	fb, err := HashFileBlocks(context.Background(), dir, salt, bs, 1)
	if err != nil {
		t.Fatal(err)
	}
	data := func(i int) []byte { return file[i*bs : (i+1)*bs] }
	meta := func(i int) []byte { return bytes.Repeat([]byte{byte(i), 'm'}, bs/2) }
	zero := make([]byte, bs)
	// Frames of 4 blocks: d data, m metadata, 0 zeros.
	frames := []struct {
		layout string
		mixed  []uint16
	}{
		{"dddd", nil},
		{"dmdd", []uint16{1}},
		{"m000", nil},
		{"dd00", nil},
		{"m0dm", []uint16{0, 1, 3}},
		{"mmmm", nil},
		{"mdd", []uint16{0}}, // the last frame, shorter
	}
	var img []byte
	di, mi := 0, 0
	for _, f := range frames {
		for _, c := range f.layout {
			switch c {
			case 'd':
				img = append(img, data(di)...)
				di++
			case 'm':
				img = append(img, meta(mi)...)
				mi++
			default:
				img = append(img, zero...)
			}
		}
	}
	write := func(max int) *delta.Index {
		var out bytes.Buffer
		w, err := NewSeekableWriter(&out, SeekableOptions{FrameSize: 4 * bs, Salt: salt, FileBlocks: fb, AppendixMax: max, Workers: 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(img); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		x, err := w.Index("s")
		if err != nil {
			t.Fatal(err)
		}
		b, err := x.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if x, err = delta.Parse(b); err != nil {
			t.Fatal(err)
		}
		return x
	}
	x := write(1 << 20)
	dec, err := delta.NewFrameDecoder(x.FrameSize)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	h := x.NewHasher()
	var got []int
	for _, m := range x.Mixed {
		got = append(got, m.Frame)
		if !slices.Equal(m.Blocks, frames[m.Frame].mixed) {
			t.Errorf("frame %d: blocks %v in the blob, want %v", m.Frame, m.Blocks, frames[m.Frame].mixed)
		}
		out, err := x.MixedBlocks(dec, h, &m)
		if err != nil {
			t.Fatalf("frame %d: %v", m.Frame, err)
		}
		off, _ := x.FrameRange(m.Frame)
		for j, p := range m.Blocks {
			at := int(off) + int(p)*bs
			if !bytes.Equal(out[j*bs:(j+1)*bs], img[at:at+bs]) {
				t.Errorf("frame %d: blob block %d", m.Frame, p)
			}
		}
	}
	if !slices.Equal(got, []int{1, 4, 6}) {
		t.Errorf("mixed frames %v, want 1 4 6", got)
	}
	// A bound that holds the first entry only.
	first := 4 + x.Mixed[0].EncodedSize()
	if y := write(first); len(y.Mixed) != 1 || y.Mixed[0].Frame != 1 || y.AppendixSize() != first {
		t.Errorf("bound %d: %d entries, %d bytes", first, len(y.Mixed), y.AppendixSize())
	}
	// Below it, the first is left out; a later, smaller one that fits
	// is kept.
	if y := write(first - 1); y.FindMixed(1) != nil || y.AppendixSize() > first-1 || y.FindMixed(6) == nil {
		t.Errorf("bound %d: %d entries, %d bytes", first-1, len(y.Mixed), y.AppendixSize())
	}
}
