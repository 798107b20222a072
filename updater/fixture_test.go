package updater

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
	"github.com/updog/updog/signing"
	"github.com/updog/updog/verity"
)

// Test geometry: a disk of the Bottlerocket layout with 8 MiB ROOT
// partitions (BOOT 40 MiB, HASH 10 MiB), as a sparse file.
const (
	fixedLayoutMiB = 208
	testRootMiB    = 8
	testVariant    = "test-variant"
	testArch       = "x86_64"
)

// fixture is a published repository served on 127.0.0.1, a disk image
// holding release 1.0.0 in set A, and an updog configuration.
type fixture struct {
	t        testing.TB
	dir      string
	now      time.Time
	signers  []signing.Signer
	root     *repo.Root
	staging  string // target files to publish
	repoDir  string // the published repository being served
	srv      *httptest.Server
	mu       sync.Mutex
	handler  http.Handler // overrides the file server when set
	disk     string
	cfg      *Config
	active   gptprio.Set
	holds    map[gptprio.Set]string // version each set holds, as the test knows it
	releases map[string]*testRelease
	m        *manifest.Manifest
	codec    Codec
	// frames, when set, compresses zstd images as independent frames of
	// this much output each (as imgbuild does), with their sizes, lz4
	// images as independent blocks of this size (64 KiB, 256 KiB, 1 MiB
	// or 4 MiB), and xz images as blocks of this size (xz -T2).
	frames int
	// rootBytes, when set, is the size of new releases' root images.
	rootBytes int
	// rootData, when set, is the content of new releases' root images.
	rootData []byte
	requests int
}

type testRelease struct {
	version          string
	boot, root, hash []byte // uncompressed
	rootHash, salt   []byte
	names            manifest.Images
}

func newFixture(t testing.TB) *fixture { return newFixtureRoot(t, testRootMiB) }

// newFixtureRoot makes a fixture whose ROOT partitions are rootMiB.
func newFixtureRoot(t testing.TB, rootMiB int64) *fixture {
	t.Helper()
	diskBytes := (fixedLayoutMiB + 2*rootMiB) << 20
	dir := t.TempDir()
	f := &fixture{t: t, dir: dir, now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC), releases: map[string]*testRelease{},
		holds: map[gptprio.Set]string{}, m: manifest.New(), codec: CodecZstd}
	priv, err := signing.Generate(signing.KeyType("ed25519"), 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	f.signers = []signing.Signer{s}
	f.root = repo.NewRoot(f.now.Add(365 * 24 * time.Hour))
	if err := repo.AddKey(f.root, s.Key(), "root", "targets", "snapshot", "timestamp"); err != nil {
		t.Fatal(err)
	}
	if err := repo.SignRoot(context.Background(), f.root, nil, f.signers, false); err != nil {
		t.Fatal(err)
	}
	rootPath := filepath.Join(dir, "root.json")
	if err := repo.WriteRoot(rootPath, f.root); err != nil {
		t.Fatal(err)
	}
	f.staging = filepath.Join(dir, "staging")
	os.MkdirAll(f.staging, 0o755)
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)

	// The disk, with 1.0.0 in set A.
	f.disk = filepath.Join(dir, "disk.img")
	fh, err := os.Create(f.disk)
	if err != nil {
		t.Fatal(err)
	}
	fh.Truncate(diskBytes)
	fh.Close()
	d, err := blockdev.Open(f.disk, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := image.BottlerocketPlan(diskBytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := image.CreateDisk(d, plan, gptprio.MustParseGUID("11111111-2222-4333-8444-555555555555")); err != nil {
		t.Fatal(err)
	}
	d.Close()
	r := f.makeRelease("1.0.0")
	f.writeSet(gptprio.SetA, r)
	f.holds[gptprio.SetA] = "1.0.0"
	f.setOSRelease("1.0.0")

	os.MkdirAll(filepath.Join(dir, "health.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o644)
	f.cfg, err = ParseConfig("test.toml", []byte(fmt.Sprintf(`
metadata_base_url = %q
targets_base_url = %q
seed = 100
version_lock = "latest"
ignore_waves = false
trusted_root = %q
state_dir = %q
os_release = %q
health_dir = %q
machine_id = %q
health_timeout = "10s"
stall_timeout = "2s"
`, f.srv.URL+"/metadata", f.srv.URL+"/targets", rootPath, filepath.Join(dir, "state"), filepath.Join(dir, "os-release"),
		filepath.Join(dir, "health.d"), filepath.Join(dir, "machine-id"))))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	h := f.handler
	dir := f.repoDir
	f.mu.Unlock()
	if h != nil {
		h.ServeHTTP(w, r)
		return
	}
	http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
}

// fileServer serves the current repository, for handlers that wrap it.
func (f *fixture) fileServer() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		dir := f.repoDir
		f.mu.Unlock()
		http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
	})
}

