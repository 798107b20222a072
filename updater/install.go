package updater

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

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
	// file is the image file and off the partition's offset in it (image
	// files only).
	file *blockdev.File
	off  int64
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
		part := &partition{number: n, name: p.Name(), off: off, dev: blockdev.Window(s.disk.Device(), off, size), close: func() error { return nil }}
		// With direct_io, the image's partitions are written around the
		// page cache (blockdev.Options.DirectWrite) through a descriptor
		// of their own, and read back the same way.
		if f, ok := s.disk.Device().(*blockdev.File); ok && s.u.o.Config.DirectIO {
			part.file = f
			if g, err := f.Reopen(blockdev.Options{DirectWrite: true}); err == nil {
				part.dev, part.close = blockdev.Window(g, off, size), g.Close
			}
		}
		return part, nil
	}
	sysRoot := s.u.o.Host.SysRoot
	if sysRoot == "" {
		sysRoot = "/"
	}
	node, err := blockdev.PartitionNode(sysRoot, s.disk.Path, n)
	if err != nil {
		return nil, fmt.Errorf("finding the device node of partition %d: %w", n, err)
	}
	f, err := blockdev.Open(node, blockdev.Options{Exclusive: true, DirectWrite: s.u.o.Config.DirectIO})
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

// stream is one target being read from a position: the bytes from the
// network (resumable) through the length and hash check.
type stream struct {
	*fetch.Verifier
	body io.ReadCloser
}

func (st *stream) Close() error { return st.body.Close() }

func (st *stream) Resumes() int {
	if r, ok := st.body.(fetch.Stats); ok {
		return r.Resumes()
	}
	return 0
}

// openStream opens a target at compressed offset in, going on from the
// hash states saved there (nil at 0).
func (s *session) openStream(ctx context.Context, c *tufclient.Client, img PlannedImage, in int64, states map[string][]byte) (*stream, error) {
	hashes := map[string][]byte{}
	for alg, sum := range img.tf.Hashes {
		hashes[alg] = sum
	}
	body, err := s.u.fetcher.OpenResumableAt(ctx, c.URL(img.tf), in, img.tf.Length)
	if err != nil {
		return nil, translate(fmt.Errorf("%s image %s: %w", img.Kind, img.Target, err))
	}
	var v *fetch.Verifier
	if in == 0 {
		v, err = fetch.NewVerifier(body, img.tf.Length, hashes)
	} else {
		v, err = fetch.NewVerifierAt(body, img.tf.Length, hashes, in, states)
	}
	if err != nil {
		body.Close()
		return nil, fmt.Errorf("%s image %s: %w", img.Kind, img.Target, err)
	}
	return &stream{Verifier: v, body: body}, nil
}

