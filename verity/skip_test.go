package verity

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/iotest"
)

// checkSkipping runs a Checker that skips the first n data blocks of data
// and is fed the rest as piece says; it returns its verdict, like check.
func checkSkipping(ctx context.Context, hash []byte, p Params, root, data []byte, n uint64, piece int) (*Checker, error) {
	c, err := NewChecker(ctx, bytes.NewReader(hash), p, root)
	if err != nil {
		return nil, err
	}
	if err := c.Skip(n); err != nil {
		c.Close()
		return c, err
	}
	return c, feed(c, data[n*uint64(p.DataBlockSize):], piece)
}

// skipPoints are the numbers of data blocks to skip on a device of
// dataBlocks blocks, per entries to a level-0 block: none, one, one before,
// at and after the first level-0 block boundary, all but the last, all.
func skipPoints(dataBlocks uint64, per int) []uint64 {
	var ns []uint64
	for _, n := range []uint64{0, 1, uint64(per) - 1, uint64(per), uint64(per) + 1, dataBlocks - 1, dataBlocks} {
		if n <= dataBlocks && !slices.Contains(ns, n) {
			ns = append(ns, n)
		}
	}
	return ns
}

// TestCheckerSkip: for every geometry of checkerCases (hash algorithms,
// block sizes 512..4096, salts, superblocks, one block, a partial last
// level-0 block, several levels, bytes past the covered blocks) and every
// skipPoints n, a Checker that skips n blocks and is fed the data from
// block n on says what a Checker fed everything says: nil for good data
// (the same RootHash and Uncovered, with the root given or not), the same
// *MismatchError for a changed byte at or after block n, ErrShortData for
// data one byte short. A changed byte in the skipped blocks is, by design,
// not found: nothing of them is read.
func TestCheckerSkip(t *testing.T) {
	ctx := context.Background()
	for i, cc := range checkerCases() {
		t.Run(cc.name, func(t *testing.T) {
			d := makeDevice(t, cc, uint64(200+i))
			r := rand.New(rand.NewPCG(uint64(i), 4))
			root := d.tree.RootHash
			dbs := int64(d.p.DataBlockSize)
			covered := int64(d.p.DataBlocks) * dbs
			// Every way of feeding on the smaller devices (byte by byte
			// only on the smallest); on the bigger ones each changed byte
			// is fed one way, in turn.
			ways := []int{0, 4097, 3 << 20}
			if cc.size <= 64<<10 {
				ways = append(ways, 1)
			}
			big := cc.size > 1<<20

			full, err := check(ctx, d.hash, d.p, root, d.data, 4097)
			if err != nil {
				t.Fatalf("fed everything: %v", err)
			}
			// What a Checker fed everything says with the byte at off
			// changed (each the same whatever the feeding:
			// TestCheckerCorruptionLikeVerify).
			refs := map[int64]error{}
			ref := func(off int64) error {
				if err, ok := refs[off]; ok {
					return err
				}
				d.data[off] ^= 0x10
				_, err := check(ctx, d.hash, d.p, root, d.data, 4097)
				d.data[off] ^= 0x10
				var me *MismatchError
				if d.tree.g.levels == 0 { // the only block: its digest is the root
					if !errors.Is(err, ErrRootHashMismatch) {
						t.Fatalf("fed everything with byte %d changed: %v, want ErrRootHashMismatch", off, err)
					}
				} else if !errors.As(err, &me) || me.Device != "data" || me.Block != uint64(off/dbs) {
					t.Fatalf("fed everything with byte %d changed: %v, want data block %d refused", off, err, off/dbs)
				}
				refs[off] = err
				return err
			}

			for _, n := range skipPoints(d.p.DataBlocks, d.tree.g.perBlock) {
				skipped := int64(n) * dbs
				for _, piece := range ways {
					for _, given := range [][]byte{root, nil} {
						if given == nil && piece != 4097 {
							continue
						}
						c, err := checkSkipping(ctx, d.hash, d.p, given, d.data, n, piece)
						if d.tree.g.levels == 0 && n == 1 && given == nil {
							// The only block's digest is the root: without
							// one, there is nothing to skip against.
							if !errors.Is(err, ErrSkip) {
								t.Errorf("skip the only block, no root: %v, want ErrSkip", err)
							}
							continue
						}
						if err != nil {
							t.Fatalf("skip %d, pieces of %d, root %x: %v", n, piece, given, err)
						}
						if got := c.RootHash(); !bytes.Equal(got, root) {
							t.Errorf("skip %d, pieces of %d, root %x: RootHash %x, want %x", n, piece, given, got, root)
						}
						if c.Uncovered() != full.Uncovered() {
							t.Errorf("skip %d, pieces of %d: %d bytes uncovered, fed everything %d", n, piece, c.Uncovered(), full.Uncovered())
						}
					}
				}
				if n < d.p.DataBlocks {
					if _, err := checkSkipping(ctx, d.hash, d.p, root, d.data[:covered-1], n, 4097); !errors.Is(err, ErrShortData) {
						t.Errorf("skip %d, data one byte short: %v, want ErrShortData", n, err)
					}
				}

				// Changed bytes: the first and a random byte of block n and
				// the last covered byte (checked), the last byte of block
				// n-1 and a random skipped byte (not checked).
				// (On the bigger devices, only the bytes each side of the
				// skipped point.)
				var offs []int64
				if n < d.p.DataBlocks {
					offs = append(offs, skipped)
					if !big {
						offs = append(offs, skipped+r.Int64N(dbs), covered-1)
					}
				}
				if n > 0 {
					offs = append(offs, skipped-1)
					if !big {
						offs = append(offs, r.Int64N(skipped))
					}
				}
				for k, off := range offs {
					want := ref(off)
					if off < skipped {
						want = nil
					}
					d.data[off] ^= 0x10
					for j, piece := range ways {
						if big && j != k%len(ways) {
							continue
						}
						_, got := checkSkipping(ctx, d.hash, d.p, root, d.data, n, piece)
						if !sameError(got, want) {
							t.Errorf("skip %d, byte %d changed, pieces of %d: %v, want %v", n, off, piece, got, want)
						}
					}
					d.data[off] ^= 0x10
				}
			}
		})
	}
}

