package image

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/updog/updog/delta"
	"github.com/updog/updog/verity"
)

// A build makes two more artifacts for delta updates (see package delta),
// unless BuildOptions.NoDelta: the root image as a zstd seekable file
// (frames of BuildOptions.DeltaFrameSize, 64 KiB, of output each: plain
// `zstd -dc` decodes it) and its index, whose frame ids use the dm-verity
// salt, so a host's active hash partition already holds its root's block
// digests. Both are made in the same single pass over the root image as
// the other artifacts and the verity tree.

// idSeedFor is the seed of the identifiers of a file system: for the
// root, derived from the variant alone (name, variant, arch, file system
// type and verity salt), as the salt is, so that every release of a
// variant has the same root file system UUID and directory hash seed.
// Their metadata then differs only where the files do (ext4's metadata
// checksums are seeded with the UUID): otherwise every directory block
// and inode table block of every release differs from the last one, and a
// delta update fetches a frame for each. The other file systems' ids come
// from all the inputs.
func (b *builder) idSeedFor(purpose string) [32]byte {
	if purpose != "root" {
		return b.seed
	}
	salt := b.o.Salt
	if salt == nil {
		salt = DefaultSalt(b.o.Variant)
	}
	return idSeed("root file system of a variant", b.o.Name, b.o.Variant, b.o.Arch, b.o.RootFSType, hex.EncodeToString(salt))
}

// DeltaNames returns the file names of a release's seekable root image and
// its delta index.
func DeltaNames(name, variant, arch, version, rootFS string) (seekable, index string) {
	base := fmt.Sprintf("%s-%s-%s-%s-root.%s", name, variant, arch, version, rootFS)
	return base + ".seek.zst", base + ".didx"
}

// checkDelta validates the delta options, filling in the default frame
// size.
func (o *BuildOptions) checkDelta() error {
	if o.NoDelta {
		return nil
	}
	if o.DeltaFrameSize == 0 {
		o.DeltaFrameSize = delta.DefaultFrameSize
	}
	if fs := o.DeltaFrameSize; fs < delta.BlockSize || fs > delta.MaxFrameSize || fs%delta.BlockSize != 0 {
		return fmt.Errorf("%w: delta frame size %d is not a multiple of %d bytes of at most %d", ErrOptions, fs, delta.BlockSize, delta.MaxFrameSize)
	}
	return nil
}

// deltaBuild is the seekable root image and its index being made.
type deltaBuild struct {
	sk                  *SeekableWriter
	f                   *os.File
	cw                  *countWriter
	seekName, indexName string
	hashSum             hash.Hash // of the uncompressed hash image
	closed              bool
}

// startDelta opens the seekable file (nil with NoDelta).
func (b *builder) startDelta(salt []byte) (*deltaBuild, error) {
	o := &b.o
	if o.NoDelta {
		return nil, nil
	}
	d := &deltaBuild{hashSum: sha256.New()}
	d.seekName, d.indexName = DeltaNames(o.Name, o.Variant, o.Arch, o.Version, o.RootFSType)
	f, err := os.OpenFile(filepath.Join(b.tmp, d.seekName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	d.f, d.cw = f, &countWriter{w: f}
	if d.sk, err = NewSeekableWriter(d.cw, SeekableOptions{FrameSize: o.DeltaFrameSize, Salt: salt, Workers: o.Workers}); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// rootSinks are what the root image pass feeds for the delta artifacts.
func (d *deltaBuild) rootSinks() []io.Writer {
	if d == nil {
		return nil
	}
	return []io.Writer{d.sk}
}

// hashSinks are what the hash image pass feeds (its sha256).
func (d *deltaBuild) hashSinks() []io.Writer {
	if d == nil {
		return nil
	}
	return []io.Writer{d.hashSum}
}

// close stops the writer and closes the file (after a failed build).
func (d *deltaBuild) close() {
	if d == nil || d.closed {
		return
	}
	d.closed = true
	d.sk.Close()
	d.f.Close()
}

// finishDelta ends the seekable file, writes the index, adds both to the
// build's files and returns their release.json entry (nil with NoDelta).
func (b *builder) finishDelta(d *deltaBuild, tree *verity.Tree) (*ReleaseDelta, error) {
	if d == nil {
		return nil, nil
	}
	d.closed = true
	err := d.sk.Close()
	if err == nil {
		err = d.f.Sync()
	}
	if cerr := d.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("making %s: %w", d.seekName, err)
	}
	x, err := d.sk.Index(d.seekName)
	if err != nil {
		return nil, err
	}
	v := &delta.HashImage{UUID: tree.UUID, HashBlockSize: tree.HashBlockSize, Length: tree.HashDeviceSize}
	copy(v.SHA256[:], d.hashSum.Sum(nil))
	x.Verity = v
	idx, err := x.Marshal()
	if err != nil {
		return nil, err
	}
	if err := writeSynced(filepath.Join(b.tmp, d.indexName), idx); err != nil {
		return nil, err
	}
	isum := sha256.Sum256(idx)
	b.res.Files = append(b.res.Files, d.seekName, d.indexName)
	return &ReleaseDelta{
		Seekable:  Artifact{Target: d.seekName, Size: x.ImageSize, Length: x.Seekable.Length, SHA256: hex.EncodeToString(x.Seekable.SHA256[:])},
		Index:     Artifact{Target: d.indexName, Size: int64(len(idx)), Length: int64(len(idx)), SHA256: hex.EncodeToString(isum[:])},
		FrameSize: x.FrameSize,
	}, nil
}