// writeImage streams one target into a partition: network → length and
// sha256 check → decompressor → partition (never past its end), with the
// sha256 of the decompressed bytes computed and, for the root, each block
// checked against the dm-verity tree on the way. It starts at the restart
// point ip records (0 for a new image) and records new ones in ip, calling
// save after each.
func (s *session) writeImage(ctx context.Context, c *tufclient.Client, img PlannedImage, dst blockdev.Device, check io.Writer,
	sums *writtenSums, behind *readBehind, ip *imageProgress, save func() error) (written, error) {
	var w written
	prog := s.u.o.Progress
	// The output's sha256 is what the boot and hash images are read back
	// against; the root is checked block by block against its dm-verity
	// tree instead as it is written (and read back against the CRC-32Cs
	// recorded then, or the tree again when this run did not write all of
	// it), so hashing it a second time would only cost a core.
	var outHash hash.Hash = nopHash{}
	if check == nil {
		outHash = sha256.New()
	}
	if ip.Out > 0 && check == nil {
		if err := outHash.(encoding.BinaryUnmarshaler).UnmarshalBinary(ip.OutState); err != nil {
			return w, fmt.Errorf("%s image: the checkpoint's output hash: %w", img.Kind, err)
		}
	}
	st, err := s.openStream(ctx, c, img, ip.In, ip.InState)
	if err != nil {
		return w, err
	}
	defer st.Close()
	prog.Start(img.Kind, "download", img.DownloadBytes)
	prog.Add(img.Kind, ip.In)
	counted := &countingReader{r: st, add: func(n int64) { prog.Add(img.Kind, n) }}
	codec := Codec("")
	if ip.In > 0 {
		codec = ip.Codec
	}
	snap := func() (int64, map[string][]byte, error) { return st.State() }
	var state []byte
	if ip.In > 0 {
		state = ip.CodecState
	}
	dec, err := openSourceAt(ctx, counted, codec, ip.In, ip.Out, state, s.u.o.Concurrency, snap, check != nil)
	if err != nil {
		prog.Done(img.Kind, err)
		return w, s.streamError(st, img, err)
	}
	w.codec = dec.codec
	if ip.Codec != dec.codec || ip.NoRestarts != !dec.restartable {
		ip.Codec, ip.NoRestarts = dec.codec, !dec.restartable
		if err := save(); err != nil { // status can say whether it restarts from zero
			dec.src.close()
			return w, err
		}
	}
	sinks := []io.Writer{}
	if check == nil {
		sinks = append(sinks, outHash)
	}
	if check != nil {
		sinks = append(sinks, check)
	}
	if sums != nil {
		sinks = append(sinks, sums)
	}
	// The partition is synced as it is written, in the background, and a
	// checkpoint saved after each sync: it never claims bytes a power cut
	// could lose.
	ck := &checkpoints{every: s.u.o.CheckpointEvery, from: ip.In,
		sync: func() error {
			if err := dst.Sync(); err != nil {
				return fmt.Errorf("syncing the %s partition: %w", img.Kind, err)
			}
			return nil
		},
		save: func(rp restartPoint, state []byte) error {
			ip.In, ip.Out, ip.InState, ip.OutState, ip.CodecState = rp.In, rp.Out, rp.state, state, rp.codec
			return save()
		}}
	if check == nil {
		ck.capture = outHash.(encoding.BinaryMarshaler).MarshalBinary
	}
	if behind != nil {
		ck.synced = behind.synced
	}
	if s.u.o.CheckpointEvery < 0 {
		ck = nil // no checkpoints, no syncs before the end (measurements)
	}
	w.n, err = copyImage(ctx, dec.src, dst, ip.Out, dst.Size(), sinks, nil, func() { st.Close() }, ck)
	w.resumes = st.Resumes()
	if err != nil {
		prog.Done(img.Kind, err)
		var se *sinkError
		switch {
		case ctx.Err() != nil || errIs(err, ErrImageTooLarge):
			return w, fmt.Errorf("%s image %s: %w", img.Kind, img.Target, err)
		case errors.As(err, &se):
			// Bytes that fail the tree may simply not be the signed
			// bytes: the hash verdict, when it fails, is the better cause.
			if _, verr := st.Finish(); verr != nil {
				return w, fmt.Errorf("%s image %s: %w", img.Kind, img.Target, translate(verr))
			}
			return w, releaseFault(verityError(fmt.Sprintf("%s image %s", img.Kind, img.Target), se.err))
		}
		return w, s.streamError(st, img, err)
	}
	left := dec.leftover()
	drained, err := st.Finish()
	prog.Done(img.Kind, err)
	if err != nil {
		return w, fmt.Errorf("%s image %s: %w", img.Kind, img.Target, translate(err))
	}
	if dec.codec != CodecRaw && (left > 0 || drained > 0) {
		return w, releaseFault(fmt.Errorf("%w: %s image %s has %d bytes after its end", ErrTrailingData, img.Kind, img.Target, int64(left)+drained))
	}
	if w.n == 0 {
		// Nothing written would leave whatever the partition held (an
		// older kernel) to be recorded as this release.
		return w, releaseFault(fmt.Errorf("%w: %s image %s decompressed to nothing", ErrCorrupt, img.Kind, img.Target))
	}
	if img.ImageBytes > 0 && w.n != img.ImageBytes {
		return w, releaseFault(fmt.Errorf("%w: %s image %s decompressed to %d bytes, the manifest says %d", ErrCorrupt, img.Kind, img.Target, w.n, img.ImageBytes))
	}
	w.sha256 = outHash.Sum(nil)
	return w, nil
}

