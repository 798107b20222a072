package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/updog/updog/delta"
	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
	"github.com/updog/updog/verity"
)

// deltaUUID is the verity UUID of the delta test releases.
var deltaUUID = [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

// deltaSalt is the fixed per-variant salt of the delta test releases.
var deltaSalt = bytes.Repeat([]byte{0x5a}, 32)

// fsLike makes a root image the way a file system lays out files: each
// file starts on a 4 KiB block, text-like content, zeros after the last
// file. files are the sizes; seed picks each file's content, so two images
// made with the same seed for a file hold the same file.
func fsLike(size int, files []int, seeds []int64) []byte {
	img := make([]byte, size)
	off := 0
	for i, n := range files {
		rnd := rand.New(rand.NewSource(seeds[i]))
		for j := 0; j < n && off+j < size; j++ {
			img[off+j] = byte('a' + rnd.Intn(20))
		}
		off += (n + 4095) &^ 4095
	}
	return img
}

// packageUpdate returns two images that differ as a package update makes
// them differ: files 40 to 42 replaced by files of other sizes (so the
// files after them move), and a version file at the end that changes.
func packageUpdate(size int) (v1, v2 []byte) {
	rnd := rand.New(rand.NewSource(1))
	var files []int
	var seeds []int64
	for total := 0; total < size*3/5; {
		n := 1000 + rnd.Intn(120000)
		files = append(files, n)
		seeds = append(seeds, int64(len(files)))
		total += (n + 4095) &^ 4095
	}
	v1 = fsLike(size, append(files, 100), append(seeds, 1000))
	f2, s2 := append([]int(nil), files...), append([]int64(nil), seeds...)
	for i := 40; i < 43; i++ {
		f2[i] += 9000 + i*1000
		s2[i] += 5000
	}
	v2 = fsLike(size, append(f2, 100), append(s2, 1001))
	return v1, v2
}

// deltaRelease is a release of root image root with the fixed salt and
// UUID, its boot image from the fixture's own release of that version.
func (f *fixture) deltaRelease(version string, root []byte) *testRelease {
	f.t.Helper()
	r := f.makeRelease(version)
	r.root, r.salt = root, deltaSalt
	p := verity.DefaultParams()
	p.Salt, p.UUID = r.salt, deltaUUID
	hashFile := &memWriterAt{}
	tree, err := verity.Format(context.Background(), bytes.NewReader(r.root), int64(len(r.root)), hashFile, p)
	if err != nil {
		f.t.Fatal(err)
	}
	r.hash, r.rootHash = hashFile.b, tree.RootHash
	return r
}

// seekable compresses a root image as imgbuild does for delta updates and
// returns the seekable file and its index (naming it name); with fb, the
// index has an appendix of the frames that mix fb's blocks with others.
func seekable(t testing.TB, r *testRelease, name string, frameSize int, fb *image.FileBlocks) ([]byte, []byte) {
	t.Helper()
	var out bytes.Buffer
	w, err := image.NewSeekableWriter(&out, image.SeekableOptions{FrameSize: frameSize, Salt: r.salt, FileBlocks: fb, AppendixMax: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(r.root); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	x, err := w.Index(name)
	if err != nil {
		t.Fatal(err)
	}
	x.Verity = &delta.HashImage{UUID: deltaUUID, HashBlockSize: 4096, Length: int64(len(r.hash)), SHA256: sha256.Sum256(r.hash)}
	idx, err := x.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), idx
}

// addDeltaRelease stages a release with its delta artifacts (an appendix
// made with fb, when set). edit may change the files before they are
// staged.
func (f *fixture) addDeltaRelease(r *testRelease, fb *image.FileBlocks, edit func(u *manifest.Update, files map[string][]byte)) (seekName, idxName string) {
	f.t.Helper()
	seekName = fmt.Sprintf("bottlerocket-%s-%s-%s-root.ext4.seek.zst", testVariant, testArch, r.version)
	idxName = fmt.Sprintf("bottlerocket-%s-%s-%s-root.ext4.didx", testVariant, testArch, r.version)
	seek, idx := seekable(f.t, r, seekName, delta.DefaultFrameSize, fb)
	f.addRelease(r.version, func(u *manifest.Update, files map[string][]byte) {
		files[seekName], files[idxName] = seek, idx
		u.Images.Delta = &manifest.Delta{Seekable: seekName, Index: idxName}
		if edit != nil {
			edit(u, files)
		}
	})
	return seekName, idxName
}

// rangeServer serves the repository, counting the requests and bytes of
// the delta artifacts, and misbehaving as a test asks.
type rangeServer struct {
	f *fixture
	// seek and index are the delta artifacts' names.
	seek, index string
	mu          sync.Mutex
	requests    int // for the seekable file and the index
	ranges      []string
	served      atomic.Int64 // bytes of the seekable file and the index
	rootServed  atomic.Int64 // bytes of the full root image
	rootName    string
	// ignoreRange serves the whole file to Range requests.
	ignoreRange bool
	// wrongRange answers the first n Range requests for the seekable file
	// with the range one frame later (and says so), or, with lie, the
	// wrong bytes under the right Content-Range.
	wrongRange int
	lie        bool
	// multipart is set when a request asked for several ranges.
	multipart atomic.Bool
	// onServed, when set, is told the bytes served so far of the delta
	// artifacts.
	onServed func(total int64)
}

func (s *rangeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	isSeek, isIdx := strings.HasSuffix(p, "."+s.seek), strings.HasSuffix(p, "."+s.index)
	if s.rootName != "" && strings.HasSuffix(p, "."+s.rootName) {
		s.f.fileServer().ServeHTTP(&byteCounter{ResponseWriter: w, n: &s.rootServed}, r)
		return
	}
	if !isSeek && !isIdx {
		s.f.fileServer().ServeHTTP(w, r)
		return
	}
	rng := r.Header.Get("Range")
	if strings.Contains(rng, ",") {
		s.multipart.Store(true)
	}
	s.mu.Lock()
	s.requests++
	if os.Getenv("DELTA_DEBUG") != "" {
		fmt.Println("REQ", p, rng)
	}
	if rng != "" {
		s.ranges = append(s.ranges, rng)
	}
	wrong := 0
	if isSeek && rng != "" && s.wrongRange > 0 {
		s.wrongRange--
		wrong = 1
	}
	s.mu.Unlock()
	if s.ignoreRange {
		r.Header.Del("Range")
	}
	if wrong > 0 {
		first, last, _ := strings.Cut(strings.TrimPrefix(rng, "bytes="), "-")
		a, _ := strconv.ParseInt(first, 10, 64)
		b, _ := strconv.ParseInt(last, 10, 64)
		path := s.f.storedTarget(s.seek)
		data, _ := os.ReadFile(path)
		shift := int64(1000)
		if a+shift > b {
			shift = 1
		}
		start, end := a+shift, min(b+shift, int64(len(data))-1)
		if s.lie {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", a, b, len(data)))
			end = start + (b - a)
		} else {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, len(data)))
		}
		w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		n, _ := w.Write(data[start : end+1])
		s.served.Add(int64(n))
		return
	}
	s.f.fileServer().ServeHTTP(&byteCounter{ResponseWriter: w, n: &s.served, on: s.onServed}, r)
}

