package blockdev

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// directMin is the smallest aligned run a write sends through O_DIRECT:
// each direct write waits for the disk, so small ones (a delta install's
// 64 KiB frames) cost more than the page cache's copy; they go through
// the page cache instead.
const directMin = 256 << 10

// bouncePool holds aligned buffers of directChunk bytes for writes whose
// memory is not aligned.
var bouncePool = sync.Pool{New: func() any { return alignedBuf(directChunk) }}

// AlignedBuffer returns n bytes whose first byte is aligned as O_DIRECT
// needs, for reads from a File opened with Options.Direct.
func AlignedBuffer(n int) []byte { return *alignedBuf(n) }

// alignedBuf returns n bytes whose first byte is directAlign-aligned.
func alignedBuf(n int) *[]byte {
	raw := make([]byte, n+directAlign)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % directAlign); r != 0 {
		shift = directAlign - r
	}
	b := raw[shift : shift+n]
	return &b
}

// aligned reports whether p's first byte is directAlign-aligned.
func aligned(p []byte) bool {
	return len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

// directWriter is a second descriptor of a File's file opened write-only
// with O_DIRECT (see Options.DirectWrite).
type directWriter struct {
	f *os.File
	// off is set when the kernel refused a direct write (EINVAL: the
	// filesystem or device does not take them as aligned): from then on
	// every write goes through the page cache.
	off atomic.Bool
	// direct counts the bytes written through O_DIRECT (for tests).
	direct atomic.Int64
}

// openDirectWriter opens f's file again write-only with O_DIRECT, through
// /proc/self/fd so that it is the same file whatever happened to its path.
func openDirectWriter(f *os.File) (*directWriter, error) {
	if directFlag == 0 {
		return nil, errors.ErrUnsupported
	}
	g, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_WRONLY|directFlag, 0)
	if err != nil {
		return nil, err
	}
	return &directWriter{f: g}, nil
}

// writeAt writes p at off: the whole directAlign-aligned blocks in its
// middle through O_DIRECT when there are at least directMin bytes of them,
// the rest (a partial block at either end, or a small write) through
// page, the File's own descriptor. Both descriptors reach the same file,
// and the kernel keeps them coherent (a direct write flushes and drops the
// page cache of its range). Pieces written concurrently never share a
// block both write in full, so a block is never written by both paths at
// once.
func (w *directWriter) writeAt(page *os.File, p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	a := (off + directAlign - 1) &^ (directAlign - 1)
	b := end &^ (directAlign - 1)
	if b-a < directMin || w.off.Load() {
		return page.WriteAt(p, off)
	}
	n := 0
	if a > off {
		k, err := page.WriteAt(p[:a-off], off)
		n += k
		if err != nil {
			return n, err
		}
	}
	k, err := w.write(page, p[a-off:b-off], a)
	n += k
	if err != nil {
		return n, err
	}
	if end > b {
		k, err := page.WriteAt(p[b-off:], b)
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// write writes the aligned run p at the aligned offset off, straight from
// p when its memory is aligned, else through a pooled aligned buffer.
func (w *directWriter) write(page *os.File, p []byte, off int64) (int, error) {
	if aligned(p) {
		return w.pwrite(page, p, off)
	}
	bp := bouncePool.Get().(*[]byte)
	defer bouncePool.Put(bp)
	n := 0
	for n < len(p) {
		c := copy(*bp, p[n:])
		k, err := w.pwrite(page, (*bp)[:c], off+int64(n))
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// pwrite writes through O_DIRECT; when the kernel refuses (EINVAL) before
// writing anything, direct writes are turned off and p goes through the
// page cache.
func (w *directWriter) pwrite(page *os.File, p []byte, off int64) (int, error) {
	if !w.off.Load() {
		k, err := w.f.WriteAt(p, off)
		w.direct.Add(int64(k))
		if err == nil || k > 0 || !errors.Is(err, syscall.EINVAL) {
			return k, err
		}
		w.off.Store(true)
	}
	return page.WriteAt(p, off)
}

func (w *directWriter) close() error { return w.f.Close() }

// ConcurrentWrites reports whether w takes WriteAt calls from several
// goroutines at once (a File, or a Window over one), so that writers may
// write side by side instead of one at a time.
func ConcurrentWrites(w any) bool {
	switch d := w.(type) {
	case *File:
		return true
	case *window:
		return ConcurrentWrites(d.d)
	}
	return false
}