// streamError explains a failed decode: when the bytes received do not
// match their signed hash, that is the cause (a tampered or truncated
// download); otherwise the signed image itself is not a valid stream.
func (s *session) streamError(stream *stream, img PlannedImage, err error) error {
	if errIs(err, fetch.ErrTooLong, fetch.ErrTooShort, fetch.ErrHash, fetch.ErrStalled) {
		return fmt.Errorf("%s image %s: %w", img.Kind, img.Target, translate(err))
	}
	if _, verr := stream.Finish(); verr != nil {
		return fmt.Errorf("%s image %s: %w (decoding failed: %v)", img.Kind, img.Target, translate(verr), err)
	}
	return releaseFault(fmt.Errorf("%w: %s image %s is signed but its %s stream is corrupt: %w", ErrCorrupt, img.Kind, img.Target, "compressed", err))
}

// nopHash stands in for the output hash of the root image.
type nopHash struct{}

func (nopHash) Write(p []byte) (int, error) { return len(p), nil }
func (nopHash) Sum(b []byte) []byte         { return b }
func (nopHash) Reset()                      {}
func (nopHash) Size() int                   { return 0 }
func (nopHash) BlockSize() int              { return 64 }

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
	// Open (exclusively, on a block device) every partition before the
	// first table write: a partition the running system holds (a wrong
	// --active where /sys cannot tell) is refused with the disk as it was.
	parts, err := s.openParts(plan)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, p := range parts {
			p.close()
		}
	}()
	cp := s.resumable(plan)
	if cp == nil {
		// Clear the inactive set's bits: from now on it cannot boot until
		// the switch.
		if err := s.edit(ctx, func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
			return gptprio.ClearInactive(t, s.active)
		}); err != nil {
			return nil, fmt.Errorf("clearing the inactive set: %w", err)
		}
		cp = &checkpoint{Release: plan.release(), Set: in.String(), Partitions: s.partRefs(), Images: map[string]*imageProgress{}}
		for _, img := range plan.Images {
			cp.Images[img.Kind] = &imageProgress{Target: img.Target, Length: img.tf.Length, SHA256: hex.EncodeToString(img.tf.Hashes["sha256"])}
		}
	} else {
		cp.Resumes++
		s.resumedAt = cp.bytesDone()
		s.u.log.Info("resuming an interrupted install from its checkpoint", "release", cp.Release.String(), "resumes", cp.Resumes, "bytes", s.resumedAt)
	}
	save := func() error { return s.u.store.saveCheckpoint(cp) }
	if err := save(); err != nil {
		return nil, err
	}
	rec, err := s.installFrom(ctx, c, plan, cp, save, parts)
	if err != nil {
		if !resumableError(ctx, err) {
			// The content is bad: the next attempt starts over.
			s.u.store.dropCheckpoint()
		}
		return nil, err
	}
	// The checkpoint stays until the caller has recorded the set as
	// written (Update drops it then): a kill in between must not leave a
	// state that says "writing" with no checkpoint, which would start the
	// install over.
	s.lastResumes += cp.Resumes
	return rec, nil
}

// resumableError says whether an install that failed with err may go on
// from its checkpoint (an interruption) or must start over (bad content).
func resumableError(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return true
	}
	return !errIs(err, ErrUntrusted, ErrCorrupt, ErrTrailingData, ErrImageTooLarge, ErrZstdFrame, ErrLZ4Frame, ErrXZStream, fetch.ErrHash,
		fetch.ErrTooLong, fetch.ErrTooShort, fetch.ErrChanged)
}

