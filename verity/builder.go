package verity

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
)

// chunkBytes is how much data one worker hashes at a time.
const chunkBytes = 1 << 20

// ErrClosed is returned by a Builder or a Checker used after Close.
var ErrClosed = errors.New("verity: used after Close")

// Builder computes a hash tree from data written to it, in order. The
// bottom level is hashed in parallel, one 1 MiB chunk per worker, with at
// most two chunks per worker in flight, so memory stays bounded whatever
// the size of the data. Data past the last whole data block (or past
// Params.DataBlocks) is counted but not covered, as veritysetup does.
//
// It follows the tar.Writer shape: NewBuilder, Write (or ReadFrom), Close,
// with a sticky error. A Builder takes no context: the loop that feeds it
// checks its own (Build's does).
type Builder struct {
	p           Params
	alg         algorithm
	chunkBlocks int
	stride      int
	perBlock    int

	cur     []byte // the chunk being filled
	fill    int
	blocks  uint64 // data blocks handed to workers
	written int64  // bytes seen
	limit   uint64 // data blocks to cover, 0 = all

	chunks []*chunk // level-0 entries, in order
	free   chan []byte
	sem    chan struct{}
	wg     sync.WaitGroup
	err    error
	closed bool
}

type chunk struct {
	entries []byte // stride-sized entries for its data blocks, padded to whole hash blocks
}

// NewBuilder returns a Builder for p. p.DataBlocks, when set, limits how
// many data blocks are covered.
func NewBuilder(p Params) (*Builder, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	g, err := p.geometry(1)
	if err != nil {
		return nil, err
	}
	workers := runtime.GOMAXPROCS(0)
	chunkBlocks := chunkBytes / p.DataBlockSize
	if p.DataBlocks != 0 && p.DataBlocks < uint64(chunkBlocks) {
		chunkBlocks = int(p.DataBlocks) // no chunk larger than the data
	}
	b := &Builder{
		p: p, alg: algorithms[p.Hash],
		chunkBlocks: chunkBlocks,
		stride:      g.stride,
		perBlock:    g.perBlock,
		limit:       p.DataBlocks,
		free:        make(chan []byte, 2*workers+1),
		sem:         make(chan struct{}, 2*workers),
	}
	return b, nil
}

func (b *Builder) buffer() []byte {
	select {
	case buf := <-b.free:
		return buf
	default:
		return make([]byte, b.chunkBlocks*b.p.DataBlockSize)
	}
}

// Write hashes p as the next bytes of the data.
func (b *Builder) Write(p []byte) (int, error) {
	if b.closed {
		return 0, ErrClosed
	}
	if b.err != nil {
		return 0, b.err
	}
	n := len(p)
	for len(p) > 0 {
		if b.cur == nil {
			b.cur, b.fill = b.buffer(), 0
		}
		k := copy(b.cur[b.fill:], p)
		b.fill += k
		p = p[k:]
		if b.fill == len(b.cur) {
			b.dispatch()
		}
	}
	b.written += int64(n)
	return n, nil
}

// ReadFrom reads r to its end straight into chunk buffers (io.Copy uses
// it), saving a copy.
func (b *Builder) ReadFrom(r io.Reader) (int64, error) {
	if b.closed {
		return 0, ErrClosed
	}
	var total int64
	for b.err == nil {
		if b.cur == nil {
			b.cur, b.fill = b.buffer(), 0
		}
		n, err := io.ReadFull(r, b.cur[b.fill:])
		b.fill += n
		total += int64(n)
		b.written += int64(n)
		if b.fill == len(b.cur) {
			b.dispatch()
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return total, nil
		}
		if err != nil {
			b.err = err
		}
	}
	return total, b.err
}

// dispatch hands the whole data blocks of the current chunk to a worker.
func (b *Builder) dispatch() {
	buf, n := b.cur, b.fill/b.p.DataBlockSize
	b.cur, b.fill = nil, 0
	if b.limit != 0 && b.blocks+uint64(n) > b.limit {
		n = int(b.limit - b.blocks)
	}
	if n <= 0 {
		b.recycle(buf)
		return
	}
	// Entries padded up to whole hash blocks: a full chunk is always a whole
	// number of hash blocks, so only the last chunk is padded.
	entryBytes := (n + b.perBlock - 1) / b.perBlock * b.p.HashBlockSize
	c := &chunk{entries: make([]byte, entryBytes)}
	b.chunks = append(b.chunks, c)
	b.blocks += uint64(n)
	b.sem <- struct{}{}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		h := b.alg.new()
		dbs := b.p.DataBlockSize
		for i := 0; i < n; i++ {
			digest(h, b.p.Salt, buf[i*dbs:(i+1)*dbs], c.entries[i*b.stride:i*b.stride])
		}
		b.recycle(buf)
		<-b.sem
	}()
}

