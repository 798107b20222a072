package verity

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// verifyInMemory is the verification Checker must agree with: the whole
// tree of the data built in memory, compared with the hash device, then
// the root (what Verify did before VerifyStream).
func verifyInMemory(ctx context.Context, data io.ReaderAt, size int64, hash io.ReaderAt, p Params, root []byte) error {
	if p.DataBlocks == 0 {
		p.DataBlocks = uint64(size) / uint64(p.DataBlockSize)
	}
	t, err := Build(ctx, data, size, p)
	if err != nil {
		return err
	}
	if err := t.Check(ctx, hash); err != nil {
		return err
	}
	return t.CheckRoot(root)
}

// ccase is a device to check: a geometry and an amount of data.
type ccase struct {
	name string
	p    Params
	size int64
}

// checkerCases covers the hash algorithms, block sizes from 512 to 4096,
// salts, superblocks and hash offsets, and data of one block, a few
// blocks, exactly one full level-0 block, one block more than that, and a
// few MiB (several levels, several batches), some with bytes past the last
// covered block.
func checkerCases() []ccase {
	salt32, _ := hex.DecodeString("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	geoms := []struct {
		name string
		p    Params
	}{
		{"sha256 4096/4096 salt", Params{Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, Salt: salt32}},
		{"sha1 512/1024 no salt", Params{Hash: "sha1", DataBlockSize: 512, HashBlockSize: 1024}},
		{"sha512 4096/512 long salt", Params{Hash: "sha512", DataBlockSize: 4096, HashBlockSize: 512, Salt: bytes.Repeat([]byte{0xa5, 0x5a}, 128)}},
		{"sha256 512/512 no superblock at 4096", Params{Hash: "sha256", DataBlockSize: 512, HashBlockSize: 512, Salt: []byte{1}, NoSuperblock: true, HashOffset: 4096}},
		{"sha256 1024/2048 superblock at 1536", Params{Hash: "sha256", DataBlockSize: 1024, HashBlockSize: 2048, Salt: salt32, HashOffset: 1536}},
		{"sha1 2048/4096 no superblock", Params{Hash: "sha1", DataBlockSize: 2048, HashBlockSize: 4096, Salt: []byte("salt"), NoSuperblock: true}},
	}
	var cs []ccase
	for _, g := range geoms {
		g.p.UUID = testUUID
		geo, err := g.p.geometry(1)
		if err != nil {
			panic(err)
		}
		dbs, per := int64(g.p.DataBlockSize), int64(geo.perBlock)
		for _, s := range []struct {
			name string
			size int64
		}{
			{"1 block", dbs},
			{"3 blocks and a tail", 3*dbs + 100},
			{"one full level", per * dbs},
			{"one full level and a block", (per + 1) * dbs},
			{"3 MiB and 5 blocks", 3<<20 + 5*dbs},
			{"three levels, two blocks in level 1", (per*per + per + 1) * dbs},
		} {
			if s.size > 3<<20+5*dbs {
				continue
			}
			cs = append(cs, ccase{g.name + ", " + s.name, g.p, s.size})
		}
	}
	limited := geoms[0].p
	limited.UUID, limited.DataBlocks = testUUID, 100
	return append(cs, ccase{"sha256 4096/4096, 100 of 300 blocks", limited, 300 * 4096})
}

// caseNamed is the case of checkerCases with that name.
func caseNamed(t testing.TB, name string) ccase {
	t.Helper()
	for _, c := range checkerCases() {
		if c.name == name {
			return c
		}
	}
	t.Fatalf("no case %q", name)
	return ccase{}
}

// device is a data image and its hash device, built with Format.
type device struct {
	data, hash []byte
	p          Params // with DataBlocks filled in, for NewChecker
	tree       *Tree
}

func makeDevice(t testing.TB, c ccase, seed uint64) device {
	t.Helper()
	data := randomBytes(int(c.size), seed)
	h := &memWriterAt{}
	tr, err := Format(context.Background(), bytes.NewReader(data), c.size, h, c.p)
	if err != nil {
		t.Fatal(err)
	}
	// The hash device is as long as veritysetup makes it.
	hash := make([]byte, tr.HashDeviceSize)
	copy(hash, h.b)
	return device{data: data, hash: hash, p: tr.Params, tree: tr}
}