// resumable loads the checkpoint and returns it when it can be used for
// this plan; otherwise it discards it, saying why, and returns nil.
func (s *session) resumable(plan *Plan) *checkpoint {
	cp, err := s.u.store.loadCheckpoint()
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	reason := ""
	if err != nil {
		reason = err.Error()
	} else {
		reason = s.usable(cp, plan)
	}
	if reason == "" {
		return cp
	}
	s.discarded = "the install checkpoint was discarded: " + reason
	s.u.log.Warn(s.discarded)
	s.u.store.dropCheckpoint()
	return nil
}

// openParts opens the inactive partitions the plan writes. On error,
// those opened are closed.
func (s *session) openParts(plan *Plan) (map[string]*partition, error) {
	sets := s.l.Sets[s.inactive()]
	nums := map[string]int{KindBoot: sets.Boot, KindRoot: sets.Root, KindHash: sets.Hash}
	parts := map[string]*partition{}
	for _, img := range plan.Images {
		p, err := s.openPartition(nums[img.Kind])
		if err != nil {
			for _, q := range parts {
				q.close()
			}
			return nil, err
		}
		if s.u.o.WrapPartition != nil {
			p.dev = s.u.o.WrapPartition(img.Kind, p.dev)
		}
		parts[img.Kind] = p
	}
	return parts, nil
}

