package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/delta"
	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/verity"
)

// Delta updates (updog.toml's delta key; see package delta for the
// format). With "auto" (the default) the root image is installed by delta
// when the release publishes a delta index and the plan fetches at most
// half of a full download; otherwise, and whenever the delta install
// cannot go on (a server that ignores Range is streamed instead; a frame
// that fails twice falls back), the root is installed in full. "off"
// never uses delta; "required" fails, saying why, instead of installing
// in full.
//
// Seeds: the active set's root (its block digests read from the active
// hash partition's level 0 when its salt is the index's, else computed
// and cached in the state directory) and the inactive root partition (its
// old contents, and the frames an interrupted attempt wrote). A seed is a
// hint: every frame copied from one is read again and checked against its
// id before it is written, every fetched frame is decoded with its output
// bounded to the frame and checked the same way, and the hash image is
// made again on the host from the written root, its sha256 checked
// against the signed index's and its root hash against the manifest's.
// The active set is only read.
const (
	DeltaAuto     = "auto"
	DeltaOff      = "off"
	DeltaRequired = "required"
)

// ErrDeltaRequired means delta = "required" and the root image cannot be
// installed by delta; the error says why. Nothing was downloaded in full.
var ErrDeltaRequired = errors.New("updater: delta = \"required\" in updog.toml, and a delta update is not possible")

// deltaDigestCache is the file in the state directory caching the active
// root's block digests, when its hash partition cannot give them.
const deltaDigestCache = "delta-seed.digests"

// fillDelta checks updog.toml's delta key (default auto).
func (c *Config) fillDelta() error {
	switch strings.TrimSpace(c.Delta) {
	case "":
		c.Delta = DeltaAuto
	case DeltaAuto, DeltaOff, DeltaRequired:
		c.Delta = strings.TrimSpace(c.Delta)
	default:
		return fmt.Errorf("delta: %q is not auto, off or required", c.Delta)
	}
	return nil
}

// DeltaPlan is what a delta install of the root image does, or why the
// root is installed in full.
type DeltaPlan struct {
	// Use is set when the root is installed by delta; Reason says why not
	// otherwise.
	Use    bool   `json:"use"`
	Reason string `json:"reason,omitempty"`
	Index  string `json:"index,omitempty"`
	// Seekable is the seekable root image target.
	Seekable string `json:"seekable,omitempty"`
	// FetchBytes is what the planned range requests fetch of the seekable
	// file; IndexBytes the index's length; Requests the range requests
	// (the index's own request not counted).
	FetchBytes int64 `json:"fetch_bytes"`
	IndexBytes int64 `json:"index_bytes"`
	Requests   int   `json:"requests"`
	// FullBytes is what a full install of the root downloads (the signed
	// length of the root image).
	FullBytes int64 `json:"full_bytes"`
	// Frames by where they come from: Assembled frames are made of single
	// blocks of the seeds and blocks of the index's appendix (nothing
	// fetched).
	Frames    int `json:"frames"`
	InPlace   int `json:"in_place"`
	Copied    int `json:"copied"`
	Assembled int `json:"assembled"`
	Missing   int `json:"missing"`
	// ActiveDigests says where the active root's block digests came from:
	// "hash-partition", "cache" or "computed".
	ActiveDigests string `json:"active_digests,omitempty"`
	// Done, once installed: bytes and requests actually used, and
	// whether it fell back to a full install (FellBack says why).
	Fetched int64 `json:"fetched,omitempty"`
	Made    int   `json:"made_requests,omitempty"`
	// Unassembled is the frames planned as assembled that were fetched
	// instead (a seed block or an appendix block that did not check).
	Unassembled int    `json:"unassembled,omitempty"`
	Streamed    bool   `json:"streamed,omitempty"`
	FellBack    string `json:"fell_back,omitempty"`
	x           *delta.Index
	p           *delta.Plan
	seekTF      *metadata.TargetFiles
	activeNum   int
}

// String is the plan in one line, for people.
func (d *DeltaPlan) String() string {
	if d == nil {
		return "delta: not used"
	}
	if !d.Use {
		return "delta: not used (" + d.Reason + "); the root image is downloaded in full"
	}
	pct := 0.0
	if d.FullBytes > 0 {
		pct = 100 * float64(d.FetchBytes+d.IndexBytes) / float64(d.FullBytes)
	}
	return fmt.Sprintf("delta: %d bytes in %d range requests and a %d-byte index (%.1f%% of the %d-byte full root image); %d of %d frames copied, %d in place, %d assembled",
		d.FetchBytes, d.Requests, d.IndexBytes, pct, d.FullBytes, d.Copied, d.Frames, d.InPlace, d.Assembled)
}