// onlyReader hides the other methods of a reader (bytes.Reader's WriteTo),
// so io.Copy goes through the Checker's ReadFrom.
type onlyReader struct{ io.Reader }

// pieces are the ways the tests feed a Checker: ReadFrom (0), or Write in
// pieces of the given sizes (1: the first MiB and a bit, then 4097).
var pieces = []int{0, 1, 4097, 3 << 20}

// check runs a Checker over data fed as piece says and returns its
// verdict: the first error of NewChecker, Write, ReadFrom or Close.
func check(ctx context.Context, hash []byte, p Params, root, data []byte, piece int) (*Checker, error) {
	c, err := NewChecker(ctx, bytes.NewReader(hash), p, root)
	if err != nil {
		return nil, err
	}
	return c, feed(c, data, piece)
}

// feed writes data to c as piece says (see pieces) and returns the verdict:
// the first error of Write, ReadFrom or Close.
func feed(c *Checker, data []byte, piece int) error {
	if piece == 0 {
		if _, err := io.Copy(c, onlyReader{bytes.NewReader(data)}); err != nil {
			if cerr := c.Close(); !errors.Is(cerr, err) {
				return fmt.Errorf("Close says %w, after ReadFrom said %w", cerr, err)
			}
			return err
		}
		return c.Close()
	}
	ones := len(data)
	if piece == 1 {
		// Byte by byte across the first batch boundary, then on in pieces
		// of 4097 bytes: a few MiB byte by byte is slow under -race.
		ones = min(len(data), chunkBytes+64<<10)
	}
	for rest := data; len(rest) > 0; {
		if len(data)-len(rest) >= ones {
			piece = 4097
		}
		n, err := c.Write(rest[:min(piece, len(rest))])
		if err != nil {
			if cerr := c.Close(); !errors.Is(cerr, err) {
				return fmt.Errorf("Close says %w, after Write said %w", cerr, err)
			}
			return err
		}
		rest = rest[n:]
	}
	return c.Close()
}

// sameError says whether two verdicts are the same: both nil, the same
// *MismatchError, or the same sentinel.
func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var ma, mb *MismatchError
	if errors.As(a, &ma) || errors.As(b, &mb) {
		return errors.As(a, &ma) && errors.As(b, &mb) && *ma == *mb
	}
	for _, s := range []error{ErrRootHashMismatch, ErrShortData, ErrParams, context.Canceled} {
		if errors.Is(a, s) || errors.Is(b, s) {
			return errors.Is(a, s) && errors.Is(b, s)
		}
	}
	return false
}

// TestCheckerAgreesWithBuild: on good data, whatever the geometry and
// however the data is fed, a Checker accepts it with the root Build
// computes, and computes that root when given none; VerifyStream and the
// in-memory verification accept it too.
func TestCheckerAgreesWithBuild(t *testing.T) {
	ctx := context.Background()
	for i, cc := range checkerCases() {
		t.Run(cc.name, func(t *testing.T) {
			d := makeDevice(t, cc, uint64(i))
			root := d.tree.RootHash
			if err := verifyInMemory(ctx, bytes.NewReader(d.data), cc.size, bytes.NewReader(d.hash), cc.p, root); err != nil {
				t.Fatalf("Build+Check+CheckRoot: %v", err)
			}
			if err := VerifyStream(ctx, bytes.NewReader(d.data), cc.size, bytes.NewReader(d.hash), cc.p, root); err != nil {
				t.Fatalf("VerifyStream: %v", err)
			}
			for _, piece := range pieces {
				for _, given := range [][]byte{root, nil} {
					if given == nil && piece == 1 {
						continue
					}
					c, err := check(ctx, d.hash, d.p, given, d.data, piece)
					if err != nil {
						t.Fatalf("pieces of %d, root %x: %v", piece, given, err)
					}
					if got := c.RootHash(); !bytes.Equal(got, root) {
						t.Errorf("pieces of %d, root %x: RootHash %x, Build's %x", piece, given, got, root)
					}
					// (Build, given DataBlocks, does not read past them.)
					if want := cc.size - int64(d.p.DataBlocks)*int64(cc.p.DataBlockSize); c.Uncovered() != want {
						t.Errorf("pieces of %d: %d bytes uncovered, want %d", piece, c.Uncovered(), want)
					}
				}
			}
		})
	}
}

