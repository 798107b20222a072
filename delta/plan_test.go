package delta

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// Test images are strings of block letters: block 'a' is 4 KiB of 'a',
// '0' a block of zeros. Frames are 4 blocks (16 KiB).
const testFrame = 4 * BlockSize

var testSalt = []byte("salt")

func blocks(s string) []byte {
	b := make([]byte, 0, len(s)*BlockSize)
	for _, c := range []byte(s) {
		if c == '0' {
			c = 0
		}
		b = append(b, bytes.Repeat([]byte{c}, BlockSize)...)
	}
	return b
}

// indexOf makes the index of an image (compressed lengths: 1000 bytes a
// frame).
func indexOf(t testing.TB, img []byte, frameSize int) *Index {
	t.Helper()
	x := &Index{BlockSize: BlockSize, FrameSize: frameSize, Hash: HashSHA256, Salt: testSalt, ImageSize: int64(len(img)),
		Seekable: File{Name: "s"}}
	h := NewHasher(testSalt, BlockSize)
	for off := 0; off < len(img); off += frameSize {
		id, err := h.FrameID(img[off:min(off+frameSize, len(img))])
		if err != nil {
			t.Fatal(err)
		}
		x.Frames = append(x.Frames, Frame{ID: id, CLen: 1000})
	}
	x.Seekable.Length = int64(len(x.Frames))*1000 + 50
	if err := x.Validate(); err != nil {
		t.Fatal(err)
	}
	return x
}

func seedOf(img []byte, target bool) Seed {
	return Seed{Digests: NewDigestReader(context.Background(), bytes.NewReader(img), int64(len(img)), testSalt, BlockSize),
		Blocks: int64(len(img) / BlockSize), Target: target}
}

// show writes sources as text: "c0@4" is a copy from seed 0 at block 4,
// "p" in place, "-" missing.
func show(src []Source) string {
	var s []string
	for _, x := range src {
		switch x.Kind {
		case InPlace:
			s = append(s, "p")
		case Copy:
			s = append(s, fmt.Sprintf("c%d@%d", x.Seed, x.Offset/BlockSize))
		default:
			s = append(s, "-")
		}
	}
	return strings.Join(s, " ")
}

// TestMatch: where each frame comes from, for the cases the client meets.
func TestMatch(t *testing.T) {
	for _, c := range []struct {
		name   string
		target string
		seeds  []string // a "T:" prefix makes a Target seed
		want   string
	}{
		{"identical", "abcdefgh", []string{"abcdefgh"}, "c0@0 c0@4"},
		{"shifted by a block", "abcdefgh", []string{"xabcdefgh"}, "c0@1 c0@5"},
		{"one frame changed", "abcdxfgh", []string{"abcdefgh"}, "c0@0 -"},
		{"moved frames", "efghabcd", []string{"abcdefgh"}, "c0@4 c0@0"},
		{"unrelated", "abcdefgh", []string{"ijklmnop"}, "- -"},
		{"last frame partial", "abcdefg", []string{"xxefgab"}, "- c0@2"},
		{"last frame partial, in a longer window", "abcdefg", []string{"efgh"}, "- c0@0"},
		{"in place", "abcdefgh", []string{"T:abcdefgh"}, "p p"},
		{"in place beats the active seed", "abcdefgh", []string{"abcdefgh", "T:abcdefgh"}, "p p"},
		{"in place beats the active seed, too", "abcdefgh", []string{"efgh", "T:xxxxefghabcd"}, "c1@8 p"},
		{"active seed beats a later place in the target", "abcdefgh", []string{"efgh", "T:xxxxxefghabcd"}, "c1@9 c0@0"},
		{"target: only at or after the frame's own offset", "abcdefgh", []string{"T:efghabcd"}, "c0@4 -"},
		{"target: the last place found", "abcdabcd", []string{"T:abcdyyabcdzabcd"}, "p c0@11"},
		{"target: the last place found, none in place", "abcdabcd", []string{"T:yabcdyyabcdzabcd"}, "c0@12 c0@12"},
		{"repeated frames", "0000000000000000", []string{"x00000"}, "c0@1 c0@1 c0@1 c0@1"},
		{"first seed wins", "abcd", []string{"yabcd", "abcd"}, "c0@1"},
		{"empty seed", "abcd", []string{""}, "-"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := blocks(c.target)
			x := indexOf(t, img, testFrame)
			var seeds []Seed
			for _, s := range c.seeds {
				name, target := strings.CutPrefix(s, "T:")
				seeds = append(seeds, seedOf(blocks(name), target))
			}
			src, _, err := Match(context.Background(), x, seeds)
			if err != nil {
				t.Fatal(err)
			}
			if got := show(src); got != c.want {
				t.Errorf("got %s, want %s", got, c.want)
			}
		})
	}
}

