package verity

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

const (
	sbSignature = "verity\x00\x00"
	sbVersion   = 1
	hashType    = 1 // format 1: salt first, power-of-two entry stride
)

// ErrSuperblock means a superblock is damaged or not a verity superblock.
var ErrSuperblock = errors.New("verity: bad superblock")

// SuperblockError says which field of a superblock is wrong.
type SuperblockError struct {
	Field   string
	Problem string
}

func (e *SuperblockError) Error() string {
	return fmt.Sprintf("verity superblock: %s: %s", e.Field, e.Problem)
}

// Is makes every SuperblockError match ErrSuperblock.
func (e *SuperblockError) Is(target error) bool { return target == ErrSuperblock }

// Superblock is the on-disk header veritysetup writes at the hash offset:
//
//	0   signature "verity\0\0"   8   version (1)    12  hash type (1)
//	16  UUID (16 bytes)          32  algorithm name (32 bytes, NUL-padded)
//	64  data block size          68  hash block size
//	72  data blocks (u64)        80  salt size (u16)   82 padding
//	88  salt (256 bytes)         344 padding to 512
//
// All integers are little-endian.
type Superblock struct {
	UUID          [16]byte
	Hash          string
	DataBlockSize int
	HashBlockSize int
	DataBlocks    uint64
	Salt          []byte
}

// MarshalBinary encodes the 512-byte superblock.
func (s Superblock) MarshalBinary() ([]byte, error) {
	if len(s.Hash) >= 32 {
		return nil, fmt.Errorf("%w: algorithm name %q is too long", ErrParams, s.Hash)
	}
	if len(s.Salt) > MaxSaltSize {
		return nil, fmt.Errorf("%w: salt of %d bytes", ErrParams, len(s.Salt))
	}
	b := make([]byte, SuperblockSize)
	copy(b, sbSignature)
	binary.LittleEndian.PutUint32(b[8:], sbVersion)
	binary.LittleEndian.PutUint32(b[12:], hashType)
	copy(b[16:32], s.UUID[:])
	copy(b[32:64], s.Hash)
	binary.LittleEndian.PutUint32(b[64:], uint32(s.DataBlockSize))
	binary.LittleEndian.PutUint32(b[68:], uint32(s.HashBlockSize))
	binary.LittleEndian.PutUint64(b[72:], s.DataBlocks)
	binary.LittleEndian.PutUint16(b[80:], uint16(len(s.Salt)))
	copy(b[88:], s.Salt)
	return b, nil
}

// ParseSuperblock decodes and validates a superblock. Each kind of damage
// gets a *SuperblockError naming the field.
func ParseSuperblock(b []byte) (*Superblock, error) {
	bad := func(field, format string, a ...any) (*Superblock, error) {
		return nil, &SuperblockError{Field: field, Problem: fmt.Sprintf(format, a...)}
	}
	if len(b) < SuperblockSize {
		return bad("size", "%d bytes, want %d", len(b), SuperblockSize)
	}
	if string(b[:8]) != sbSignature {
		return bad("signature", "%q is not %q: not a verity superblock", b[:8], sbSignature)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != sbVersion {
		return bad("version", "%d is not supported (want %d)", v, sbVersion)
	}
	if ht := binary.LittleEndian.Uint32(b[12:]); ht != hashType {
		return bad("hash type", "%d is not supported (want 1; 0 is the old Chrome OS format)", ht)
	}
	s := &Superblock{}
	copy(s.UUID[:], b[16:32])
	name := b[32:64]
	end := bytes.IndexByte(name, 0)
	if end < 0 {
		return bad("algorithm", "name is not NUL-terminated")
	}
	s.Hash = string(name[:end])
	if _, ok := algorithms[s.Hash]; !ok {
		return bad("algorithm", "%q is not supported (want sha256, sha1 or sha512)", s.Hash)
	}
	s.DataBlockSize = int(binary.LittleEndian.Uint32(b[64:]))
	s.HashBlockSize = int(binary.LittleEndian.Uint32(b[68:]))
	for _, f := range []struct {
		name string
		v    int
	}{{"data block size", s.DataBlockSize}, {"hash block size", s.HashBlockSize}} {
		if f.v < MinBlockSize || f.v > MaxBlockSize || f.v&(f.v-1) != 0 {
			return bad(f.name, "%d is not a power of two from %d to %d", f.v, MinBlockSize, MaxBlockSize)
		}
	}
	s.DataBlocks = binary.LittleEndian.Uint64(b[72:])
	if s.DataBlocks == 0 {
		return bad("data blocks", "zero")
	}
	if s.DataBlocks > math.MaxInt64/uint64(s.DataBlockSize) {
		return bad("data blocks", "%d blocks of %d bytes overflow a device size", s.DataBlocks, s.DataBlockSize)
	}
	n := int(binary.LittleEndian.Uint16(b[80:]))
	if n > MaxSaltSize {
		return bad("salt size", "%d is larger than %d", n, MaxSaltSize)
	}
	s.Salt = append([]byte{}, b[88:88+n]...)
	return s, nil
}

// ReadSuperblock reads and validates the superblock at offset off of r.
func ReadSuperblock(r io.ReaderAt, off int64) (*Superblock, error) {
	b := make([]byte, SuperblockSize)
	if _, err := r.ReadAt(b, off); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &SuperblockError{Field: "size", Problem: fmt.Sprintf("the hash device ends before a superblock at offset %d", off)}
		}
		return nil, fmt.Errorf("verity: reading superblock at offset %d: %w", off, err)
	}
	return ParseSuperblock(b)
}

// Params returns the parameters a superblock records, for a superblock read
// at hashOffset.
func (s *Superblock) Params(hashOffset int64) Params {
	return Params{Hash: s.Hash, DataBlockSize: s.DataBlockSize, HashBlockSize: s.HashBlockSize,
		DataBlocks: s.DataBlocks, Salt: s.Salt, UUID: s.UUID, HashOffset: hashOffset}
}
