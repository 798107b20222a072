package updater

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/verity"
)

// Image kinds, in the order they are written.
const (
	KindBoot = "boot"
	KindHash = "hash"
	KindRoot = "root"
)

// PlannedImage is one image of a plan.
type PlannedImage struct {
	Kind   string `json:"kind"`
	Target string `json:"target"`
	// DownloadBytes is the signed length of the target.
	DownloadBytes int64 `json:"download_bytes"`
	// ImageBytes is the uncompressed size the manifest gives (0: not given).
	ImageBytes     int64  `json:"image_bytes,omitempty"`
	Partition      int    `json:"partition,omitempty"`
	PartitionName  string `json:"partition_name,omitempty"`
	PartitionBytes int64  `json:"partition_bytes,omitempty"`
	tf             *metadata.TargetFiles
}

// partition is an inactive partition opened for writing: a window of an
// image file, or the partition's own device node opened exclusively.
type partition struct {
	number int
	name   string
	dev    blockdev.Device
	close  func() error
	// node is the partition's device node (block devices only).
	node string
}

// openPartition opens partition n of the inactive set for writing. It
// refuses, whatever the caller asks, a partition of the active set or one
// whose range overlaps the active set's.
func (s *session) openPartition(n int) (*partition, error) {
	in := s.l.Sets[s.inactive()]
	if n != in.Boot && n != in.Root && n != in.Hash {
		return nil, fmt.Errorf("updater: refusing to write partition %d: it is not in the inactive set %s", n, s.inactive())
	}
	p := s.t.Partition(n)
	if p == nil {
		return nil, fmt.Errorf("updater: partition %d does not exist", n)
	}
	act := s.l.Sets[s.active]
	for _, an := range []int{act.Boot, act.Root, act.Hash} {
		ap := s.t.Partition(an)
		if an == n || (ap != nil && p.FirstLBA <= ap.LastLBA && ap.FirstLBA <= p.LastLBA) {
			return nil, fmt.Errorf("updater: refusing to write partition %d: it overlaps the active set's partition %d", n, an)
		}
	}
	ss := int64(s.t.SectorSize)
	off, size := int64(p.FirstLBA)*ss, int64(p.Sectors())*ss
	if !s.disk.IsBlockDevice() {
		return &partition{number: n, name: p.Name(), dev: blockdev.Window(s.disk.Device(), off, size), close: func() error { return nil }}, nil
	}
	sysRoot := s.u.o.Host.SysRoot
	if sysRoot == "" {
		sysRoot = "/"
	}
	node, err := blockdev.PartitionNode(sysRoot, s.disk.Path, n)
	if err != nil {
		return nil, fmt.Errorf("finding the device node of partition %d: %w", n, err)
	}
	f, err := blockdev.Open(node, blockdev.Options{Exclusive: true})
	if err != nil {
		return nil, fmt.Errorf("opening inactive partition %s exclusively: %w", node, err)
	}
	if f.Size() != size {
		f.Close()
		return nil, fmt.Errorf("updater: the kernel sees %s as %d bytes but the partition table says %d: the kernel's view is stale (reboot, or partx -u)", node, f.Size(), size)
	}
	return &partition{number: n, name: p.Name(), dev: f, close: f.Close, node: node}, nil
}

// written is what writing one image produced.
type written struct {
	n      int64
	sha256 []byte
	codec  Codec
	// resumes counts download resumptions.
	resumes int
}

// writeImage streams one target into a partition: network → length and
// sha256 check → decompressor → partition (never past its end), with the
// sha256 of the decompressed bytes computed and, for the root, each block
// checked against the dm-verity tree on the way.
func (s *session) writeImage(ctx context.Context, c *tufclient.Client, img PlannedImage, dst blockdev.Device, check io.Writer) (written, error) {
	var w written
	prog := s.u.o.Progress
	stream, err := c.OpenTarget(ctx, img.tf)
	if err != nil {
		return w, translate(err)
	}
	defer stream.Close()
	prog.Start(img.Kind, "download", img.DownloadBytes)
	counted := &countingReader{r: stream, add: func(n int64) { prog.Add(img.Kind, n) }}
	dec, err := newDecoder(counted, s.u.o.Concurrency)
	if err != nil {
		prog.Done(img.Kind, err)
		return w, s.streamError(stream, img, err)
	}
	w.codec = dec.codec
	h := sha256.New()
	sinks := []io.Writer{h}
	if check != nil {
		sinks = append(sinks, check)
	}
	w.n, err = copyImage(ctx, dec, dst, dst.Size(), sinks, nil, func() { stream.Close() })
	dec.close()
	w.resumes = stream.Resumes()
	if err != nil {
		prog.Done(img.Kind, err)
		var se *sinkError
		switch {
		case ctx.Err() != nil || errIs(err, ErrImageTooLarge):
			return w, fmt.Errorf("%s image %s: %w", img.Kind, img.Target, err)
		case errors.As(err, &se):
			// Bytes that fail the tree may simply not be the signed
			// bytes: the hash verdict, when it fails, is the better cause.
			if _, verr := stream.Finish(); verr != nil {
				return w, fmt.Errorf("%s image %s: %w", img.Kind, img.Target, translate(verr))
			}
			return w, verityError(fmt.Sprintf("%s image %s", img.Kind, img.Target), se.err)
		}
		return w, s.streamError(stream, img, err)
	}
	left := dec.leftover()
	drained, err := stream.Finish()
	prog.Done(img.Kind, err)
	if err != nil {
		return w, fmt.Errorf("%s image %s: %w", img.Kind, img.Target, translate(err))
	}
	if dec.codec != CodecRaw && (left > 0 || drained > 0) {
		return w, fmt.Errorf("%w: %s image %s has %d bytes after its end", ErrTrailingData, img.Kind, img.Target, int64(left)+drained)
	}
	if img.ImageBytes > 0 && w.n != img.ImageBytes {
		return w, fmt.Errorf("%w: %s image %s decompressed to %d bytes, the manifest says %d", ErrCorrupt, img.Kind, img.Target, w.n, img.ImageBytes)
	}
	w.sha256 = h.Sum(nil)
	return w, nil
}