type byteCounter struct {
	http.ResponseWriter
	n  *atomic.Int64
	on func(int64)
}

func (b *byteCounter) Write(p []byte) (int, error) {
	n, err := b.ResponseWriter.Write(p)
	t := b.n.Add(int64(n))
	if b.on != nil {
		b.on(t)
	}
	return n, err
}

// deltaFixture is a fixture whose set A holds v1 with the fixed salt, and
// whose repository publishes v2 as 1.1.0 with delta artifacts.
type deltaFixture struct {
	*fixture
	v1, v2       *testRelease
	seek, index  string
	srv          *rangeServer
	fullRootSize int64
}

func newDeltaFixture(t *testing.T, rootMiB int64, edit func(u *manifest.Update, files map[string][]byte)) *deltaFixture {
	t.Helper()
	a, b := packageUpdate(int(rootMiB) << 20)
	return newDeltaFixtureOf(t, rootMiB, a, b, nil, edit)
}

// newDeltaFixtureOf is newDeltaFixture with set A holding root image a,
// and b published (with an appendix made with fb, when set).
func newDeltaFixtureOf(t *testing.T, rootMiB int64, a, b []byte, fb *image.FileBlocks, edit func(u *manifest.Update, files map[string][]byte)) *deltaFixture {
	t.Helper()
	f := newFixtureRoot(t, rootMiB)
	v1 := f.deltaRelease("1.0.0", a)
	f.writeSet(gptprio.SetA, v1)
	v2 := f.deltaRelease("1.1.0", b)
	d := &deltaFixture{fixture: f, v1: v1, v2: v2}
	d.seek, d.index = f.addDeltaRelease(v2, fb, edit)
	f.publish(repo.Options{})
	d.srv = &rangeServer{f: f, seek: d.seek, index: d.index, rootName: v2.names.Root}
	f.setHandler(d.srv)
	fi, err := os.Stat(f.storedTarget(v2.names.Root))
	if err != nil {
		t.Fatal(err)
	}
	d.fullRootSize = fi.Size()
	return d
}

