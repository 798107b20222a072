package delta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Seed is an image the host has, seen as the digests of its blocks (with
// the index's salt and block size), in order.
type Seed struct {
	// Digests yields IDSize bytes per block, Blocks of them.
	Digests io.Reader
	Blocks  int64
	// Target says the seed is the device the image is written to (the
	// inactive partition: its old contents, and frames an interrupted
	// attempt wrote). Frames are written in order, so a frame may be
	// copied from offset S of it only when S is at or after the frame's
	// own offset (nothing before the frame being written is still the
	// seed's); a frame found at its own offset is already in place.
	Target bool
}

// Kind says where a frame comes from.
type Kind uint8

// Kinds of Source.
const (
	// Missing frames are fetched.
	Missing Kind = iota
	// InPlace frames are already where they go (Target seed, own offset).
	InPlace
	// Copy frames are read from a seed.
	Copy
	// Assemble frames are made of single blocks of the seeds and the
	// blocks of their appendix entry (Index.Mixed): see Assembly.
	Assemble
)

func (k Kind) String() string {
	switch k {
	case InPlace:
		return "in place"
	case Copy:
		return "copy"
	case Assemble:
		return "assemble"
	}
	return "missing"
}

// Source is where a frame comes from: for Copy, seed Seed (its index in
// the seeds given) at byte Offset; for Assemble, the frame's Assembly
// (Seed and Offset unused).
type Source struct {
	Offset int64
	Seed   int32
	Kind   Kind
}

// Part is where one block of an assembled frame comes from: seed Seed at
// byte Offset, or, when Seed is FromAppendix, the frame's appendix blob.
type Part struct {
	Offset int64
	Seed   int32
}

// FromAppendix is the Part.Seed of a block of the appendix.
const FromAppendix = -1

// Assembly is how frame Frame, which no seed holds whole, is made: from
// the blocks of its appendix entry (Index.Mixed[Mixed]) and, for each of
// its other blocks, a place in a seed that holds a block with that
// block's digest. Parts has one entry per block of the frame.
type Assembly struct {
	Frame int
	Mixed int
	Parts []Part
}

// Run is a range of the seekable file fetched with one request: frames
// [First, End), at bytes [Off, Off+Len). Frames of it that are not
// Missing were merged in to save a request; they are fetched and
// skipped.
type Run struct {
	First, End int
	Off, Len   int64
}

// Options tune how missing frames become requests.
type Options struct {
	// MergeGap: runs separated by at most this many compressed bytes are
	// fetched as one (default DefaultMergeGap).
	MergeGap int64
	// RequestBytes, when positive, asks for at most one request per
	// RequestBytes fetched, plus one: the smallest gaps are merged until
	// that holds, or until the smallest left is over MaxGap.
	RequestBytes int64
	// MaxGap bounds the gaps RequestBytes merges (default
	// DefaultMaxGap).
	MaxGap int64
	// MaxExtra bounds what RequestBytes merging adds to the bytes
	// fetched, as a fraction of the bytes needed (default
	// DefaultMaxExtra): fewer requests never cost more than that.
	MaxExtra float64
}

// Defaults of Options.
const (
	DefaultMergeGap     = 128 << 10
	DefaultRequestBytes = 2 << 20
	DefaultMaxGap       = 1 << 20
	DefaultMaxExtra     = 0.25
)

// DefaultOptions are the options updog plans with.
func DefaultOptions() Options {
	return Options{MergeGap: DefaultMergeGap, RequestBytes: DefaultRequestBytes, MaxGap: DefaultMaxGap, MaxExtra: DefaultMaxExtra}
}

// Plan says, for each frame of an index, where it comes from, and which
// ranges of the seekable file to fetch.
type Plan struct {
	Sources []Source
	// Assemblies of the Assemble frames, by increasing frame.
	Assemblies []Assembly
	Runs       []Run
	// Counts of frames by kind.
	InPlace, Copied, Assembled, Missing int
	// MissingBytes is the compressed bytes of the missing frames;
	// FetchBytes what the runs fetch (gaps included).
	MissingBytes, FetchBytes int64
}

// Requests is the number of range requests the plan makes.
func (p *Plan) Requests() int { return len(p.Runs) }

// Assembly returns the assembly of frame i, or nil.
func (p *Plan) Assembly(i int) *Assembly {
	j, ok := slices.BinarySearchFunc(p.Assemblies, i, func(a Assembly, i int) int { return a.Frame - i })
	if !ok {
		return nil
	}
	return &p.Assemblies[j]
}

// NewPlan matches the index's frames against the seeds (Match) and groups
// the missing ones into runs (MergeRuns).
func NewPlan(ctx context.Context, x *Index, seeds []Seed, o Options) (*Plan, error) {
	src, asm, err := Match(ctx, x, seeds)
	if err != nil {
		return nil, err
	}
	return PlanFrom(x, src, asm, o), nil
}

// PlanFrom makes a plan from sources (and assemblies) already matched.
// Assembled frames are not fetched, unless a run merges them in to save
// a request.
func PlanFrom(x *Index, src []Source, asm []Assembly, o Options) *Plan {
	p := &Plan{Sources: src, Assemblies: asm}
	need := make([]bool, len(src))
	for i, s := range src {
		switch s.Kind {
		case InPlace:
			p.InPlace++
		case Copy:
			p.Copied++
		case Assemble:
			p.Assembled++
		default:
			p.Missing++
			p.MissingBytes += int64(x.Frames[i].CLen)
			need[i] = true
		}
	}
	p.Runs = MergeRuns(x.Offsets(), need, o)
	for _, r := range p.Runs {
		p.FetchBytes += r.Len
	}
	return p
}

// table is the index's distinct frame ids, open-addressed by an 8-byte
// prefix of the id; a hit is confirmed against the full id. Frames with
// the same id are chained from the first (the head). Its memory is about
// 30 bytes per frame: 1.9 MiB for a 4 GiB image of 64 KiB frames.
type table struct {
	x      *Index
	mask   uint64
	prefix []uint64
	head   []int32 // frame index + 1; 0: empty slot
	next   []int32 // per frame: the next frame with its id, -1 at the end
}

func prefixOf(id []byte) uint64 { return binary.LittleEndian.Uint64(id) }

func newTable(x *Index) *table {
	n := uint64(1)
	for n < 2*uint64(len(x.Frames)) {
		n <<= 1
	}
	t := &table{x: x, mask: n - 1, prefix: make([]uint64, n), head: make([]int32, n), next: make([]int32, len(x.Frames))}
	tail := map[int32]int32{} // head frame -> last frame of its chain, while building
	for i := range x.Frames {
		t.next[i] = -1
		s, found := t.find(x.Frames[i].ID[:])
		if !found {
			t.prefix[s], t.head[s] = prefixOf(x.Frames[i].ID[:]), int32(i)+1
			tail[int32(i)] = int32(i)
			continue
		}
		h := t.head[s] - 1
		t.next[tail[h]] = int32(i)
		tail[h] = int32(i)
	}
	return t
}

// find returns the slot of id: its own when found, else the empty slot
// where it would go.
func (t *table) find(id []byte) (uint64, bool) {
	p := prefixOf(id)
	for s := p & t.mask; ; s = (s + 1) & t.mask {
		h := t.head[s]
		if h == 0 {
			return s, false
		}
		if t.prefix[s] == p && bytes.Equal(t.x.Frames[h-1].ID[:], id) {
			return s, true
		}
	}
}

// lookup returns the head frame with the id, or -1.
func (t *table) lookup(id []byte) int32 {
	if s, ok := t.find(id); ok {
		return t.head[s] - 1
	}
	return -1
}

// digestBatch is how many digests Match reads at a time.
const digestBatch = 4096

// Match finds, for each frame of the index, a source in the seeds: in
// place in a Target seed when it is there, else the first seed (in the
// order given) that holds it anywhere, else, in a Target seed, its last
// place at or after the frame's own offset. A window of the frame's
// blocks is tried at every block offset of every seed.
//
// A frame found nowhere that has an appendix entry is assembled when every
// block of it the entry does not hold is found in a seed, as a single
// block at a block offset, by its digest, with the same preference (the
// first non-target seed that has it, else its last place in a Target seed
// at or after the frame's own offset); the assemblies are returned by
// increasing frame. Memory is independent of the seeds' sizes: about 30
// bytes per frame, and about 60 per distinct block digest the appendix
// names (14 MiB for the largest appendix of a 4 GiB image).
func Match(ctx context.Context, x *Index, seeds []Seed) ([]Source, []Assembly, error) {
	if err := x.Validate(); err != nil {
		return nil, nil, err
	}
	t := newTable(x)
	bt := newBlockTable(x)
	n := len(x.Frames)
	src := make([]Source, n)
	// Per head frame: the first non-target source found, and the last
	// place in a target seed (-1: none).
	found := make([]Source, n)
	lastTarget := make([]int64, n)
	targetSeed := make([]int32, n)
	for i := range lastTarget {
		lastTarget[i] = -1
	}
	k := x.FrameBlocks()
	_, lastLen := x.FrameRange(n - 1)
	kLast := int(lastLen / int64(x.BlockSize))
	bs := int64(x.BlockSize)
	for si, sd := range seeds {
		if sd.Blocks < 0 {
			return nil, nil, fmt.Errorf("delta: seed %d has %d blocks", si, sd.Blocks)
		}
		var blk func(b int64, digest []byte)
		if bt != nil {
			blk = func(b int64, digest []byte) { bt.see(si, sd.Target, b*bs, digest) }
		}
		err := windows(ctx, sd, k, kLast, blk, func(b int64, w int, id []byte) {
			off := b * bs
			if sd.Target && off%int64(x.FrameSize) == 0 {
				j := off / int64(x.FrameSize)
				if _, fl := x.FrameRange(int(min(j, int64(n-1)))); j < int64(n) && int64(w)*bs == fl && x.Frames[j].ID == [IDSize]byte(id) {
					src[j] = Source{Kind: InPlace, Seed: int32(si), Offset: off}
				}
			}
			h := t.lookup(id)
			if h < 0 {
				return
			}
			if sd.Target {
				lastTarget[h], targetSeed[h] = off, int32(si)
			} else if found[h].Kind == Missing {
				found[h] = Source{Kind: Copy, Seed: int32(si), Offset: off}
			}
		})
		if err != nil {
			return nil, nil, err
		}
	}
	for s := range t.head {
		if t.head[s] == 0 {
			continue
		}
		h := t.head[s] - 1
		for j := h; j >= 0; j = t.next[j] {
			switch {
			case src[j].Kind == InPlace:
			case found[h].Kind == Copy:
				src[j] = found[h]
			case lastTarget[h] >= int64(j)*int64(x.FrameSize):
				src[j] = Source{Kind: Copy, Seed: targetSeed[h], Offset: lastTarget[h]}
			}
		}
	}
	var asm []Assembly
	if bt != nil {
		asm = bt.assemble(src)
	}
	return src, asm, nil
}

// blockTable is the distinct digests of the blocks the appendix's entries
// do not hold (those an assembly finds in the seeds), open-addressed by an
// 8-byte prefix, with where the seeds have them.
type blockTable struct {
	x      *Index
	mask   uint64
	prefix []uint64
	slot   []int32 // digest number + 1; 0: empty slot
	// Per digest: the entry and block it was first seen at, the first
	// non-target place found, and the last place in a target seed (-1:
	// none).
	ref        []blockRef
	found      []Part
	lastTarget []int64
	targetSeed []int32
}

type blockRef struct {
	mixed int32
	block uint16
}

func (t *blockTable) digest(r blockRef) []byte {
	d := t.x.Mixed[r.mixed].Digests
	return d[int(r.block)*IDSize : (int(r.block)+1)*IDSize]
}

// newBlockTable returns the table of the index's appendix (nil without
// one).
func newBlockTable(x *Index) *blockTable {
	var n int
	for _, m := range x.Mixed {
		n += len(m.Digests)/IDSize - len(m.Blocks)
	}
	if n == 0 {
		return nil
	}
	size := uint64(1)
	for size < 2*uint64(n) {
		size <<= 1
	}
	t := &blockTable{x: x, mask: size - 1, prefix: make([]uint64, size), slot: make([]int32, size), ref: make([]blockRef, 0, n)}
	for mi, m := range x.Mixed {
		inBlob := 0
		for b := 0; b < len(m.Digests)/IDSize; b++ {
			if inBlob < len(m.Blocks) && int(m.Blocks[inBlob]) == b {
				inBlob++
				continue
			}
			d := m.Digests[b*IDSize : (b+1)*IDSize]
			s, ok := t.find(d)
			if ok {
				continue
			}
			t.ref = append(t.ref, blockRef{mixed: int32(mi), block: uint16(b)})
			t.prefix[s], t.slot[s] = prefixOf(d), int32(len(t.ref))
		}
	}
	t.found = make([]Part, len(t.ref))
	t.lastTarget = make([]int64, len(t.ref))
	t.targetSeed = make([]int32, len(t.ref))
	for i := range t.ref {
		t.found[i].Seed, t.lastTarget[i] = FromAppendix, -1
	}
	return t
}

// find returns the slot of digest d: its own when found, else the empty
// slot where it would go.
func (t *blockTable) find(d []byte) (uint64, bool) {
	p := prefixOf(d)
	for s := p & t.mask; ; s = (s + 1) & t.mask {
		n := t.slot[s]
		if n == 0 {
			return s, false
		}
		if t.prefix[s] == p && bytes.Equal(t.digest(t.ref[n-1]), d) {
			return s, true
		}
	}
}

// see records that seed si has a block with digest d at byte off.
func (t *blockTable) see(si int, target bool, off int64, d []byte) {
	s, ok := t.find(d)
	if !ok {
		return
	}
	n := t.slot[s] - 1
	if target {
		t.lastTarget[n], t.targetSeed[n] = off, int32(si)
	} else if t.found[n].Seed == FromAppendix {
		t.found[n] = Part{Seed: int32(si), Offset: off}
	}
}

// assemble turns the missing frames of src that can be assembled into
// Assemble frames, and returns their assemblies.
func (t *blockTable) assemble(src []Source) []Assembly {
	var asm []Assembly
	var scratch []Part // the parts of the frame at hand
	x := t.x
	for mi, m := range x.Mixed {
		if src[m.Frame].Kind != Missing {
			continue
		}
		frameOff := int64(m.Frame) * int64(x.FrameSize)
		// part is where block b comes from (ok false: nowhere).
		part := func(b int) (Part, bool) {
			if _, in := slices.BinarySearch(m.Blocks, uint16(b)); in {
				return Part{Seed: FromAppendix}, true
			}
			s, found := t.find(m.Digests[b*IDSize : (b+1)*IDSize])
			if !found {
				return Part{}, false
			}
			n := t.slot[s] - 1
			switch {
			case t.found[n].Seed != FromAppendix:
				return t.found[n], true
			case t.lastTarget[n] >= frameOff:
				return Part{Seed: t.targetSeed[n], Offset: t.lastTarget[n]}, true
			}
			return Part{}, false
		}
		scratch = scratch[:0]
		for b := 0; b < len(m.Digests)/IDSize; b++ {
			p, ok := part(b)
			if !ok {
				break
			}
			scratch = append(scratch, p)
		}
		if len(scratch) != len(m.Digests)/IDSize {
			continue
		}
		parts := slices.Clone(scratch)
		src[m.Frame] = Source{Kind: Assemble}
		asm = append(asm, Assembly{Frame: m.Frame, Mixed: mi, Parts: parts})
	}
	return asm
}

// windows calls fn with the id of every window of k digests of the seed
// (w = k), and when kLast < k of every window of kLast digests too (w =
// kLast), at block b, in increasing b; and blk, when not nil, with the
// digest of every block, in increasing b.
func windows(ctx context.Context, sd Seed, k, kLast int, blk func(b int64, digest []byte), fn func(b int64, w int, id []byte)) error {
	if sd.Blocks == 0 || sd.Digests == nil {
		return nil
	}
	// buf holds the digests of blocks [base, base+len(buf)/IDSize).
	buf := make([]byte, 0, (digestBatch+k)*IDSize)
	base, next := int64(0), int64(0)
	var id [IDSize]byte
	for end := int64(0); end < sd.Blocks; {
		if err := ctx.Err(); err != nil {
			return err
		}
		want := min(int64(digestBatch), sd.Blocks-end)
		l := len(buf)
		buf = buf[:l+int(want)*IDSize]
		if _, err := io.ReadFull(sd.Digests, buf[l:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("delta: reading a seed's digests at block %d: %w", end, err)
		}
		if blk != nil {
			for j := 0; j < int(want); j++ {
				blk(end+int64(j), buf[l+j*IDSize:l+(j+1)*IDSize])
			}
		}
		end += want
		for ; next < end; next++ {
			rel := int(next-base) * IDSize
			full := next+int64(k) <= end
			if !full && end < sd.Blocks {
				break // the rest of this window comes with the next batch
			}
			if full {
				id = WindowID(buf[rel : rel+k*IDSize])
				fn(next, k, id[:])
			}
			if kLast < k && next+int64(kLast) <= end {
				id = WindowID(buf[rel : rel+kLast*IDSize])
				fn(next, kLast, id[:])
			}
		}
		drop := int(next-base) * IDSize
		buf = buf[:copy(buf, buf[drop:])]
		base = next
	}
	return nil
}

// MergeRuns groups the needed frames into runs of the seekable file
// (offsets from Index.Offsets): consecutive needed frames are one run;
// runs separated by at most o.MergeGap bytes are merged; then, with
// o.RequestBytes, the smallest gaps (up to o.MaxGap) are merged while
// there are more runs than the bytes fetched allow, and while the gaps
// merged so far add at most o.MaxExtra of the bytes needed (when
// positive).
func MergeRuns(offsets []int64, need []bool, o Options) []Run {
	if o.MergeGap < 0 {
		o.MergeGap = 0
	}
	if o.MaxGap <= 0 {
		o.MaxGap = DefaultMaxGap
	}
	var runs []Run
	for i := 0; i < len(need); i++ {
		if !need[i] {
			continue
		}
		j := i
		for j < len(need) && need[j] {
			j++
		}
		r := Run{First: i, End: j, Off: offsets[i], Len: offsets[j] - offsets[i]}
		if n := len(runs); n > 0 && r.Off-(runs[n-1].Off+runs[n-1].Len) <= o.MergeGap {
			runs[n-1].End, runs[n-1].Len = r.End, r.Off+r.Len-runs[n-1].Off
		} else {
			runs = append(runs, r)
		}
		i = j
	}
	if o.RequestBytes <= 0 || len(runs) < 2 {
		return runs
	}
	var total int64
	for _, r := range runs {
		total += r.Len
	}
	extra := int64(-1) // no bound
	if o.MaxExtra > 0 {
		extra = int64(o.MaxExtra * float64(total))
	}
	// Gap g is between runs g and g+1. Merging one leaves the others as
	// they are, so the smallest are merged first, in one sorted pass.
	gaps := make([]int, len(runs)-1)
	for g := range gaps {
		gaps[g] = g
	}
	gapLen := func(g int) int64 { return runs[g+1].Off - (runs[g].Off + runs[g].Len) }
	slices.SortStableFunc(gaps, func(a, b int) int {
		if d := gapLen(a) - gapLen(b); d != 0 {
			return map[bool]int{true: -1, false: 1}[d < 0]
		}
		return a - b
	})
	merged := make([]bool, len(gaps))
	count := len(runs)
	for _, g := range gaps {
		if int64(count) <= total/o.RequestBytes+1 || gapLen(g) > o.MaxGap || (extra >= 0 && gapLen(g) > extra) {
			break
		}
		merged[g] = true
		total += gapLen(g)
		if extra >= 0 {
			extra -= gapLen(g)
		}
		count--
	}
	out := runs[:1]
	for g, m := range merged {
		next := runs[g+1]
		if m {
			last := &out[len(out)-1]
			last.End, last.Len = next.End, next.Off+next.Len-last.Off
		} else {
			out = append(out, next)
		}
	}
	return out
}
