package manifest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors of validation; Validate's Problems wrap them.
var (
	// ErrName means a variant, an arch or an image target name is not
	// safe to use as a file name or in a path.
	ErrName = errors.New("manifest: unsafe name")
	// ErrVerity means the dm-verity parameters are not ones dm-verity
	// accepts.
	ErrVerity = errors.New("manifest: invalid verity parameters")
	// ErrSize means an image size is not positive or is absurdly large.
	ErrSize = errors.New("manifest: invalid image size")
)

// Limits of what a manifest may hold.
const (
	// MaxTargetName is the longest image target name, in bytes (the
	// longest file name Linux file systems allow).
	MaxTargetName = 255
	// MaxIdent is the longest variant or arch, in bytes. Bottlerocket's
	// longest variants are about 25.
	MaxIdent = 64
	// MaxImageSize bounds each image size: 1 TiB, far above any OS image.
	MaxImageSize = 1 << 40
)

// dm-verity's limits, as verity.Params accepts them (verity/params.go).
const (
	minVerityBlock = 512
	maxVerityBlock = 4096
	maxVeritySalt  = 256
	defaultBlock   = 4096
)

// verityDigest is the digest size in bytes of each hash dm-verity takes.
var verityDigest = map[string]int{"sha1": 20, "sha256": 32, "sha512": 64}

// CheckTargetName checks that an image target name is a plain file name:
// not empty, at most MaxTargetName bytes of UTF-8, no "/" or "\", no "..",
// no NUL or other control characters, and not "." or "..". Errors match
// ErrName.
func CheckTargetName(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w: target name %q %s", ErrName, name, why) }
	switch {
	case name == "":
		return bad("is empty")
	case len(name) > MaxTargetName:
		return bad(fmt.Sprintf("is %d bytes long, more than %d", len(name), MaxTargetName))
	case !utf8.ValidString(name):
		return bad("is not UTF-8")
	case name == "." || name == "..":
		return bad("is not a file name")
	case strings.ContainsAny(name, `/\`):
		return bad("contains a path separator: it must be a plain file name")
	case strings.Contains(name, ".."):
		return bad(`contains ".."`)
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return bad("contains a control character")
	}
	return nil
}

// CheckVariant checks a variant name: 1 to MaxIdent bytes of ASCII letters,
// digits, ".", "_" and "-", starting with a letter or digit. Errors match
// ErrName.
func CheckVariant(s string) error { return checkIdent("variant", s) }

// CheckArch checks an architecture name by the rules of CheckVariant.
func CheckArch(s string) error { return checkIdent("arch", s) }

func checkIdent(what, s string) error {
	bad := func(why string) error { return fmt.Errorf("%w: %s %q %s", ErrName, what, s, why) }
	if s == "" {
		return bad("is empty")
	}
	if len(s) > MaxIdent {
		return bad(fmt.Sprintf("is %d bytes long, more than %d", len(s), MaxIdent))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return bad("does not start with a letter or digit")
		}
		if !alnum && c != '.' && c != '_' && c != '-' {
			return bad(fmt.Sprintf("contains %q: only letters, digits, '.', '_' and '-' are allowed", c))
		}
	}
	return nil
}

// Validate checks the dm-verity parameters as dm-verity (and
// verity.Params.Validate) accept them: the hash is sha256 (the default when
// empty), sha1 or sha512; the root hash is hex of that hash's digest size;
// the salt is hex of at most 256 bytes (empty for none); block sizes are
// powers of two from 512 to 4096 (0: the default 4096); data_blocks ×
// data_block_size fits in an int64. Errors match ErrVerity.
func (v *Verity) Validate() error { return v.validate(0) }

// validate is Validate, checking as well, when rootSize > 0, that the data
// blocks fit in the root image.
func (v *Verity) validate(rootSize int64) error {
	var why []string
	alg := v.Hash
	if alg == "" {
		alg = "sha256"
	}
	size, ok := verityDigest[alg]
	if !ok {
		why = append(why, fmt.Sprintf("hash %q is not sha256, sha1 or sha512", v.Hash))
	}
	if b, err := hex.DecodeString(v.RootHash); err != nil || v.RootHash == "" {
		why = append(why, fmt.Sprintf("root_hash %q is not hex", v.RootHash))
	} else if ok && len(b) != size {
		why = append(why, fmt.Sprintf("root_hash is %d bytes, but a %s digest is %d", len(b), alg, size))
	}
	if b, err := hex.DecodeString(v.Salt); err != nil {
		why = append(why, fmt.Sprintf("salt %q is not hex", v.Salt))
	} else if len(b) > maxVeritySalt {
		why = append(why, fmt.Sprintf("salt is %d bytes, more than %d", len(b), maxVeritySalt))
	}
	dataBlock := v.DataBlockSize
	for _, bs := range []struct {
		name string
		v    int
	}{{"data_block_size", v.DataBlockSize}, {"hash_block_size", v.HashBlockSize}} {
		if bs.v == 0 {
			continue // the default, 4096
		}
		if bs.v < minVerityBlock || bs.v > maxVerityBlock || bs.v&(bs.v-1) != 0 {
			why = append(why, fmt.Sprintf("%s %d is not a power of two from %d to %d", bs.name, bs.v, minVerityBlock, maxVerityBlock))
			dataBlock = -1
		}
	}
	if dataBlock == 0 {
		dataBlock = defaultBlock
	}
	if dataBlock > 0 && v.DataBlocks > 0 {
		switch {
		case v.DataBlocks > uint64(math.MaxInt64/dataBlock):
			why = append(why, fmt.Sprintf("data_blocks %d of %d bytes overflow a 64-bit size", v.DataBlocks, dataBlock))
		case rootSize > 0 && int64(v.DataBlocks)*int64(dataBlock) > rootSize:
			why = append(why, fmt.Sprintf("data_blocks %d of %d bytes (%d bytes) are more than the root image's %d bytes",
				v.DataBlocks, dataBlock, int64(v.DataBlocks)*int64(dataBlock), rootSize))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%w: images.verity: %s", ErrVerity, strings.Join(why, "; "))
}
