package verity

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// Bounds of a Checker's memory. Nothing it keeps grows with the data: at
// most checkInFlight bytes of data batches are being hashed at once (two
// per worker), and the hash device is read through windows of
// checkWindow bytes, one or two at a time, plus one block per tree level.
const (
	checkInFlight  = 2 << 20
	checkMinBatch  = 64 << 10
	checkMaxWorker = checkInFlight / (2 * checkMinBatch)
	checkWindow    = 64 << 10
)

// ErrShortData means the data ends before its last data block.
var ErrShortData = errors.New("verity: data shorter than its data blocks")

// ErrSkip means a Checker cannot skip the data blocks asked for: data was
// written or skipped already, there are not that many data blocks, or the
// only data block of a tree with no levels, whose digest is the root, was
// to be skipped with no root given.
var ErrSkip = errors.New("verity: cannot skip data blocks")

// Checker checks data, written to it in order, against a hash tree already
// stored on a hash device, in bounded memory: nothing it keeps grows with
// the size of the data.
//
// NewChecker first checks the stored tree and its root. Each level-0 hash
// block is read again as the data reaches it and checked once more against
// its entry in the level above (whose blocks are read and checked the same
// way, up to the root), so a hash device that changes after NewChecker
// cannot make wrong data pass.
//
// It follows the tar.Writer shape: NewChecker, Write (or ReadFrom), Close,
// with a sticky error. Close is the verdict: a mismatch found by the
// workers may surface at a later Write, or only at Close. A Checker is for
// one goroutine (it starts workers of its own). Skip, before the first
// Write, resumes a check an earlier Checker made up to some data block.
type Checker struct {
	ctx  context.Context
	p    Params
	g    geometry
	alg  algorithm
	dev  io.ReaderAt // the hash device
	root []byte      // the root the tree verifies against: given, or computed from the stored top block

	// Held tree errors (VerifyStream's mode): reported after the level-0
	// check of the data, in the order Verify reports them.
	deferred bool
	spare0   *MismatchError // the first non-zero spare byte in level 0
	treeErr  error          // the first error above level 0, or the root's
	chain    bool           // check level-0 blocks against the levels above while streaming

	batchBytes int
	cur        *batch
	fill       int
	blocks     uint64 // data blocks handed to workers
	written    int64  // bytes seen

	l0      *blockStream // level 0, read as the data reaches it
	l0Index uint64       // the level-0 block in l0Block
	l0Block []byte
	up      [][]byte // up[l]: a checked block of level l (l >= 1), number upIndex[l]
	upIndex []uint64
	upValid []bool
	h       hash.Hash // the main goroutine's, for the blocks read while streaming
	sum     []byte

	free    chan *batch
	sem     chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
	bad     *MismatchError // the lowest data block found bad by a worker
	failed  atomic.Bool
	single  []byte // the digest of the only data block of a tree with no levels
	err     error
	closed  bool
	started bool // Write, ReadFrom or Skip was called
}

type batch struct {
	data  []byte
	want  []byte // the level-0 digests of its data blocks, digestSize each
	first uint64 // its first data block
	n     int    // whole data blocks to check
}

// NewChecker reads p's geometry (p.DataBlocks must be set: from the
// superblock or the caller) and checks the stored tree against root before
// any data comes: the spare areas of level 0, then each level above against
// the blocks of the level below, reading the hash device level by level with
// bounded buffers, then the top block against root. The order is bottom-up,
// veritysetup's and Tree.Check's, so a bad byte in a hash block above level
// 0 or in a spare area gets the *MismatchError Verify gives for it; a bad
// byte in a level-0 entry is named as that level-0 block disagreeing with
// level 1 (Verify, which hashes the data first, names the data block whose
// entry it is). A consistent tree with another root is ErrRootHashMismatch.
//
// A nil root is allowed: the root is then computed from the stored top
// level (RootHash returns it) and the tree is still checked for internal
// consistency. A single data block has no tree: its digest is the root, and
// it is checked (or, for a nil root, computed) at Close.
//
// ctx stops the check, and later Write, ReadFrom and Close, with its error
// (wrapped).
func NewChecker(ctx context.Context, hash io.ReaderAt, p Params, root []byte) (*Checker, error) {
	if p.DataBlocks == 0 {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: a Checker needs the number of data blocks (Params.DataBlocks)", ErrParams)
	}
	return newChecker(ctx, hash, p, root, false)
}

