package blockdev

import (
	"io"
	"os"
	"sync"
	"unsafe"
)

// directAlign is the alignment O_DIRECT reads use for memory, offset and
// length: 4096 covers 512- and 4096-byte logical sectors.
const directAlign = 4096

// directChunk is the bounce buffer's size.
const directChunk = 1 << 20

// directReader reads a file opened with O_DIRECT through an aligned bounce
// buffer.
type directReader struct {
	mu  sync.Mutex
	f   *os.File
	buf []byte
}

func newDirectReader(f *os.File) *directReader {
	raw := make([]byte, directChunk+directAlign)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) % directAlign); r != 0 {
		shift = directAlign - r
	}
	return &directReader{f: f, buf: raw[shift : shift+directChunk]}
}

// ReadAt reads len(p) bytes at off, never past size.
func (r *directReader) ReadAt(p []byte, off int64, size int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= size {
			return n, io.EOF
		}
		start := pos &^ (directAlign - 1)
		want := min(int64(len(r.buf)), (size-start+directAlign-1)&^(directAlign-1))
		k, err := r.f.ReadAt(r.buf[:want], start)
		avail := int64(k) - (pos - start)
		if avail <= 0 {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		n += copy(p[n:], r.buf[pos-start:int64(k)])
		if err != nil && n < len(p) {
			if err == io.EOF && pos+avail >= size {
				return n, io.EOF
			}
			return n, err
		}
	}
	return n, nil
}
