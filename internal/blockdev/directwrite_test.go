package blockdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// openDirect opens a new file of size bytes under dir with DirectWrite;
// skip when the filesystem takes no O_DIRECT (the writes would not be
// direct, which the other tests cover).
func openDirect(t *testing.T, dir string, size int64) (*File, string) {
	t.Helper()
	p := filepath.Join(dir, "img")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	d, err := Open(p, Options{DirectWrite: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.dw == nil {
		if os.Getenv("CI") != "" && directFlag != 0 {
			t.Fatalf("%s takes no O_DIRECT: the direct-write tests need a filesystem that does", dir)
		}
		t.Skipf("%s takes no O_DIRECT", dir)
	}
	return d, p
}

// TestDirectWrites: writes of every shape (unaligned ends, unaligned
// memory, small, large, overwriting) through a DirectWrite File leave the
// file exactly as plain writes would, and the large aligned runs went
// around the page cache.
func TestDirectWrites(t *testing.T) {
	const size = 8 << 20
	d, p := openDirect(t, t.TempDir(), size)
	model := make([]byte, size)
	rng := rand.New(rand.NewSource(7))
	src := make([]byte, 3<<20+4096)
	rng.Read(src)
	cases := []struct {
		off, n int64
		skew   int // memory offset into src: 0 is aligned (src is a large allocation)
	}{
		{0, 1 << 20, 0},                   // aligned all round: straight from the caller's memory
		{1 << 20, 1 << 20, 1},             // unaligned memory: through the bounce buffer
		{2<<20 + 100, 1<<20 + 5000, 0},    // unaligned ends around an aligned middle
		{3<<20 + 7, 100, 0},               // small: the page cache
		{4 << 20, 256<<10 - 4096, 0},      // aligned but under directMin
		{5<<20 - 1, 3<<20 + 1, 3},         // to the end of the file
		{1<<20 + 4096, 512 << 10, 4096},   // overwrite part of a direct run
		{2 << 20, 4096, 9},                // one block over a mixed region
		{0, 4096 * 3, 0},                  // small overwrite of the first run
		{6 << 20, 2<<20 - 8192 + 17, 100}, // odd tail
	}
	for _, c := range cases {
		buf := src[c.skew : c.skew+int(c.n)]
		if n, err := d.WriteAt(buf, c.off); err != nil || n != len(buf) {
			t.Fatalf("WriteAt(%d bytes at %d): %d %v", c.n, c.off, n, err)
		}
		copy(model[c.off:], buf)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatalf("the file differs from what was written (first difference at %d)", firstDiff(got, model))
	}
	// Through O_DIRECT reads too: what the disk holds, not the cache.
	r, err := d.Reopen(Options{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	back, err := io.ReadAll(io.NewSectionReader(r, 0, size))
	if err != nil || !bytes.Equal(back, model) {
		t.Fatalf("read back with O_DIRECT: %v (first difference at %d)", err, firstDiff(back, model))
	}
	if d.directBytes() < 4<<20 {
		t.Fatalf("only %d bytes went through O_DIRECT", d.directBytes())
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestDirectWritesConcurrent: writers side by side whose pieces share
// partial blocks at their edges (as frames of any size written by
// parallel decoders do) leave every byte right.
func TestDirectWritesConcurrent(t *testing.T) {
	const size = 16 << 20
	d, p := openDirect(t, t.TempDir(), size)
	if !ConcurrentWrites(d) || !ConcurrentWrites(Window(d, 4096, 4096)) {
		t.Fatal("a File should take concurrent writes")
	}
	model := make([]byte, size)
	rand.New(rand.NewSource(3)).Read(model)
	// Pieces of 300001 bytes: every boundary inside a block.
	const piece = 300001
	var wg sync.WaitGroup
	errs := make(chan error, size/piece+1)
	for off := 0; off < size; off += piece {
		wg.Add(1)
		go func(off int) {
			defer wg.Done()
			end := min(off+piece, size)
			buf := append([]byte(nil), model[off:end]...)
			if _, err := d.WriteAt(buf, int64(off)); err != nil {
				errs <- err
			}
		}(off)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d.Sync()
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, model) {
		t.Fatalf("concurrent writes: first difference at %d", firstDiff(got, model))
	}
}

// TestDirectWriteRefused: on tmpfs (which takes O_DIRECT only on newer
// kernels) a DirectWrite File writes right either way; and a direct write
// the kernel refuses (EINVAL: here, memory not aligned) goes through the
// page cache instead, with direct writes off from then on.
func TestDirectWriteRefused(t *testing.T) {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dir, err := os.MkdirTemp("/dev/shm", "blockdev-test")
		if err == nil {
			defer os.RemoveAll(dir)
			p := filepath.Join(dir, "img")
			os.WriteFile(p, make([]byte, 1<<20), 0o644)
			d, err := Open(p, Options{DirectWrite: true})
			if err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte{0xAB}, 1<<20)
			if _, err := d.WriteAt(data, 0); err != nil {
				t.Fatalf("writing on %s: %v", dir, err)
			}
			got, _ := os.ReadFile(p)
			if !bytes.Equal(got, data) {
				t.Fatalf("on tmpfs: wrong bytes (%d written direct)", d.directBytes())
			}
			d.Close()
		}
	}
	d, p := openDirect(t, t.TempDir(), 1<<20)
	raw := make([]byte, 512<<10+1)
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	mis := raw[1:] // misaligned memory, aligned length
	// Straight to pwrite: the bounce buffer would hide the misalignment.
	if n, err := d.dw.pwrite(d.f, mis, 0); err != nil || n != len(mis) {
		t.Fatalf("a refused direct write: %d %v", n, err)
	}
	if !d.dw.off.Load() {
		t.Skip("this filesystem took a misaligned O_DIRECT write: nothing refused")
	}
	if _, err := d.WriteAt(raw[:512<<10], 512<<10); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got[:512<<10], mis) || !bytes.Equal(got[512<<10:], raw[:512<<10]) || d.directBytes() != 0 {
		t.Fatalf("after a refusal: wrong bytes or %d direct", d.directBytes())
	}
}

// TestDirectReadSequentialCache: a direct reader serves a sequential
// reader's next read from the chunk it read, but any other read goes to
// the file again (a write since is seen).
func TestDirectReadSequentialCache(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	data := bytes.Repeat([]byte{1}, 2<<20)
	os.WriteFile(p, data, 0o644)
	r, err := Open(p, Options{Direct: true})
	if err != nil {
		t.Skipf("O_DIRECT not supported here: %v", err)
	}
	defer r.Close()
	a := make([]byte, 1000)
	if _, err := r.ReadAt(a, 0); err != nil || a[0] != 1 {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, bytes.Repeat([]byte{2}, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// The same offset again: not sequential, read from the file.
	if _, err := r.ReadAt(a, 0); err != nil || a[0] != 2 || a[999] != 2 {
		t.Fatalf("a re-read came from the cache: %v %d", err, a[0])
	}
	// Sequential: from the chunk just read.
	if _, err := r.ReadAt(a, 1000); err != nil || a[0] != 2 {
		t.Fatalf("sequential read: %v %d", err, a[0])
	}
}

// sliceReaderAt is an io.ReaderAt over a byte slice that fails at failAt
// (when set).
type sliceReaderAt struct {
	b      []byte
	failAt int64
}

var errInjected = errors.New("injected read error")

func (s *sliceReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if s.failAt > 0 && off+int64(len(p)) > s.failAt {
		n := copy(p, s.b[off:max(off, s.failAt)])
		return n, errInjected
	}
	if off >= int64(len(s.b)) {
		return 0, io.EOF
	}
	n := copy(p, s.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestReadAhead: the bytes come in order whatever the caller's read
// sizes, a short source is an error, a read error arrives after the bytes
// before it, Close stops it anywhere, and a done context stops it.
func TestReadAhead(t *testing.T) {
	data := make([]byte, 5<<20+333)
	rand.New(rand.NewSource(5)).Read(data)
	src := &sliceReaderAt{b: data}
	for _, c := range []struct{ off, n int64 }{{0, int64(len(data))}, {12345, 3 << 20}, {0, 0}, {int64(len(data)) - 10, 10}} {
		ra := ReadAhead(context.Background(), src, c.off, c.n)
		var got bytes.Buffer
		buf := make([]byte, 77777)
		for {
			k, err := ra.Read(buf[:1+len(buf)%int(1+got.Len()%77777)])
			got.Write(buf[:k])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		ra.Close()
		if !bytes.Equal(got.Bytes(), data[c.off:c.off+c.n]) {
			t.Fatalf("ReadAhead(%d, %d): wrong bytes (%d)", c.off, c.n, got.Len())
		}
	}
	// More than the source holds.
	ra := ReadAhead(context.Background(), src, 0, int64(len(data))+1)
	if _, err := io.Copy(io.Discard, ra); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a short source: %v", err)
	}
	ra.Close()
	// A read error, after the bytes before it.
	bad := &sliceReaderAt{b: data, failAt: 3<<20 + 5}
	ra = ReadAhead(context.Background(), bad, 0, int64(len(data)))
	n, err := io.Copy(io.Discard, ra)
	if !errors.Is(err, errInjected) || n < 3<<20 || n > 3<<20+5 {
		t.Fatalf("a failing source: %d bytes, %v", n, err)
	}
	ra.Close()
	// Close before reading everything returns, and the reads stop.
	ra = ReadAhead(context.Background(), src, 0, int64(len(data)))
	ra.Read(make([]byte, 10))
	ra.Close()
	// A done context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ra = ReadAhead(ctx, src, 0, int64(len(data)))
	if _, err := io.Copy(io.Discard, ra); !errors.Is(err, context.Canceled) {
		t.Fatalf("a done context: %v", err)
	}
	ra.Close()
}

func ExampleReadAhead() {
	r := bytes.NewReader([]byte("what the disk holds"))
	ra := ReadAhead(context.Background(), r, 9, 10)
	defer ra.Close()
	b, err := io.ReadAll(ra)
	fmt.Println(string(b), err)
	// Output: disk holds <nil>
}