// planDelta decides whether the plan's root image is installed by delta,
// and plans it (reading the seeds). It sets plan.Delta (nil with delta =
// "off" or no root image). With delta = "required", a delta that is not
// possible is an ErrDeltaRequired error.
func (s *session) planDelta(ctx context.Context, c *tufclient.Client, plan *Plan) error {
	mode := s.u.cfg.Delta
	plan.Delta = nil
	if mode == DeltaOff || plan.update == nil || c == nil {
		return nil
	}
	d := &DeltaPlan{}
	plan.Delta = d
	for _, img := range plan.Images {
		if img.Kind == KindRoot {
			d.FullBytes = img.DownloadBytes
		}
	}
	reason, err := s.makeDeltaPlan(ctx, c, plan, d)
	if err != nil {
		return err
	}
	if reason == "" {
		d.Use = true
		return nil
	}
	d.Reason = reason
	if mode == DeltaRequired {
		return fmt.Errorf("%w: %s", ErrDeltaRequired, reason)
	}
	s.u.log.Info("installing the root image in full", "reason", reason)
	return nil
}

// checkDelta plans the delta of check-update (plan.Delta), reading the
// disk when it can: a disk that cannot be read, or a delta that is not
// possible, is reported in plan.Delta, never an error of the check.
func (u *Updater) checkDelta(ctx context.Context, c *tufclient.Client, plan *Plan) {
	if plan == nil || plan.update == nil || c == nil || u.cfg.Delta == DeltaOff {
		return
	}
	s, err := u.openSession(ctx, true, true)
	if err != nil {
		plan.Delta = &DeltaPlan{Reason: "the disk cannot be read to plan a delta: " + err.Error()}
		return
	}
	defer s.close()
	if err := s.dual(); err != nil {
		plan.Delta = &DeltaPlan{Reason: err.Error()}
		return
	}
	if err := s.planDelta(ctx, c, plan); err != nil && plan.Delta != nil && plan.Delta.Reason == "" {
		plan.Delta.Reason = err.Error()
	}
}

// makeDeltaPlan fills d, returning why a delta is not possible ("" when it
// is). Errors are failures of the host itself (its disks, the context).
func (s *session) makeDeltaPlan(ctx context.Context, c *tufclient.Client, plan *Plan, d *DeltaPlan) (string, error) {
	up := plan.update
	dl, mv := up.Images.Delta, up.Images.Verity
	if dl == nil {
		return "the release publishes no delta index", nil
	}
	d.Index, d.Seekable = dl.Index, dl.Seekable
	if mv == nil || mv.RootHash == "" {
		return "the release gives no dm-verity root hash to check a delta install against", nil
	}
	b, err := c.ReadTarget(ctx, dl.Index, tufclient.MaxSmallTarget)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return fmt.Sprintf("the delta index %s cannot be used: %v", dl.Index, err), nil
	}
	d.IndexBytes = int64(len(b))
	x, err := delta.Parse(b)
	if err != nil {
		return fmt.Sprintf("the delta index %s: %v", dl.Index, err), nil
	}
	tf, err := c.TargetContext(ctx, dl.Seekable)
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return fmt.Sprintf("the seekable root image %s: %v", dl.Seekable, err), nil
	}
	if x.Seekable.Name != dl.Seekable || x.Seekable.Length != tf.Length || !bytes.Equal(x.Seekable.SHA256[:], tf.Hashes["sha256"]) {
		return fmt.Sprintf("the delta index describes another seekable file (%s, %d bytes, sha256 %x) than the signed %s (%d bytes, sha256 %x)",
			x.Seekable.Name, x.Seekable.Length, x.Seekable.SHA256, dl.Seekable, tf.Length, []byte(tf.Hashes["sha256"])), nil
	}
	if x.Verity == nil {
		return "the delta index does not describe the hash image, so it cannot be made on the host", nil
	}
	dbs := mv.DataBlockSize
	if dbs == 0 {
		dbs = 4096
	}
	if x.BlockSize != dbs || x.ImageSize%int64(dbs) != 0 ||
		(mv.DataBlocks != 0 && uint64(x.ImageSize/int64(dbs)) != mv.DataBlocks) ||
		(up.Images.Sizes != nil && up.Images.Sizes.Root != x.ImageSize) ||
		(mv.HashBlockSize != 0 && mv.HashBlockSize != x.Verity.HashBlockSize) ||
		(up.Images.Sizes != nil && up.Images.Sizes.Hash != x.Verity.Length) {
		return "the delta index does not match the release's image sizes and verity parameters", nil
	}
	in := s.l.Sets[s.inactive()]
	act := s.l.Sets[s.active]
	tp := s.t.Partition(in.Root)
	if tp == nil || int64(tp.Sectors())*int64(s.t.SectorSize) < x.ImageSize {
		return "", fmt.Errorf("%w: the root image is %d bytes, more than its partition", ErrImageTooLarge, x.ImageSize)
	}
	d.x, d.seekTF, d.activeNum = x, tf, act.Root

	// The seeds: the active root, then the inactive root (the target).
	activeRoot, closeA, err := s.readPartition(act.Root)
	if err != nil {
		return "", err
	}
	defer closeA()
	activeHash, closeH, err := s.readPartition(act.Hash)
	if err != nil {
		return "", err
	}
	defer closeH()
	target, closeT, err := s.readPartition(in.Root)
	if err != nil {
		return "", err
	}
	defer closeT()
	aseed, seedDone, err := s.activeSeed(ctx, x, activeRoot, activeHash, d)
	if err != nil {
		return "", err
	}
	keep := false
	defer func() { seedDone(keep) }()
	tseed := delta.Seed{Digests: delta.NewDigestReader(ctx, target, partSize(target), x.Salt, x.BlockSize),
		Blocks: partSize(target) / int64(x.BlockSize), Target: true}
	p, err := delta.NewPlan(ctx, x, []delta.Seed{aseed, tseed}, delta.DefaultOptions())
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("planning the delta: %w", err)
	}
	// Only an install writes the digest cache: dry runs and check-update
	// change nothing.
	keep = s.diskLock != nil
	d.p = p
	d.FetchBytes, d.Requests = p.FetchBytes, p.Requests()
	d.Frames, d.InPlace, d.Copied, d.Assembled, d.Missing = len(x.Frames), p.InPlace, p.Copied, p.Assembled, p.Missing
	if d.FullBytes > 0 && 2*(d.FetchBytes+d.IndexBytes) > d.FullBytes {
		return fmt.Sprintf("the delta would fetch %d bytes, more than half of the %d-byte full root image", d.FetchBytes+d.IndexBytes, d.FullBytes), nil
	}
	return "", nil
}

