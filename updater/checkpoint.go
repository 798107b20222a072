package updater

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/safefile"
)

// Checkpoints make an interrupted install (a killed process, a lost link,
// a power cut) go on where it stopped, re-downloading at most
// Options.CheckpointEvery (2 MiB) of compressed input plus the read-ahead
// (6 MiB, and the frame being read): 8 MiB plus one frame. Writes start
// their write-back at once (sync_file_range), so the sync before each
// checkpoint finds little left to write and a tight bound costs little.
//
// While an image is written, the partition is synced in the background
// (pipeline.go: every CheckpointEvery of compressed input or 32 MiB of
// output), and after each sync a checkpoint is written (atomically) at
// the last restart point of its stream (zstd frame boundaries; anywhere in
// a raw image) whose bytes were written before the sync started: it never
// claims bytes a power cut could lose.
// It records, for each image: the signed target (name, length, sha256),
// the codec, the compressed offset and the output offset of the restart
// point, the state of the sha256 of the compressed bytes before it (so the
// signed hash is still checked over the whole object) and of the sha256 of
// the output before it (the read-back check), inside an LZ4 frame the
// frame's header and content checksum state, or, once the image is
// complete, the output's sha256. The root's dm-verity check is rebuilt by
// reading back what was already written. Restart points are zstd frame
// boundaries, LZ4 block boundaries in frames of independent blocks (as
// `lz4` writes by default, and Bottlerocket ships) and LZ4 frame ends, xz
// block boundaries when the block headers give their sizes (`xz -T`),
// anywhere in a raw image. gzip streams, LZ4 frames of linked blocks and
// xz streams of one block without sizes (single-threaded `xz`) have none:
// they start from zero after a process restart (and resume within one
// process through HTTP Range requests), and status says so.
//
// A checkpoint is used only for the same release, the same signed
// targets, the same inactive partitions (numbers, extents, GUIDs), an
// inactive set that still cannot boot, offsets inside the partitions, and
// a checksum that matches its content; otherwise it is discarded, with the
// reason, and the install starts over.

// DefaultCheckpointEvery is the most compressed input between two
// checkpoints (Options.CheckpointEvery).
const DefaultCheckpointEvery = 2 << 20

// MaxCheckpointEvery is the most checkpoint_every may say: an interrupted
// install reads again at most 8 MiB, plus the read-ahead and a frame.
const MaxCheckpointEvery = 8 << 20

const checkpointFile = "checkpoint.json"

type partRef struct {
	Number   int    `json:"number"`
	FirstLBA uint64 `json:"first_lba"`
	LastLBA  uint64 `json:"last_lba"`
	GUID     string `json:"guid"`
}

type imageProgress struct {
	Target string `json:"target"`
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
	Codec  Codec  `json:"codec,omitempty"`
	// In and Out are the restart point: compressed bytes consumed, output
	// bytes written and synced.
	In  int64 `json:"in"`
	Out int64 `json:"out"`
	// InState is the compressed bytes' hash states at In; OutState the
	// output's sha256 state at Out.
	InState  map[string][]byte `json:"in_state,omitempty"`
	OutState []byte            `json:"out_state,omitempty"`
	// CodecState is what the decoder needs to go on from the restart
	// point besides the offsets (inside an LZ4 frame: its header and
	// content checksum state; inside an xz stream: its check type and a
	// summary of the blocks so far, for the index check).
	CodecState []byte `json:"codec_state,omitempty"`
	// NoRestarts: the stream has no restart points (gzip, LZ4 of linked
	// blocks, xz of one block without sizes): it starts from zero after a
	// process restart.
	NoRestarts bool `json:"no_restarts,omitempty"`
	Done       bool `json:"done"`
	// OutSHA256 is the output's sha256 once Done.
	OutSHA256 string `json:"out_sha256,omitempty"`
}

type checkpoint struct {
	Format     int                       `json:"format"`
	Release    Release                   `json:"release"`
	Set        string                    `json:"set"`
	Partitions map[string]partRef        `json:"partitions"`
	Images     map[string]*imageProgress `json:"images"`
	// Resumes counts the times this install went on from the checkpoint.
	Resumes int `json:"resumes"`
	// Sum is the sha256 of the checkpoint with Sum empty.
	Sum string `json:"sum"`
}

func (c *checkpoint) sum() string {
	cp := *c
	cp.Sum = ""
	b, _ := json.Marshal(&cp)
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (s *store) loadCheckpoint() (*checkpoint, error) {
	b, err := safefile.ReadFile(s.path(checkpointFile), maxStateBytes)
	if err != nil {
		return nil, err
	}
	c := &checkpoint{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("unreadable: %w", err)
	}
	if c.Sum != c.sum() {
		return nil, errors.New("its checksum does not match its content (damaged or edited)")
	}
	return c, nil
}

func (s *store) saveCheckpoint(c *checkpoint) error {
	if s.frozen.Load() {
		return errFrozen
	}
	c.Format = 1
	c.Sum = c.sum()
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.path(checkpointFile), b, 0o600); err != nil {
		return fmt.Errorf("saving the install checkpoint: %w", err)
	}
	return nil
}

