package image

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/updog/updog/gptprio"
)

// A build derives every identifier it writes (the disk and partition
// GUIDs, the file system UUIDs and directory hash seeds, the FAT serial
// number, the verity superblock's UUID and salt) from its inputs, so that
// the same inputs give the same bytes. seed is the hash of those inputs;
// each identifier is the hash of the seed and what it is for.

// idSeed hashes the build's inputs, each length-prefixed so no two lists
// of fields hash alike.
func idSeed(fields ...string) [32]byte {
	h := sha256.New()
	h.Write([]byte("updog imgbuild ids v1"))
	for _, f := range fields {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// derive returns 32 bytes for purpose from seed.
func derive(seed [32]byte, purpose string) [32]byte {
	return sha256.Sum256(append(seed[:], purpose...))
}

// uuidFor returns an RFC 4122 version-4-shaped UUID for purpose, in the
// canonical (big-endian) byte order, as file systems and the verity
// superblock store it.
func uuidFor(seed [32]byte, purpose string) [16]byte {
	d := derive(seed, purpose)
	var u [16]byte
	copy(u[:], d[:16])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

// formatUUID is the canonical text of a big-endian UUID.
func formatUUID(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// guidFor is uuidFor in the GPT's mixed-endian byte order.
func guidFor(seed [32]byte, purpose string) gptprio.GUID {
	g := gptprio.MustParseGUID(formatUUID(uuidFor(seed, purpose)))
	return g
}

// DefaultSalt is the dm-verity salt a build uses unless given one: derived
// from the variant alone, so that every release of a variant shares it
// (a host can then tell a new root from an old one by the root hash
// alone, and the salt in a manifest never changes).
func DefaultSalt(variant string) []byte {
	s := sha256.Sum256([]byte("updog verity salt" + variant))
	return s[:]
}
