package blockdev

import (
	"io"
	"os"
	"sync"
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
	// have is how many bytes of buf hold the file's bytes from at, and
	// next is where the last read ended: a read that starts there (a
	// sequential reader's next) is served from them; any other read
	// reads the device again.
	at, next int64
	have     int
}

func newDirectReader(f *os.File) *directReader {
	return &directReader{f: f, buf: *alignedBuf(directChunk), next: -1}
}

// ReadAt reads len(p) bytes at off, never past size.
func (r *directReader) ReadAt(p []byte, off int64, size int64) (int, error) {
	if off >= 0 && off%directAlign == 0 && len(p)%directAlign == 0 && off+int64(len(p)) <= size && aligned(p) {
		// Aligned all round: straight into p, without the bounce buffer
		// (and without its lock: such reads run side by side).
		return r.f.ReadAt(p, off)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= size {
			return n, io.EOF
		}
		if pos == r.next && pos >= r.at && pos < r.at+int64(r.have) {
			// Still in the chunk read last.
			n += copy(p[n:], r.buf[pos-r.at:r.have])
			r.next = off + int64(n)
			continue
		}
		start := pos &^ (directAlign - 1)
		want := min(int64(len(r.buf)), (size-start+directAlign-1)&^(directAlign-1))
		k, err := r.f.ReadAt(r.buf[:want], start)
		r.at, r.have, r.next = start, int(min(max(int64(k), 0), size-start)), -1
		avail := int64(r.have) - (pos - start)
		if avail <= 0 {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		n += copy(p[n:], r.buf[pos-start:r.have])
		r.next = off + int64(n)
		if err != nil && n < len(p) {
			if err == io.EOF && pos+avail >= size {
				return n, io.EOF
			}
			return n, err
		}
	}
	return n, nil
}
