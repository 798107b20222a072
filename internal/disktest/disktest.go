// Package disktest provides in-memory disks for tests: sparse, recording
// every write and sync in order, able to fail on demand, and able to produce
// every disk state a power cut could leave behind.
//
// It is imported only from _test.go files.
package disktest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/updog/updog/internal/blockdev"
)

// chunkSize is the granularity of the sparse store.
const chunkSize = 4096

// ErrInjected is the error returned by an injected fault unless the test
// chose another.
var ErrInjected = errors.New("disktest: injected fault")

// OpKind says what a logged operation was.
type OpKind int

const (
	// OpWrite is a WriteAt.
	OpWrite OpKind = iota
	// OpSync is a Sync.
	OpSync
)

// Op is one logged operation.
type Op struct {
	Kind OpKind
	Off  int64
	Data []byte // a copy of what was written
}

func (o Op) String() string {
	if o.Kind == OpSync {
		return "sync"
	}
	return fmt.Sprintf("write %d bytes at %d", len(o.Data), o.Off)
}

// Mem is a sparse in-memory blockdev.Device. Reads of never-written bytes
// return zeros.
type Mem struct {
	mu         sync.Mutex
	size       int64
	sectorSize int
	chunks     map[int64][]byte

	base    map[int64][]byte // contents when the log was last reset
	log     []Op
	ops     int // operations since the last reset, for FailAt
	failAt  int
	failErr error
	badOff  map[int64]bool
}

var _ blockdev.Device = (*Mem)(nil)

// New returns a zeroed disk of size bytes with the given sector size.
func New(size int64, sectorSize int) *Mem {
	return &Mem{size: size, sectorSize: sectorSize, chunks: map[int64][]byte{}, base: map[int64][]byte{}, failAt: -1}
}

// Size implements blockdev.Device.
func (m *Mem) Size() int64 { return m.size }

// SectorSize implements blockdev.Device.
func (m *Mem) SectorSize() int { return m.sectorSize }

// ReadAt implements io.ReaderAt.
func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off < 0 {
		return 0, errors.New("disktest: negative offset")
	}
	if err := m.badRange(off, len(p)); err != nil {
		return 0, err
	}
	n := len(p)
	var err error
	if off >= m.size {
		return 0, io.EOF
	}
	if off+int64(n) > m.size {
		n = int(m.size - off)
		err = io.EOF
	}
	for i := 0; i < n; {
		c, co := (off+int64(i))/chunkSize, (off+int64(i))%chunkSize
		k := min(n-i, chunkSize-int(co))
		if chunk, ok := m.chunks[c]; ok {
			copy(p[i:i+k], chunk[co:])
		} else {
			clear(p[i : i+k])
		}
		i += k
	}
	return n, err
}

// WriteAt implements io.WriterAt; writes past the end fail, as on a block
// device.
func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fault(); err != nil {
		return 0, err
	}
	if err := m.badRange(off, len(p)); err != nil {
		return 0, err
	}
	if off < 0 || off+int64(len(p)) > m.size {
		return 0, fmt.Errorf("disktest: write of %d bytes at %d past the end (%d): %w", len(p), off, m.size, io.ErrShortWrite)
	}
	m.log = append(m.log, Op{Kind: OpWrite, Off: off, Data: append([]byte(nil), p...)})
	write(m.chunks, p, off)
	return len(p), nil
}

// Sync implements blockdev.Device and logs a sync.
func (m *Mem) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.fault(); err != nil {
		return err
	}
	m.log = append(m.log, Op{Kind: OpSync})
	return nil
}

func write(chunks map[int64][]byte, p []byte, off int64) {
	for i := 0; i < len(p); {
		c, co := (off+int64(i))/chunkSize, (off+int64(i))%chunkSize
		chunk, ok := chunks[c]
		if !ok {
			chunk = make([]byte, chunkSize)
			chunks[c] = chunk
		}
		i += copy(chunk[co:], p[i:])
	}
}

func (m *Mem) fault() error {
	n := m.ops
	m.ops++
	if n == m.failAt {
		return m.failErr
	}
	return nil
}

func (m *Mem) badRange(off int64, n int) error {
	for b := range m.badOff {
		if b >= off && b < off+int64(n) {
			return fmt.Errorf("disktest: bad sector at offset %d: %w", b, ErrInjected)
		}
	}
	return nil
}

// FailAt makes the n-th operation (WriteAt or Sync, counted from 0 since the
// last ResetLog) fail with err (ErrInjected when err is nil).
func (m *Mem) FailAt(n int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err == nil {
		err = ErrInjected
	}
	m.failAt, m.failErr = n, err
}

// FailOffset makes every read or write that covers byte off fail, like a bad
// sector.
func (m *Mem) FailOffset(off int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.badOff == nil {
		m.badOff = map[int64]bool{}
	}
	m.badOff[off] = true
}

// ClearFaults removes every injected fault.
func (m *Mem) ClearFaults() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failAt, m.failErr, m.badOff = -1, nil, nil
}

// Log returns the operations since the last ResetLog.
func (m *Mem) Log() []Op {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Op(nil), m.log...)
}

// Writes counts the WriteAt calls since the last ResetLog.
func (m *Mem) Writes() int {
	n := 0
	for _, o := range m.Log() {
		if o.Kind == OpWrite {
			n++
		}
	}
	return n
}