func (d *deltaFixture) setMode(mode string) { d.cfg.Delta = mode }

// update runs updog update and checks set B holds 1.1.0 and the active
// set is untouched.
func (d *deltaFixture) update(u *Updater) *Plan {
	d.t.Helper()
	before := d.snapshotActive()
	plan, err := u.Update(context.Background(), UpdateOptions{Apply: true})
	if err != nil {
		d.t.Fatalf("update: %v", err)
	}
	d.holds[gptprio.SetB] = "1.1.0"
	d.assertSetHolds(gptprio.SetB, d.v2)
	after := d.snapshotActive()
	for n, s := range before.sums {
		if after.sums[n] != s {
			d.t.Fatalf("the active set's partition %d changed", n)
		}
	}
	if d.srv.multipart.Load() {
		d.t.Error("a multipart Range request was made")
	}
	return plan
}

// TestDeltaUpdate: 1.0.0 → 1.1.0 by delta: set B holds 1.1.0 byte for
// byte, the hash image made on the host is the signed one, a few percent
// of the full root is fetched in a few single-range requests, the active
// root's digests come from its hash partition, and the full root image and
// hash image are never downloaded. A dry run reports the same plan.
func TestDeltaUpdate(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 16, nil)
	u := d.updater()
	dry, err := u.Update(context.Background(), UpdateOptions{DryRun: true, Apply: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.Delta == nil || !dry.Delta.Use || dry.Delta.Requests == 0 || dry.Delta.FetchBytes == 0 || dry.Delta.ActiveDigests != "hash-partition" {
		t.Fatalf("dry run delta plan %+v", dry.Delta)
	}
	if d.srv.requests != 1 {
		t.Errorf("the dry run made %d requests for delta artifacts, want the index's 1", d.srv.requests)
	}
	d.srv.requests = 0
	d.srv.served.Store(0)
	plan := d.update(u)
	dp := plan.Delta
	if dp == nil || !dp.Use || dp.FellBack != "" || dp.Streamed {
		t.Fatalf("delta plan %+v", dp)
	}
	served := d.srv.served.Load()
	pct := 100 * float64(served) / float64(d.fullRootSize)
	t.Logf("delta: %d bytes in %d requests (%v), %.2f%% of the %d-byte full root; plan %s",
		served, d.srv.requests, d.srv.ranges, pct, d.fullRootSize, dp)
	if pct > 15 {
		t.Errorf("fetched %.1f%% of the full root", pct)
	}
	if d.srv.rootServed.Load() != 0 {
		t.Errorf("the full root image was downloaded too")
	}
	if max := int(served/(2<<20)) + 3; d.srv.requests > max {
		t.Errorf("%d requests, more than %d", d.srv.requests, max)
	}
	if dry.Delta.FetchBytes != dp.FetchBytes || dry.Delta.Requests != dp.Requests {
		t.Errorf("the dry run planned %d bytes in %d requests, the update %d in %d", dry.Delta.FetchBytes, dry.Delta.Requests, dp.FetchBytes, dp.Requests)
	}
	if dp.Fetched != dp.FetchBytes || dp.Made != dp.Requests {
		t.Errorf("planned %d bytes in %d requests, fetched %d in %d", dp.FetchBytes, dp.Requests, dp.Fetched, dp.Made)
	}
}

// TestDeltaOffAndNoIndex: delta = "off", and a release without delta
// artifacts, install in full; "required" then fails before writing
// anything, naming the reason.
func TestDeltaOffAndNoIndex(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, nil)
	d.setMode(DeltaOff)
	plan := d.update(d.updater())
	if plan.Delta != nil || d.srv.requests != 0 || d.srv.rootServed.Load() == 0 {
		t.Fatalf("delta = off: plan %+v, %d delta requests", plan.Delta, d.srv.requests)
	}

	f := newFixtureRoot(t, 8)
	f.cfg.Delta = DeltaRequired
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	before := f.snapshotActive()
	_, err := f.updater().Update(context.Background(), UpdateOptions{Apply: true})
	if !errors.Is(err, ErrDeltaRequired) || !strings.Contains(err.Error(), "no delta index") {
		t.Fatalf("required without an index: %v", err)
	}
	f.assertSafe(before)
}