// flip is one byte of a device to change.
type flip struct {
	what  string
	hash  bool // in the hash device, else in the data
	off   int64
	entry bool // in the digest of a level-0 entry
}

// flips picks bytes across the data (first, last and a middle covered
// block), each level of the tree (its first byte, a random one, the last
// byte of its last block, the first entry of its last block), the spare
// areas (the tail of the last block of each level, an entry's padding).
func flips(d device, r *rand.Rand) []flip {
	p, g := d.tree.Params, d.tree.g
	dbs, hbs := int64(p.DataBlockSize), int64(p.HashBlockSize)
	covered := int64(p.DataBlocks) * dbs
	fs := []flip{
		{what: "first data block", off: 0},
		{what: "middle data block", off: r.Int64N(covered)},
		{what: "last data block", off: covered - 1},
	}
	for lvl := 0; lvl < g.levels; lvl++ {
		start, n := int64(g.levelStart[lvl])*hbs, int64(g.levelSize[lvl])*hbs
		last := start + n - hbs
		used := int64(g.entries(lvl, p.DataBlocks)) - (int64(g.levelSize[lvl])-1)*int64(g.perBlock)
		add := func(what string, off int64) {
			inBlock := (off - start) % hbs
			entry := lvl == 0 && inBlock/int64(g.stride) < int64(g.perBlock) && inBlock%int64(g.stride) < int64(g.digestSize) &&
				(off < last || inBlock < used*int64(g.stride))
			fs = append(fs, flip{what: fmt.Sprintf("level %d: %s", lvl, what), hash: true, off: off, entry: entry})
		}
		add("first byte", start)
		add("random byte", start+r.Int64N(n))
		add("last byte", start+n-1)
		add("last block's first entry", last)
		if used < int64(g.perBlock) {
			add("last block's spare tail", last+used*int64(g.stride)+r.Int64N(hbs-used*int64(g.stride)))
		}
		if g.stride > g.digestSize {
			add("an entry's padding", start+int64(g.digestSize))
		}
	}
	return fs
}