// ResetLog forgets the log and takes the current contents as the base from
// which CrashStates replays.
func (m *Mem) ResetLog() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log, m.ops = nil, 0
	m.base = copyChunks(m.chunks)
}

// Equal reports whether two disks hold the same bytes.
func (m *Mem) Equal(o *Mem) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	if m.size != o.size {
		return false
	}
	zero := make([]byte, chunkSize)
	for k, v := range m.chunks {
		w, ok := o.chunks[k]
		if !ok {
			w = zero
		}
		if string(v) != string(w) {
			return false
		}
	}
	for k, w := range o.chunks {
		if _, ok := m.chunks[k]; !ok && string(w) != string(zero) {
			return false
		}
	}
	return true
}

func copyChunks(src map[int64][]byte) map[int64][]byte {
	dst := make(map[int64][]byte, len(src))
	for k, v := range src {
		dst[k] = append([]byte(nil), v...)
	}
	return dst
}

// CrashState is one disk image a power cut could leave.
type CrashState struct {
	Name string // how it came about, for test failure messages
	Disk *Mem
}

// maxSubsetGroup bounds the exhaustive subset enumeration of an unsynced
// group of writes; larger groups fall back to prefixes.
const maxSubsetGroup = 10

// CrashStates returns every disk state that a power cut at any point since
// the last ResetLog could leave, under this model:
//
//   - writes completed before a Sync are durable;
//   - writes issued since the last Sync may reach the disk in any order, so
//     any subset of them may be durable;
//   - one write in flight may be torn: a prefix or a suffix of its sectors,
//     or a prefix ending in the middle of a sector, reached the disk.
//
// The first state is the base (nothing durable) and the last is the final
// state (everything durable). Duplicate images are dropped.
func (m *Mem) CrashStates() []CrashState {
	m.mu.Lock()
	log := append([]Op(nil), m.log...)
	base := copyChunks(m.base)
	size, ss := m.size, m.sectorSize
	m.mu.Unlock()

	var out []CrashState
	seen := map[string]bool{}
	add := func(name string, chunks map[int64][]byte) {
		key := fingerprint(chunks)
		if seen[key] {
			return
		}
		seen[key] = true
		d := New(size, ss)
		d.chunks = copyChunks(chunks)
		d.base = copyChunks(chunks)
		out = append(out, CrashState{Name: name, Disk: d})
	}
	apply := func(dst map[int64][]byte, ops []Op) map[int64][]byte {
		c := copyChunks(dst)
		for _, o := range ops {
			write(c, o.Data, o.Off)
		}
		return c
	}

	durable := base
	add("before any write", durable)
	var group []Op
	groupNo := 0
	flush := func() {
		if len(group) == 0 {
			return
		}
		label := func(s string) string { return fmt.Sprintf("sync group %d: %s", groupNo, s) }
		if len(group) <= maxSubsetGroup {
			for mask := 1; mask < 1<<len(group); mask++ {
				var sub []Op
				for i := range group {
					if mask&(1<<i) != 0 {
						sub = append(sub, group[i])
					}
				}
				add(label(fmt.Sprintf("writes %b durable", mask)), apply(durable, sub))
			}
		} else {
			for i := 1; i <= len(group); i++ {
				add(label(fmt.Sprintf("first %d writes durable", i)), apply(durable, group[:i]))
			}
		}
		for i, w := range group {
			before := apply(durable, group[:i])
			for _, t := range tears(w, ss) {
				add(label(fmt.Sprintf("write %d (%v) torn: %s", i, w, t.name)), apply(before, []Op{t.op}))
			}
		}
		durable = apply(durable, group)
		group = nil
		groupNo++
	}
	for _, o := range log {
		if o.Kind == OpSync {
			flush()
			continue
		}
		group = append(group, o)
	}
	flush()
	// Make sure the final state is last, even if an earlier subset matched it.
	key := fingerprint(durable)
	for i, s := range out {
		if fingerprint(s.Disk.chunks) == key {
			out = append(append(out[:i:i], out[i+1:]...), s)
			break
		}
	}
	return out
}

type tear struct {
	name string
	op   Op
}

// tears lists the torn forms of one write: every sector prefix and suffix,
// and a prefix that ends half-way through a sector.
func tears(w Op, ss int) []tear {
	n := len(w.Data)
	var out []tear
	for cut := ss; cut < n; cut += ss {
		out = append(out,
			tear{fmt.Sprintf("first %d bytes", cut), Op{Kind: OpWrite, Off: w.Off, Data: w.Data[:cut]}},
			tear{fmt.Sprintf("last %d bytes", n-cut), Op{Kind: OpWrite, Off: w.Off + int64(cut), Data: w.Data[cut:]}})
	}
	half := min(ss/2, n/2)
	if half > 0 {
		out = append(out, tear{fmt.Sprintf("first %d bytes (mid-sector)", half), Op{Kind: OpWrite, Off: w.Off, Data: w.Data[:half]}})
	}
	return out
}

func fingerprint(chunks map[int64][]byte) string {
	keys := make([]int64, 0, len(chunks))
	zero := string(make([]byte, chunkSize))
	for k, v := range chunks {
		if string(v) != zero {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%d:", k)
		h.Write(chunks[k])
	}
	return string(h.Sum(nil))
}
