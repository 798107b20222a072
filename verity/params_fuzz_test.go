package verity

import (
	"bytes"
	"context"
	"math"
	"testing"
)

// FuzzVerityParams feeds parameters as a command line or a manifest would
// give them to Validate and the geometry: whatever they are, nothing
// panics, and parameters that are accepted describe a tree whose every
// offset fits an int64 and whose levels cover the data.
func FuzzVerityParams(f *testing.F) {
	f.Add("sha256", 4096, 4096, uint64(0), int64(0), false)
	f.Add("sha1", 512, 1024, uint64(300), int64(1024), false)
	f.Add("sha512", 4096, 512, uint64(1<<40), int64(8192), true)
	f.Add("sha256", 4096, 4096, uint64(1<<52+1), int64(0), false)
	f.Add("sha256", 4096, 4096, uint64(0), int64(math.MaxInt64&^511), false)
	f.Add("md5", 1000, 8192, uint64(1), int64(-512), true)
	f.Fuzz(func(t *testing.T, alg string, dbs, hbs int, dataBlocks uint64, offset int64, noSB bool) {
		p := Params{Hash: alg, DataBlockSize: dbs, HashBlockSize: hbs, DataBlocks: dataBlocks, HashOffset: offset, NoSuperblock: noSB}
		if p.Validate() != nil {
			return
		}
		if dataBlocks > math.MaxInt64/uint64(dbs) {
			t.Fatalf("accepted %+v: %d blocks of %d bytes overflow an int64", p, dataBlocks, dbs)
		}
		blocks := max(dataBlocks, 1)
		g, err := p.geometry(blocks)
		if err != nil {
			return
		}
		if g.end > math.MaxInt64/uint64(hbs) {
			t.Fatalf("accepted %+v: the tree ends at hash block %d, past an int64 of bytes", p, g.end)
		}
		first := int64(g.start) * int64(hbs)
		if first < offset || (!noSB && first < offset+SuperblockSize) {
			t.Fatalf("accepted %+v: the tree starts at byte %d, inside the superblock or before the offset", p, first)
		}
		below := blocks
		for i := 0; i < g.levels; i++ {
			n := g.levelSize[i]
			if n*uint64(g.perBlock) < below || (n-1)*uint64(g.perBlock) >= below {
				t.Fatalf("accepted %+v: level %d has %d blocks for %d entries", p, i, n, below)
			}
			below = n
		}
		if g.levels > 0 && g.levelSize[g.levels-1] != 1 {
			t.Fatalf("accepted %+v: the top level has %d blocks", p, g.levelSize[g.levels-1])
		}
		if dataBlocks == 0 || dataBlocks > 16 {
			return
		}
		// Small enough to build: the tree covers exactly the asked blocks.
		data := bytes.Repeat([]byte{0xa5}, int(dataBlocks)*dbs+dbs/2)
		tr, err := Build(context.Background(), bytes.NewReader(data), int64(len(data)), p)
		if err != nil {
			t.Fatalf("accepted %+v but Build fails: %v", p, err)
		}
		if tr.DataBlocks != dataBlocks || tr.HashDeviceSize != int64(g.end)*int64(hbs) {
			t.Fatalf("accepted %+v: built %d blocks, hash device %d bytes", p, tr.DataBlocks, tr.HashDeviceSize)
		}
	})
}