// installFrom writes (from the checkpoint's restart points) and verifies
// the images.
func (s *session) installFrom(ctx context.Context, c *tufclient.Client, plan *Plan, cp *checkpoint, save func() error,
	parts map[string]*partition) (*SetRecord, error) {
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
	var sums *writtenSums // the root's, when this run wrote all of it
	// What its read-behind read back and found right.
	var readBehindN int64
	// The partitions as read back from the disk (readBack), by kind.
	back := map[string]io.ReaderAt{}
	for _, img := range plan.Images {
		if done, err := s.deltaStep(ctx, c, plan, img, parts, cp, save, got, &params, &rootHash); err != nil {
			return nil, err
		} else if done {
			continue
		}
		ip := cp.Images[img.Kind]
		dev := parts[img.Kind].dev
		// The hash image is written before the root: its superblock gives
		// the root's verity parameters, and the root's blocks are checked
		// against its tree (and the tree against the root hash) as they
		// are written, in bounded memory.
		var check *verity.Checker
		if img.Kind == KindRoot {
			var err error
			if params, err = verityParams(parts[KindHash].dev, mv); err != nil {
				if errIs(err, ErrCorrupt, ErrUntrusted) {
					err = releaseFault(err)
				}
				return nil, err
			}
			if check, err = verity.NewChecker(ctx, parts[KindHash].dev, params, want); err != nil {
				return nil, releaseFault(verityError("the hash image", err))
			}
			if !ip.Done && ip.Out > 0 {
				// Going on from a checkpoint: the whole blocks written and
				// synced before it were checked then (and the whole
				// partition is verified again before the switch); a
				// partial block is read back into the check.
				dbs := int64(params.DataBlockSize)
				whole := min(uint64(ip.Out/dbs), params.DataBlocks)
				err := check.Skip(whole)
				if err == nil && ip.Out > int64(whole)*dbs {
					_, err = check.ReadFrom(io.NewSectionReader(dev, int64(whole)*dbs, ip.Out-int64(whole)*dbs))
				}
				if err != nil {
					check.Close()
					return nil, verityError("the root image written before the interruption", err)
				}
			}
		}
		if ip.Done {
			sum, err := hex.DecodeString(ip.OutSHA256)
			if err != nil {
				return nil, err
			}
			got[img.Kind] = written{n: ip.Out, sha256: sum}
			if check != nil {
				rootHash = check.RootHash()
				check.Close()
				if rootHash == nil {
					rootHash = want
				}
			}
			continue
		}
		var sink io.Writer
		if check != nil {
			sink = check
			if ip.Out == 0 {
				sums = newWrittenSums(dev.Size())
			}
		}
		// The root this run writes whole is read back as it is synced
		// (readBehind), while the rest downloads; a difference found
		// there stops the install at once.
		var behind *readBehind
		wctx := ctx
		if sums != nil && img.Kind == KindRoot {
			r, closeBack, err := readBack(parts[KindRoot])
			if err != nil {
				check.Close()
				return nil, err
			}
			defer closeBack()
			back[KindRoot] = r
			var stop context.CancelCauseFunc
			wctx, stop = context.WithCancelCause(ctx)
			defer stop(nil)
			behind = sums.readBehind(ctx, r, stop)
		}
		w, err := s.writeImage(wctx, c, img, dev, sink, sums, behind, ip, save)
		if behind != nil {
			var berr error
			if readBehindN, berr = behind.close(); berr != nil && ctx.Err() == nil {
				check.Close()
				s.u.o.Progress.Start(KindRoot, "verify", w.n)
				s.u.o.Progress.Done(KindRoot, berr)
				return nil, fmt.Errorf("%w: reading back the root partition as it was written: %w", ErrCorrupt, berr)
			}
		}
		resumes += w.resumes
		if check != nil {
			cerr := check.Close()
			if err == nil && cerr != nil {
				err = releaseFault(verityError("the root image", cerr))
			}
			rootHash = check.RootHash()
		}
		if err != nil {
			return nil, err
		}
		got[img.Kind] = w
		if err := dev.Sync(); err != nil {
			return nil, fmt.Errorf("syncing the %s partition: %w", img.Kind, err)
		}
		ip.Done, ip.In, ip.Out, ip.InState, ip.OutState, ip.CodecState = true, ip.Length, w.n, nil, nil, nil
		ip.OutSHA256 = hex.EncodeToString(w.sha256)
		if err := save(); err != nil {
			return nil, err
		}
	}
	root := got[KindRoot]
	// Read everything back from the disk and verify it again.
	for kind, p := range parts {
		if back[kind] != nil {
			continue // opened for the read-behind
		}
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
	// Read ahead of the check: the disk reads the next MiBs while the
	// last ones are hashed.
	add := func(n int64) { prog.Add(KindRoot, n) }
	var err error
	if sums != nil && sums.done(root.n) {
		// Checked against the tree as written: the disk must hold the
		// same bytes (the hash partition was read back above). The
		// read-behind did most of it already.
		from := readBehindN
		add(from)
		rb := blockdev.ReadAhead(ctx, readerAtCounter{ctx: ctx, r: back[KindRoot], add: add}, from, root.n-from)
		err = sums.verify(ctx, rb, from, root.n)
		rb.Close()
	} else {
		rb := blockdev.ReadAhead(ctx, readerAtCounter{ctx: ctx, r: back[KindRoot], add: add}, 0, root.n)
		err = verity.VerifyReader(ctx, rb, root.n, back[KindHash], params, rootHash)
		rb.Close()
	}
	prog.Done(KindRoot, err)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: reading back the root and hash partitions: %w", ErrCorrupt, err)
	}
	rec := &SetRecord{Release: plan.release(), WrittenAt: s.u.now().UTC(), Verified: true,
		Images: map[string]string{}, RootHash: hex.EncodeToString(rootHash),
		Partitions: s.partRefs(), Written: map[string]imageSum{}}
	for _, img := range plan.Images {
		rec.Images[img.Kind] = img.Target
		sum := imageSum{Bytes: got[img.Kind].n}
		if img.Kind != KindRoot {
			sum.SHA256 = hex.EncodeToString(got[img.Kind].sha256)
		}
		rec.Written[img.Kind] = sum
	}
	s.lastResumes = resumes
	s.verifiedNow = true
	return rec, nil
}