// partSize is the size of a partition reader.
func partSize(r io.ReaderAt) int64 {
	if d, ok := r.(interface{ Size() int64 }); ok {
		return d.Size()
	}
	return 0
}

// readPartition opens partition n for reading: a window of an image file,
// or its device node, read-only and shared (the active root is in use).
func (s *session) readPartition(n int) (blockdev.Device, func(), error) {
	p := s.t.Partition(n)
	if p == nil {
		return nil, nil, fmt.Errorf("updater: partition %d does not exist", n)
	}
	ss := int64(s.t.SectorSize)
	off, size := int64(p.FirstLBA)*ss, int64(p.Sectors())*ss
	if !s.disk.IsBlockDevice() {
		return blockdev.Window(s.disk.Device(), off, size), func() {}, nil
	}
	sysRoot := s.u.o.Host.SysRoot
	if sysRoot == "" {
		sysRoot = "/"
	}
	node, err := blockdev.PartitionNode(sysRoot, s.disk.Path, n)
	if err != nil {
		return nil, nil, fmt.Errorf("finding the device node of partition %d: %w", n, err)
	}
	f, err := blockdev.Open(node, blockdev.Options{ReadOnly: true})
	if err != nil {
		return nil, nil, fmt.Errorf("opening partition %s to read it: %w", node, err)
	}
	if f.Size() != size {
		f.Close()
		return nil, nil, fmt.Errorf("updater: the kernel sees %s as %d bytes but the partition table says %d", node, f.Size(), size)
	}
	return f, func() { f.Close() }, nil
}