func newChecker(ctx context.Context, hash io.ReaderAt, p Params, root []byte, deferred bool) (*Checker, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	g, err := p.geometry(p.DataBlocks)
	if err != nil {
		return nil, err
	}
	workers, batchBytes := checkBatches(p)
	c := &Checker{
		ctx: ctx, p: p, g: g, alg: algorithms[p.Hash], dev: hash,
		root:       bytes.Clone(root),
		deferred:   deferred,
		batchBytes: batchBytes,
		free:       make(chan *batch, 2*workers+1),
		sem:        make(chan struct{}, 2*workers),
	}
	if g.levels == 0 {
		return c, nil
	}
	if err := c.checkTree(); err != nil {
		return nil, err
	}
	if !deferred && (c.spare0 != nil || c.treeErr != nil) {
		if c.spare0 != nil {
			return nil, c.spare0
		}
		return nil, c.treeErr
	}
	// A tree already known to be wrong is not checked again while
	// streaming: the data is compared with its level 0 as stored, only to
	// find which error Verify reports first.
	c.chain = c.spare0 == nil && c.treeErr == nil
	c.l0 = c.stream(0)
	c.up = make([][]byte, g.levels)
	c.upIndex = make([]uint64, g.levels)
	c.upValid = make([]bool, g.levels)
	for l := 1; l < g.levels; l++ {
		c.up[l] = make([]byte, p.HashBlockSize)
	}
	c.h, c.sum = c.alg.new(), make([]byte, 0, g.digestSize)
	return c, nil
}

// checkBatches is how many workers a Checker runs, and how many bytes of
// data each batch holds: two batches per worker are checkInFlight bytes,
// within checkMinBatch..chunkBytes, and no batch is larger than the data.
func checkBatches(p Params) (workers, batchBytes int) {
	workers = min(runtime.GOMAXPROCS(0), checkMaxWorker)
	batchBytes = min(max(checkInFlight/(2*workers), checkMinBatch), chunkBytes)
	blocks := min(uint64(batchBytes/p.DataBlockSize), max(p.DataBlocks, 1))
	return workers, int(blocks) * p.DataBlockSize
}

// blockStream reads the blocks of one level in order, a window at a time.
type blockStream struct {
	c     *Checker
	lvl   int
	next  uint64 // the next block of the level to read from the device
	buf   []byte
	pos   int // the next block in buf
	valid int // blocks in buf
}

func (c *Checker) stream(lvl int) *blockStream {
	hbs := uint64(c.p.HashBlockSize)
	n := min(uint64(checkWindow)/hbs, c.g.levelSize[lvl])
	return &blockStream{c: c, lvl: lvl, buf: make([]byte, n*hbs)}
}

// block returns the next block of the level; it stays valid until the next
// call.
func (s *blockStream) block() ([]byte, error) {
	c, hbs := s.c, s.c.p.HashBlockSize
	if s.pos == s.valid {
		if err := c.ctx.Err(); err != nil {
			return nil, fmt.Errorf("verity: checking hash level %d: %w", s.lvl, err)
		}
		n := min(uint64(len(s.buf)/hbs), c.g.levelSize[s.lvl]-s.next)
		if n == 0 {
			return nil, fmt.Errorf("verity: hash level %d has only %d blocks", s.lvl, c.g.levelSize[s.lvl])
		}
		if err := c.readBlocks(s.lvl, s.next, s.buf[:n*uint64(hbs)]); err != nil {
			return nil, err
		}
		s.next += n
		s.pos, s.valid = 0, int(n)
	}
	b := s.buf[s.pos*hbs : (s.pos+1)*hbs]
	s.pos++
	return b, nil
}