// recheck checks, before a switch that did not follow its install in this
// run, that the inactive set is still what was written and verified: the
// same partitions (number, extent, GUID), the boot and hash images'
// sha256 read back from the disk, and the hash tree against the recorded
// root hash. (The root's data is checked by dm-verity at every read.)
func (s *session) recheck(ctx context.Context, rec *SetRecord) error {
	if len(rec.Partitions) == 0 || rec.Written == nil || rec.RootHash == "" {
		return errors.New("the state has no record of what was verified there")
	}
	for kind, r := range s.partRefs() {
		if rec.Partitions[kind] != r {
			return fmt.Errorf("its %s partition changed since it was verified (%+v, now %+v)", kind, rec.Partitions[kind], r)
		}
	}
	sp := s.l.Sets[s.inactive()]
	open := func(kind string, n int) (*partition, io.ReaderAt, func() error, error) {
		p, err := s.openPartition(n)
		if err != nil {
			return nil, nil, nil, err
		}
		r, closeBack, err := readBack(p)
		if err != nil {
			p.close()
			return nil, nil, nil, err
		}
		return p, r, func() error { closeBack(); return p.close() }, nil
	}
	for _, kind := range []string{KindBoot, KindHash} {
		w, ok := rec.Written[kind]
		want, err := hex.DecodeString(w.SHA256)
		if !ok || err != nil || len(want) != sha256.Size || w.Bytes <= 0 {
			return fmt.Errorf("the state has no sha256 of the %s image written", kind)
		}
		n := map[string]int{KindBoot: sp.Boot, KindHash: sp.Hash}[kind]
		p, r, closeAll, err := open(kind, n)
		if err != nil {
			return err
		}
		if w.Bytes > p.dev.Size() {
			closeAll()
			return fmt.Errorf("the %s image written (%d bytes) is larger than its partition", kind, w.Bytes)
		}
		err = s.readBackSHA256(ctx, kind, r, w.Bytes, want)
		closeAll()
		if err != nil {
			return err
		}
	}
	root, err := hex.DecodeString(rec.RootHash)
	if err != nil {
		return fmt.Errorf("the recorded root hash: %w", err)
	}
	_, r, closeAll, err := open(KindHash, sp.Hash)
	if err != nil {
		return err
	}
	defer closeAll()
	params, err := verityParams(r, nil)
	if err != nil {
		return err
	}
	check, err := verity.NewChecker(ctx, r, params, root)
	if err != nil {
		return fmt.Errorf("the hash tree against the recorded root hash: %w", err)
	}
	if err := check.Skip(params.DataBlocks); err != nil {
		check.Close()
		return err
	}
	if err := check.Close(); err != nil {
		return fmt.Errorf("the hash tree against the recorded root hash: %w", err)
	}
	return nil
}

// readBack returns a reader of what the disk holds for a partition: on a
// block device its node opened with O_DIRECT, so the bytes come from the
// device and not the page cache; on an image file (synced) the file.
func readBack(p *partition) (io.ReaderAt, func() error, error) {
	if p.node == "" {
		// An image file written with direct_io: read with O_DIRECT too
		// (where its filesystem takes it), else through the page cache.
		if p.file != nil {
			if g, err := p.file.Reopen(blockdev.Options{Direct: true}); err == nil {
				return blockdev.Window(g, p.off, p.dev.Size()), g.Close, nil
			}
		}
		return p.dev, func() error { return nil }, nil
	}
	f, err := blockdev.Open(p.node, blockdev.Options{Direct: true})
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s to read it back: %w", p.node, err)
	}
	return f, f.Close, nil
}

// badRelease marks an install error that is the release's own fault: its
// signed bytes (their TUF hash checked) do not decode, do not verify
// against their dm-verity tree or root hash, or disagree with the signed
// manifest. Such a release is recorded as failed here and skipped, as one
// that failed to boot is. Errors reading back the host's own disk are not.
type badRelease struct{ err error }

func (e *badRelease) Error() string { return e.err.Error() }
func (e *badRelease) Unwrap() error { return e.err }

// releaseFault wraps err as the release's fault, unless it is the
// context's.
func releaseFault(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &badRelease{err}
}

// verityError classifies a dm-verity failure: a context error stays one,
// anything else means what was written does not verify.
func verityError(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %s: %w", ErrCorrupt, what, err)
}