// streamError explains a failed decode: when the bytes received do not
// match their signed hash, that is the cause (a tampered or truncated
// download); otherwise the signed image itself is not a valid stream.
func (s *session) streamError(stream *tufclient.Stream, img PlannedImage, err error) error {
	if errIs(err, fetch.ErrTooLong, fetch.ErrTooShort, fetch.ErrHash, fetch.ErrStalled) {
		return fmt.Errorf("%s image %s: %w", img.Kind, img.Target, translate(err))
	}
	if _, verr := stream.Finish(); verr != nil {
		return fmt.Errorf("%s image %s: %w (decoding failed: %v)", img.Kind, img.Target, translate(verr), err)
	}
	return fmt.Errorf("%w: %s image %s is signed but its %s stream is corrupt: %w", ErrCorrupt, img.Kind, img.Target, "compressed", err)
}

type countingReader struct {
	r   io.Reader
	add func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.add(int64(n))
	}
	return n, err
}

// verityParams reads the hash image's superblock and checks it against the
// manifest's verity fields, when it has them.
func verityParams(hash io.ReaderAt, mv *manifest.Verity) (verity.Params, error) {
	sb, err := verity.ReadSuperblock(hash, 0)
	if err != nil {
		if mv == nil || mv.Salt == "" && mv.DataBlocks == 0 {
			return verity.Params{}, fmt.Errorf("%w: the hash image has no dm-verity superblock and the manifest gives no verity parameters: %w", ErrCorrupt, err)
		}
		p := verity.DefaultParams()
		p.NoSuperblock = true
		if mv.Hash != "" {
			p.Hash = mv.Hash
		}
		if mv.DataBlockSize != 0 {
			p.DataBlockSize = mv.DataBlockSize
		}
		if mv.HashBlockSize != 0 {
			p.HashBlockSize = mv.HashBlockSize
		}
		p.DataBlocks = mv.DataBlocks
		if p.Salt, err = hex.DecodeString(mv.Salt); err != nil {
			return p, fmt.Errorf("%w: manifest verity salt: %w", ErrUntrusted, err)
		}
		return p, p.Validate()
	}
	p := sb.Params(0)
	if mv != nil {
		bad := func(what string, got, want any) error {
			return fmt.Errorf("%w: the hash image's %s is %v, the manifest says %v", ErrCorrupt, what, got, want)
		}
		switch {
		case mv.Salt != "" && mv.Salt != hex.EncodeToString(p.Salt):
			return p, bad("salt", hex.EncodeToString(p.Salt), mv.Salt)
		case mv.Hash != "" && mv.Hash != p.Hash:
			return p, bad("hash algorithm", p.Hash, mv.Hash)
		case mv.DataBlockSize != 0 && mv.DataBlockSize != p.DataBlockSize:
			return p, bad("data block size", p.DataBlockSize, mv.DataBlockSize)
		case mv.HashBlockSize != 0 && mv.HashBlockSize != p.HashBlockSize:
			return p, bad("hash block size", p.HashBlockSize, mv.HashBlockSize)
		case mv.DataBlocks != 0 && mv.DataBlocks != p.DataBlocks:
			return p, bad("data block count", p.DataBlocks, mv.DataBlocks)
		}
	}
	return p, nil
}

// readBackSHA256 reads the first n bytes of a partition and compares their
// sha256.
func (s *session) readBackSHA256(ctx context.Context, kind string, dev io.ReaderAt, n int64, want []byte) error {
	prog := s.u.o.Progress
	prog.Start(kind, "verify", n)
	h := sha256.New()
	r := &countingReader{r: io.NewSectionReader(dev, 0, n), add: func(k int64) { prog.Add(kind, k) }}
	_, err := io.CopyBuffer(h, ctxReader{ctx, r}, make([]byte, pipeChunk))
	if err == nil && subtle.ConstantTimeCompare(h.Sum(nil), want) != 1 {
		err = fmt.Errorf("%w: reading back the %s image gives sha256 %x, %x was written", ErrCorrupt, kind, h.Sum(nil), want)
	}
	prog.Done(kind, err)
	return err
}

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