// activeSeed returns the active root as a seed. Its block digests come
// from the active hash partition's level 0 when that tree uses the index's
// salt and block size (the same variant: the usual case), else from the
// cache in the state directory when it is the cache of this root, else
// they are computed (and cached: done(true), once the plan read them all,
// keeps them; done(false) drops them). done must be called.
func (s *session) activeSeed(ctx context.Context, x *delta.Index, root, hash io.ReaderAt, d *DeltaPlan) (delta.Seed, func(keep bool), error) {
	none := func(bool) {}
	rootBlocks := partSize(root) / int64(x.BlockSize)
	sb, serr := verity.ReadSuperblock(hash, 0)
	if serr == nil {
		p := sb.Params(0)
		if p.Hash == delta.HashSHA256 && p.DataBlockSize == x.BlockSize && bytes.Equal(p.Salt, x.Salt) &&
			p.DataBlocks > 0 && int64(p.DataBlocks) <= rootBlocks {
			if off, ok := level0(p); ok && off+int64(p.DataBlocks)*delta.IDSize <= partSize(hash) {
				d.ActiveDigests = "hash-partition"
				return delta.Seed{Digests: io.NewSectionReader(hash, off, int64(p.DataBlocks)*delta.IDSize), Blocks: int64(p.DataBlocks)}, none, nil
			}
		}
	}
	// The cache is named by what it caches: the salt, the block size and
	// the active hash partition's superblock and top hash block (which
	// decide its root hash). A root without a tree has no cache.
	var key []byte
	if serr == nil {
		top := make([]byte, 2*sb.HashBlockSize)
		if _, err := hash.ReadAt(top, 0); err == nil {
			h := sha256.New()
			h.Write(x.Salt)
			binary.Write(h, binary.LittleEndian, uint32(x.BlockSize))
			binary.Write(h, binary.LittleEndian, rootBlocks)
			h.Write(top)
			key = h.Sum(nil)
		}
	}
	path := filepath.Join(s.u.cfg.StateDir, deltaDigestCache)
	want := rootBlocks * delta.IDSize
	if key != nil {
		if f, err := safefile.Open(path, os.O_RDONLY, 0); err == nil {
			hdr := make([]byte, len(key))
			fi, ferr := f.Stat()
			if _, err := io.ReadFull(f, hdr); err == nil && ferr == nil && bytes.Equal(hdr, key) && fi.Size() == int64(len(key))+want {
				d.ActiveDigests = "cache"
				// Read from the cache's file; it is closed with the session's
				// process (it is small and read once).
				return delta.Seed{Digests: io.NewSectionReader(f, int64(len(key)), want), Blocks: rootBlocks}, func(bool) { f.Close() }, nil
			}
			f.Close()
		}
	}
	d.ActiveDigests = "computed"
	dr := delta.NewDigestReader(ctx, root, rootBlocks*int64(x.BlockSize), x.Salt, x.BlockSize)
	if key == nil {
		return delta.Seed{Digests: dr, Blocks: rootBlocks}, none, nil
	}
	// Computed while the plan reads it, into a temporary file renamed
	// into place when the plan is made.
	tmp, err := os.CreateTemp(s.u.cfg.StateDir, ".delta-seed-*")
	if err != nil {
		return delta.Seed{Digests: dr, Blocks: rootBlocks}, none, nil
	}
	tmp.Write(key)
	tee := &teeFile{r: dr, f: tmp}
	commit := func(keep bool) {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
			return
		}
		err := tee.err
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		if err == nil {
			err = atomicfile.SyncDir(s.u.cfg.StateDir)
		}
		if err != nil {
			os.Remove(tmp.Name())
			s.u.log.Warn("the active root's block digests could not be cached", "err", err)
		}
	}
	return delta.Seed{Digests: tee, Blocks: rootBlocks}, commit, nil
}

// teeFile copies what is read to a file, remembering the first write
// error (the cache is optional).
type teeFile struct {
	r   io.Reader
	f   *os.File
	err error
}

func (t *teeFile) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 && t.err == nil {
		_, t.err = t.f.Write(p[:n])
	}
	return n, err
}

// level0 is where a dm-verity tree's bottom level starts on its hash
// device, for digests that fill their slots (sha256 in blocks of 512 to
// 4096 bytes): the levels are stored top first, after the superblock.
func level0(p verity.Params) (int64, bool) {
	hbs := int64(p.HashBlockSize)
	per := hbs / delta.IDSize
	if per < 2 || hbs%delta.IDSize != 0 || p.DataBlocks == 0 {
		return 0, false
	}
	start := (int64(p.HashOffset) + verity.SuperblockSize + hbs - 1) / hbs
	if p.NoSuperblock {
		start = int64(p.HashOffset) / hbs
	}
	// Level sizes, bottom up, until one block.
	var sizes []int64
	for n := int64(p.DataBlocks); ; {
		n = (n + per - 1) / per
		sizes = append(sizes, n)
		if n == 1 {
			break
		}
	}
	if p.DataBlocks == 1 {
		return 0, false // the root hash is the block's digest: no tree
	}
	var above int64
	for _, n := range sizes[1:] {
		above += n
	}
	return (start + above) * hbs, true
}