func (b *Builder) recycle(buf []byte) {
	select {
	case b.free <- buf:
	default:
	}
}

// digest appends hash(salt || block) to dst (which must have the room).
func digest(h hash.Hash, salt, block, dst []byte) []byte {
	h.Reset()
	h.Write(salt)
	h.Write(block)
	return h.Sum(dst)
}

// Close hashes what is left, builds the upper levels and returns the tree.
func (b *Builder) Close() (*Tree, error) {
	if b.closed {
		return nil, ErrClosed
	}
	b.closed = true
	if b.err == nil && b.fill >= b.p.DataBlockSize {
		b.dispatch()
	}
	b.wg.Wait()
	if b.err != nil {
		return nil, b.err
	}
	p := b.p
	p.DataBlocks = b.blocks
	g, err := p.geometry(b.blocks)
	if err != nil {
		return nil, err
	}
	t := &Tree{g: g, level0: b.chunks}
	t.Uncovered = b.written - int64(b.blocks)*int64(p.DataBlockSize)
	t.Info = Info{Params: p, HashBlocks: g.end - g.start, HashStart: g.start,
		HashDeviceSize: int64(g.end) * int64(p.HashBlockSize)}
	if g.levels == 0 {
		// A single data block: its digest is the root hash.
		t.RootHash = append([]byte(nil), b.chunks[0].entries[:g.digestSize]...)
		t.level0 = nil
		return t, nil
	}
	h := b.alg.new()
	// Level 1 and up, from the blocks of the level below.
	lower := t.levelBlocks(0)
	for lvl := 1; lvl < g.levels; lvl++ {
		entries := make([]byte, g.levelSize[lvl]*uint64(p.HashBlockSize))
		i := 0
		for blk := range lower {
			digest(h, p.Salt, blk, entries[i*g.stride:i*g.stride])
			i++
		}
		t.upper = append(t.upper, entries)
		lower = t.levelBlocks(lvl)
	}
	for blk := range lower { // the top level: one block
		t.RootHash = digest(h, p.Salt, blk, nil)
	}
	return t, nil
}

// Tree is a built hash tree.
type Tree struct {
	Info
	// Uncovered is how many bytes of the data were written past the last
	// covered data block. dm-verity does not protect them.
	Uncovered int64
	g         geometry
	level0    []*chunk
	upper     [][]byte // levels 1.. (level i at upper[i-1])
}

// levelBlocks iterates over the hash blocks of a level, bottom = 0.
func (t *Tree) levelBlocks(level int) func(yield func([]byte) bool) {
	hbs := t.HashBlockSize
	return func(yield func([]byte) bool) {
		if level == 0 {
			for _, c := range t.level0 {
				for off := 0; off < len(c.entries); off += hbs {
					if !yield(c.entries[off : off+hbs]) {
						return
					}
				}
			}
			return
		}
		e := t.upper[level-1]
		for off := 0; off < len(e); off += hbs {
			if !yield(e[off : off+hbs]) {
				return
			}
		}
	}
}

// WriteTo writes the superblock (unless Params.NoSuperblock) and the tree
// to the hash device at their places, and nothing else. The caller syncs.
func (t *Tree) WriteTo(w io.WriterAt) error {
	hbs := int64(t.HashBlockSize)
	if !t.NoSuperblock {
		sb, err := t.Superblock().MarshalBinary()
		if err != nil {
			return err
		}
		// The superblock's hash block is written whole (zero-padded), so no
		// stale bytes of an earlier use of the device remain in it.
		blk := make([]byte, int64(t.g.start)*hbs-t.HashOffset)
		copy(blk, sb)
		if _, err := w.WriteAt(blk, t.HashOffset); err != nil {
			return fmt.Errorf("verity: writing superblock: %w", err)
		}
	}
	for lvl := t.g.levels - 1; lvl >= 0; lvl-- {
		off := int64(t.g.levelStart[lvl]) * hbs
		if lvl > 0 {
			if _, err := w.WriteAt(t.upper[lvl-1], off); err != nil {
				return fmt.Errorf("verity: writing hash level %d: %w", lvl, err)
			}
			continue
		}
		for _, c := range t.level0 {
			if _, err := w.WriteAt(c.entries, off); err != nil {
				return fmt.Errorf("verity: writing hash level 0: %w", err)
			}
			off += int64(len(c.entries))
		}
	}
	return nil
}

// Superblock returns the superblock describing the tree.
func (t *Tree) Superblock() Superblock {
	return Superblock{UUID: t.UUID, Hash: t.Hash, DataBlockSize: t.DataBlockSize, HashBlockSize: t.HashBlockSize,
		DataBlocks: t.DataBlocks, Salt: t.Salt}
}
