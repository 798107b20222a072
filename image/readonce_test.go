package image

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestReadOnceSparse: reading a region of a sparse file through its holes
// gives exactly the file's bytes, wherever the data and the region lie.
func TestReadOnceSparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 24 << 20
	f.Truncate(size)
	for _, off := range []int64{0, 4095, 1 << 20, 9<<20 + 3, 13 << 20, size - 10} {
		f.WriteAt([]byte("data here!"), off)
	}
	f.WriteAt(bytes.Repeat([]byte{7}, 5<<20), 15<<20) // a long run of data
	want, _ := os.ReadFile(p)
	for _, r := range []region{{f: f, size: size}, {f: f, off: 4096, size: size - 8192}, {f: f, off: 9 << 20, size: 1 << 20}, {f: f, off: 14 << 20, size: 8 << 20}} {
		var got bytes.Buffer
		if err := readOnce(context.Background(), r, &got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want[r.off:r.off+r.size]) {
			t.Errorf("region %d+%d: the bytes read differ from the file's", r.off, r.size)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := readOnce(ctx, region{f: f, size: size}, &bytes.Buffer{}); err == nil {
		t.Error("a cancelled read went on")
	}
}