// readBlocks reads len(dst) bytes of level lvl from its block i on.
func (c *Checker) readBlocks(lvl int, i uint64, dst []byte) error {
	hbs := c.p.HashBlockSize
	blk := c.g.levelStart[lvl] + i
	off := int64(blk) * int64(hbs)
	if n, err := c.dev.ReadAt(dst, off); n < len(dst) {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf("the hash device ends before hash block %d (needs %d bytes)",
				blk+uint64(n/hbs), int64(c.g.end)*int64(hbs))
		}
		return fmt.Errorf("verity: reading hash level %d at offset %d: %w", lvl, off, err)
	}
	return nil
}

// checkTree checks the stored tree bottom-up and sets spare0 or treeErr to
// the first error Verify would report once level 0 is found good. It
// returns only the errors that stop everything: reading, ctx.
func (c *Checker) checkTree() error {
	g := &c.g
	for lvl := 1; lvl < g.levels; lvl++ {
		if err := c.checkLevel(lvl); err != nil || c.spare0 != nil || c.treeErr != nil {
			return err
		}
	}
	top := make([]byte, c.p.HashBlockSize)
	if err := c.readBlocks(g.levels-1, 0, top); err != nil {
		return err
	}
	if g.levels == 1 { // level 0 is the top: its spare areas are not checked above
		if c.spare0 = c.spareCheck0(0, top); c.spare0 != nil {
			return nil
		}
	}
	sum := digest(c.alg.new(), c.p.Salt, top, nil)
	if c.root == nil {
		c.root = sum
	} else if subtle.ConstantTimeCompare(sum, c.root) != 1 {
		c.treeErr = fmt.Errorf("%w: computed %x, expected %x", ErrRootHashMismatch, sum, c.root)
	}
	return nil
}

// checkLevel compares each block of level lvl with the digests of the
// blocks of the level below, and zeros in its spare areas; for lvl 1 it
// also checks the spare areas of level 0, whose blocks pass by as the
// lower blocks.
func (c *Checker) checkLevel(lvl int) error {
	g, hbs := &c.g, c.p.HashBlockSize
	parents, children := c.stream(lvl), c.stream(lvl-1)
	want := make([]byte, hbs)
	h := c.alg.new()
	lower := g.levelSize[lvl-1]
	child := uint64(0)
	for j := uint64(0); j < g.levelSize[lvl]; j++ {
		var stored []byte
		if c.treeErr == nil {
			var err error
			if stored, err = parents.block(); err != nil {
				return err
			}
		}
		clear(want)
		used := min(uint64(g.perBlock), lower-child)
		for k := 0; k < int(used); k++ {
			b, err := children.block()
			if err != nil {
				return err
			}
			if lvl == 1 {
				if c.spare0 = c.spareCheck0(child, b); c.spare0 != nil {
					return nil
				}
			}
			if c.treeErr == nil {
				digest(h, c.p.Salt, b, want[k*g.stride:k*g.stride])
			}
			child++
		}
		if c.treeErr == nil && !bytes.Equal(stored, want) {
			i := 0
			for stored[i] == want[i] {
				i++
			}
			c.treeErr = mismatchAt(&c.p, g, lvl, g.levelStart[lvl]+j, j*uint64(g.perBlock), i)
		}
		// Past the first bad block only the spare areas of level 0 can
		// still come first, in Verify's order; NewChecker stops at once.
		if c.treeErr != nil && (lvl > 1 || !c.deferred) {
			return nil
		}
	}
	return nil
}

