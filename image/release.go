package image

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/updog/updog/manifest"
)

// ReleaseFileName is the name of the release description imgbuild build
// writes beside the artifacts.
const ReleaseFileName = "release.json"

// ReleaseFormat is the format number of release.json this package writes
// and reads.
const ReleaseFormat = 1

// MaxReleaseFile bounds the release.json a reader accepts.
const MaxReleaseFile = 1 << 20

// ErrRelease means a release.json cannot be used.
var ErrRelease = errors.New("image: bad release description")

// Release is release.json: everything `updata add-update` needs to add
// the release to a manifest (variant, arch, version, the image target
// names, their uncompressed sizes, the root's dm-verity parameters), and
// for convenience each artifact's length and sha256 and how the release
// was built.
type Release struct {
	Format  int    `json:"format"`
	Name    string `json:"name"`
	Variant string `json:"variant"`
	Arch    string `json:"arch"`
	Version string `json:"version"`
	// SourceDateEpoch is the time written into the file systems: building
	// again from the same inputs with SOURCE_DATE_EPOCH set to it gives
	// the same bytes.
	SourceDateEpoch int64              `json:"source_date_epoch"`
	RootFS          string             `json:"root_fs"`
	Compression     Compression        `json:"compression"`
	Images          ReleaseImages      `json:"images"`
	Verity          ReleaseVerity      `json:"verity"`
	Cmdline         string             `json:"cmdline"`
	Disk            *ReleaseDisk       `json:"disk,omitempty"`
	Partitions      []ReleasePartition `json:"partitions,omitempty"`
	// Delta names the delta artifacts, when they were built.
	Delta *ReleaseDelta `json:"delta,omitempty"`
}

// ReleaseDelta are the delta artifacts of a release (see package delta):
// the root image as a zstd seekable file (Size is the root image's size)
// and its index (not compressed: Size is its Length), and the frame size.
type ReleaseDelta struct {
	Seekable  Artifact `json:"seekable"`
	Index     Artifact `json:"index"`
	FrameSize int      `json:"frame_size"`
}

// ReleaseImages are the three update artifacts.
type ReleaseImages struct {
	Boot Artifact `json:"boot"`
	Root Artifact `json:"root"`
	Hash Artifact `json:"hash"`
}

