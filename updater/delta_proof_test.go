package updater

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
)

// proofRootMiB is the ROOT partition of the proof's disk.
const proofRootMiB = 128

// writeProofTree writes a root file system tree of about 70 MB: text-like
// files (configuration, scripts), binaries (random bytes: they are
// already compressed or compress poorly) and one "package", a directory
// of 14 files of about 1.4 MB in all. With update set, the package's
// files are replaced by files of other sizes and content (a package
// update), and the version file changes.
func writeProofTree(t testing.TB, dir string, update bool) {
	t.Helper()
	rnd := rand.New(rand.NewSource(42))
	words := []string{"the", "service", "config", "true", "false", "enable", "path", "/usr/lib", "kernel", "module",
		"socket", "listen", "port", "user", "group", "containerd", "systemd", "unit", "after", "wants", "target", "exec", "start"}
	text := func(r *rand.Rand, n int) []byte {
		var b bytes.Buffer
		for b.Len() < n {
			b.WriteString(words[r.Intn(len(words))])
			if r.Intn(8) == 0 {
				b.WriteString(fmt.Sprintf(" %d\n", r.Intn(100000)))
			} else {
				b.WriteByte(' ')
			}
		}
		return b.Bytes()[:n]
	}
	binary := func(r *rand.Rand, n int) []byte {
		b := make([]byte, n)
		r.Read(b)
		// Some structure, as code has: runs of zeros and repeated bytes.
		for i := 0; i+64 < n; i += 512 + r.Intn(512) {
			copy(b[i:i+64], make([]byte, 64))
		}
		return b
	}
	write := func(name string, b []byte) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The package comes early in the tree, so that every file after it
	// moves when its files change size.
	pkg := rand.New(rand.NewSource(7))
	upd := rand.New(rand.NewSource(8))
	for i := 0; i < 14; i++ {
		n := 20000 + pkg.Intn(180000)
		b := binary(pkg, n)
		if update {
			b = binary(upd, n+upd.Intn(30000)-10000)
		}
		write(fmt.Sprintf("lib/a-libssl/%02d.so", i), b)
	}
	for total, i := 0, 0; total < 70<<20; i++ {
		n := int(float64(300) * (1 + rnd.ExpFloat64()*40))
		var b []byte
		if rnd.Intn(3) == 0 {
			n *= 4
			b = binary(rnd, n)
		} else {
			b = text(rnd, n)
		}
		write(fmt.Sprintf("usr/share/d%03d/f%05d", i%150, i), b)
		total += n
	}
	v := "VERSION_ID=1.0.0\n"
	if update {
		v = "VERSION_ID=1.1.0\n"
	}
	write("etc/os-release", []byte(v))
}

// proofRelease builds a release with imgbuild's builder.
func proofRelease(t testing.TB, dir, fs, version, tree string) *image.Release {
	t.Helper()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, bytes.Repeat([]byte("not really a kernel "), 50000), 0o644); err != nil {
		t.Fatal(err)
	}
	// The fixture's disk has the split layout: the release is built for it.
	res, err := image.Build(context.Background(), image.BuildOptions{Kernel: kernel, RootFS: tree, Variant: testVariant, Plan: image.PlanSplit,
		Arch: testArch, Version: version, DiskSize: (fixedLayoutMiB + 2*proofRootMiB) << 20, RootFSType: fs, NoDisk: true,
		SourceDateEpoch: 1700000000, Out: filepath.Join(dir, "out-"+version)})
	if err != nil {
		t.Fatal(err)
	}
	return res.Release
}