// spareCheck0 finds the first non-zero spare byte of block j of level 0.
func (c *Checker) spareCheck0(j uint64, b []byte) *MismatchError {
	g := &c.g
	first := j * uint64(g.perBlock)
	used := int(min(uint64(g.perBlock), c.p.DataBlocks-first))
	bad := -1
	if g.stride > g.digestSize {
		for e := 0; e < used && bad < 0; e++ {
			if i := nonZero(b[e*g.stride+g.digestSize : (e+1)*g.stride]); i >= 0 {
				bad = e*g.stride + g.digestSize + i
			}
		}
	}
	if bad < 0 {
		if i := nonZero(b[used*g.stride:]); i >= 0 {
			bad = used*g.stride + i
		}
	}
	if bad < 0 {
		return nil
	}
	return mismatchAt(&c.p, g, 0, g.levelStart[0]+j, first, bad)
}

var zeros [MaxBlockSize]byte

// nonZero is the index of the first non-zero byte of b, or -1.
func nonZero(b []byte) int {
	if bytes.Equal(b, zeros[:len(b)]) {
		return -1
	}
	for i, x := range b {
		if x != 0 {
			return i
		}
	}
	return -1
}

// upper returns block i of level lvl (>= 1), read and checked up to the
// root.
func (c *Checker) upper(lvl int, i uint64) ([]byte, error) {
	if c.upValid[lvl] && c.upIndex[lvl] == i {
		return c.up[lvl], nil
	}
	c.upValid[lvl] = false
	if err := c.readBlocks(lvl, i, c.up[lvl]); err != nil {
		return nil, err
	}
	if err := c.checkAbove(lvl, i, c.up[lvl]); err != nil {
		return nil, err
	}
	c.upValid[lvl], c.upIndex[lvl] = true, i
	return c.up[lvl], nil
}

// checkAbove checks block i of level lvl, read while streaming, against
// its entry in the level above, or the root for the top block.
func (c *Checker) checkAbove(lvl int, i uint64, b []byte) error {
	g := &c.g
	var want []byte
	if lvl == g.levels-1 {
		want = c.root
	} else {
		parent, err := c.upper(lvl+1, i/uint64(g.perBlock))
		if err != nil {
			return err
		}
		e := int(i%uint64(g.perBlock)) * g.stride
		want = parent[e : e+g.digestSize]
	}
	// want is looked up first: the lookup may check blocks above with the
	// same scratch.
	if got := digest(c.h, c.p.Salt, b, c.sum[:0]); !bytes.Equal(got, want) {
		blk := g.levelStart[lvl] + i
		off := int64(blk) * int64(c.p.HashBlockSize)
		return fmt.Errorf("%w (it changed after the tree was checked)", &MismatchError{Device: "hash", Block: blk, Offset: off, Byte: off, Level: lvl + 1})
	}
	return nil
}

// entries copies the level-0 digests of data blocks first.. into dst
// (digestSize each), reading level 0 on as the data reaches it and
// checking each block it reads against the levels above.
func (c *Checker) entries(dst []byte, first uint64) error {
	g := &c.g
	per := uint64(g.perBlock)
	for k := 0; k*g.digestSize < len(dst); k++ {
		d := first + uint64(k)
		if j := d / per; c.l0Block == nil || j != c.l0Index {
			b, err := c.l0.block()
			if err != nil {
				return err
			}
			if c.chain {
				if err := c.checkAbove(0, j, b); err != nil {
					return err
				}
			}
			c.l0Block, c.l0Index = b, j
		}
		e := int(d%per) * g.stride
		copy(dst[k*g.digestSize:], c.l0Block[e:e+g.digestSize])
	}
	return nil
}

func (c *Checker) buffer() *batch {
	select {
	case b := <-c.free:
		return b
	default:
		return &batch{data: make([]byte, c.batchBytes),
			want: make([]byte, c.batchBytes/c.p.DataBlockSize*c.g.digestSize)}
	}
}

func (c *Checker) recycle(b *batch) {
	select {
	case c.free <- b:
	default:
	}
}