// readerAtCounter counts bytes read through ReadAt for progress.
type readerAtCounter struct {
	ctx context.Context
	r   io.ReaderAt
	add func(int64)
}

func (c readerAtCounter) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.ReadAt(p, off)
	c.add(int64(n))
	return n, err
}

// install writes and verifies the planned images into the inactive set.
// It returns the record of what the set now holds. The boot bits of the
// inactive set are cleared first, so from the first byte written until
// the switch the set cannot boot.
func (s *session) install(ctx context.Context, c *tufclient.Client, plan *Plan) (*SetRecord, error) {
	in := s.inactive()
	// Clear the inactive set's bits: from now on it cannot boot until the
	// switch.
	if err := s.edit(ctx, func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		return gptprio.ClearInactive(t, s.active)
	}); err != nil {
		return nil, fmt.Errorf("clearing the inactive set: %w", err)
	}
	parts := map[string]*partition{}
	defer func() {
		for _, p := range parts {
			p.close()
		}
	}()
	sets := s.l.Sets[in]
	nums := map[string]int{KindBoot: sets.Boot, KindRoot: sets.Root, KindHash: sets.Hash}
	for _, img := range plan.Images {
		p, err := s.openPartition(nums[img.Kind])
		if err != nil {
			return nil, err
		}
		parts[img.Kind] = p
	}
	var mv *manifest.Verity
	if plan.update != nil {
		mv = plan.update.Images.Verity
	}
	var want []byte // the manifest's root hash, when it gives one
	if mv != nil && mv.RootHash != "" {
		var err error
		if want, err = hex.DecodeString(mv.RootHash); err != nil {
			return nil, fmt.Errorf("%w: manifest root hash: %w", ErrUntrusted, err)
		}
	}
	got := map[string]written{}
	resumes := 0
	var params verity.Params
	var rootHash []byte
	for _, img := range plan.Images {
		// The hash image is written before the root: its superblock gives
		// the root's verity parameters, and the root's blocks are checked
		// against its tree (and the tree against the root hash) as they
		// are written, in bounded memory.
		var check *verity.Checker
		if img.Kind == KindRoot {
			var err error
			if params, err = verityParams(parts[KindHash].dev, mv); err != nil {
				return nil, err
			}
			if check, err = verity.NewChecker(ctx, parts[KindHash].dev, params, want); err != nil {
				return nil, verityError("the hash image", err)
			}
		}
		var sink io.Writer
		if check != nil {
			sink = check
		}
		w, err := s.writeImage(ctx, c, img, parts[img.Kind].dev, sink)
		resumes += w.resumes
		if check != nil {
			cerr := check.Close()
			if err == nil && cerr != nil {
				err = verityError("the root image", cerr)
			}
			rootHash = check.RootHash()
		}
		if err != nil {
			return nil, err
		}
		got[img.Kind] = w
		if err := parts[img.Kind].dev.Sync(); err != nil {
			return nil, fmt.Errorf("syncing the %s partition: %w", img.Kind, err)
		}
	}
	root := got[KindRoot]
	// Read everything back from the disk and verify it again.
	back := map[string]io.ReaderAt{}
	for kind, p := range parts {
		r, closeBack, err := readBack(p)
		if err != nil {
			return nil, err
		}
		defer closeBack()
		back[kind] = r
	}
	for _, kind := range []string{KindBoot, KindHash} {
		if err := s.readBackSHA256(ctx, kind, back[kind], got[kind].n, got[kind].sha256); err != nil {
			return nil, err
		}
	}
	prog := s.u.o.Progress
	prog.Start(KindRoot, "verify", root.n)
	rb := readerAtCounter{ctx: ctx, r: back[KindRoot], add: func(n int64) { prog.Add(KindRoot, n) }}
	err := verity.VerifyStream(ctx, rb, root.n, back[KindHash], params, rootHash)
	prog.Done(KindRoot, err)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: reading back the root and hash partitions: %w", ErrCorrupt, err)
	}
	rec := &SetRecord{Release: plan.release(), WrittenAt: s.u.now().UTC(), Verified: true,
		Images: map[string]string{}, RootHash: hex.EncodeToString(rootHash)}
	for _, img := range plan.Images {
		rec.Images[img.Kind] = img.Target
	}
	s.lastResumes = resumes
	return rec, nil
}

// readBack returns a reader of what the disk holds for a partition: on a
// block device its node opened with O_DIRECT, so the bytes come from the
// device and not the page cache; on an image file (synced) the file.
func readBack(p *partition) (io.ReaderAt, func() error, error) {
	if p.node == "" {
		return p.dev, func() error { return nil }, nil
	}
	f, err := blockdev.Open(p.node, blockdev.Options{Direct: true})
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s to read it back: %w", p.node, err)
	}
	return f, f.Close, nil
}

// verityError classifies a dm-verity failure: a context error stays one,
// anything else means what was written does not verify.
func verityError(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %s: %w", ErrCorrupt, what, err)
}