// TestCheckerCorruptionLikeVerify changes one byte at a time across the
// data and every level of the tree, and the root: VerifyStream gives
// exactly the error the in-memory verification gives (veritysetup's
// positions: TestCorruptionFoundLikeVeritysetup), and so does a Checker,
// fed in every way, except for a byte of a level-0 entry, which it finds
// before any data comes, as its level-0 block disagreeing with the level
// above (or the root).
func TestCheckerCorruptionLikeVerify(t *testing.T) {
	ctx := context.Background()
	kinds := map[string]int{}
	for i, cc := range checkerCases() {
		t.Run(cc.name, func(t *testing.T) {
			d := makeDevice(t, cc, uint64(50+i))
			r := rand.New(rand.NewPCG(uint64(i), 2))
			root := d.tree.RootHash
			verdicts := func(root []byte) (ref, stream error) {
				ref = verifyInMemory(ctx, bytes.NewReader(d.data), cc.size, bytes.NewReader(d.hash), cc.p, root)
				stream = VerifyStream(ctx, bytes.NewReader(d.data), cc.size, bytes.NewReader(d.hash), cc.p, root)
				return ref, stream
			}
			for _, f := range flips(d, r) {
				target := d.data
				if f.hash {
					target = d.hash
				}
				target[f.off] ^= 0x40
				ref, stream := verdicts(root)
				var got [4]error
				for k, piece := range pieces {
					if cc.size <= 1<<20 || piece == 0 || piece == 4097 {
						_, got[k] = check(ctx, d.hash, d.p, root, d.data, piece)
					}
				}
				target[f.off] ^= 0x40

				name := fmt.Sprintf("%s @%d", f.what, f.off)
				if d.tree.g.levels == 0 && f.hash {
					continue // a single block has no tree: nothing on the hash device is read
				}
				if ref == nil {
					t.Errorf("%s: not caught by the in-memory verification", name)
					continue
				}
				if !sameError(stream, ref) {
					t.Errorf("%s: VerifyStream says %v, in memory %v", name, stream, ref)
				}
				want := ref
				if f.entry {
					g := d.tree.g
					blk := uint64(f.off) / uint64(cc.p.HashBlockSize)
					off := int64(blk) * int64(cc.p.HashBlockSize)
					want = &MismatchError{Device: "hash", Block: blk, Offset: off, Byte: off, Level: 1}
					if g.levels == 1 {
						want = ErrRootHashMismatch
					}
				}
				for k, piece := range pieces {
					if cc.size > 1<<20 && piece != 0 && piece != 4097 {
						continue // every way only on the smaller devices
					}
					if !sameError(got[k], want) {
						t.Errorf("%s, pieces of %d: Checker says %v, want %v", name, piece, got[k], want)
					}
				}
				var me *MismatchError
				switch {
				case errors.As(ref, &me) && me.Spare:
					kinds["spare"]++
				case errors.As(ref, &me):
					kinds[me.Device]++
				case errors.Is(ref, ErrRootHashMismatch):
					kinds["root"]++
				}
			}
			wrong := bytes.Clone(root)
			wrong[len(wrong)-1] ^= 1
			ref, stream := verdicts(wrong)
			if !errors.Is(ref, ErrRootHashMismatch) || !errors.Is(stream, ErrRootHashMismatch) {
				t.Errorf("wrong root: in memory %v, VerifyStream %v", ref, stream)
			}
			for _, piece := range pieces {
				if _, err := check(ctx, d.hash, d.p, wrong, d.data, piece); !errors.Is(err, ErrRootHashMismatch) {
					t.Errorf("wrong root, pieces of %d: %v", piece, err)
				}
			}
		})
	}
	t.Logf("errors by kind: %v", kinds)
	if kinds["data"] == 0 || kinds["hash"] == 0 || kinds["spare"] == 0 || kinds["root"] == 0 {
		t.Errorf("the flips did not reach every kind of error: %v", kinds)
	}
}

// TestVerifyStreamOrderLikeVerify changes several bytes at once across the
// data and the tree (every pair of the flips, and random triples):
// VerifyStream still reports the one error the in-memory verification
// reports first (level 0, data and spare areas by position, then each
// level up, then the root), and a Checker (on a quarter of them) refuses.
func TestVerifyStreamOrderLikeVerify(t *testing.T) {
	ctx := context.Background()
	for i, cc := range checkerCases() {
		if cc.size < 8192 || cc.size > 1<<20 {
			continue
		}
		d := makeDevice(t, cc, uint64(80+i))
		r := rand.New(rand.NewPCG(uint64(i), 3))
		all := flips(d, r)
		var sets [][]flip
		for a := range all {
			for b := a + 1; b < len(all); b++ {
				sets = append(sets, []flip{all[a], all[b]})
			}
		}
		treeStart := int64(d.tree.HashStart) * int64(cc.p.HashBlockSize)
		for range 10 {
			var set []flip
			for range 3 {
				f := all[r.IntN(len(all))]
				if r.IntN(2) == 0 { // anywhere, not only where flips aims
					f = flip{what: "random hash byte", hash: true, off: treeStart + r.Int64N(d.tree.HashDeviceSize-treeStart)}
				}
				set = append(set, f)
			}
			sets = append(sets, set)
		}
		for n, set := range sets {
			apply := func() {
				for _, f := range set {
					if f.hash {
						d.hash[f.off] ^= 0x08
					} else {
						d.data[f.off] ^= 0x08
					}
				}
			}
			apply()
			ref := verifyInMemory(ctx, bytes.NewReader(d.data), cc.size, bytes.NewReader(d.hash), cc.p, d.tree.RootHash)
			stream := VerifyStream(ctx, bytes.NewReader(d.data), cc.size, bytes.NewReader(d.hash), cc.p, d.tree.RootHash)
			// VerifyReader over the same bytes (a reader that gives them
			// a few at a time) says the same.
			reader := VerifyReader(ctx, iotest.HalfReader(bytes.NewReader(d.data)), cc.size, bytes.NewReader(d.hash), cc.p, d.tree.RootHash)
			if !sameError(reader, stream) {
				t.Errorf("%s, flips %v: VerifyReader says %v, VerifyStream %v", cc.name, set, reader, stream)
			}
			var got error
			if n%4 == 0 {
				_, got = check(ctx, d.hash, d.p, d.tree.RootHash, d.data, 4097)
			}
			apply() // the same flips again undo them
			if !sameError(stream, ref) {
				t.Errorf("%s, flips %v: VerifyStream says %v, in memory %v", cc.name, set, stream, ref)
			}
			if n%4 == 0 && (ref == nil) != (got == nil) {
				t.Errorf("%s, flips %v: Checker says %v, in memory %v", cc.name, set, got, ref)
			}
		}
	}
}