// Write checks p as the next bytes of the data: each complete data block
// is hashed (in parallel, in bounded batches) and compared with its level-0
// entry. The first bad data block is a *MismatchError naming it, as Verify
// names it; it may come back from a later Write, and always from Close.
// Bytes past DataBlocks blocks are counted, not checked (dm-verity does not
// cover them).
func (c *Checker) Write(p []byte) (int, error) {
	if c.closed {
		return 0, ErrClosed
	}
	if c.err != nil {
		return 0, c.err
	}
	c.started = true
	n := len(p)
	for len(p) > 0 {
		if c.cur == nil {
			c.cur, c.fill = c.buffer(), 0
		}
		k := copy(c.cur.data[c.fill:], p)
		c.fill += k
		c.written += int64(k)
		p = p[k:]
		if c.fill == len(c.cur.data) {
			c.dispatch()
			if c.err != nil {
				return n - len(p), c.err
			}
		}
	}
	return n, nil
}

// Skip declares that the first n data blocks were checked before (by an
// earlier Checker over the same hash device and parameters, for data that
// has not changed since); the next Write starts at data block n. It must
// be called before any Write, with n at most DataBlocks (n == DataBlocks
// is allowed: Close then succeeds without more data). The tree was already
// verified by NewChecker; the level-0 entries and chain state for the
// blocks from n on are set up so Write/Close behave exactly as if the
// first n*DataBlockSize bytes had been written: the blocks from n on are
// checked, Uncovered counts from there, and a bad block is named by its
// number in the whole data.
//
// The skipped blocks are neither read nor hashed, so nothing this Checker
// says covers them: a changed byte in them is not found. Skip is for
// resuming an interrupted copy that an earlier Checker had checked up to
// block n; the caller must verify the whole target (VerifyStream, or a
// Checker fed every block) before trusting it. Skip keeps no state per
// skipped block, and reads nothing: the cost of a resume is that of the
// blocks still to come (and of NewChecker's check of the tree).
//
// For a tree with no levels (a single data block, whose digest is the
// root), Skip(1) needs the root given to NewChecker. Errors: ErrSkip
// (wrapped) after Write, ReadFrom or another Skip of at least one block,
// for n > DataBlocks, or for Skip(1) with no tree and no root; ErrClosed
// after Close; the sticky error of a failed Checker; ctx's error (wrapped,
// and then sticky) once it is done.
func (c *Checker) Skip(n uint64) error {
	switch {
	case c.closed:
		return ErrClosed
	case c.err != nil:
		return c.err
	case c.started:
		return fmt.Errorf("%w: data was already written or skipped (%d bytes)", ErrSkip, c.written)
	case n > c.p.DataBlocks:
		return fmt.Errorf("%w: %d data blocks asked for, the device has %d", ErrSkip, n, c.p.DataBlocks)
	}
	if err := c.ctx.Err(); err != nil {
		c.fail(fmt.Errorf("verity: checking data: %w", err))
		return c.err
	}
	if n == 0 {
		return nil
	}
	if c.g.levels == 0 {
		// The only data block: the earlier Checker found its digest equal
		// to the root, which is all Close compares.
		if c.root == nil {
			return fmt.Errorf("%w: the only data block is the root hash, and no root was given to check it against", ErrSkip)
		}
		c.single = bytes.Clone(c.root)
	} else {
		// Level 0 is read from the block holding data block n's entry on:
		// entries reads it first, and checks it against the levels above.
		s := c.l0
		s.next, s.pos, s.valid = n/uint64(c.g.perBlock), 0, 0
	}
	c.started = true
	c.blocks = n
	c.written = int64(n) * int64(c.p.DataBlockSize)
	return nil
}

