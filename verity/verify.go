package verity

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Sentinel errors of verification.
var (
	// ErrCorrupt means the data or the hash device does not match: every
	// *MismatchError matches it.
	ErrCorrupt = errors.New("verity: corrupt")
	// ErrRootHashMismatch means the tree is consistent but its root is not
	// the expected root hash.
	ErrRootHashMismatch = errors.New("verity: root hash mismatch")
)

// MismatchError names the first bad block, found in the order veritysetup
// verifies: level 0 (data blocks against their stored digests) first, then
// each level above, then the root. Offset is the byte offset veritysetup
// prints as the "position".
type MismatchError struct {
	// Device is "data" or "hash": the device holding the block whose
	// digest does not match, or holding non-zero spare bytes.
	Device string
	// Block is the block number on that device (data blocks, or hash
	// blocks counted from the start of the hash device).
	Block uint64
	// Offset is the byte offset on that device veritysetup reports: the
	// block's start, or the start of the spare area that is not zero.
	Offset int64
	// Byte is the offset of the first wrong byte where it is known: in a
	// spare area, the first byte that is not zero. Otherwise (a digest
	// mismatch says only that some byte of the block is wrong) it is the
	// block's start, as Offset.
	Byte int64
	// Spare is set when the padding of a hash block is not zero: the zero
	// tail of a hash block after its last entry, or the zeros that pad an
	// entry to its stride.
	Spare bool
	// Level is the tree level whose stored entry disagreed (0 = bottom).
	// For a hash block a Checker reads again while the data streams and
	// finds changed, it is the level above the block's, one past the top
	// when the top block no longer matches the root hash.
	Level int
}

func (e *MismatchError) Error() string {
	if e.Spare {
		return fmt.Sprintf("verity: spare area of hash block %d is not zeroed: the byte at position %d is not zero (the area starts at position %d)",
			e.Block, e.Byte, e.Offset)
	}
	return fmt.Sprintf("verity: %s block %d (position %d) does not match its digest in hash level %d", e.Device, e.Block, e.Offset, e.Level)
}

// Is makes every MismatchError match ErrCorrupt.
func (e *MismatchError) Is(target error) bool { return target == ErrCorrupt }

// Check compares the hash device with the tree, level by level from the
// bottom, and returns a *MismatchError for the first difference (see
// MismatchError for the order). The superblock is not compared: read it
// with ReadSuperblock. It stops with ctx.Err() once ctx is done.
func (t *Tree) Check(ctx context.Context, hash io.ReaderAt) error {
	hbs := t.HashBlockSize
	stored := make([]byte, 0, min(chunkBytes, (t.g.end-t.g.start)*uint64(hbs)))
	for lvl := 0; lvl < t.g.levels; lvl++ {
		blockNo := t.g.levelStart[lvl]
		entryNo := uint64(0) // entries of this level: one per lower block
		var cmpErr error
		compare := func(want []byte) bool {
			if err := ctx.Err(); err != nil {
				cmpErr = err
				return false
			}
			stored = stored[:len(want)]
			off := int64(blockNo) * int64(hbs)
			if n, err := hash.ReadAt(stored, off); n < len(stored) {
				if err == nil || errors.Is(err, io.EOF) {
					err = fmt.Errorf("the hash device ends before hash block %d (needs %d bytes)", blockNo+uint64(len(want)/hbs), t.HashDeviceSize)
				}
				cmpErr = fmt.Errorf("verity: reading hash level %d at offset %d: %w", lvl, off, err)
				return false
			}
			if bytes.Equal(stored, want) {
				blockNo += uint64(len(want) / hbs)
				entryNo += uint64(len(want) / hbs * t.g.perBlock)
				return true
			}
			cmpErr = t.mismatch(lvl, stored, want, blockNo, entryNo)
			return false
		}
		if lvl == 0 {
			for _, c := range t.level0 {
				if !compare(c.entries) {
					return cmpErr
				}
			}
			continue
		}
		for e := t.upper[lvl-1]; len(e) > 0; {
			n := min(len(e), chunkBytes/hbs*hbs)
			if !compare(e[:n]) {
				return cmpErr
			}
			e = e[n:]
		}
	}
	return nil
}

// mismatch locates the first differing byte of a run of blocks of level
// lvl that starts at hash block blockNo and entry entryNo.
func (t *Tree) mismatch(lvl int, stored, want []byte, blockNo, entryNo uint64) error {
	hbs := t.HashBlockSize
	i := 0
	for stored[i] == want[i] {
		i++
	}
	return mismatchAt(&t.Params, &t.g, lvl, blockNo+uint64(i/hbs), entryNo+uint64(i/hbs*t.g.perBlock), i%hbs)
}

