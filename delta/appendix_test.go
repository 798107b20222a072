package delta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// zenc compresses appendix blobs in tests.
var zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))

// mixedOf is the appendix entry of frame f of img, its blob holding the
// blocks at positions inBlob.
func mixedOf(t testing.TB, x *Index, img []byte, f int, inBlob ...int) Mixed {
	t.Helper()
	off, n := x.FrameRange(f)
	frame := img[off : off+n]
	m := Mixed{Frame: f, Digests: x.NewHasher().AppendDigests(nil, frame)}
	var raw []byte
	for _, p := range inBlob {
		m.Blocks = append(m.Blocks, uint16(p))
		raw = append(raw, frame[p*x.BlockSize:(p+1)*x.BlockSize]...)
	}
	m.Blob = zenc.EncodeAll(raw, nil)
	return m
}

// appendixIndex is the index of img (frames of 4 blocks) with appendix
// entries: "f:p,q" is frame f with blocks p and q in its blob.
func appendixIndex(t testing.TB, img []byte, entries ...string) *Index {
	t.Helper()
	x := indexOf(t, img, testFrame)
	for _, e := range entries {
		var f int
		fs, ps, _ := strings.Cut(e, ":")
		fmt.Sscan(fs, &f)
		var pos []int
		for _, p := range strings.Split(ps, ",") {
			var n int
			fmt.Sscan(p, &n)
			pos = append(pos, n)
		}
		x.Mixed = append(x.Mixed, mixedOf(t, x, img, f, pos...))
	}
	if err := x.Validate(); err != nil {
		t.Fatal(err)
	}
	return x
}

// TestIndexAppendixRoundTrip: an index with an appendix is version 2, its
// size is the documented layout's, and it parses back to the same index;
// without one it is version 1.
func TestIndexAppendixRoundTrip(t *testing.T) {
	img := blocks("abcdMfghijNOmnopqP")
	x := appendixIndex(t, img, "1:0", "2:2,3", "4:1")
	b, err := x.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != 2 {
		t.Errorf("version %d with an appendix", v)
	}
	apx := 4
	for _, m := range x.Mixed {
		apx += 4 + 2 + 2*len(m.Blocks) + len(m.Digests) + 4 + len(m.Blob)
	}
	if x.AppendixSize() != apx {
		t.Errorf("appendix size %d, want %d", x.AppendixSize(), apx)
	}
	plain := *x
	plain.Mixed = nil
	pb, err := plain.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint32(pb[8:]); v != 1 || len(b) != len(pb)+apx {
		t.Errorf("without the appendix: version %d, %d bytes (with it %d, appendix %d)", v, len(pb), len(b), apx)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, x) {
		t.Fatalf("round trip:\n%+v\n%+v", back, x)
	}
	if m := back.FindMixed(2); m == nil || m.Frame != 2 || back.FindMixed(3) != nil {
		t.Errorf("FindMixed: %+v", m)
	}
}

// TestIndexV1Golden: an index written before the appendix existed (format
// version 1, testdata/README.md) still parses, and marshals back to the
// same bytes.
func TestIndexV1Golden(t *testing.T) {
	b, err := os.ReadFile("testdata/index-v1.didx")
	if err != nil {
		t.Fatal(err)
	}
	x, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(x, testIndex(5, 2, true)) || x.Mixed != nil {
		t.Errorf("parsed %+v", x)
	}
	out, err := x.Marshal()
	if err != nil || !bytes.Equal(out, b) {
		t.Errorf("marshalled again: %v, same bytes %v", err, bytes.Equal(out, b))
	}
}

