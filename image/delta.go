package image

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"

	"github.com/updog/updog/delta"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/verity"
)

// A build makes two more artifacts for delta updates (see package delta),
// unless BuildOptions.NoDelta: the root image as a zstd seekable file
// (frames of BuildOptions.DeltaFrameSize, 64 KiB, of output each: plain
// `zstd -dc` decodes it) and its index, whose frame ids use the dm-verity
// salt, so a host's active hash partition already holds its root's block
// digests. Both are made in the same single pass over the root image as
// the other artifacts and the verity tree; the index's appendix (below)
// needs one more read of the root tree's files before it.

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

// startDelta opens the seekable file (nil with NoDelta), for a root image
// of size bytes made from the tree at src.
func (b *builder) startDelta(ctx context.Context, salt []byte, src string, size int64) (*deltaBuild, error) {
	o := &b.o
	if o.NoDelta {
		return nil, nil
	}
	b.log.Info("hashing the file blocks of the root tree, for the delta index's appendix")
	fb, err := HashFileBlocks(ctx, src, salt, delta.BlockSize, o.Workers)
	if err != nil {
		return nil, err
	}
	d := &deltaBuild{hashSum: sha256.New()}
	d.seekName, d.indexName = DeltaNames(o.Name, o.Variant, o.Arch, o.Version, o.RootFSType)
	f, err := os.OpenFile(filepath.Join(b.tmp, d.seekName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	d.f, d.cw = f, &countWriter{w: f}
	if d.sk, err = NewSeekableWriter(d.cw, SeekableOptions{FrameSize: o.DeltaFrameSize, Salt: salt, Workers: o.Workers,
		FileBlocks: fb, AppendixMax: int(min(size/deltaAppendixShare, delta.MaxAppendixBytes))}); err != nil {
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

// The appendix of mixed frames (see delta.Mixed). A file system that
// interleaves its metadata with the file data (mkfs.erofs puts a block of
// inodes every ~2 MiB, and directories among the files) changes a block
// of metadata in every such frame after a file that changes size: the
// file data of those frames is found again, moved, by the host, the
// frames are not. The index carries, for each frame that mixes file data
// with other blocks, those other blocks, so the host can assemble the
// frame instead of fetching it. The file data is told from the rest
// without parsing the file system: a block is file data when it is a
// 4 KiB chunk of a regular file of the tree (aligned to the file's start,
// the last one padded with zeros), as every file system updog builds
// stores a file's data on whole blocks (erofs is built without inline
// data). A false hit (another block with the same 8-byte digest prefix)
// only leaves a block out of the blob: the frame is then fetched.

// deltaAppendixShare bounds the appendix to 1/deltaAppendixShare of the
// root image (and to delta.MaxAppendixBytes): every host downloads it
// with the index, whether its frames are needed or not. A package update
// of a 128 MiB root takes 64 KB on erofs and 106 KB on ext4.
const deltaAppendixShare = 50

// fileChunk is how much of a file FileBlocks reads at a time.
const fileChunk = 1 << 20

// FileBlocks is the set of the digests (hash(salt || block), 8-byte
// prefixes) of the file data of a tree.
type FileBlocks struct {
	prefix []uint64 // sorted, distinct
}

// Has reports whether digest (delta.IDSize bytes) is one of a block of
// file data (or shares its 8-byte prefix).
func (f *FileBlocks) Has(digest []byte) bool {
	p := binary.LittleEndian.Uint64(digest)
	_, ok := slices.BinarySearch(f.prefix, p)
	return ok
}

// Len is the number of distinct digests.
func (f *FileBlocks) Len() int { return len(f.prefix) }

// HashFileBlocks reads every regular file of the tree at dir (symbolic
// links are not followed) and returns the set of the digests of its
// blocks: blockSize chunks from each file's start, the last one padded
// with zeros. workers files are read at a time (0: GOMAXPROCS).
func HashFileBlocks(ctx context.Context, dir string, salt []byte, blockSize, workers int) (*FileBlocks, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	paths := make(chan string, workers)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		all  []uint64
		ferr error
	)
	fail := func(err error) {
		mu.Lock()
		if ferr == nil {
			ferr = err
		}
		mu.Unlock()
		cancel()
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := delta.NewHasher(salt, blockSize)
			buf := make([]byte, fileChunk)
			var mine, digs []uint64
			var d []byte
			for p := range paths {
				err := func() error {
					f, err := safefile.Open(p, os.O_RDONLY, 0)
					if err != nil {
						return err
					}
					defer f.Close()
					for {
						if err := ctx.Err(); err != nil {
							return err
						}
						n, err := io.ReadFull(f, buf)
						if n > 0 {
							pad := (n + blockSize - 1) / blockSize * blockSize
							clear(buf[n:pad])
							d = h.AppendDigests(d[:0], buf[:pad])
							for i := 0; i < len(d); i += delta.IDSize {
								digs = append(digs, binary.LittleEndian.Uint64(d[i:]))
							}
						}
						if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
							return nil
						}
						if err != nil {
							return err
						}
					}
				}()
				if err != nil {
					fail(fmt.Errorf("hashing the file blocks of %s: %w", p, err))
					digs = digs[:0]
					continue
				}
				mine, digs = append(mine, digs...), digs[:0]
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	werr := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			select {
			case paths <- p:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	close(paths)
	wg.Wait()
	if ferr != nil {
		return nil, ferr
	}
	if werr != nil {
		return nil, fmt.Errorf("hashing the file blocks of %s: %w", dir, werr)
	}
	slices.Sort(all)
	return &FileBlocks{prefix: slices.Compact(all)}, nil
}