// TestDeltaIgnoresRange: a server that answers Range requests with the
// whole file (200): that body is streamed, each frame checked.
func TestDeltaIgnoresRange(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, nil)
	d.srv.ignoreRange = true
	plan := d.update(d.updater())
	if !plan.Delta.Streamed || plan.Delta.FellBack != "" || d.srv.rootServed.Load() != 0 {
		t.Fatalf("plan %+v, root served %d", *plan.Delta, d.srv.rootServed.Load())
	}
}

// TestDeltaPlanTooLarge: a plan that would fetch more than half installs
// in full (no seed in common: the active set is empty).
func TestDeltaPlanTooLarge(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, nil)
	other := func(f *fixture) *testRelease {
		r := f.makeRelease("0.0.1") // a root of other random bytes
		return f.deltaRelease("0.0.1", r.root)
	}
	d.writeSet(gptprio.SetA, other(d.fixture))
	plan := d.update(d.updater())
	if plan.Delta.Use || !strings.Contains(plan.Delta.Reason, "more than half") || d.srv.rootServed.Load() == 0 {
		t.Fatalf("plan %+v", plan.Delta)
	}
	d2 := newDeltaFixture(t, 8, nil)
	d2.writeSet(gptprio.SetA, other(d2.fixture))
	d2.setMode(DeltaRequired)
	before := d2.snapshotActive()
	_, err := d2.updater().Update(context.Background(), UpdateOptions{Apply: true})
	if !errors.Is(err, ErrDeltaRequired) || !strings.Contains(err.Error(), "more than half") {
		t.Fatalf("required: %v", err)
	}
	d2.assertSafe(before)
}

// TestDeltaComputedSeed: when the active tree's salt is not the index's,
// the active root's digests are computed, cached, and read from the cache
// the next time.
func TestDeltaComputedSeed(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, nil)
	// Set A's tree with another salt.
	p := verity.DefaultParams()
	p.Salt = []byte("another salt")
	hashFile := &memWriterAt{}
	if _, err := verity.Format(context.Background(), bytes.NewReader(d.v1.root), int64(len(d.v1.root)), hashFile, p); err != nil {
		t.Fatal(err)
	}
	d.writeSet(gptprio.SetA, &testRelease{root: d.v1.root, boot: d.v1.boot, hash: hashFile.b})
	u := d.updater()
	dry, err := u.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil || dry.Delta.ActiveDigests != "computed" || !dry.Delta.Use {
		t.Fatalf("dry run %+v: %v", dry.Delta, err)
	}
	if _, err := os.Stat(filepath.Join(d.cfg.StateDir, deltaDigestCache)); err == nil {
		t.Fatal("a dry run wrote the digest cache")
	}
	plan := d.update(u)
	if plan.Delta.ActiveDigests != "computed" || plan.Delta.FetchBytes != dry.Delta.FetchBytes {
		t.Fatalf("update %+v, dry run %+v", plan.Delta, dry.Delta)
	}
	again, err := u.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil || again.Delta.ActiveDigests != "cache" {
		t.Fatalf("after the update %+v: %v", again.Delta, err)
	}
	if ents, _ := filepath.Glob(filepath.Join(d.cfg.StateDir, ".delta-seed-*")); len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}
}

// TestDeltaResume: a delta install interrupted half way goes on without
// fetching again the frames it wrote (they are in place now).
func TestDeltaResume(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 16, nil)
	u := d.updater()
	dry, err := u.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil || dry.Delta == nil || !dry.Delta.Use || len(dry.Delta.p.Runs) < 2 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	u.Unlock()
	runs := dry.Delta.p.Runs
	// Interrupted once the first run's frames are written.
	cutAt := int64(runs[0].End) * delta.DefaultFrameSize
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var done atomic.Int64
	u1 := d.resumeUpdater(0, progressFunc(func(image string, n int64) {
		if image == KindRoot && done.Add(n) >= cutAt {
			cancel()
		}
	}))
	if _, err := u1.Update(ctx, UpdateOptions{Apply: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("the interrupted update: %v", err)
	}
	u1.Unlock()
	first := d.srv.served.Load()
	d.srv.served.Store(0)
	plan := d.update(d.updater())
	again := d.srv.served.Load()
	var want int64
	for _, r := range runs[1:] {
		want += r.Len
	}
	if plan.Delta.FetchBytes != want {
		t.Errorf("the rerun fetches %d bytes, want %d (the runs not written before): runs %+v", plan.Delta.FetchBytes, want, plan.Delta.p.Runs)
	}
	t.Logf("interrupted after %d bytes; the rerun fetched %d (%d planned), %d frames in place; ranges %v", first, again, plan.Delta.FetchBytes, plan.Delta.InPlace, d.srv.ranges)
}