// Artifact is one update artifact: a file beside release.json whose name
// is also its TUF target name.
type Artifact struct {
	Target string `json:"target"`
	// Size is the uncompressed image's size in bytes.
	Size int64 `json:"size"`
	// Length and SHA256 are the artifact file's (compressed).
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// ReleaseVerity are the root image's dm-verity parameters.
type ReleaseVerity struct {
	RootHash      string `json:"root_hash"`
	Salt          string `json:"salt"`
	Hash          string `json:"hash"`
	DataBlockSize int    `json:"data_block_size"`
	HashBlockSize int    `json:"hash_block_size"`
	DataBlocks    uint64 `json:"data_blocks"`
	HashStart     uint64 `json:"hash_start"`
	UUID          string `json:"uuid"`
}

// ReleaseDisk describes the disk image, when one was built.
type ReleaseDisk struct {
	File       string `json:"file"`
	Size       int64  `json:"size"`
	SectorSize int    `json:"sector_size"`
	DiskGUID   string `json:"disk_guid"`
}

// ReleasePartition is one partition of the plan the release was built for.
type ReleasePartition struct {
	Number int    `json:"number"`
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	// Used is how much of it the release fills (0 when empty).
	Used int64 `json:"used,omitempty"`
}

// ManifestImages returns the images entry of a manifest update for the
// release: target names, sizes and verity parameters.
func (r *Release) ManifestImages() manifest.Images {
	return manifest.Images{
		Boot: r.Images.Boot.Target, Root: r.Images.Root.Target, Hash: r.Images.Hash.Target,
		Sizes: &manifest.ImageSizes{Boot: r.Images.Boot.Size, Root: r.Images.Root.Size, Hash: r.Images.Hash.Size},
		Verity: &manifest.Verity{RootHash: r.Verity.RootHash, Salt: r.Verity.Salt, Hash: r.Verity.Hash,
			DataBlockSize: r.Verity.DataBlockSize, HashBlockSize: r.Verity.HashBlockSize, DataBlocks: r.Verity.DataBlocks},
		Delta: r.ManifestDelta(),
	}
}

// ManifestDelta returns the delta entry of a manifest update for the
// release (nil when it has no delta artifacts).
func (r *Release) ManifestDelta() *manifest.Delta {
	if r.Delta == nil {
		return nil
	}
	return &manifest.Delta{Seekable: r.Delta.Seekable.Target, Index: r.Delta.Index.Target}
}

// Validate checks what a manifest needs from the release.
func (r *Release) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrRelease, fmt.Sprintf(format, a...))
	}
	if r.Format != ReleaseFormat {
		return bad("format %d (this program reads format %d)", r.Format, ReleaseFormat)
	}
	if err := manifest.CheckVariant(r.Variant); err != nil {
		return bad("%v", err)
	}
	if err := manifest.CheckArch(r.Arch); err != nil {
		return bad("%v", err)
	}
	if _, err := manifest.ParseVersion(r.Version); err != nil {
		return bad("%v", err)
	}
	for _, a := range []struct {
		kind string
		a    Artifact
	}{{"boot", r.Images.Boot}, {"root", r.Images.Root}, {"hash", r.Images.Hash}} {
		if err := manifest.CheckTargetName(a.a.Target); err != nil {
			return bad("images.%s: %v", a.kind, err)
		}
		if a.a.Size <= 0 {
			return bad("images.%s.size %d is not positive", a.kind, a.a.Size)
		}
		if a.a.SHA256 != "" {
			if b, err := hex.DecodeString(a.a.SHA256); err != nil || len(b) != 32 {
				return bad("images.%s.sha256 %q is not a sha256 in hex", a.kind, a.a.SHA256)
			}
		}
	}
	if d := r.Delta; d != nil {
		for _, a := range []struct {
			kind string
			a    Artifact
		}{{"seekable", d.Seekable}, {"index", d.Index}} {
			if err := manifest.CheckTargetName(a.a.Target); err != nil {
				return bad("delta.%s: %v", a.kind, err)
			}
			if a.a.Size <= 0 || a.a.Length <= 0 {
				return bad("delta.%s: size %d and length %d are not both positive", a.kind, a.a.Size, a.a.Length)
			}
			if b, err := hex.DecodeString(a.a.SHA256); err != nil || len(b) != 32 {
				return bad("delta.%s.sha256 %q is not a sha256 in hex", a.kind, a.a.SHA256)
			}
		}
		if d.Seekable.Size != r.Images.Root.Size {
			return bad("delta.seekable.size %d is not the root image's %d", d.Seekable.Size, r.Images.Root.Size)
		}
		if d.FrameSize <= 0 || d.FrameSize%4096 != 0 {
			return bad("delta.frame_size %d is not a positive multiple of 4096", d.FrameSize)
		}
	}
	mv := r.ManifestImages().Verity
	if err := mv.Validate(); err != nil {
		return bad("verity: %v", err)
	}
	if mv.DataBlocks == 0 || int64(mv.DataBlocks)*int64(max(mv.DataBlockSize, 1)) > r.Images.Root.Size {
		return bad("verity.data_blocks %d of %d bytes do not fit the %d-byte root image", mv.DataBlocks, mv.DataBlockSize, r.Images.Root.Size)
	}
	return nil
}

// ParseRelease reads and validates a release.json. Unknown fields are an
// error: a misspelt field must not be silently left out of a manifest.
func ParseRelease(data []byte) (*Release, error) {
	if len(data) > MaxReleaseFile {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrRelease, len(data), MaxReleaseFile)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Release
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRelease, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrRelease)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// MarshalIndent encodes the release as release.json holds it.
func (r *Release) MarshalIndent() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