// ReadFrom reads r to its end straight into batch buffers (io.Copy uses
// it), saving a copy. It stops at the first error, reading or checking.
func (c *Checker) ReadFrom(r io.Reader) (int64, error) {
	if c.closed {
		return 0, ErrClosed
	}
	c.started = true
	var total int64
	for c.err == nil {
		if err := c.ctx.Err(); err != nil {
			c.fail(fmt.Errorf("verity: checking data: %w", err))
			break
		}
		if c.cur == nil {
			c.cur, c.fill = c.buffer(), 0
		}
		n, err := io.ReadFull(r, c.cur.data[c.fill:])
		c.fill += n
		total += int64(n)
		c.written += int64(n)
		if c.fill == len(c.cur.data) {
			c.dispatch()
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return total, c.err
		}
		if err != nil && c.err == nil {
			c.fail(err)
		}
	}
	return total, c.err
}

// fail makes err the sticky error once the workers are done.
func (c *Checker) fail(err error) {
	c.wg.Wait()
	c.err = err
}

// dispatch hands the whole data blocks of the current batch to a worker,
// with their level-0 entries.
func (c *Checker) dispatch() {
	b, n := c.cur, uint64(c.fill/c.p.DataBlockSize)
	c.cur, c.fill = nil, 0
	n = min(n, c.p.DataBlocks-c.blocks)
	if n == 0 {
		c.recycle(b)
		return
	}
	if err := c.ctx.Err(); err != nil {
		c.recycle(b)
		c.fail(fmt.Errorf("verity: checking data: %w", err))
		return
	}
	b.first, b.n = c.blocks, int(n)
	if c.g.levels > 0 {
		if err := c.entries(b.want[:n*uint64(c.g.digestSize)], c.blocks); err != nil {
			c.recycle(b)
			c.fail(err)
			return
		}
	}
	c.blocks += n
	c.sem <- struct{}{}
	c.wg.Add(1)
	go c.work(b)
	if c.failed.Load() {
		c.wg.Wait() // the first bad block may be in a batch still running
		c.err = c.verdict()
	}
}

// work hashes the data blocks of a batch and compares them with their
// entries, recording the first bad one.
func (c *Checker) work(b *batch) {
	defer func() {
		c.recycle(b)
		<-c.sem
		c.wg.Done()
	}()
	h := c.alg.new()
	dbs, ds := c.p.DataBlockSize, c.g.digestSize
	sum := make([]byte, 0, ds)
	for i := 0; i < b.n; i++ {
		got := digest(h, c.p.Salt, b.data[i*dbs:(i+1)*dbs], sum)
		if c.g.levels == 0 { // the only block: its digest is the root
			c.single = bytes.Clone(got)
			return
		}
		if !bytes.Equal(got, b.want[i*ds:(i+1)*ds]) {
			c.mu.Lock()
			if blk := b.first + uint64(i); c.bad == nil || blk < c.bad.Block {
				c.bad = dataMismatch(&c.p, blk)
			}
			c.mu.Unlock()
			c.failed.Store(true)
			return
		}
	}
}

// verdict is the error to report once the workers are done: the first bad
// data block, or (for VerifyStream) whichever of that, the held spare area
// of level 0 and the held tree error Verify reports first.
func (c *Checker) verdict() error {
	c.mu.Lock()
	bad := c.bad
	c.mu.Unlock()
	if c.spare0 != nil {
		// Verify compares level 0 byte by byte: a bad entry before the
		// spare byte comes first.
		rel := c.spare0.Byte - int64(c.g.levelStart[0])*int64(c.p.HashBlockSize)
		if bad == nil || rel < int64(bad.Block)*int64(c.g.stride) {
			return c.spare0
		}
	}
	if bad != nil {
		return bad
	}
	return c.treeErr
}