// TestHostileAppendix: appendixes that are inconsistent (with a valid
// checksum) are refused with ErrIndex, without a panic, by Parse and by
// Marshal; so is every truncation.
func TestHostileAppendix(t *testing.T) {
	img := blocks("abcdMfghijNOmnopqP")
	good := func() *Index { return appendixIndex(t, img, "1:0", "2:2,3", "4:1") }
	gb, err := good().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(gb); n++ {
		if _, err := Parse(gb[:n]); !errors.Is(err, ErrIndex) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
		if n < 32 {
			continue
		}
		if _, err := Parse(reseal(gb[:n])); !errors.Is(err, ErrIndex) {
			t.Fatalf("truncated to %d bytes, resealed: %v", n, err)
		}
	}
	if _, err := Parse(reseal(append(append([]byte(nil), gb...), 0, 0, 0, 0))); !errors.Is(err, ErrIndex) {
		t.Errorf("bytes after the appendix: %v", err)
	}
	other := mixedOf(t, good(), blocks("abcdMfghijNOmnopqQ"), 4, 1)
	for name, edit := range map[string]func(x *Index){
		"digests not the frame's id":      func(x *Index) { x.Mixed[1].Digests[40] ^= 1 },
		"digests of another frame":        func(x *Index) { x.Mixed[2] = other },
		"digests of a frame's other half": func(x *Index) { x.Mixed[0].Digests = x.Mixed[0].Digests[:2*IDSize] },
		"block position out of range":     func(x *Index) { x.Mixed[1].Blocks[1] = 4 },
		"block position far out":          func(x *Index) { x.Mixed[1].Blocks[1] = 65535 },
		"block positions repeated":        func(x *Index) { x.Mixed[1].Blocks[0] = 3 },
		"block positions decreasing":      func(x *Index) { x.Mixed[1].Blocks[0], x.Mixed[1].Blocks[1] = 3, 2 },
		"no block in the blob":            func(x *Index) { x.Mixed[0].Blocks = nil },
		"every block in the blob":         func(x *Index) { x.Mixed[0].Blocks = []uint16{0, 1, 2, 3} },
		"duplicate frame numbers":         func(x *Index) { x.Mixed[1].Frame = 1; x.Mixed[1].Digests = x.Mixed[0].Digests },
		"frames not increasing":           func(x *Index) { x.Mixed[0], x.Mixed[1] = x.Mixed[1], x.Mixed[0] },
		"no such frame":                   func(x *Index) { x.Mixed[2].Frame = 5 },
		"negative frame":                  func(x *Index) { x.Mixed[0].Frame = -1 },
		"empty blob":                      func(x *Index) { x.Mixed[0].Blob = nil },
		"blob larger than its blocks":     func(x *Index) { x.Mixed[0].Blob = make([]byte, MaxCompressedFrame(BlockSize)+1) },
	} {
		x := good()
		edit(x)
		if _, err := x.Marshal(); !errors.Is(err, ErrIndex) {
			t.Errorf("%s: Marshal: %v", name, err)
		}
		if _, err := Parse(x.encode()); !errors.Is(err, ErrIndex) {
			t.Errorf("%s: Parse: %v", name, err)
		}
	}
	// Counts and lengths that claim more than there is.
	le32 := func(off int, v uint32) []byte {
		b := append([]byte(nil), gb...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return reseal(b)
	}
	x := good()
	count := len(gb) - 32 - x.AppendixSize()
	blobLen := count + 4 + 4 + 2 + 2 + len(x.Mixed[0].Digests)
	for name, b := range map[string][]byte{
		"no entries":              le32(count, 0),
		"billions of entries":     le32(count, 1<<31),
		"one entry more":          le32(count, 4),
		"a blob of 4 GiB":         le32(blobLen, 1<<32-1),
		"a blob past the end":     le32(blobLen, uint32(len(gb))),
		"version 2, no appendix":  le32(8, 2)[:count+32],
		"version 2, no appendix'": reseal(le32(8, 2)[:count+32]),
		"version 1, an appendix":  le32(8, 1),
		"version 3":               le32(8, 3),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrIndex) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// An appendix over the format's bound.
	big := good()
	for len(big.Mixed[0].Blob) < MaxAppendixBytes {
		big.Mixed[0].Blob = append(big.Mixed[0].Blob, make([]byte, 1<<20)...)
	}
	if _, err := big.Marshal(); !errors.Is(err, ErrIndex) {
		t.Errorf("an appendix over %d bytes: %v", MaxAppendixBytes, err)
	}
}

// TestMixedBlocks: a blob decodes to its blocks, each checked against its
// digest; a blob that decodes to more or fewer bytes than its blocks (more
// than the frame, too), or to other blocks, or is not zstd, is refused.
func TestMixedBlocks(t *testing.T) {
	img := blocks("abcdMfghijNOmnop")
	x := appendixIndex(t, img, "1:0", "2:2,3")
	dec, err := NewFrameDecoder(x.FrameSize)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	h := x.NewHasher()
	out, err := x.MixedBlocks(dec, h, &x.Mixed[1])
	if err != nil || !bytes.Equal(out, blocks("NO")) {
		t.Fatalf("%v", err)
	}
	var me *MismatchError
	for name, c := range map[string]struct {
		blob []byte
		want error
	}{
		"more than the frame":         {zenc.EncodeAll(blocks("NOmnopqr"), nil), ErrFrame},
		"one block more":              {zenc.EncodeAll(blocks("NOm"), nil), ErrFrame},
		"one block less":              {zenc.EncodeAll(blocks("N"), nil), ErrFrame},
		"a byte more":                 {zenc.EncodeAll(append(blocks("NO"), 0), nil), ErrFrame},
		"other blocks":                {zenc.EncodeAll(blocks("ON"), nil), ErrMismatch},
		"one byte changed":            {zenc.EncodeAll(append(blocks("N"), append([]byte{'P'}, blocks("O")[1:]...)...), nil), ErrMismatch},
		"not zstd":                    {[]byte("not a zstd frame at all"), ErrFrame},
		"a gigabyte of zeros claimed": {zenc.EncodeAll(make([]byte, 64<<20), nil), ErrFrame},
	} {
		m := x.Mixed[1]
		m.Blob = c.blob
		_, err := x.MixedBlocks(dec, h, &m)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
		if c.want == ErrMismatch && (!errors.As(err, &me) || me.Frame != 2) {
			t.Errorf("%s: %v is not the frame's *MismatchError", name, err)
		}
	}
}

// showPlan is show, with "a" for an assembled frame.
func showPlan(src []Source) string {
	s := strings.Fields(show(src))
	for i, x := range src {
		if x.Kind == Assemble {
			s[i] = "a"
		}
	}
	return strings.Join(s, " ")
}

// TestMatchAssemble: a frame no seed holds whole, with an appendix entry,
// is assembled when each block not in the blob is in a seed (at any block
// offset; in a target seed, only at or after the frame's offset), and
// every part names a place that holds the block.
func TestMatchAssemble(t *testing.T) {
	for _, c := range []struct {
		name    string
		target  string
		entries []string
		seeds   []string // "T:" makes a target seed
		want    string
	}{
		{"moved data, new metadata", "abcdeMgh", []string{"1:1"}, []string{"xxabcdzefghy"}, "c0@2 a"},
		{"blocks scattered over two seeds", "abcdeMgh", []string{"1:1"}, []string{"habcd", "xxgye"}, "c0@1 a"},
		{"a block in no seed", "abcdeMgh", []string{"1:1"}, []string{"abcdefg"}, "c0@0 -"},
		{"no entry: fetched", "abcdeMgh", nil, []string{"abcdefgh"}, "c0@0 -"},
		{"whole frame found: copied, not assembled", "abcdeMgh", []string{"1:1"}, []string{"abcdeMgh"}, "c0@0 c0@4"},
		{"two blocks in the blob", "abcdMNgh", []string{"1:0,1"}, []string{"ghabcd"}, "c0@2 a"},
		{"target: blocks at or after the frame", "abcdeMgh", []string{"1:1"}, []string{"T:abcdxxxxegh"}, "p a"},
		{"target: a block before the frame", "abcdeMgh", []string{"1:1"}, []string{"T:gbcdxxxxe0h"}, "- -"},
		{"target: in place blocks", "abcdeMgh", []string{"1:1"}, []string{"T:abcdeZgh"}, "p a"},
		{"zeros in the blob", "abcd0M0h", []string{"1:0,1,2"}, []string{"hh"}, "- a"},
		{"the last frame, shorter", "abcdeM", []string{"1:1"}, []string{"ea"}, "- a"},
		{"repeated blocks", "eeeeeMee", []string{"1:1"}, []string{"e"}, "- a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := blocks(c.target)
			x := appendixIndex(t, img, c.entries...)
			var seeds []Seed
			var seedImgs [][]byte
			for _, s := range c.seeds {
				name, target := strings.CutPrefix(s, "T:")
				seeds = append(seeds, seedOf(blocks(name), target))
				seedImgs = append(seedImgs, blocks(name))
			}
			p, err := NewPlan(context.Background(), x, seeds, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := showPlan(p.Sources); got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
			if p.Assembled != len(p.Assemblies) || p.Missing+p.Assembled+p.Copied+p.InPlace != len(x.Frames) {
				t.Errorf("counts %+v", p)
			}
			for _, a := range p.Assemblies {
				m := x.Mixed[a.Mixed]
				off, n := x.FrameRange(a.Frame)
				if m.Frame != a.Frame || len(a.Parts) != int(n)/BlockSize || p.Assembly(a.Frame) == nil {
					t.Fatalf("assembly %+v", a)
				}
				for b, pt := range a.Parts {
					want := img[off+int64(b*BlockSize) : off+int64((b+1)*BlockSize)]
					if pt.Seed == FromAppendix {
						if !slices.Contains(m.Blocks, uint16(b)) {
							t.Errorf("frame %d block %d is not in the blob", a.Frame, b)
						}
						continue
					}
					got := seedImgs[pt.Seed][pt.Offset : pt.Offset+BlockSize]
					if !bytes.Equal(got, want) || (seeds[pt.Seed].Target && pt.Offset < off) {
						t.Errorf("frame %d block %d from seed %d at %d", a.Frame, b, pt.Seed, pt.Offset)
					}
				}
			}
			// No request for an assembled frame.
			for _, r := range p.Runs {
				for i := r.First; i < r.End; i++ {
					if p.Sources[i].Kind == Assemble {
						t.Errorf("frame %d is assembled and fetched", i)
					}
				}
			}
		})
	}
}

// TestMatchMemoryAppendix: planning a 4 GiB image whose appendix is as
// large as the format allows, with as many distinct blocks to look for as
// it can name, against a 4 GiB seed, allocates a bounded amount (the
// install's bound is 64 MiB).
func TestMatchMemoryAppendix(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes 1M windows")
	}
	k := DefaultFrameSize / BlockSize
	// found: every block an entry needs from a seed is in the seed, so
	// every entry's frame is assembled and its parts held (the worst case
	// for the plan's memory); else none is.
	for _, found := range []bool{false, true} {
		x, rnd := index4GiB()
		frames := len(x.Frames)
		// Entries of one blob block and 15 distinct others, a 1-byte blob.
		seed := &digestStream{n: 1 << 20}
		for f := 0; f < frames; f++ {
			m := Mixed{Frame: f, Digests: make([]byte, k*IDSize), Blocks: []uint16{0}, Blob: []byte{0}}
			if x.AppendixSize()+4+m.EncodedSize() > MaxAppendixBytes {
				break
			}
			if found {
				// Block 0 from the blob, the others the seed's next ones.
				rnd.Read(m.Digests[:IDSize])
				if _, err := io.ReadFull(seed, m.Digests[IDSize:]); err != nil {
					t.Fatal(err)
				}
			} else {
				rnd.Read(m.Digests)
			}
			x.Frames[f].ID = WindowID(m.Digests)
			x.Mixed = append(x.Mixed, m)
		}
		if err := x.Validate(); err != nil {
			t.Fatal(err)
		}
		p, alloc := planAgainst4GiB(t, x)
		t.Logf("planning 4 GiB with a %d-byte appendix of %d frames (%d blocks to find, found: %v) allocated %.1f MiB; %d frames assembled",
			x.AppendixSize(), len(x.Mixed), len(x.Mixed)*(k-1), found, float64(alloc)/(1<<20), p.Assembled)
		want := 0
		if found {
			want = len(x.Mixed)
		}
		// All that planning allocates bounds its peak heap: with the
		// index itself (about 11 MiB here) and the install's buffers,
		// well under the install's 64 MiB.
		if p.Assembled != want || p.Missing != frames-want || alloc > 32<<20 {
			t.Fatalf("found %v: %d assembled, %d missing, allocated %d bytes", found, p.Assembled, p.Missing, alloc)
		}
	}
}
