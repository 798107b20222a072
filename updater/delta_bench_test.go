package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/updog/updog/delta"
	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
	"github.com/updog/updog/verity"
)

// peakHeap samples the Go heap in use (and stacks) until stop is called,
// and returns the highest sample (stop may be called again for the same
// value): the client's peak memory once the benchmark's own heap is taken
// off, as far as Go allocates it (the kernel's page cache not counted).
func peakHeap() (stop func() uint64) {
	var mu sync.Mutex
	var peak uint64
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peak = max(peak, ms.HeapInuse+ms.StackInuse)
			mu.Unlock()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() uint64 {
		once.Do(func() { close(done) })
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// BenchmarkDeltaInstall: a delta install of a one-package change (the
// proof's ext4 releases: a 128 MiB root, 14 files of 1.4 MB replaced)
// against a full install of the same release from the same loopback
// server, under updog's memory limit: bytes from the server, wall time,
// the Go heap's peak, and the ratios.
func BenchmarkDeltaInstall(b *testing.B) {
	f := newFixtureRoot(b, proofRootMiB)
	dir := b.TempDir()
	t1, t2 := filepath.Join(dir, "tree1"), filepath.Join(dir, "tree2")
	writeProofTree(b, t1, false)
	writeProofTree(b, t2, true)
	rel1 := proofRelease(b, dir, image.FSExt4, "1.0.0", t1)
	rel2 := proofRelease(b, dir, image.FSExt4, "1.1.0", t2)
	out1, out2 := filepath.Join(dir, "out-1.0.0"), filepath.Join(dir, "out-1.1.0")
	r1 := &testRelease{version: "1.0.0", boot: readZstd(b, filepath.Join(out1, rel1.Images.Boot.Target)),
		root: readZstd(b, filepath.Join(out1, rel1.Images.Root.Target)), hash: readZstd(b, filepath.Join(out1, rel1.Images.Hash.Target))}
	r2 := &testRelease{version: "1.1.0", boot: readZstd(b, filepath.Join(out2, rel2.Images.Boot.Target)),
		root: readZstd(b, filepath.Join(out2, rel2.Images.Root.Target)), hash: readZstd(b, filepath.Join(out2, rel2.Images.Hash.Target))}
	f.writeSet(gptprio.SetA, r1)
	for _, name := range []string{rel2.Images.Boot.Target, rel2.Images.Root.Target, rel2.Images.Hash.Target,
		rel2.Delta.Seekable.Target, rel2.Delta.Index.Target} {
		bs, err := os.ReadFile(filepath.Join(out2, name))
		if err != nil {
			b.Fatal(err)
		}
		os.WriteFile(filepath.Join(f.staging, name), bs, 0o644)
	}
	v, _ := manifest.ParseVersion(rel2.Version)
	if err := f.m.AddUpdate(&manifest.Update{Variant: rel2.Variant, Arch: rel2.Arch, Version: v, Images: rel2.ManifestImages()}, nil); err != nil {
		b.Fatal(err)
	}
	f.publish(repo.Options{})
	srv := &rangeServer{f: f, seek: rel2.Delta.Seekable.Target, index: rel2.Delta.Index.Target, rootName: rel2.Images.Root.Target}
	f.setHandler(srv)
	// Only the sums of 1.1.0's images are kept: the benchmark's own heap
	// stays small, so updog's memory limit means what it means on a host.
	want := map[string][32]byte{"boot": sha256.Sum256(r2.boot), "root": sha256.Sum256(r2.root), "hash": sha256.Sum256(r2.hash)}
	sizes := map[string]int{"boot": len(r2.boot), "root": len(r2.root), "hash": len(r2.hash)}
	r1, r2 = nil, nil
	check := func() {
		_, l := f.table()
		sp := l.Sets[gptprio.SetB]
		for kind, n := range map[string]int{"boot": sp.Boot, "root": sp.Root, "hash": sp.Hash} {
			if sha256.Sum256(f.partition(n, sizes[kind])) != want[kind] {
				b.Fatalf("set B's %s partition does not hold 1.1.0's image", kind)
			}
		}
	}
	old := debug.SetMemoryLimit(48 << 20)
	defer debug.SetMemoryLimit(old)
	zeroB := func() {
		// Set B as a host has it before its first update: empty.
		f.writeSet(gptprio.SetB, &testRelease{boot: make([]byte, sizes["boot"]), root: make([]byte, sizes["root"]), hash: make([]byte, sizes["hash"])})
	}
	type result struct {
		bytes int64
		wall  time.Duration
		peak  uint64
	}
	install := func(mode string) result {
		zeroB()
		f.cfg.Delta = mode
		// A state directory of its own: the install must not be found
		// staged by the one before.
		f.cfg.StateDir = b.TempDir()
		u := f.updater()
		defer u.Unlock()
		srv.served.Store(0)
		srv.rootServed.Store(0)
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse + ms.StackInuse // the benchmark's own data
		stop := peakHeap()
		start := time.Now()
		plan, err := u.Update(context.Background(), UpdateOptions{})
		wall := time.Since(start)
		peak := stop() - min(base, stop())
		if err != nil {
			b.Fatal(err)
		}
		check()
		if mode == DeltaAuto && (plan.Delta == nil || !plan.Delta.Use || plan.Delta.FellBack != "") {
			b.Fatalf("not a delta install: %+v", plan.Delta)
		}
		// The boot image is downloaded in full either way; the root's bytes
		// are what differ.
		return result{bytes: srv.served.Load() + srv.rootServed.Load(), wall: wall, peak: peak}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := install(DeltaAuto)
		full := install(DeltaOff)
		b.ReportMetric(float64(d.bytes), "delta-bytes")
		b.ReportMetric(float64(full.bytes), "full-bytes")
		b.ReportMetric(float64(d.peak)/(1<<20), "delta-peak-MiB")
		fmt.Printf("delta install of a one-package change (%d MiB ext4 root): root bytes %d delta vs %d full (%.2f%%), wall %v vs %v (%.2fx), peak Go heap of the install %.1f MiB vs %.1f MiB\n",
			proofRootMiB, d.bytes, full.bytes, 100*float64(d.bytes)/float64(full.bytes), d.wall.Round(time.Millisecond), full.wall.Round(time.Millisecond),
			float64(d.wall)/float64(full.wall), float64(d.peak)/(1<<20), float64(full.peak)/(1<<20))
	}
}

// sparseImage is a root image of zeros but for one region: it reads
// without holding the image.
type sparseImage struct {
	size  int64
	at    int64
	bytes []byte
}

func (s sparseImage) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > s.size-off {
		n = int(s.size - off)
	}
	clear(p[:n])
	if lo, hi := max(off, s.at), min(off+int64(n), s.at+int64(len(s.bytes))); lo < hi {
		copy(p[lo-off:hi-off], s.bytes[lo-s.at:hi-s.at])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// BenchmarkDeltaMemory4G (BENCH_4G=1): the peak Go heap of a delta install
// of a 4 GiB root image (zeros but for 8 MiB, 256 KiB of which change, so the index,
// the plan and the hash tree have their 4 GiB sizes), under updog's 48 MiB
// memory limit. The bound is 64 MiB.
func BenchmarkDeltaMemory4G(b *testing.B) {
	if os.Getenv("BENCH_4G") == "" {
		b.Skip("BENCH_4G=1 runs it (a 4 GiB install)")
	}
	const gib = 4
	f := newFixtureRoot(b, gib<<10)
	// The root image fills ROOT (a little under 4 GiB in this plan).
	tb0, l0 := f.table()
	size := int64(tb0.Partition(l0.Sets[gptprio.SetA].Root).Sectors()) * int64(tb0.SectorSize)
	rnd := rand.New(rand.NewSource(1))
	old := make([]byte, 8<<20)
	rnd.Read(old)
	v1 := sparseImage{size: size, at: 1 << 30, bytes: old}
	nw := append([]byte(nil), old...)
	rnd.Read(nw[2<<20 : 2<<20+256<<10])
	v2 := sparseImage{size: size, at: 1 << 30, bytes: nw}
	tree := func(img sparseImage) ([]byte, []byte) {
		p := verity.DefaultParams()
		p.Salt, p.UUID = deltaSalt, deltaUUID
		h := &memWriterAt{}
		t, err := verity.Format(context.Background(), img, size, h, p)
		if err != nil {
			b.Fatal(err)
		}
		return h.b, t.RootHash
	}
	h1, _ := tree(v1)
	h2, root2 := tree(v2)
	// Set A: 1.0.0's root region and hash image (the rest is the sparse
	// file's zeros).
	tb, l := f.table()
	fh, err := os.OpenFile(f.disk, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	ss := int64(tb.SectorSize)
	fh.WriteAt(old, int64(tb.Partition(l.Sets[gptprio.SetA].Root).FirstLBA)*ss+v1.at)
	fh.WriteAt(h1, int64(tb.Partition(l.Sets[gptprio.SetA].Hash).FirstLBA)*ss)
	fh.Close()
	// 1.1.0: its seekable file serves as the full root image too (it is a
	// zstd stream).
	var seek bytes.Buffer
	w, err := image.NewSeekableWriter(&seek, image.SeekableOptions{Salt: deltaSalt})
	if err != nil {
		b.Fatal(err)
	}
	w.WriteZeros(v2.at)
	w.Write(nw)
	w.WriteZeros(size - v2.at - int64(len(nw)))
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	seekName := "root-4g.seek.zst"
	x, err := w.Index(seekName)
	if err != nil {
		b.Fatal(err)
	}
	x.Verity = &delta.HashImage{UUID: deltaUUID, HashBlockSize: 4096, Length: int64(len(h2)), SHA256: sha256.Sum256(h2)}
	idx, _ := x.Marshal()
	boot := make([]byte, 1<<20)
	files := map[string][]byte{"boot.zst": compress(b, CodecZstd, boot), "root.zst": seek.Bytes(), "hash.zst": compress(b, CodecZstd, h2),
		seekName: seek.Bytes(), "root-4g.didx": idx}
	for n, bs := range files {
		os.WriteFile(filepath.Join(f.staging, n), bs, 0o644)
	}
	v, _ := manifest.ParseVersion("1.1.0")
	u := &manifest.Update{Variant: testVariant, Arch: testArch, Version: v, Images: manifest.Images{Boot: "boot.zst", Root: "root.zst", Hash: "hash.zst",
		Sizes:  &manifest.ImageSizes{Boot: int64(len(boot)), Root: size, Hash: int64(len(h2))},
		Verity: &manifest.Verity{RootHash: hex.EncodeToString(root2), Salt: hex.EncodeToString(deltaSalt), Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: uint64(size / 4096)},
		Delta:  &manifest.Delta{Seekable: seekName, Index: "root-4g.didx"}}}
	if err := f.m.AddUpdate(u, nil); err != nil {
		b.Fatal(err)
	}
	f.publish(repo.Options{})
	files, h1, h2, seek = nil, nil, nil, bytes.Buffer{}
	x, idx = nil, nil
	oldLimit := debug.SetMemoryLimit(48 << 20)
	defer debug.SetMemoryLimit(oldLimit)
	up := f.updater()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse + ms.StackInuse
	stop := peakHeap()
	start := time.Now()
	b.ResetTimer()
	plan, err := up.Update(context.Background(), UpdateOptions{})
	wall := time.Since(start)
	peak := stop()
	if err != nil {
		b.Fatal(err)
	}
	if plan.Delta == nil || !plan.Delta.Use || plan.Delta.FellBack != "" {
		b.Fatalf("not a delta install: %+v", plan.Delta)
	}
	peak -= min(base, peak)
	b.ReportMetric(float64(peak)/(1<<20), "peak-MiB")
	fmt.Printf("delta install of a %.2f GiB root image: %d bytes in %d requests, %v, peak Go heap of the install %.1f MiB (bound 64 MiB)\n",
		float64(size)/(1<<30), plan.Delta.Fetched, plan.Delta.Made, wall.Round(time.Millisecond), float64(peak)/(1<<20))
	if peak > 64<<20 {
		b.Errorf("peak heap %.1f MiB, more than 64 MiB", float64(peak)/(1<<20))
	}
}
