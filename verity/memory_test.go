package verity

import (
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// pattern is a data image of any size that takes no memory: each 8-byte
// word is its index times an odd constant, so every block differs.
type pattern struct{ size int64 }

func (p pattern) ReadAt(b []byte, off int64) (int, error) {
	if off >= p.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.size-off))
	for i := 0; i < n; {
		o := off + int64(i)
		w := uint64(o/8) * 0x9e3779b97f4a7c15
		if o%8 == 0 && n-i >= 8 {
			binary.LittleEndian.PutUint64(b[i:], w)
			i += 8
			continue
		}
		b[i] = byte(w >> (8 * (o % 8)))
		i++
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// heapUse is what one run did to the heap: the peak of HeapInuse above
// what was in use before (sampled every millisecond), and the bytes
// allocated.
type heapUse struct {
	peak, alloc uint64
}

// measureHeap runs f, sampling the heap.
func measureHeap(f func() error) (heapUse, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, baseAlloc := ms.HeapInuse, ms.TotalAlloc
	stop, peak := make(chan struct{}), make(chan uint64)
	go func() {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		top := uint64(0)
		for {
			runtime.ReadMemStats(&m)
			top = max(top, m.HeapInuse)
			select {
			case <-stop:
				peak <- top
				return
			case <-tick.C:
			}
		}
	}()
	err := f()
	close(stop)
	top := <-peak
	runtime.ReadMemStats(&ms)
	u := heapUse{alloc: ms.TotalAlloc - baseAlloc}
	if top > base {
		u.peak = top - base
	}
	return u, err
}

// patternDevice formats size bytes of pattern into a hash file.
func patternDevice(tb testing.TB, size int64, p Params) (*os.File, Params, []byte) {
	tb.Helper()
	f, err := os.Create(filepath.Join(tb.TempDir(), "hash"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	tr, err := Format(context.Background(), pattern{size}, size, f, p)
	if err != nil {
		tb.Fatal(err)
	}
	return f, tr.Params, tr.RootHash
}

// checkPattern streams size bytes of pattern through a Checker.
func checkPattern(hash io.ReaderAt, size int64, p Params, root []byte) error {
	c, err := NewChecker(context.Background(), hash, p, root)
	if err != nil {
		return err
	}
	if _, err := io.Copy(c, io.NewSectionReader(pattern{size}, 0, size)); err != nil {
		c.Close()
		return err
	}
	return c.Close()
}

// checkerHeapLimit is the most heap a Checker may use, whatever the data.
const checkerHeapLimit = 16 << 20

// checkerAllocBound is what a Checker may allocate at most, whatever the
// size of the data: its batches (at most one per worker in flight, twice,
// and one being filled), its windows on the hash device, one block per
// level, and 1 MiB for the rest.
func checkerAllocBound(p Params) uint64 {
	workers, batch := checkBatches(p)
	digest := algorithms[p.Hash].size
	return uint64(2*workers+1)*uint64(batch+batch/p.DataBlockSize*digest) + 3*checkWindow + 64*MaxBlockSize + 1<<20
}

// TestCheckerMemoryBounded checks 64 MiB of data with 512-byte data blocks
// and sha512 (a tree of 1/8 of the data: 8 MiB of level 0, which Build
// holds): the heap in use stays under checkerHeapLimit, and what is
// allocated stays under checkerAllocBound, which does not depend on the
// size of the data. BenchmarkCheckerMemory does the same over 1 GiB.
func TestCheckerMemoryBounded(t *testing.T) {
	const size = 64 << 20
	p := Params{Hash: "sha512", DataBlockSize: 512, HashBlockSize: 4096, Salt: []byte("salt")}
	hash, pp, root := patternDevice(t, size, p)
	u, err := measureHeap(func() error { return checkPattern(hash, size, pp, root) })
	if err != nil {
		t.Fatal(err)
	}
	bound := checkerAllocBound(pp)
	t.Logf("peak heap %.1f MiB above the start, %.1f MiB allocated (bound %.1f MiB)", float64(u.peak)/(1<<20), float64(u.alloc)/(1<<20), float64(bound)/(1<<20))
	if u.peak > checkerHeapLimit {
		t.Errorf("the heap grew by %d bytes, more than %d", u.peak, checkerHeapLimit)
	}
	if u.alloc > bound {
		t.Errorf("%d bytes allocated, more than the %d a Checker needs whatever the data", u.alloc, bound)
	}
}

// BenchmarkCheckerMemory checks 1 GiB of data (4096-byte blocks, sha256:
// 8 MiB of tree) streamed through a Checker and reports the peak heap in
// use above the start; it fails past checkerHeapLimit. For comparison it
// reports Build's peak over the same data.
func BenchmarkCheckerMemory(b *testing.B) {
	const size = 1 << 30
	p := DefaultParams()
	p.Salt = []byte("salt")
	hash, pp, root := patternDevice(b, size, p)
	b.SetBytes(size)
	b.ResetTimer()
	var peak, alloc uint64
	for i := 0; i < b.N; i++ {
		u, err := measureHeap(func() error { return checkPattern(hash, size, pp, root) })
		if err != nil {
			b.Fatal(err)
		}
		peak, alloc = max(peak, u.peak), max(alloc, u.alloc)
	}
	b.StopTimer()
	build, err := measureHeap(func() error {
		_, err := Build(context.Background(), pattern{size}, size, p)
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(alloc)/(1<<20), "alloc-MiB")
	b.ReportMetric(float64(build.peak)/(1<<20), "build-peak-heap-MiB")
	if peak > checkerHeapLimit {
		b.Errorf("checking 1 GiB grew the heap by %d bytes, more than %d", peak, checkerHeapLimit)
	}
}