// TestCheckerSkipMisuse: Skip after Write or ReadFrom (even of nothing) or
// after another Skip, or of more blocks than the device has, is ErrSkip and
// leaves the Checker as it was; after Close it is ErrClosed; a failed
// Checker gives its sticky error; a cancelled context, its error, sticky
// from then on. Skip(0) changes nothing.
func TestCheckerSkipMisuse(t *testing.T) {
	ctx := context.Background()
	cc := caseNamed(t, "sha256 1024/2048 superblock at 1536, one full level and a block")
	d := makeDevice(t, cc, 9)
	root, dbs, blocks := d.tree.RootHash, d.p.DataBlockSize, d.p.DataBlocks
	newChecker := func(ctx context.Context) *Checker {
		t.Helper()
		c, err := NewChecker(ctx, bytes.NewReader(d.hash), d.p, root)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	// After data, whichever way it came, Skip is refused and changes
	// nothing: the rest of the data still checks.
	for name, start := range map[string]func(c *Checker) (int, error){
		"Write of a block":  func(c *Checker) (int, error) { return c.Write(d.data[:dbs]) },
		"Write of a byte":   func(c *Checker) (int, error) { return c.Write(d.data[:1]) },
		"Write of nothing":  func(c *Checker) (int, error) { return c.Write(nil) },
		"ReadFrom nothing":  func(c *Checker) (int, error) { n, err := c.ReadFrom(bytes.NewReader(nil)); return int(n), err },
		"Skip of one block": func(c *Checker) (int, error) { return dbs, c.Skip(1) },
	} {
		c := newChecker(ctx)
		n, err := start(c)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, k := range []uint64{0, 1, 2} {
			if err := c.Skip(k); !errors.Is(err, ErrSkip) {
				t.Errorf("Skip(%d) after %s: %v, want ErrSkip", k, name, err)
			}
		}
		if err := feed(c, d.data[n:], 4097); err != nil {
			t.Errorf("%s, refused Skips, then the rest of the data: %v", name, err)
		}
	}

	c := newChecker(ctx)
	for _, k := range []uint64{blocks + 1, blocks + 1000, 1 << 63, ^uint64(0)} {
		if err := c.Skip(k); !errors.Is(err, ErrSkip) {
			t.Errorf("Skip(%d) of %d blocks: %v, want ErrSkip", k, blocks, err)
		}
	}
	if err := c.Skip(0); err != nil {
		t.Errorf("Skip(0): %v", err)
	}
	if err := c.Skip(0); err != nil {
		t.Errorf("Skip(0) twice: %v", err)
	}
	if err := c.Skip(2); err != nil {
		t.Errorf("Skip(2) after Skip(0): %v", err)
	}
	if err := feed(c, d.data[2*dbs:], 4097); err != nil {
		t.Errorf("refused Skips, Skip(0), Skip(2), then the rest: %v", err)
	}

	// Skipping everything: Close succeeds at once, or after bytes past the
	// covered blocks, which are uncovered.
	c = newChecker(ctx)
	if err := c.Skip(blocks); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil || c.Uncovered() != 100 {
		t.Errorf("Skip(DataBlocks), 100 more bytes: Close %v, %d bytes uncovered, want nil, 100", err, c.Uncovered())
	}
	if err := c.Skip(0); !errors.Is(err, ErrClosed) {
		t.Errorf("Skip after Close: %v, want ErrClosed", err)
	}
	c = newChecker(ctx)
	c.Close()
	if err := c.Skip(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Skip after a Close with no data: %v, want ErrClosed", err)
	}

	// A failed Checker gives its error.
	errRead := errors.New("read error")
	c = newChecker(ctx)
	if _, err := c.ReadFrom(iotest.ErrReader(errRead)); !errors.Is(err, errRead) {
		t.Fatalf("ReadFrom a failing reader: %v", err)
	}
	if err := c.Skip(0); !errors.Is(err, errRead) {
		t.Errorf("Skip after a failed ReadFrom: %v, want its error", err)
	}
	c.Close()

	// A cancelled context stops Skip, and the Checker.
	cctx, cancel := context.WithCancel(ctx)
	c = newChecker(cctx)
	cancel()
	if err := c.Skip(1); !errors.Is(err, context.Canceled) {
		t.Errorf("Skip with a cancelled context: %v", err)
	}
	if err := c.Close(); !errors.Is(err, context.Canceled) {
		t.Errorf("Close after Skip was cancelled: %v", err)
	}
}

// recordingReaderAt records the offsets and sizes of the reads of a device.
type recordingReaderAt struct {
	r     io.ReaderAt
	mu    sync.Mutex
	reads [][2]int64
}

func (d *recordingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	d.reads = append(d.reads, [2]int64{off, int64(len(p))})
	d.mu.Unlock()
	return d.r.ReadAt(p, off)
}

func (d *recordingReaderAt) take() [][2]int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := d.reads
	d.reads = nil
	return r
}

