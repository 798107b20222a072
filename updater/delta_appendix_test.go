package updater

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/delta"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/manifest"
)

// metaLike makes a root image the way mkfs.erofs lays out a tree: each
// file on blocks of its own, and every perMeta files a block of "inodes"
// that holds the block addresses of the files after it (so it changes
// when they move). The files' contents are written to dir, the tree the
// image is "made from". Sizes and seeds as fsLike.
func metaLike(t testing.TB, size int, files []int, seeds []int64, perMeta int, dir string) []byte {
	t.Helper()
	img := make([]byte, size)
	off := 0
	for i, n := range files {
		if i%perMeta == 0 {
			var meta bytes.Buffer
			next := off + 4096
			for j := i; j < min(i+perMeta, len(files)); j++ {
				fmt.Fprintf(&meta, "inode %d: block %d, %d bytes\n", j, next/4096, files[j])
				next += (files[j] + 4095) &^ 4095
			}
			copy(img[off:off+4096], meta.Bytes())
			off += 4096
		}
		rnd := rand.New(rand.NewSource(seeds[i]))
		data := make([]byte, n)
		for j := range data {
			data[j] = byte('a' + rnd.Intn(20))
		}
		if off+n > size {
			t.Fatalf("the files do not fit in %d bytes", size)
		}
		copy(img[off:], data)
		off += (n + 4095) &^ 4095
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// metaUpdate is packageUpdate for metaLike images: files 5 and 6 replaced
// by files of other sizes, so that every block of inodes after them
// changes. It returns the images and the file blocks of the second tree.
func metaUpdate(t testing.TB, size int) (v1, v2 []byte, fb *image.FileBlocks) {
	t.Helper()
	rnd := rand.New(rand.NewSource(3))
	var files []int
	var seeds []int64
	for total := 0; total < size/2; {
		n := 1000 + rnd.Intn(120000)
		files = append(files, n)
		seeds = append(seeds, int64(len(files)))
		total += (n + 4095) &^ 4095
	}
	v1 = metaLike(t, size, files, seeds, 6, t.TempDir())
	for i := 5; i < 7; i++ {
		files[i] += 7000 + i*1000
		seeds[i] += 5000
	}
	dir := t.TempDir()
	v2 = metaLike(t, size, files, seeds, 6, dir)
	fb, err := image.HashFileBlocks(context.Background(), dir, deltaSalt, delta.BlockSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	return v1, v2, fb
}

// checkedWrites fails the test on any write to the root partition that is
// not the release's bytes at that offset: nothing unchecked is written.
type checkedWrites struct {
	blockdev.Device
	want   []byte
	mu     sync.Mutex
	writes int
	bad    []int64
}

func (c *checkedWrites) WriteAt(p []byte, off int64) (int, error) {
	c.mu.Lock()
	c.writes++
	c.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(c.want)) || !bytes.Equal(p, c.want[off:off+int64(len(p))]) {
		c.mu.Lock()
		c.bad = append(c.bad, off)
		c.mu.Unlock()
	}
	return c.Device.WriteAt(p, off)
}

// updaterCheckingWrites is the fixture's updater, its root partition
// writes checked against the release.
func (d *deltaFixture) updaterCheckingWrites() (*Updater, *checkedWrites) {
	d.t.Helper()
	u0 := d.updater()
	o := u0.o
	u0.Unlock()
	cw := &checkedWrites{want: d.v2.root}
	o.WrapPartition = func(kind string, dev blockdev.Device) blockdev.Device {
		if kind == KindRoot {
			cw.Device = dev
			return cw
		}
		return dev
	}
	u, err := New(o)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(u.Unlock)
	return u, cw
}

// TestDeltaAppendix: on images whose blocks of metadata change wherever
// the files after a changed one moved, the frames mixing them with file
// data are assembled from the index's appendix and the active root's
// blocks: fewer bytes and requests than without the appendix, set B byte
// for byte the release, every write the release's bytes.
func TestDeltaAppendix(t *testing.T) {
	t.Parallel()
	a, b, fb := metaUpdate(t, 8<<20)
	without := newDeltaFixtureOf(t, 8, a, b, nil, nil)
	pw := without.update(without.updater()).Delta
	d := newDeltaFixtureOf(t, 8, a, b, fb, nil)
	dry := d.dryRuns()
	u, cw := d.updaterCheckingWrites()
	plan := d.update(u)
	dp := plan.Delta
	t.Logf("without the appendix: %s", pw)
	t.Logf("with it: %s (index %d bytes, appendix %d)", dp, dp.IndexBytes, dp.x.AppendixSize())
	if dp.FellBack != "" || dp.Assembled == 0 || dp.Unassembled != 0 || dp.Made != dp.Requests || dp.Fetched != dp.FetchBytes {
		t.Fatalf("plan %+v", *dp)
	}
	if dry.Assembled != dp.Assembled || dry.FetchBytes != dp.FetchBytes || dry.Requests != dp.Requests {
		t.Errorf("the dry run planned %d assembled, %d bytes in %d requests; the update %d, %d in %d",
			dry.Assembled, dry.FetchBytes, dry.Requests, dp.Assembled, dp.FetchBytes, dp.Requests)
	}
	if pw.Assembled != 0 || dp.Requests >= pw.Requests || dp.FetchBytes+dp.IndexBytes >= pw.FetchBytes+pw.IndexBytes {
		t.Errorf("with the appendix %d bytes (index included) in %d requests, without %d in %d",
			dp.FetchBytes+dp.IndexBytes, dp.Requests, pw.FetchBytes+pw.IndexBytes, pw.Requests)
	}
	if len(cw.bad) != 0 || cw.writes == 0 {
		t.Errorf("%d writes, of other bytes than the release's at %v", cw.writes, cw.bad)
	}
}

// TestDeltaAttackAppendixBlock: a signed index whose appendix holds, for a
// frame that is assembled, a block that is not the one its digest names
// (it decodes to the right size): the frame is fetched instead, nothing
// unchecked is written, set B is byte for byte the release. A blob that
// decodes to more than the frame is fetched instead too.
func TestDeltaAttackAppendixBlock(t *testing.T) {
	t.Parallel()
	a, b, fb := metaUpdate(t, 8<<20)
	// Which frames are assembled, from an honest index.
	honest := newDeltaFixtureOf(t, 8, a, b, fb, nil)
	hp := honest.dryRuns()
	if len(hp.p.Assemblies) < 2 {
		t.Fatalf("%d frames assembled", len(hp.p.Assemblies))
	}
	first, second := hp.p.Assemblies[0].Frame, hp.p.Assemblies[1].Frame
	enc, _ := zstd.NewWriter(nil)
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	d := newDeltaFixtureOf(t, 8, a, b, fb, func(u *manifest.Update, files map[string][]byte) {
		for name := range files {
			if !strings.HasSuffix(name, ".didx") {
				continue
			}
			x, err := delta.Parse(files[name])
			if err != nil {
				t.Fatal(err)
			}
			m := x.FindMixed(first)
			raw, err := dec.DecodeAll(m.Blob, nil)
			if err != nil {
				t.Fatal(err)
			}
			raw[100] ^= 0x20 // another block, same size
			m.Blob = enc.EncodeAll(raw, nil)
			m = x.FindMixed(second)
			m.Blob = enc.EncodeAll(make([]byte, 2*x.FrameSize), nil) // more than the frame
			if files[name], err = x.Marshal(); err != nil {
				t.Fatal(err)
			}
		}
	})
	dp0 := d.dryRuns()
	if dp0.Assembled != hp.Assembled {
		t.Fatalf("the crafted index plans %d frames assembled, the honest one %d", dp0.Assembled, hp.Assembled)
	}
	u, cw := d.updaterCheckingWrites()
	plan := d.update(u)
	dp := plan.Delta
	t.Logf("%s; %d fetched instead of assembled, %d requests made", dp, dp.Unassembled, dp.Made)
	if dp.FellBack != "" || dp.Unassembled != 2 || dp.Made != dp.Requests+2 || d.srv.rootServed.Load() != 0 {
		t.Fatalf("plan %+v", *dp)
	}
	if len(cw.bad) != 0 || cw.writes == 0 {
		t.Errorf("%d writes, of other bytes than the release's at %v", cw.writes, cw.bad)
	}
}

// changedAt is a seed that reads one byte other than it was when the plan
// was made: a seed block that changed between planning and assembly.
type changedAt struct {
	r  io.ReaderAt
	at int64
}

func (c changedAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	if c.at >= off && c.at < off+int64(n) {
		p[c.at-off] ^= 0x40
	}
	return n, err
}

// TestDeltaAssembleSeedChanges: a frame planned to be assembled from the
// active root's blocks is refused, not made, when one of those blocks
// reads back other than planned (the executor then fetches it); as
// planned, it is the release's frame byte for byte.
func TestDeltaAssembleSeedChanges(t *testing.T) {
	t.Parallel()
	a, b, fb := metaUpdate(t, 8<<20)
	var seek bytes.Buffer
	w, err := image.NewSeekableWriter(&seek, image.SeekableOptions{Salt: deltaSalt, FileBlocks: fb, AppendixMax: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	x, err := w.Index("root.seek.zst")
	if err != nil {
		t.Fatal(err)
	}
	digs := x.NewHasher().AppendDigests(nil, a)
	p, err := delta.NewPlan(context.Background(), x, []delta.Seed{{Digests: bytes.NewReader(digs), Blocks: int64(len(a) / delta.BlockSize)}},
		delta.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Assemblies) == 0 {
		t.Fatalf("no frame assembled: %d mixed, %d copied, %d missing of %d", len(x.Mixed), p.Copied, p.Missing, len(x.Frames))
	}
	as := p.Assemblies[0]
	seedAt := int64(-1)
	for _, pt := range as.Parts {
		if pt.Seed == 0 {
			seedAt = pt.Offset + 100
			break
		}
	}
	if seedAt < 0 {
		t.Fatalf("frame %d takes no block from the seed", as.Frame)
	}
	dec, err := delta.NewFrameDecoder(x.FrameSize)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	fs := int64(x.FrameSize)
	for _, changed := range []bool{false, true} {
		var seed io.ReaderAt = bytes.NewReader(a)
		if changed {
			seed = changedAt{seed, seedAt}
		}
		e := &deltaExec{x: x, p: p, seeds: []io.ReaderAt{seed}, h: x.NewHasher(), dec: dec, buf: make([]byte, x.FrameSize)}
		got, err := e.assemble(as.Frame, fs)
		if changed {
			if !errors.Is(err, delta.ErrMismatch) {
				t.Fatalf("a seed block changed: %v", err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, b[int64(as.Frame)*fs:int64(as.Frame+1)*fs]) {
			t.Fatalf("as planned: %v", err)
		}
	}
}