// mismatchAt names the wrong byte at inBlock of hash block blk, a block of
// level lvl whose first entry is entry number first of that level, as
// veritysetup names it: the data block or the lower hash block whose entry
// it is, or the spare area it lies in.
func mismatchAt(p *Params, g *geometry, lvl int, blk, first uint64, inBlock int) *MismatchError {
	hbs := p.HashBlockSize
	entry := inBlock / g.stride
	used := uint64(0) // entries used in this block
	if total := g.entries(lvl, p.DataBlocks); total > first {
		used = min(uint64(g.perBlock), total-first)
	}
	blockOff := int64(blk) * int64(hbs)
	// In a spare area the expected bytes are zeros, so the first differing
	// byte is the first non-zero one.
	changed := blockOff + int64(inBlock)
	if uint64(entry) >= used { // past the last used entry: the block's tail
		return &MismatchError{Device: "hash", Block: blk, Offset: blockOff + int64(used)*int64(g.stride), Byte: changed, Spare: true, Level: lvl}
	}
	if inBlock%g.stride >= g.digestSize { // an entry's padding
		return &MismatchError{Device: "hash", Block: blk, Offset: blockOff + int64(entry*g.stride+g.digestSize), Byte: changed, Spare: true, Level: lvl}
	}
	lower := first + uint64(entry)
	if lvl == 0 {
		return dataMismatch(p, lower)
	}
	hb := g.levelStart[lvl-1] + lower
	off := int64(hb) * int64(hbs)
	return &MismatchError{Device: "hash", Block: hb, Offset: off, Byte: off, Level: lvl}
}

// dataMismatch is the error for a data block whose digest is not its
// level-0 entry.
func dataMismatch(p *Params, block uint64) *MismatchError {
	off := int64(block) * int64(p.DataBlockSize)
	return &MismatchError{Device: "data", Block: block, Offset: off, Byte: off, Level: 0}
}

// entries is the number of entries in level lvl: data blocks for level 0,
// blocks of the level below otherwise.
func (g *geometry) entries(lvl int, dataBlocks uint64) uint64 {
	if lvl == 0 {
		return dataBlocks
	}
	return g.levelSize[lvl-1]
}

// CheckRoot compares the tree's root hash with want in constant time.
func (t *Tree) CheckRoot(want []byte) error {
	if subtle.ConstantTimeCompare(t.RootHash, want) != 1 {
		return fmt.Errorf("%w: computed %x, expected %x", ErrRootHashMismatch, t.RootHash, want)
	}
	return nil
}

// Build reads the data (size bytes of it, from offset 0) and returns its
// tree. Nothing is written. It stops with ctx.Err() (wrapped) once ctx is
// done, checking before each read of the data.
func Build(ctx context.Context, data io.ReaderAt, size int64, p Params) (*Tree, error) {
	b, err := NewBuilder(p)
	if err != nil {
		return nil, err
	}
	if p.DataBlocks != 0 {
		// Validate (in NewBuilder) keeps the product within an int64.
		need := int64(p.DataBlocks) * int64(p.DataBlockSize)
		if need > size {
			return nil, fmt.Errorf("%w: %d data blocks of %d bytes need %d bytes, the data has %d", ErrShortData, p.DataBlocks, p.DataBlockSize, need, size)
		}
		size = need
	}
	if _, err := b.ReadFrom(ctxReader{ctx, io.NewSectionReader(data, 0, size)}); err != nil {
		b.Close() // waits for the workers; the error is the read's
		return nil, fmt.Errorf("verity: reading data: %w", err)
	}
	return b.Close()
}

// ctxReader fails its reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Format builds the tree of the data and writes it (with the superblock,
// unless p.NoSuperblock) to the hash device, like veritysetup format.
// Nothing is written until the whole tree is built, so a cancelled or
// failed Format leaves the hash device as it was.
func Format(ctx context.Context, data io.ReaderAt, size int64, hash io.WriterAt, p Params) (*Tree, error) {
	t, err := Build(ctx, data, size, p)
	if err != nil {
		return nil, err
	}
	if err := t.WriteTo(hash); err != nil {
		return nil, err
	}
	return t, nil
}

// Verify checks the data and hash devices against the root hash, like
// veritysetup verify: the first bad block comes back as a *MismatchError, a
// consistent tree with another root as ErrRootHashMismatch. It stops with
// ctx.Err() (wrapped) once ctx is done.
//
// Verify hashes all the data before it reads the hash device, and holds
// the whole tree in memory (about 8 MiB per GiB of data with 4096-byte
// blocks and sha256). VerifyStream gives the same errors in memory that
// does not grow with the data, reading the tree first.
func Verify(ctx context.Context, data io.ReaderAt, size int64, hash io.ReaderAt, p Params, root []byte) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: data size %d", ErrParams, size)
	}
	if p.DataBlocks == 0 {
		p.DataBlocks = uint64(size) / uint64(p.DataBlockSize)
	}
	t, err := Build(ctx, data, size, p)
	if err != nil {
		return err
	}
	if err := t.Check(ctx, hash); err != nil {
		return err
	}
	return t.CheckRoot(root)
}

// ParseRootHash decodes a hex root hash and checks its length.
func ParseRootHash(s, alg string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("verity: root hash %q is not hex: %w", s, err)
	}
	a, ok := algorithms[alg]
	if !ok {
		return nil, fmt.Errorf("%w: hash algorithm %q", ErrParams, alg)
	}
	if len(b) != a.size {
		return nil, fmt.Errorf("verity: root hash has %d bytes, %s digests have %d", len(b), alg, a.size)
	}
	return b, nil
}