// TestCheckerSkipReadsOnlyTheRest: Skip reads nothing, and a Checker that
// skipped n blocks then reads level 0 only from the block holding block
// n's entry on, each block once (what a resume costs is what is left, not
// what was done before).
func TestCheckerSkipReadsOnlyTheRest(t *testing.T) {
	ctx := context.Background()
	cc := caseNamed(t, "sha512 4096/512 long salt, 3 MiB and 5 blocks")
	d := makeDevice(t, cc, 10)
	g, hbs := d.tree.g, int64(cc.p.HashBlockSize)
	per := uint64(g.perBlock)
	l0Start, l0End := int64(g.levelStart[0])*hbs, int64(g.end)*hbs
	for _, n := range []uint64{1, 50 * per, 50*per + 3, d.p.DataBlocks - 1, d.p.DataBlocks} {
		dev := &recordingReaderAt{r: bytes.NewReader(d.hash)}
		c, err := NewChecker(ctx, dev, d.p, d.tree.RootHash)
		if err != nil {
			t.Fatal(err)
		}
		dev.take()
		if err := c.Skip(n); err != nil {
			t.Fatal(err)
		}
		if reads := dev.take(); len(reads) != 0 {
			t.Errorf("Skip(%d) read the hash device: %v", n, reads)
		}
		if err := feed(c, d.data[n*uint64(cc.p.DataBlockSize):], 4097); err != nil {
			t.Fatalf("skip %d: %v", n, err)
		}
		first, l0Bytes := int64(-1), int64(0)
		for _, rd := range dev.take() {
			if rd[0] < l0Start || rd[0] >= l0End {
				continue // the levels above, read to check level 0
			}
			if first < 0 {
				first = rd[0]
			}
			if rd[0] < first {
				t.Errorf("skip %d: level 0 read at %d, before the first read at %d", n, rd[0], first)
			}
			l0Bytes += rd[1]
		}
		wantFirst := l0Start + int64(n/per)*hbs
		rest := l0End - wantFirst
		if n == d.p.DataBlocks {
			wantFirst, rest = -1, 0
		}
		if first != wantFirst || l0Bytes != rest {
			t.Errorf("skip %d: level 0 read from %d, %d bytes; want from %d (level-0 block %d), %d bytes",
				n, first, l0Bytes, wantFirst, n/per, rest)
		}
	}
}