func (f *fixture) setHandler(h http.Handler) {
	f.mu.Lock()
	f.handler = h
	f.mu.Unlock()
}

// makeRelease makes deterministic images for a version: a 256 KiB boot
// image, a 2 MiB root image and its dm-verity hash image.
func (f *fixture) makeRelease(version string) *testRelease {
	f.t.Helper()
	seed := int64(0)
	for _, c := range version {
		seed = seed*31 + int64(c)
	}
	rnd := rand.New(rand.NewSource(seed))
	rootBytes := 2 << 20
	if f.rootBytes > 0 {
		rootBytes = f.rootBytes
	}
	r := &testRelease{version: version, boot: make([]byte, 256<<10), root: make([]byte, rootBytes), salt: make([]byte, 32)}
	rnd.Read(r.boot)
	if f.rootData != nil {
		r.root = f.rootData
	} else {
		// Root: compressible but not trivially (text-like).
		for i := range r.root {
			r.root[i] = byte('a' + rnd.Intn(16))
		}
	}
	rnd.Read(r.salt)
	p := verity.DefaultParams()
	p.Salt = r.salt
	hashFile := &memWriterAt{}
	tree, err := verity.Format(context.Background(), bytes.NewReader(r.root), int64(len(r.root)), hashFile, p)
	if err != nil {
		f.t.Fatal(err)
	}
	r.hash = hashFile.b
	r.rootHash = tree.RootHash
	f.releases[version] = r
	return r
}

type memWriterAt struct{ b []byte }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	copy(m.b[off:], p)
	return len(p), nil
}