// TestMatchAgainstBruteForce: on random images of few distinct blocks,
// Match finds a source for exactly the frames a brute-force search finds
// in the seeds, and every source it gives holds the frame (with in-order
// writing respected for the target).
func TestMatchAgainstBruteForce(t *testing.T) {
	rnd := rand.New(rand.NewSource(7))
	randImg := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = "abc0"[rnd.Intn(4)]
		}
		return string(b)
	}
	for iter := 0; iter < 200; iter++ {
		target := randImg(1 + rnd.Intn(40))
		active, old := randImg(rnd.Intn(60)), randImg(rnd.Intn(60))
		img := blocks(target)
		x := indexOf(t, img, testFrame)
		src, _, err := Match(context.Background(), x, []Seed{seedOf(blocks(active), false), seedOf(blocks(old), true)})
		if err != nil {
			t.Fatal(err)
		}
		for i := range x.Frames {
			off, n := x.FrameRange(i)
			want := target[off/BlockSize : (off+n)/BlockSize]
			fo := int(off / BlockSize)
			inPlace := fo+len(want) <= len(old) && old[fo:fo+len(want)] == want
			inActive := strings.Contains(active, want)
			inOld := false
			for s := fo; s+len(want) <= len(old); s++ {
				inOld = inOld || old[s:s+len(want)] == want
			}
			s := src[i]
			switch {
			case inPlace:
				if s.Kind != InPlace {
					t.Fatalf("%q from %q/%q: frame %d is in place, got %v", target, active, old, i, s.Kind)
				}
			case inActive:
				if s.Kind != Copy || s.Seed != 0 || active[s.Offset/BlockSize:int(s.Offset/BlockSize)+len(want)] != want {
					t.Fatalf("%q from %q/%q: frame %d is in the active seed, got %+v", target, active, old, i, s)
				}
			case inOld:
				if s.Kind != Copy || s.Seed != 1 || s.Offset < off || old[s.Offset/BlockSize:int(s.Offset/BlockSize)+len(want)] != want {
					t.Fatalf("%q from %q/%q: frame %d is after its offset in the target, got %+v", target, active, old, i, s)
				}
			default:
				if s.Kind != Missing {
					t.Fatalf("%q from %q/%q: frame %d is nowhere, got %+v", target, active, old, i, s)
				}
			}
		}
	}
}

// TestMatchBatchBoundaries: windows across the seed's read batches (4096
// digests) are all tried.
func TestMatchBatchBoundaries(t *testing.T) {
	for _, at := range []int{digestBatch - 5, digestBatch - 3, digestBatch - 1, digestBatch, 2*digestBatch - 2} {
		seed := blocks(strings.Repeat("z", at) + "abcdefg" + "zz")
		x := indexOf(t, blocks("abcdefg"), testFrame)
		src, _, err := Match(context.Background(), x, []Seed{seedOf(seed, false)})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := show(src), fmt.Sprintf("c0@%d c0@%d", at, at+4); got != want {
			t.Errorf("at block %d: %s, want %s", at, got, want)
		}
	}
}