// TestHostileCheckerSkipHashDeviceChanges: the hash device changes after
// NewChecker checked it. A Checker that skipped n blocks still checks the
// level-0 block holding block n's entry against the levels above, all of
// it (an entry of a skipped block in it, too), and every later one; the
// level-0 blocks before it, wholly skipped, are not read.
func TestHostileCheckerSkipHashDeviceChanges(t *testing.T) {
	ctx := context.Background()
	cc := caseNamed(t, "sha256 512/512 no superblock at 4096, 3 MiB and 5 blocks")
	d := makeDevice(t, cc, 11)
	g, hbs := d.tree.g, int64(cc.p.HashBlockSize)
	per := uint64(g.perBlock)
	entry := func(blk uint64) int64 {
		l0 := int64(g.levelStart[0]) * hbs
		return l0 + int64(blk/per)*hbs + int64(blk%per)*int64(g.stride)
	}
	n := 20*per + 5
	for _, tc := range []struct {
		what  string
		off   int64
		found bool
	}{
		{"the entry of block n", entry(n), true},
		{"the entry of block n-1, in the same level-0 block", entry(n - 1), true},
		{"the first entry of the level-0 block holding n", entry(n - n%per), true},
		{"the entry of the last block", entry(d.p.DataBlocks - 1), true},
		{"the last entry of the level-0 block before", entry(n - n%per - 1), false},
		{"the first entry of level 0", entry(0), false},
	} {
		after := bytes.Clone(d.hash)
		after[tc.off] ^= 1
		dev := &swappingReaderAt{before: d.hash, after: after}
		c, err := NewChecker(ctx, dev, d.p, d.tree.RootHash)
		if err != nil {
			t.Fatal(err)
		}
		dev.swapped.Store(true)
		if err := c.Skip(n); err != nil {
			t.Fatal(err)
		}
		err = feed(c, d.data[n*uint64(cc.p.DataBlockSize):], 4097)
		var me *MismatchError
		switch {
		case tc.found && (!errors.As(err, &me) || me.Device != "hash" || me.Level != 1 ||
			me.Block != uint64(tc.off/hbs)):
			t.Errorf("%s changed after NewChecker: %v, want hash block %d refused", tc.what, err, tc.off/hbs)
		case !tc.found && err != nil:
			t.Errorf("%s changed after NewChecker, before the skipped point: %v, want nil (not read)", tc.what, err)
		}
	}
}

// TestCheckerSkipKeepsNoPerBlockState: Skip allocates nothing, however
// many blocks it skips.
func TestCheckerSkipKeepsNoPerBlockState(t *testing.T) {
	ctx := context.Background()
	cc := caseNamed(t, "sha256 4096/4096 salt, 3 MiB and 5 blocks")
	d := makeDevice(t, cc, 12)
	for _, n := range []uint64{1, d.p.DataBlocks / 2, d.p.DataBlocks} {
		const runs = 5
		cs := make([]*Checker, runs+1) // AllocsPerRun runs f once more first
		for i := range cs {
			c, err := NewChecker(ctx, bytes.NewReader(d.hash), d.p, d.tree.RootHash)
			if err != nil {
				t.Fatal(err)
			}
			cs[i] = c
		}
		i := 0
		var skipErr error
		allocs := testing.AllocsPerRun(runs, func() {
			if err := cs[i].Skip(n); err != nil && skipErr == nil {
				skipErr = err
			}
			i++
		})
		if skipErr != nil {
			t.Fatal(skipErr)
		}
		if allocs != 0 {
			t.Errorf("Skip(%d): %v allocations, want none", n, allocs)
		}
		for _, c := range cs {
			if err := feed(c, d.data[n*uint64(cc.p.DataBlockSize):], 3<<20); err != nil {
				t.Errorf("Skip(%d), then the rest: %v", n, err)
			}
		}
	}
}