type progressFunc func(image string, n int64)

func (p progressFunc) Start(string, string, int64) {}
func (p progressFunc) Add(image string, n int64)   { p(image, n) }
func (p progressFunc) Done(string, error)          {}

// deltaAttack runs an update that must end with set B holding 1.1.0 (by
// delta, or in full after a fallback), or, with delta = "required" and
// wantErr, fail with the active set untouched and set B unbootable.
func (d *deltaFixture) dryRuns() *DeltaPlan {
	d.t.Helper()
	u := d.updater()
	defer u.Unlock()
	plan, err := u.Update(context.Background(), UpdateOptions{DryRun: true})
	if err != nil || plan.Delta == nil || !plan.Delta.Use {
		d.t.Fatalf("dry run: %v %+v", err, plan)
	}
	d.srv.mu.Lock()
	d.srv.requests, d.srv.ranges = 0, nil
	d.srv.mu.Unlock()
	d.srv.served.Store(0)
	return plan.Delta
}

func (d *deltaFixture) requiredFails(wantMsg string) {
	d.t.Helper()
	d.setMode(DeltaRequired)
	defer d.setMode(DeltaAuto)
	before := d.snapshotActive()
	u := d.updater()
	defer u.Unlock()
	_, err := u.Update(context.Background(), UpdateOptions{Apply: true})
	if !errors.Is(err, ErrDeltaRequired) || !strings.Contains(err.Error(), wantMsg) {
		d.t.Fatalf("delta = required: %v, want ErrDeltaRequired saying %q", err, wantMsg)
	}
	d.assertSafe(before)
}

// TestDeltaAttackTamperedFrame: a frame of the seekable file changed on
// the server fails its id check, is fetched again, fails again, and the
// root is installed in full; with delta = "required" the update fails.
// Nothing unchecked is written, and the active set is untouched.
func TestDeltaAttackTamperedFrame(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, nil)
	dp := d.dryRuns()
	p := d.storedTarget(d.seek)
	b, _ := os.ReadFile(p)
	b[dp.p.Runs[0].Off+dp.p.Runs[0].Len/2] ^= 0xff
	os.WriteFile(p, b, 0o644)
	d.requiredFails("frame")
	plan := d.update(d.updater())
	if plan.Delta.FellBack == "" || !strings.Contains(plan.Delta.FellBack, "failed 2 times") || d.srv.rootServed.Load() == 0 {
		t.Fatalf("plan %+v", *plan.Delta)
	}
}

// TestDeltaAttackTamperedIndex: an index that is not the signed one is
// refused before it is parsed; the root is installed in full.
func TestDeltaAttackTamperedIndex(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, nil)
	p := d.storedTarget(d.index)
	b, _ := os.ReadFile(p)
	b[100] ^= 1
	os.WriteFile(p, b, 0o644)
	d.requiredFails("delta index")
	plan := d.update(d.updater())
	if plan.Delta.Use || !strings.Contains(plan.Delta.Reason, "delta index") || d.srv.rootServed.Load() == 0 {
		t.Fatalf("plan %+v", *plan.Delta)
	}
}

// TestDeltaAttackOtherSeekable: a signed index that describes another
// seekable file than the signed one is not used.
func TestDeltaAttackOtherSeekable(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, func(u *manifest.Update, files map[string][]byte) {
		for name := range files {
			if strings.HasSuffix(name, ".didx") {
				x, _ := delta.Parse(files[name])
				x.Seekable.SHA256[0] ^= 1
				files[name], _ = x.Marshal()
			}
		}
	})
	d.requiredFails("another seekable file")
	plan := d.update(d.updater())
	if plan.Delta.Use || !strings.Contains(plan.Delta.Reason, "another seekable file") {
		t.Fatalf("plan %+v", *plan.Delta)
	}
}

