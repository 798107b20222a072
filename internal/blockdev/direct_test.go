package blockdev

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestDirectReads: reads through O_DIRECT at unaligned offsets and lengths
// return exactly what plain reads return, up to and at the end.
func TestDirectReads(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	data := make([]byte, 3<<20+777)
	rand.New(rand.NewSource(1)).Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(p, Options{Direct: true})
	if err != nil {
		t.Skipf("O_DIRECT not supported here: %v", err)
	}
	defer d.Close()
	if _, err := d.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("a direct handle is writable: %v", err)
	}
	for _, c := range []struct{ off, n int64 }{{0, 4096}, {1, 10}, {4095, 2}, {100, 2 << 20}, {1<<20 - 3, 1<<20 + 9}, {int64(len(data)) - 5, 5}} {
		got := make([]byte, c.n)
		n, err := d.ReadAt(got, c.off)
		if err != nil && !(errors.Is(err, io.EOF) && c.off+c.n == int64(len(data))) {
			t.Fatalf("ReadAt(%d, %d): %d %v", c.off, c.n, n, err)
		}
		if !bytes.Equal(got[:n], data[c.off:c.off+int64(n)]) || int64(n) != c.n {
			t.Fatalf("ReadAt(%d, %d): wrong bytes (%d read)", c.off, c.n, n)
		}
	}
	got := make([]byte, 100)
	if n, err := d.ReadAt(got, int64(len(data))-10); n != 10 || !errors.Is(err, io.EOF) {
		t.Fatalf("read across the end: %d %v", n, err)
	}
	all, err := io.ReadAll(io.NewSectionReader(d, 0, d.Size()))
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("sequential read: %v", err)
	}
}