func compress(t testing.TB, c Codec, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	var err error
	switch c {
	case CodecZstd:
		w, err = zstd.NewWriter(&buf)
	case CodecXZ:
		// The xz tool is much faster than the Go encoder (under -race
		// especially); the Go decoder reads either.
		if p, lerr := exec.LookPath("xz"); lerr == nil {
			cmd := exec.Command(p, "-c", "-6", "-T1")
			cmd.Stdin = bytes.NewReader(data)
			out, cerr := cmd.Output()
			if cerr != nil {
				t.Fatal(cerr)
			}
			return out
		}
		w, err = xz.NewWriter(&buf)
	case CodecLZ4:
		w = lz4.NewWriter(&buf)
	case CodecGzip:
		w = gzip.NewWriter(&buf)
	case CodecRaw:
		return append([]byte(nil), data...)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// zstdFrames compresses as imgbuild does: independent frames of at most
// frame bytes of output each, each declaring its content size.
func zstdFrames(t testing.TB, data []byte, frame int) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var out []byte
	for len(data) > 0 {
		n := min(frame, len(data))
		out = enc.EncodeAll(data[:n], out)
		data = data[n:]
	}
	return out
}

func ext(c Codec) string {
	return map[Codec]string{CodecZstd: ".zst", CodecXZ: ".xz", CodecLZ4: ".lz4", CodecGzip: ".gz", CodecRaw: ""}[c]
}

// addRelease stages a release's compressed images and adds it to the
// manifest (not yet published). edit may change the update or the files.
func (f *fixture) addRelease(version string, edit func(u *manifest.Update, files map[string][]byte)) *testRelease {
	f.t.Helper()
	r := f.releases[version]
	if r == nil {
		r = f.makeRelease(version)
	}
	name := func(kind, fs string) string {
		return fmt.Sprintf("bottlerocket-%s-%s-%s-%s.%s%s", testVariant, testArch, version, kind, fs, ext(f.codec))
	}
	r.names = manifest.Images{Boot: name("boot", "ext4"), Root: name("root", "ext4"), Hash: name("root", "verity")}
	comp := func(b []byte) []byte {
		if f.codec == CodecZstd && f.frames > 0 {
			return zstdFrames(f.t, b, f.frames)
		}
		if f.codec == CodecLZ4 && f.frames > 0 {
			return lz4Blocks(f.t, b, f.frames)
		}
		if f.codec == CodecXZ && f.frames > 0 {
			return xzCLI(f.t, b, "-3", "-T2", fmt.Sprintf("--block-size=%d", f.frames))
		}
		return compress(f.t, f.codec, b)
	}
	files := map[string][]byte{r.names.Boot: comp(r.boot), r.names.Root: comp(r.root), r.names.Hash: comp(r.hash)}
	v, _ := manifest.ParseVersion(version)
	u := &manifest.Update{Variant: testVariant, Arch: testArch, Version: v, Images: r.names}
	u.Images.Sizes = &manifest.ImageSizes{Boot: int64(len(r.boot)), Root: int64(len(r.root)), Hash: int64(len(r.hash))}
	u.Images.Verity = &manifest.Verity{RootHash: hex.EncodeToString(r.rootHash), Salt: hex.EncodeToString(r.salt),
		Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: uint64(len(r.root) / 4096)}
	if edit != nil {
		edit(u, files)
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(f.staging, n), b, 0o644); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := f.m.AddUpdate(u, nil); err != nil {
		f.t.Fatal(err)
	}
	return r
}

// publish signs and serves the staged targets and the manifest as a new
// repository version.
func (f *fixture) publish(o repo.Options) {
	f.t.Helper()
	b, err := f.m.Encode()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.staging, ManifestTarget), b, 0o644); err != nil {
		f.t.Fatal(err)
	}
	o.Signers = f.signers
	if o.Now == nil {
		o.Now = func() time.Time { return f.now }
	}
	out := filepath.Join(f.dir, fmt.Sprintf("repo-%d", time.Now().UnixNano()))
	ctx := context.Background()
	f.mu.Lock()
	prev := f.repoDir
	f.mu.Unlock()
	if prev == "" {
		_, err = repo.Create(ctx, f.root, f.staging, out, o)
	} else {
		_, err = repo.Update(ctx, f.root, filepath.Join(prev, "metadata"), f.staging, false, out, o)
	}
	if err != nil {
		f.t.Fatalf("publishing: %v", err)
	}
	f.mu.Lock()
	f.repoDir = out
	f.mu.Unlock()
}

// updater returns an Updater for the disk with the current active set.
func (f *fixture) updater() *Updater {
	f.t.Helper()
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: f.active.String(), Now: func() time.Time { return f.now },
		Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }, Retries: 3}})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(u.Unlock)
	return u
}

func (f *fixture) setOSRelease(version string) {
	os.WriteFile(filepath.Join(f.dir, "os-release"), []byte(fmt.Sprintf("NAME=Bottlerocket\nVARIANT_ID=%s\nVERSION_ID=%s\n", testVariant, version)), 0o644)
}

// reboot does what the bootloader does (signpost next) and what the new
// root shows (its os-release).
func (f *fixture) reboot() gptprio.Set {
	f.t.Helper()
	d, err := gptprio.OpenDisk(context.Background(), f.disk, gptprio.OpenOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	defer d.Close()
	var set gptprio.Set
	_, _, err = d.Update(context.Background(), func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		s, nt, _, err := gptprio.Boot(t)
		set = s
		return nt, err
	})
	if err != nil {
		f.t.Fatalf("boot: %v", err)
	}
	f.active = set
	f.setOSRelease(f.holds[set])
	return set
}