// changingDevice changes frame 'frame' of the device it wraps on its
// first read: a seed that changes between planning and copying.
type changingDevice struct {
	blockdev.Device
	once  sync.Once
	frame int64
}

func (c *changingDevice) ReadAt(p []byte, off int64) (int, error) {
	c.once.Do(func() {
		c.Device.WriteAt(bytes.Repeat([]byte{0xee}, 4096), c.frame*delta.DefaultFrameSize+8192)
	})
	return c.Device.ReadAt(p, off)
}

// TestDeltaAttackSeedChanges: a frame planned to be in place in the
// target that changes before it is copied fails its id check when read
// again, and is fetched instead.
func TestDeltaAttackSeedChanges(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, nil)
	// Set B holds 1.1.0 already (an earlier attempt wrote it all), so
	// every frame is in place.
	d.writeSet(gptprio.SetB, d.v2)
	dp := d.dryRuns()
	if dp.InPlace != dp.Frames {
		t.Fatalf("%d of %d frames in place", dp.InPlace, dp.Frames)
	}
	u0 := d.updater()
	o := u0.o
	u0.Unlock()
	o.WrapPartition = func(kind string, dev blockdev.Device) blockdev.Device {
		if kind == KindRoot {
			return &changingDevice{Device: dev, frame: 5}
		}
		return dev
	}
	u, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer u.Unlock()
	plan := d.update(u)
	if plan.Delta.FellBack != "" || plan.Delta.Made != 1 || len(d.srv.ranges) != 1 {
		t.Fatalf("plan %+v, ranges %v", *plan.Delta, d.srv.ranges)
	}
}

// TestDeltaAttackWrongRange: a server that answers a Range request with
// another range (saying so, or under the right Content-Range) is refused
// and the range asked again; one that always does makes the install fall
// back to a full one.
func TestDeltaAttackWrongRange(t *testing.T) {
	t.Parallel()
	for _, lie := range []bool{false, true} {
		d := newDeltaFixture(t, 8, nil)
		dp := d.dryRuns()
		d.srv.wrongRange, d.srv.lie = 1, lie
		plan := d.update(d.updater())
		if plan.Delta.FellBack != "" || plan.Delta.Made != dp.Requests+1 || d.srv.rootServed.Load() != 0 {
			t.Fatalf("lie %v: plan %+v", lie, *plan.Delta)
		}
		d = newDeltaFixture(t, 8, nil)
		d.srv.wrongRange, d.srv.lie = 1000, lie
		plan = d.update(d.updater())
		if plan.Delta.FellBack == "" || d.srv.rootServed.Load() == 0 {
			t.Fatalf("lie %v, always: plan %+v", lie, *plan.Delta)
		}
	}
}

// TestDeltaCheckUpdate: check-update reports the planned delta (bytes and
// requests) without changing anything.
func TestDeltaCheckUpdate(t *testing.T) {
	t.Parallel()
	d := newDeltaFixture(t, 8, nil)
	before := d.snapshotActive()
	u := d.updater()
	plan, err := u.Check(context.Background(), CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Delta == nil || !plan.Delta.Use || plan.Delta.FetchBytes == 0 || plan.Delta.Requests == 0 || plan.Delta.IndexBytes == 0 {
		t.Fatalf("check-update delta %+v", plan.Delta)
	}
	if after := d.snapshotActive(); after.attrs != before.attrs {
		t.Fatal("check-update changed the boot bits")
	}
	t.Log(plan.Delta)
}

// TestDeltaConfig: the delta key takes auto (the default), off and
// required, and nothing else.
func TestDeltaConfig(t *testing.T) {
	base := "metadata_base_url = \"https://example.com/m\"\ntargets_base_url = \"https://example.com/t\"\n"
	for in, want := range map[string]string{"": DeltaAuto, `delta = "auto"`: DeltaAuto, `delta = "off"`: DeltaOff, `delta = "required"`: DeltaRequired} {
		c, err := ParseConfig("t.toml", []byte(base+in))
		if err != nil || c.Delta != want {
			t.Errorf("%q: %v %q", in, err, c.Delta)
		}
	}
	for _, in := range []string{`delta = "yes"`, `delta = true`, `delta = ""`} {
		if _, err := ParseConfig("t.toml", []byte(base+in)); (in == `delta = ""`) == (err != nil) {
			t.Errorf("%q: %v", in, err)
		}
	}
}