func readZstd(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b, err := io.ReadAll(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// proofResult is what one proof run measured.
type proofResult struct {
	fs                   string
	full, fetched, index int64
	// appendix is the bytes of the index's appendix.
	appendix int
	requests int
	plan     DeltaPlan
}

// runProof builds 1.0.0 and 1.1.0 (a package update) as fs, installs
// 1.0.0 in set A, publishes 1.1.0 and updates to it by delta from a
// counting Range server on 127.0.0.1, checking set B is byte for byte the
// release's images.
func runProof(t *testing.T, fs string) proofResult {
	t.Helper()
	testutil.Tool(t, map[string]string{image.FSExt4: "mke2fs", image.FSErofs: "mkfs.erofs"}[fs])
	f := newFixtureRoot(t, proofRootMiB)
	dir := t.TempDir()
	t1, t2 := filepath.Join(dir, "tree1"), filepath.Join(dir, "tree2")
	writeProofTree(t, t1, false)
	writeProofTree(t, t2, true)
	rel1 := proofRelease(t, dir, fs, "1.0.0", t1)
	rel2 := proofRelease(t, dir, fs, "1.1.0", t2)
	if rel1.Verity.Salt != rel2.Verity.Salt {
		t.Fatalf("the two releases of one variant have different salts")
	}
	images := func(r *image.Release) *testRelease {
		out := filepath.Join(dir, "out-"+r.Version)
		return &testRelease{version: r.Version, boot: readZstd(t, filepath.Join(out, r.Images.Boot.Target)),
			root: readZstd(t, filepath.Join(out, r.Images.Root.Target)), hash: readZstd(t, filepath.Join(out, r.Images.Hash.Target))}
	}
	r1, r2 := images(rel1), images(rel2)
	if tb, l := f.table(); fs == image.FSExt4 && int64(tb.Partition(l.Sets[gptprio.SetA].Root).Sectors())*int64(tb.SectorSize) != int64(len(r1.root)) {
		t.Fatalf("the root image is %d bytes, not the fixture's partition", len(r1.root))
	}
	f.writeSet(gptprio.SetA, r1)
	out2 := filepath.Join(dir, "out-1.1.0")
	for _, name := range []string{rel2.Images.Boot.Target, rel2.Images.Root.Target, rel2.Images.Hash.Target,
		rel2.Delta.Seekable.Target, rel2.Delta.Index.Target} {
		b, err := os.ReadFile(filepath.Join(out2, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.staging, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v, _ := manifest.ParseVersion(rel2.Version)
	u := &manifest.Update{Variant: rel2.Variant, Arch: rel2.Arch, Version: v, Images: rel2.ManifestImages()}
	if err := f.m.AddUpdate(u, nil); err != nil {
		t.Fatal(err)
	}
	f.publish(repo.Options{})
	srv := &rangeServer{f: f, seek: rel2.Delta.Seekable.Target, index: rel2.Delta.Index.Target, rootName: rel2.Images.Root.Target}
	f.setHandler(srv)

	before := f.snapshotActive()
	up := f.updater()
	plan, err := up.Update(context.Background(), UpdateOptions{Apply: true})
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	f.holds[gptprio.SetB] = "1.1.0"
	f.assertSetHolds(gptprio.SetB, r2)
	f.assertSafe2(before)
	if plan.Delta == nil || !plan.Delta.Use || plan.Delta.FellBack != "" || srv.rootServed.Load() != 0 || srv.multipart.Load() {
		t.Fatalf("not a delta install: %+v", plan.Delta)
	}
	if plan.Delta.ActiveDigests != "hash-partition" {
		t.Errorf("the active root's digests came from %s, not its hash partition", plan.Delta.ActiveDigests)
	}
	if plan.Delta.Unassembled != 0 {
		t.Errorf("%d frames planned as assembled were fetched", plan.Delta.Unassembled)
	}
	return proofResult{fs: fs, full: rel2.Images.Root.Length, fetched: srv.served.Load(), index: rel2.Delta.Index.Length,
		appendix: plan.Delta.x.AppendixSize(), requests: srv.requests, plan: *plan.Delta}
}

// assertSafe2 checks the active set is untouched (assertSafe also wants
// the inactive set unbootable: after a successful update it boots next).
func (f *fixture) assertSafe2(before activeSnapshot) {
	f.t.Helper()
	after := f.snapshotActive()
	for n, s := range before.sums {
		if after.sums[n] != s {
			f.t.Errorf("the active set's partition %d changed", n)
		}
	}
}

// TestDeltaProof is issue 13's proof: two releases built from trees that
// differ as a package update makes them differ, as ext4 and as erofs,
// installed 1.0.0 → 1.1.0 by delta: set B is byte for byte the release,
// the bytes fetched (index and ranges) are at most 5 % (ext4) and 8 %
// (erofs) of the full compressed root, in at most one request per 2 MiB
// fetched plus 3. On erofs the frames that mix a changed block of
// metadata with file data that moved are assembled from the index's
// appendix and the active root's blocks.
func TestDeltaProof(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four 128 MiB images")
	}
	if raceEnabled && os.Getenv("UPDOG_DELTA_PROOF") == "" {
		// Four 128 MiB builds take minutes under the race detector: make
		// test-slow runs the proof without it (UPDOG_DELTA_PROOF=1 forces
		// it here).
		t.Skip("the race detector is on: the proof runs in make test-slow (UPDOG_DELTA_PROOF=1 runs it anyway)")
	}
	t.Parallel()
	for _, c := range []struct {
		fs    string
		limit float64
	}{{image.FSExt4, 5}, {image.FSErofs, 8}} {
		t.Run(c.fs, func(t *testing.T) {
			t.Parallel()
			r := runProof(t, c.fs)
			pct := 100 * float64(r.fetched) / float64(r.full)
			t.Logf("%s: fetched %d bytes (index %d, its appendix %d) in %d requests = %.2f%% of the %d-byte full compressed root (limit %.0f%%); %d of %d frames copied, %d in place, %d assembled, %d fetched",
				c.fs, r.fetched, r.index, r.appendix, r.requests, pct, r.full, c.limit, r.plan.Copied, r.plan.Frames, r.plan.InPlace, r.plan.Assembled, r.plan.Missing)
			fmt.Printf("delta proof %s: %.2f%% of the full root (%d of %d bytes), %d requests, %d frames assembled\n", c.fs, pct, r.fetched, r.full, r.requests, r.plan.Assembled)
			if pct > c.limit {
				t.Errorf("%s: fetched %.2f%% of the full root, more than %.0f%%", c.fs, pct, c.limit)
			}
			if max := int(r.fetched/(2<<20)) + 3; r.requests > max {
				t.Errorf("%s: %d requests for %d bytes, more than %d", c.fs, r.requests, r.fetched, max)
			}
		})
	}
}