// TestMatchSeedErrors: a seed that ends early and a cancelled context are
// errors.
func TestMatchSeedErrors(t *testing.T) {
	x := indexOf(t, blocks("abcd"), testFrame)
	short := Seed{Digests: bytes.NewReader(make([]byte, 3*IDSize)), Blocks: 4}
	if _, _, err := Match(context.Background(), x, []Seed{short}); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a short seed: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Match(ctx, x, []Seed{seedOf(blocks("abcd"), false)}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

// TestMergeRuns: consecutive missing frames are one run; small gaps are
// merged; the request bound merges the smallest gaps first, never one
// over MaxGap.
func TestMergeRuns(t *testing.T) {
	// Frames of 100 bytes, except frame 5 (1000).
	offs := []int64{0}
	for i := 0; i < 20; i++ {
		l := int64(100)
		if i == 5 {
			l = 1000
		}
		offs = append(offs, offs[i]+l)
	}
	need := func(s string) []bool {
		b := make([]bool, 20)
		for i, c := range s {
			b[i] = c == 'x'
		}
		return b
	}
	show := func(rs []Run) string {
		var s []string
		for _, r := range rs {
			s = append(s, fmt.Sprintf("%d-%d@%d+%d", r.First, r.End, r.Off, r.Len))
		}
		return strings.Join(s, " ")
	}
	for _, c := range []struct {
		need string
		o    Options
		want string
	}{
		{"xx..x...............", Options{}, "0-2@0+200 4-5@400+100"},
		{"xx..x...............", Options{MergeGap: 200}, "0-5@0+500"},
		{"xx..x...............", Options{MergeGap: 199}, "0-2@0+200 4-5@400+100"},
		{"....x.x.............", Options{MergeGap: 999}, "4-5@400+100 6-7@1500+100"},
		{"....x.x.............", Options{MergeGap: 1000}, "4-7@400+1200"},
		{"....................", Options{MergeGap: 1000}, ""},
		{"xxxxxxxxxxxxxxxxxxxx", Options{}, "0-20@0+2900"},
		// One request per 1000 bytes plus one: 5 runs of 100 need merging
		// down to 1; the three 100-byte gaps go first, the 1000-byte one
		// stays, being over MaxGap 500.
		{"x.x.x.x.x...........", Options{RequestBytes: 1000, MaxGap: 500}, "0-5@0+500 6-9@1500+300"},
		{"x.x.x.x.x...........", Options{RequestBytes: 1000, MaxGap: 5000}, "0-9@0+1800"},
		{"x.x...........x.....", Options{RequestBytes: 100}, "0-1@0+100 2-3@200+100 14-15@2300+100"},
		// At most a quarter more bytes: of the three 100-byte gaps
		// (500 bytes needed), only one is merged.
		{"x.x.x.x.x...........", Options{RequestBytes: 1000, MaxGap: 500, MaxExtra: 0.25}, "0-3@0+300 4-5@400+100 6-7@1500+100 8-9@1700+100"},
	} {
		if got := show(MergeRuns(offs, need(c.need), c.o)); got != c.want {
			t.Errorf("%s %+v: %s, want %s", c.need, c.o, got, c.want)
		}
	}
}

// TestPlanCounts: a plan counts frames by kind and bytes to fetch.
func TestPlanCounts(t *testing.T) {
	x := indexOf(t, blocks("abcdefghijklmnop"), testFrame)
	p, err := NewPlan(context.Background(), x, []Seed{seedOf(blocks("abcdxxxx"), false), seedOf(blocks("....efgh"), true)},
		Options{MergeGap: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if p.Copied != 1 || p.InPlace != 1 || p.Missing != 2 || p.MissingBytes != 2000 || p.FetchBytes != 2000 || p.Requests() != 1 ||
		!slices.Equal(p.Runs, []Run{{First: 2, End: 4, Off: 2000, Len: 2000}}) {
		t.Fatalf("plan %+v", p)
	}
}

// TestDigestReader: the digests are sha256(salt || block), dm-verity's,
// block after block, a partial block at the end ignored.
func TestDigestReader(t *testing.T) {
	img := blocks(strings.Repeat("abc0", 300))
	img = append(img, 1, 2, 3)
	got, err := io.ReadAll(NewDigestReader(context.Background(), bytes.NewReader(img), int64(len(img)), testSalt, BlockSize))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1200*IDSize {
		t.Fatalf("%d digests", len(got)/IDSize)
	}
	for i := 0; i < 1200; i++ {
		want := sha256.Sum256(append(append([]byte(nil), testSalt...), img[i*BlockSize:(i+1)*BlockSize]...))
		if !bytes.Equal(got[i*IDSize:(i+1)*IDSize], want[:]) {
			t.Fatalf("digest %d", i)
		}
	}
	if _, err := io.ReadAll(NewDigestReader(context.Background(), bytes.NewReader(img[:5000]), 8192, testSalt, BlockSize)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a seed shorter than said: %v", err)
	}
}

// TestCheck: Check accepts a frame's content and refuses any other (a
// changed byte, a different length) with a *MismatchError.
func TestCheck(t *testing.T) {
	img := blocks("abcdefg")
	x := indexOf(t, img, testFrame)
	h := x.NewHasher()
	if err := x.Check(h, 1, img[testFrame:]); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), img[:testFrame]...)
	bad[5000] ^= 1
	var me *MismatchError
	for _, c := range [][]byte{bad, img[:testFrame-BlockSize], img[:testFrame+1], nil} {
		if err := x.Check(h, 0, c); !errors.As(err, &me) || !errors.Is(err, ErrMismatch) || me.Frame != 0 {
			t.Errorf("%d bytes: %v", len(c), err)
		}
	}
}

// digestStream yields n pseudo-random digests without holding them.
type digestStream struct {
	n, i int64
	ctr  [8]byte
}

func (d *digestStream) Read(p []byte) (int, error) {
	k := 0
	for len(p)-k >= IDSize && d.i < d.n {
		d.ctr[0], d.ctr[1], d.ctr[2], d.ctr[3] = byte(d.i), byte(d.i>>8), byte(d.i>>16), byte(d.i>>24)
		s := sha256.Sum256(d.ctr[:])
		k += copy(p[k:], s[:])
		d.i++
	}
	if k == 0 && d.i == d.n {
		return 0, io.EOF
	}
	return k, nil
}

// TestMatchMemory4GiB: planning a 4 GiB image (65536 frames) against a 4
// GiB seed (1M block digests, streamed) allocates a few MiB, whatever the
// seed's size: the seed's windows are never held.
func TestMatchMemory4GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes 1M windows")
	}
	x, _ := index4GiB()
	p, alloc := planAgainst4GiB(t, x)
	t.Logf("planning 4 GiB against a 4 GiB seed allocated %.1f MiB", float64(alloc)/(1<<20))
	if p.Missing != len(x.Frames) || alloc > 16<<20 {
		t.Fatalf("missing %d, allocated %d bytes", p.Missing, alloc)
	}
}

// index4GiB is the index of a 4 GiB image of 65536 frames of random ids,
// and the generator that made them.
func index4GiB() (*Index, *rand.Rand) {
	const frames = 65536
	x := &Index{BlockSize: BlockSize, FrameSize: DefaultFrameSize, Hash: HashSHA256, ImageSize: frames * DefaultFrameSize,
		Seekable: File{Name: "s", Length: frames * 30000}}
	x.Frames = make([]Frame, frames)
	rnd := rand.New(rand.NewSource(1))
	for i := range x.Frames {
		rnd.Read(x.Frames[i].ID[:])
		x.Frames[i].CLen = 30000
	}
	return x, rnd
}

// planAgainst4GiB plans x against a 4 GiB seed (1M block digests,
// streamed), returning the plan and all that planning allocated.
func planAgainst4GiB(t *testing.T, x *Index) (*Plan, uint64) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, err := NewPlan(context.Background(), x, []Seed{{Digests: &digestStream{n: 1 << 20}, Blocks: 1 << 20}}, DefaultOptions())
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	return p, after.TotalAlloc - before.TotalAlloc
}
