package updater

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"
)

// failingAt is a partition whose writes fail from failAt on; it keeps what
// it took.
type failingAt struct {
	mu     sync.Mutex
	b      []byte
	failAt int64
	delay  time.Duration
}

var errDiskGone = errors.New("the disk went away")

func (f *failingAt) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(f.delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	if off+int64(len(p)) > f.failAt {
		return 0, errDiskGone
	}
	copy(f.b[off:], p)
	return len(p), nil
}

// sumSink is a sink that keeps what it is given.
type sumSink struct{ bytes.Buffer }

// TestWriteBehind: the copy writes behind the sinks, in order, and a write
// that fails ends the copy with that error; the offset it returns is what
// was written (never the sinks' lead), every byte before it is right, and
// nothing past the failing write was written.
func TestWriteBehind(t *testing.T) {
	t.Parallel()
	data := make([]byte, 20<<20+12345)
	rand.New(rand.NewSource(11)).Read(data)
	for _, codec := range []Codec{CodecRaw, CodecZstd, CodecGzip} {
		comp := compress(t, codec, data)
		for _, failAt := range []int64{int64(len(data)) + 1, 5<<20 + 3, 1} {
			dst := &failingAt{b: make([]byte, len(data)), failAt: failAt, delay: time.Millisecond}
			d, err := openSource(context.Background(), bytes.NewReader(comp), "", 0, 0, 2, nil)
			if err != nil {
				t.Fatal(err)
			}
			var sink sumSink
			var progress int64
			aborted := false
			n, err := copyImage(context.Background(), d.src, dst, 0, int64(len(data)), []io.Writer{&sink}, func(k int64) { progress += k },
				func() { aborted = true }, nil)
			if failAt > int64(len(data)) {
				if err != nil || n != int64(len(data)) || !bytes.Equal(dst.b, data) || !bytes.Equal(sink.Bytes(), data) || progress != n {
					t.Fatalf("%s: %d %v, progress %d", codec, n, err, progress)
				}
				continue
			}
			if !errors.Is(err, errDiskGone) || !strings.Contains(err.Error(), "writing at offset") || !aborted {
				t.Fatalf("%s, failing at %d: %v (aborted %v)", codec, failAt, err, aborted)
			}
			if n > failAt || progress != n {
				t.Fatalf("%s, failing at %d: reports %d written, progress %d", codec, failAt, n, progress)
			}
			if !bytes.Equal(dst.b[:n], data[:n]) {
				t.Fatalf("%s: the bytes written before the failure differ", codec)
			}
			// In order: nothing after the failing write was written (zstd's
			// frame workers may write a later frame first).
			if tail := dst.b[failAt:]; codec != CodecZstd && !bytes.Equal(tail, make([]byte, len(tail))) {
				t.Fatalf("%s: bytes written past the failing write", codec)
			}
		}
	}
}