func (f *fixture) table() (*gptprio.Table, gptprio.Layout) {
	f.t.Helper()
	d, err := gptprio.OpenDisk(context.Background(), f.disk, gptprio.OpenOptions{ReadOnly: true})
	if err != nil {
		f.t.Fatal(err)
	}
	defer d.Close()
	t, l, err := d.Read(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return t, l
}

// partition reads a partition's first n bytes.
func (f *fixture) partition(num int, n int) []byte {
	f.t.Helper()
	t, _ := f.table()
	p := t.Partition(num)
	b := make([]byte, n)
	fh, err := os.Open(f.disk)
	if err != nil {
		f.t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.ReadAt(b, int64(p.FirstLBA)*int64(t.SectorSize)); err != nil {
		f.t.Fatal(err)
	}
	return b
}

// writeSet writes a release's raw images into a set, as an image build
// does.
func (f *fixture) writeSet(s gptprio.Set, r *testRelease) {
	f.t.Helper()
	t, l := f.table()
	fh, err := os.OpenFile(f.disk, os.O_RDWR, 0)
	if err != nil {
		f.t.Fatal(err)
	}
	defer fh.Close()
	sp := l.Sets[s]
	for _, x := range []struct {
		n int
		b []byte
	}{{sp.Boot, r.boot}, {sp.Root, r.root}, {sp.Hash, r.hash}} {
		if _, err := fh.WriteAt(x.b, int64(t.Partition(x.n).FirstLBA)*int64(t.SectorSize)); err != nil {
			f.t.Fatal(err)
		}
	}
}

// setHolds asserts that set s holds release r byte for byte.
func (f *fixture) assertSetHolds(s gptprio.Set, r *testRelease) {
	f.t.Helper()
	_, l := f.table()
	sp := l.Sets[s]
	for _, x := range []struct {
		kind string
		n    int
		b    []byte
	}{{"boot", sp.Boot, r.boot}, {"root", sp.Root, r.root}, {"hash", sp.Hash, r.hash}} {
		if got := f.partition(x.n, len(x.b)); !bytes.Equal(got, x.b) {
			f.t.Fatalf("set %s %s partition does not hold %s's %s image", s, x.kind, r.version, x.kind)
		}
	}
}

// activeSnapshot is the active set's partitions and boot bits, to prove
// they are untouched.
type activeSnapshot struct {
	sums  map[int][32]byte
	attrs gptprio.Attr
	set   gptprio.Set
}

func (f *fixture) snapshotActive() activeSnapshot {
	f.t.Helper()
	t, l := f.table()
	sp := l.Sets[f.active]
	s := activeSnapshot{sums: map[int][32]byte{}, attrs: gptprio.Attrs(t, l, f.active), set: f.active}
	for _, n := range []int{sp.Boot, sp.Root, sp.Hash} {
		p := t.Partition(n)
		s.sums[n] = sha256.Sum256(f.partition(n, int(p.Sectors())*t.SectorSize))
	}
	return s
}

// assertUntouchedAndInactiveUnbootable checks the promise of every failed
// update: the active set's partitions and bits are bit-for-bit unchanged,
// and the inactive set cannot boot.
func (f *fixture) assertSafe(before activeSnapshot) {
	f.t.Helper()
	after := f.snapshotActive()
	if after.attrs != before.attrs {
		f.t.Errorf("the active set's bits changed: %v -> %v", before.attrs, after.attrs)
	}
	for n, s := range before.sums {
		if after.sums[n] != s {
			f.t.Errorf("the active set's partition %d changed", n)
		}
	}
	t, l := f.table()
	if a := gptprio.Attrs(t, l, f.active.Other()); a.WillBoot() {
		f.t.Errorf("the inactive set would boot after a failed update: %v", a)
	}
	if next, err := gptprio.Next(t); err != nil || next != f.active {
		f.t.Errorf("the next boot is %v (%v), want the active set %v", next, err, f.active)
	}
}

func (f *fixture) healthCheck(name, script string) {
	os.WriteFile(filepath.Join(f.dir, "health.d", name), []byte("#!/bin/sh\n"+script+"\n"), 0o755)
}
