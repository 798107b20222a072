package verity

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"math/bits"
)

// Limits of the format as this package supports it.
const (
	MinBlockSize = 512
	MaxBlockSize = 4096
	MaxSaltSize  = 256
	maxLevels    = 63
	// SuperblockSize is the on-disk size of the superblock.
	SuperblockSize = 512
)

// ErrParams means the parameters are not a valid dm-verity configuration.
var ErrParams = errors.New("verity: invalid parameters")

// Params describe a dm-verity device. The zero value is not valid: use
// DefaultParams and change what you need.
type Params struct {
	Hash          string   // "sha256", "sha1" or "sha512"
	DataBlockSize int      // 512..4096, a power of two
	HashBlockSize int      // 512..4096, a power of two
	DataBlocks    uint64   // 0: every whole block of the data (what veritysetup does)
	Salt          []byte   // up to 256 bytes; empty for none
	UUID          [16]byte // recorded in the superblock
	NoSuperblock  bool
	HashOffset    int64 // bytes into the hash device; a multiple of 512
}

// DefaultParams are veritysetup's defaults, without the random salt and
// UUID (the caller chooses those).
func DefaultParams() Params {
	return Params{Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096}
}

type algorithm struct {
	new  func() hash.Hash
	size int
}

var algorithms = map[string]algorithm{
	"sha1":   {sha1.New, sha1.Size},
	"sha256": {sha256.New, sha256.Size},
	"sha512": {sha512.New, sha512.Size},
}

// Validate checks p.
func (p Params) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrParams, fmt.Sprintf(format, a...))
	}
	if _, ok := algorithms[p.Hash]; !ok {
		return bad("hash algorithm %q is not supported (want sha256, sha1 or sha512)", p.Hash)
	}
	for _, b := range []struct {
		name string
		v    int
	}{{"data block size", p.DataBlockSize}, {"hash block size", p.HashBlockSize}} {
		if b.v < MinBlockSize || b.v > MaxBlockSize || b.v&(b.v-1) != 0 {
			return bad("%s %d is not a power of two from %d to %d", b.name, b.v, MinBlockSize, MaxBlockSize)
		}
	}
	if len(p.Salt) > MaxSaltSize {
		return bad("salt of %d bytes is longer than %d", len(p.Salt), MaxSaltSize)
	}
	if p.HashOffset < 0 || p.HashOffset%512 != 0 {
		return bad("hash offset %d is not a non-negative multiple of 512", p.HashOffset)
	}
	// The data's size in bytes must be a number: past this, data blocks
	// times the block size wraps around.
	if p.DataBlocks > math.MaxInt64/uint64(p.DataBlockSize) {
		return bad("%d data blocks of %d bytes are more than a device can hold", p.DataBlocks, p.DataBlockSize)
	}
	// veritysetup rounds such an offset down and writes the tree over the
	// bytes before it; refuse instead of writing outside the given range.
	if p.NoSuperblock && p.HashOffset%int64(p.HashBlockSize) != 0 {
		return bad("without a superblock the hash offset %d must be a multiple of the hash block size %d", p.HashOffset, p.HashBlockSize)
	}
	return nil
}

// geometry is where everything lies on the hash device.
type geometry struct {
	digestSize int
	stride     int      // bytes per entry: the digest and its zero padding
	perBlock   int      // entries per hash block
	levels     int      // 0 for a single data block
	start      uint64   // first tree block (the top level), in hash blocks
	levelStart []uint64 // levelStart[i]: first block of level i (0 = bottom)
	levelSize  []uint64 // blocks in level i
	end        uint64   // one past the last tree block
}

// hashStart is the first block of the tree, in hash blocks, as veritysetup
// computes it: after the superblock, rounded up to a hash block; without a
// superblock, the hash offset rounded down.
func (p Params) hashStart() uint64 {
	off := uint64(p.HashOffset)
	if p.NoSuperblock {
		return off / uint64(p.HashBlockSize)
	}
	return (off + SuperblockSize + uint64(p.HashBlockSize) - 1) / uint64(p.HashBlockSize)
}

func (p Params) geometry(dataBlocks uint64) (geometry, error) {
	alg := algorithms[p.Hash]
	g := geometry{digestSize: alg.size}
	bitsDown := bits.Len(uint(p.HashBlockSize/alg.size)) - 1 // floor(log2)
	if bitsDown < 1 {
		return g, fmt.Errorf("%w: a %d-byte hash block holds fewer than two %s digests", ErrParams, p.HashBlockSize, p.Hash)
	}
	g.perBlock = 1 << bitsDown
	g.stride = p.HashBlockSize / g.perBlock
	if dataBlocks == 0 {
		return g, fmt.Errorf("%w: no data blocks (the data is smaller than one %d-byte block)", ErrParams, p.DataBlockSize)
	}
	for uint(bitsDown*g.levels) < 64 && (dataBlocks-1)>>(uint(bitsDown*g.levels)) != 0 {
		g.levels++
	}
	if g.levels > maxLevels {
		return g, fmt.Errorf("%w: %d levels", ErrParams, g.levels)
	}
	g.start = p.hashStart()
	g.levelStart = make([]uint64, g.levels)
	g.levelSize = make([]uint64, g.levels)
	pos := g.start
	for i := g.levels - 1; i >= 0; i-- {
		shift := uint(bitsDown * (i + 1))
		s := (dataBlocks + (1 << shift) - 1) >> shift
		if shift >= 64 {
			s = 1
		}
		g.levelStart[i], g.levelSize[i] = pos, s
		pos += s
	}
	g.end = pos
	// Every byte offset on the hash device must fit an int64.
	if g.end > math.MaxInt64/uint64(p.HashBlockSize) {
		return g, fmt.Errorf("%w: the hash tree would end past the largest possible device (hash offset %d)", ErrParams, p.HashOffset)
	}
	return g, nil
}

// Info is what describes a built device: the parameters, the number of data
// blocks and the root hash.
type Info struct {
	Params   // with DataBlocks filled in
	RootHash []byte
	// HashBlocks is the number of tree blocks (veritysetup's "Hash blocks").
	HashBlocks uint64
	// HashDeviceSize is the size the hash device needs, in bytes.
	HashDeviceSize int64
	// HashStart is the first tree block, in hash blocks: the hash_start of
	// the kernel's table line.
	HashStart uint64
}

// ParseUUID parses the canonical text form of a UUID into the byte order
// the superblock stores (as written, big-endian).
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("%w: %q is not a UUID", ErrParams, s)
	}
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:])
	if err != nil {
		return u, fmt.Errorf("%w: %q is not a UUID", ErrParams, s)
	}
	copy(u[:], b)
	return u, nil
}

// FormatUUID is the inverse of ParseUUID.
func FormatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}