// Close checks what is left, waits for the workers and returns the
// verdict: nil only if DataBlocks data blocks were written and all of them,
// and the tree, match root.
func (c *Checker) Close() error {
	if c.closed {
		return ErrClosed
	}
	c.closed = true
	if c.err == nil && c.fill >= c.p.DataBlockSize {
		c.dispatch()
	}
	c.wg.Wait()
	if c.cur != nil {
		c.recycle(c.cur)
		c.cur = nil
	}
	if c.err != nil {
		return c.err
	}
	if c.err = c.verdict(); c.err != nil {
		return c.err
	}
	if c.blocks < c.p.DataBlocks {
		c.err = fmt.Errorf("%w: %d data blocks of %d bytes need %d bytes, %d were written", ErrShortData,
			c.p.DataBlocks, c.p.DataBlockSize, int64(c.p.DataBlocks)*int64(c.p.DataBlockSize), c.written)
		return c.err
	}
	if c.g.levels == 0 {
		if c.root == nil {
			c.root = c.single
		} else if subtle.ConstantTimeCompare(c.single, c.root) != 1 {
			c.err = fmt.Errorf("%w: computed %x, expected %x", ErrRootHashMismatch, c.single, c.root)
			return c.err
		}
	}
	return nil
}

// RootHash returns the root hash the tree was checked against: the one
// given to NewChecker, or the one computed from the stored top level for a
// nil root (for a single data block, computed at Close). The data is known
// to match it only once Close returns nil.
func (c *Checker) RootHash() []byte { return bytes.Clone(c.root) }

// Uncovered is how many bytes were written past the last checked data
// block: dm-verity does not protect them.
func (c *Checker) Uncovered() int64 {
	return c.written - int64(c.blocks)*int64(c.p.DataBlockSize)
}

// VerifyStream checks the data and hash devices against the root hash
// like Verify (same arguments; the same error for the same inputs), in
// bounded memory: the data streams through a Checker. Data errors and tree
// errors come in Verify's order: level 0 (the data against its entries, and
// the spare areas of level 0), then each level above, then the root.
func VerifyStream(ctx context.Context, data io.ReaderAt, size int64, hash io.ReaderAt, p Params, root []byte) error {
	need, err := p.dataFor(size)
	if err != nil {
		return err
	}
	return verifyReader(ctx, io.NewSectionReader(data, 0, need), hash, p, root)
}

// VerifyReader is VerifyStream over data read in order from r (which
// holds at least size bytes; only the data blocks are read): for a caller
// that reads the data ahead of the check (blockdev.ReadAhead).
func VerifyReader(ctx context.Context, r io.Reader, size int64, hash io.ReaderAt, p Params, root []byte) error {
	need, err := p.dataFor(size)
	if err != nil {
		return err
	}
	return verifyReader(ctx, io.LimitReader(r, need), hash, p, root)
}

// dataFor validates p for size bytes of data, sets DataBlocks when it is
// zero (the whole blocks of size), and returns the bytes those blocks
// need (ErrShortData when size has fewer).
func (p *Params) dataFor(size int64) (int64, error) {
	if err := p.Validate(); err != nil {
		return 0, err
	}
	if size < 0 {
		return 0, fmt.Errorf("%w: data size %d", ErrParams, size)
	}
	if p.DataBlocks == 0 {
		p.DataBlocks = uint64(size) / uint64(p.DataBlockSize)
	}
	need := int64(p.DataBlocks) * int64(p.DataBlockSize) // Validate keeps it within an int64
	if need > size {
		return 0, fmt.Errorf("%w: %d data blocks of %d bytes need %d bytes, the data has %d", ErrShortData, p.DataBlocks, p.DataBlockSize, need, size)
	}
	return need, nil
}

// verifyReader checks data, exactly the data blocks of p, against the
// tree and root.
func verifyReader(ctx context.Context, data io.Reader, hash io.ReaderAt, p Params, root []byte) error {
	c, err := newChecker(ctx, hash, p, root, true)
	if err != nil {
		return err
	}
	src := &errReader{r: ctxReader{ctx, data}}
	if _, err := c.ReadFrom(src); err != nil && src.err != nil {
		c.Close() // waits for the workers; the error is the read's
		return fmt.Errorf("verity: reading data: %w", src.err)
	}
	return c.Close()
}

// errReader remembers the error of its reader other than io.EOF.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		e.err = err
	}
	return n, err
}