// TestCheckerShortData: data that ends before its last data block fails
// at Close (and VerifyStream, given too small a size, at once), with
// ErrShortData.
func TestCheckerShortData(t *testing.T) {
	ctx := context.Background()
	cc := caseNamed(t, "sha256 4096/4096 salt, 3 MiB and 5 blocks")
	d := makeDevice(t, cc, 7)
	for _, n := range []int{0, 1, 4096, len(d.data) - 4096, len(d.data) - 1} {
		for _, piece := range pieces {
			if _, err := check(ctx, d.hash, d.p, d.tree.RootHash, d.data[:n], piece); !errors.Is(err, ErrShortData) {
				t.Errorf("%d of %d bytes, pieces of %d: %v, want ErrShortData", n, len(d.data), piece, err)
			}
		}
	}
	for _, verify := range []func(context.Context, io.ReaderAt, int64, io.ReaderAt, Params, []byte) error{VerifyStream, verifyInMemory} {
		if err := verify(ctx, bytes.NewReader(d.data), cc.size-1, bytes.NewReader(d.hash), d.p, d.tree.RootHash); !errors.Is(err, ErrShortData) {
			t.Errorf("verify with a size one byte short: %v, want ErrShortData", err)
		}
	}
	c, err := check(ctx, d.hash, d.p, d.tree.RootHash, d.data, 4097)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{1}); !errors.Is(err, ErrClosed) {
		t.Errorf("write after Close: %v", err)
	}
	if _, err := c.ReadFrom(bytes.NewReader([]byte{1})); !errors.Is(err, ErrClosed) {
		t.Errorf("ReadFrom after Close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("Close twice: %v", err)
	}
	if _, err := NewChecker(ctx, bytes.NewReader(d.hash), cc.p, nil); !errors.Is(err, ErrParams) {
		t.Errorf("NewChecker without DataBlocks: %v, want ErrParams", err)
	}
}

// TestCheckerStickyError: once a data block is found bad, every later
// Write and Close says so, naming the first bad block even when later
// batches went wrong too.
func TestCheckerStickyError(t *testing.T) {
	ctx := context.Background()
	cc := caseNamed(t, "sha256 4096/4096 salt, 3 MiB and 5 blocks")
	d := makeDevice(t, cc, 8)
	bad := bytes.Clone(d.data)
	for _, off := range []int{3 << 20, 2 << 20, 1<<20 + 5} { // bad blocks in three batches
		bad[off] ^= 1
	}
	c, err := NewChecker(ctx, bytes.NewReader(d.hash), d.p, d.tree.RootHash)
	if err != nil {
		t.Fatal(err)
	}
	var first error
	for rest := bad; len(rest) > 0 && first == nil; {
		n, err := c.Write(rest[:min(len(rest), 300000)])
		rest, first = rest[n:], err
	}
	if first == nil {
		first = c.Close()
	}
	var me *MismatchError
	if !errors.As(first, &me) || me.Device != "data" || me.Block != (1<<20+5)/4096 {
		t.Fatalf("first error %v, want data block %d", first, (1<<20+5)/4096)
	}
	if _, err := c.Write(d.data[:4096]); !sameError(err, first) && !errors.Is(err, ErrClosed) {
		t.Errorf("write after the error: %v", err)
	}
	if err := c.Close(); err != nil && !sameError(err, first) && !errors.Is(err, ErrClosed) {
		t.Errorf("Close after the error: %v", err)
	}
}