func (s *store) dropCheckpoint() error {
	if s.frozen.Load() {
		return errFrozen
	}
	err := os.Remove(s.path(checkpointFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// partRefs describes the inactive set's partitions as the table has them.
func (s *session) partRefs() map[string]partRef {
	sp := s.l.Sets[s.inactive()]
	out := map[string]partRef{}
	for kind, n := range map[string]int{KindBoot: sp.Boot, KindRoot: sp.Root, KindHash: sp.Hash} {
		if p := s.t.Partition(n); p != nil {
			out[kind] = partRef{Number: n, FirstLBA: p.FirstLBA, LastLBA: p.LastLBA, GUID: p.ID.String()}
		}
	}
	return out
}

// usable says why a checkpoint cannot be used for this install ("" when
// it can).
func (s *session) usable(c *checkpoint, plan *Plan) string {
	if c.Format != 1 {
		return fmt.Sprintf("unknown format %d", c.Format)
	}
	if c.Release != plan.release() {
		return fmt.Sprintf("it is for %s, not %s", c.Release, plan.release())
	}
	if c.Set != s.inactive().String() {
		return fmt.Sprintf("it is for set %s, the inactive set is %s", c.Set, s.inactive())
	}
	refs := s.partRefs()
	for kind, r := range refs {
		if c.Partitions[kind] != r {
			return fmt.Sprintf("the %s partition is not the one it was made for", kind)
		}
	}
	if a := gptprio.Attrs(s.t, s.l, s.inactive()); a.WillBoot() || a.Priority() != 0 || a.Tries() != 0 {
		return fmt.Sprintf("the inactive set's boot bits changed since (%v)", a)
	}
	ss := int64(s.t.SectorSize)
	for _, img := range plan.Images {
		ip := c.Images[img.Kind]
		if ip == nil {
			return fmt.Sprintf("it has no %s image", img.Kind)
		}
		if ip.Target != img.Target || ip.Length != img.tf.Length || ip.SHA256 != hex.EncodeToString(img.tf.Hashes["sha256"]) {
			return fmt.Sprintf("the signed %s target changed", img.Kind)
		}
		r := refs[img.Kind]
		size := int64(r.LastLBA-r.FirstLBA+1) * ss
		if ip.Out < 0 || ip.Out > size || ip.In < 0 || ip.In > ip.Length {
			return fmt.Sprintf("its %s offsets (%d in, %d out) are outside the image or the partition", img.Kind, ip.In, ip.Out)
		}
		if ip.Done {
			// A done image is read back against what the checkpoint
			// says, so what it says must agree with what was signed.
			switch {
			case img.Kind != KindRoot && len(ip.OutSHA256) != 64:
				return fmt.Sprintf("its %s image is done without a hash", img.Kind)
			case ip.Out <= 0:
				return fmt.Sprintf("its %s image is done with nothing written", img.Kind)
			case img.ImageBytes > 0 && ip.Out != img.ImageBytes:
				return fmt.Sprintf("its %s image is done with %d bytes written, the manifest says %d", img.Kind, ip.Out, img.ImageBytes)
			case ip.In != ip.Length:
				return fmt.Sprintf("its %s image is done with %d of %d compressed bytes read", img.Kind, ip.In, ip.Length)
			}
			continue
		}
		if ip.In == 0 {
			continue
		}
		if ip.Codec != CodecZstd && ip.Codec != CodecRaw && ip.Codec != CodecLZ4 && ip.Codec != CodecXZ || len(ip.InState) == 0 ||
			(img.Kind != KindRoot && len(ip.OutState) == 0) {
			return fmt.Sprintf("its %s restart point is incomplete", img.Kind)
		}
		if len(ip.CodecState) > 0 {
			var err error
			switch ip.Codec {
			case CodecLZ4:
				_, err = unmarshalLZ4Frame(ip.CodecState)
			case CodecXZ:
				_, err = unmarshalXZStream(ip.CodecState)
			default:
				return fmt.Sprintf("its %s restart point has a decoder state a %s stream does not have", img.Kind, ip.Codec)
			}
			if err != nil {
				return fmt.Sprintf("its %s restart point: %v", img.Kind, err)
			}
		}
		if ip.Codec == CodecRaw && ip.In != ip.Out {
			return fmt.Sprintf("its raw %s image has %d bytes read but %d written", img.Kind, ip.In, ip.Out)
		}
		// Hash states that cannot be restored would fail every later
		// attempt the same way: they make the checkpoint unusable.
		hashes := map[string][]byte{}
		for alg, sum := range img.tf.Hashes {
			hashes[alg] = sum
		}
		if _, err := fetch.NewVerifierAt(bytes.NewReader(nil), img.tf.Length, hashes, ip.In, ip.InState); err != nil {
			return fmt.Sprintf("its %s restart point: %v", img.Kind, err)
		}
		if img.Kind != KindRoot {
			if err := sha256.New().(encoding.BinaryUnmarshaler).UnmarshalBinary(ip.OutState); err != nil {
				return fmt.Sprintf("its %s restart point's output hash: %v", img.Kind, err)
			}
		}
	}
	return ""
}

// bytesDone is the compressed bytes the checkpoint covers.
func (c *checkpoint) bytesDone() int64 {
	var n int64
	for _, ip := range c.Images {
		n += ip.In
	}
	return n
}

// bytesTotal is the compressed bytes of all its images.
func (c *checkpoint) bytesTotal() int64 {
	var n int64
	for _, ip := range c.Images {
		n += ip.Length
	}
	return n
}
