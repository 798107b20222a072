package updater

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
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
