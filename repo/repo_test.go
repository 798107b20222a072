package repo

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/signing"
)

var ctx = context.Background()

// keyring makes keys once per test binary: RSA generation is slow.
var keyring = struct {
	sync.Mutex
	keys map[string]signing.Signer
}{keys: map[string]signing.Signer{}}

func key(t testing.TB, name string, kt signing.KeyType) signing.Signer {
	t.Helper()
	keyring.Lock()
	defer keyring.Unlock()
	if s, ok := keyring.keys[name]; ok {
		return s
	}
	k, err := signing.Generate(kt, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	keyring.keys[name] = s
	return s
}

// testRoot: root key ed25519, targets ECDSA, snapshot and timestamp ed25519.
func testRoot(t testing.TB) (*Root, []signing.Signer) {
	t.Helper()
	rootK, targK, snapK, tsK := key(t, "root", signing.Ed25519), key(t, "targets", signing.ECDSA), key(t, "snapshot", signing.Ed25519), key(t, "timestamp", signing.Ed25519)
	r := NewRoot(time.Now().Add(365 * 24 * time.Hour))
	for role, k := range map[string]signing.Signer{"root": rootK, "targets": targK, "snapshot": snapK, "timestamp": tsK} {
		if err := AddKey(r, k.Key(), role); err != nil {
			t.Fatal(err)
		}
	}
	if err := SignRoot(ctx, r, nil, []signing.Signer{rootK}, false); err != nil {
		t.Fatal(err)
	}
	return r, []signing.Signer{rootK, targK, snapK, tsK}
}

func targetsDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func rootRaw(t testing.TB, r *Root) []byte {
	t.Helper()
	b, err := r.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goTUF downloads a target with go-tuf's own client, over HTTP, with a
// persistent metadata cache in cache (so a second call sees updates as a
// long-lived client would).
func goTUF(t testing.TB, srvURL string, trusted []byte, cache, name string) ([]byte, error) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(cache, "root.json")); err == nil {
		trusted = b // go-tuf overwrites the cached root with the one passed in: pass the cached one
	}
	cfg, err := config.New(srvURL+"/metadata", trusted)
	if err != nil {
		return nil, err
	}
	cfg.LocalMetadataDir = cache
	cfg.LocalTargetsDir = filepath.Join(cache, "targets")
	cfg.RemoteTargetsURL = srvURL + "/targets"
	cfg.Fetcher = fetch.New()
	up, err := updater.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := up.Refresh(); err != nil {
		return nil, err
	}
	ti, err := up.GetTargetInfo(name)
	if err != nil {
		return nil, err
	}
	_, data, err := up.DownloadTarget(ti, filepath.Join(t.TempDir(), strings.ReplaceAll(name, "/", "_")), "")
	return data, err
}

// dirServer serves a directory over HTTP; the directory can be switched
// between requests, as a publisher's sync switches a bucket's contents.
type dirServer struct {
	*httptest.Server
	mu  sync.Mutex
	dir string
}

func serve(t testing.TB, dir string) *dirServer {
	d := &dirServer{dir: dir}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		dir := d.dir
		d.mu.Unlock()
		http.FileServer(http.Dir(dir)).ServeHTTP(w, r)
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *dirServer) set(dir string) {
	d.mu.Lock()
	d.dir = dir
	d.mu.Unlock()
}

func TestPublishAndGoTUFClientLifeCycle(t *testing.T) {
	r, keys := testRoot(t)
	trusted := rootRaw(t, r)
	base := t.TempDir()
	v1 := filepath.Join(base, "v1")
	res, err := Create(ctx, r, targetsDir(t, map[string]string{"manifest.json": `{"updates":[]}`, "root.img": "root image v1"}), v1, Options{Signers: keys})
	if err != nil {
		t.Fatal(err)
	}
	if res.Targets != 2 || res.TimestampVersion != 1 {
		t.Fatalf("result %+v", res)
	}
	for _, f := range []string{"metadata/1.root.json", "metadata/1.targets.json", "metadata/1.snapshot.json", "metadata/timestamp.json"} {
		if _, err := os.Stat(filepath.Join(v1, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	srv := serve(t, v1)
	cache := t.TempDir()
	got, err := goTUF(t, srv.URL, trusted, cache, "root.img")
	if err != nil || string(got) != "root image v1" {
		t.Fatalf("go-tuf download: %q %v", got, err)
	}

	// Update: add a target and replace one.
	v2 := filepath.Join(base, "v2")
	if _, err := Update(ctx, r, filepath.Join(v1, "metadata"), targetsDir(t, map[string]string{"root.img": "root image v2", "boot.img": "boot"}), false, v2, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	srv.set(v2)
	if got, err := goTUF(t, srv.URL, trusted, cache, "root.img"); err != nil || string(got) != "root image v2" {
		t.Fatalf("after update: %q %v", got, err)
	}
	if got, err := goTUF(t, srv.URL, trusted, cache, "manifest.json"); err != nil || string(got) != `{"updates":[]}` {
		t.Fatalf("a carried-over target: %q %v", got, err)
	}

	// Timestamp-only refresh, as a cron job does.
	v3 := filepath.Join(base, "v3")
	res, err = Update(ctx, r, filepath.Join(v2, "metadata"), "", true, v3, Options{Signers: keys})
	if err != nil {
		t.Fatal(err)
	}
	if res.TimestampVersion != 3 || res.SnapshotVersion != 2 || res.TargetsVersion != 2 {
		t.Fatalf("timestamp-only versions: %+v", res)
	}
	a, _ := os.ReadFile(filepath.Join(v2, "metadata", "2.snapshot.json"))
	b, _ := os.ReadFile(filepath.Join(v3, "metadata", "2.snapshot.json"))
	if !bytes.Equal(a, b) {
		t.Error("timestamp-only refresh re-signed the snapshot")
	}
	srv.set(v3)
	if got, err := goTUF(t, srv.URL, trusted, cache, "boot.img"); err != nil || string(got) != "boot" {
		t.Fatalf("after timestamp refresh: %q %v", got, err)
	}

	// Root rotation: a new root key (RSA, to exercise PSS) replaces the old
	// one; version 2 is signed by the old and the new threshold.
	newRootKey := key(t, "root-rsa", signing.RSA)
	r2, _ := ParseRoot(rootRaw(t, r))
	BumpVersion(r2)
	if err := AddKey(r2, newRootKey.Key(), "root"); err != nil {
		t.Fatal(err)
	}
	oldID, _ := keys[0].Key().ID()
	if err := RemoveKey(r2, oldID, "root"); err != nil {
		t.Fatal(err)
	}
	if err := SignRoot(ctx, r2, r, []signing.Signer{newRootKey}, false); !errors.Is(err, ErrThreshold) {
		t.Fatalf("rotation signed by the new key alone: %v", err)
	}
	if err := SignRoot(ctx, r2, r, []signing.Signer{newRootKey, keys[0]}, false); err != nil {
		t.Fatal(err)
	}
	v4 := filepath.Join(base, "v4")
	if _, err := Update(ctx, r2, filepath.Join(v3, "metadata"), "", false, v4, Options{Signers: append(keys, newRootKey)}); err != nil {
		t.Fatal(err)
	}
	srv.set(v4)
	if got, err := goTUF(t, srv.URL, trusted, t.TempDir(), "root.img"); err != nil || string(got) != "root image v2" {
		t.Fatalf("fresh client after rotation: %q %v", got, err)
	}
	if got, err := goTUF(t, srv.URL, trusted, cache, "root.img"); err != nil || string(got) != "root image v2" {
		t.Fatalf("cached client after rotation: %q %v", got, err)
	}
	if b, _ := os.ReadFile(filepath.Join(cache, "root.json")); !bytes.Contains(b, []byte(`"version": 2`)) {
		t.Error("the client did not move to root version 2")
	}

	// Our own downloader reads the same repository.
	out := t.TempDir()
	got2, err := Download(ctx, trusted, srv.URL+"/metadata", srv.URL+"/targets", nil, out, DownloadOptions{})
	if err != nil || len(got2) != 3 {
		t.Fatalf("Download: %v %v", got2, err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "boot.img")); string(b) != "boot" {
		t.Errorf("downloaded boot.img = %q", b)
	}
}

// noLeftovers fails for anything in dir but the names in keep.
func noLeftovers(t *testing.T, dir string, keep ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !slices.Contains(keep, e.Name()) {
			t.Errorf("left behind in %s: %s", dir, e.Name())
		}
	}
}

func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	r := strings.Replace(s, old, new, 1)
	if r == s {
		t.Fatalf("test setup: %q not found", old)
	}
	return r
}

func TestRefusals(t *testing.T) {
	r, keys := testRoot(t)
	base := t.TempDir()
	out := filepath.Join(base, "out")
	tdir := targetsDir(t, map[string]string{"a": "a"})

	if _, err := Create(ctx, r, tdir, out, Options{Signers: keys[:2]}); !errors.Is(err, ErrThreshold) || !strings.Contains(err.Error(), "snapshot") {
		t.Errorf("missing snapshot key: %v", err)
	}
	// A root that is complete and properly signed, but expired.
	old, _ := ParseRoot(rootRaw(t, r))
	SetExpires(old, time.Now().Add(-time.Hour))
	if err := SignRoot(ctx, old, nil, keys[:1], false); err != nil {
		t.Fatal(err)
	}
	if err := Verify(old, nil); err != nil {
		t.Fatalf("test setup: the expired root is not well signed: %v", err)
	}
	if _, err := Create(ctx, old, tdir, out, Options{Signers: keys}); !errors.Is(err, ErrExpired) || errors.Is(err, ErrRoot) {
		t.Errorf("expired root: %v, want ErrExpired only", err)
	}
	bad := targetsDir(t, map[string]string{"ok": "x"})
	os.Mkdir(filepath.Join(bad, "sub"), 0o755)
	if _, err := Create(ctx, r, bad, out, Options{Signers: keys}); !errors.Is(err, ErrTargetName) {
		t.Errorf("a directory among targets: %v", err)
	}
	bs := targetsDir(t, map[string]string{`back\slash`: "x"})
	if _, err := Create(ctx, r, bs, out, Options{Signers: keys}); !errors.Is(err, ErrTargetName) {
		t.Errorf("a name with a backslash: %v", err)
	}
	if _, err := Create(ctx, r, tdir, out, Options{Signers: keys, TimestampExpires: time.Now().Add(-time.Minute)}); !errors.Is(err, ErrExpired) {
		t.Errorf("timestamp expiring in the past: %v", err)
	}
	noLeftovers(t, base)

	if _, err := Create(ctx, r, tdir, out, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ctx, r, tdir, out, Options{Signers: keys}); !errors.Is(err, ErrOutdir) {
		t.Errorf("publishing over a repository: %v", err)
	}
	if _, err := Update(ctx, r, filepath.Join(out, "metadata"), "", false, filepath.Join(base, "u"), Options{Signers: keys, TargetsVersion: 1}); !errors.Is(err, ErrRollback) {
		t.Errorf("targets version not above the published one: %v", err)
	}
	// A different root of the same version is not a rotation.
	other, _ := ParseRoot(rootRaw(t, r))
	SetExpires(other, time.Now().Add(48*time.Hour))
	SignRoot(ctx, other, nil, keys[:1], false)
	if _, err := Update(ctx, other, filepath.Join(out, "metadata"), "", false, filepath.Join(base, "u"), Options{Signers: keys}); !errors.Is(err, ErrRoot) {
		t.Errorf("a different root of the same version: %v", err)
	}
	if _, err := os.Stat(filepath.Join(base, "u")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused update left its output directory")
	}
}

func TestRootThresholds(t *testing.T) {
	a, b := key(t, "root", signing.Ed25519), key(t, "root2", signing.Ed25519)
	r := NewRoot(time.Now().Add(time.Hour))
	AddKey(r, a.Key(), "root", "targets", "snapshot", "timestamp")
	AddKey(r, b.Key(), "root")
	if err := SetThreshold(r, "root", 2); err != nil {
		t.Fatal(err)
	}
	if err := SignRoot(ctx, r, nil, []signing.Signer{a}, false); !errors.Is(err, ErrThreshold) {
		t.Fatalf("one of two: %v", err)
	}
	if len(r.Signatures) != 0 {
		t.Fatal("a refused signing changed the root")
	}
	// Two people sign in turn: the first partially, on purpose.
	if err := SignRoot(ctx, r, nil, []signing.Signer{a}, true); err != nil {
		t.Fatal(err)
	}
	again, _ := ParseRoot(rootRaw(t, r))
	if err := SignRoot(ctx, again, nil, []signing.Signer{b}, false); err != nil {
		t.Fatalf("second signer: %v", err)
	}
	if err := Verify(again, nil); err != nil {
		t.Fatal(err)
	}
	stranger := key(t, "stranger", signing.Ed25519)
	if err := SignRoot(ctx, again, nil, []signing.Signer{stranger}, true); !errors.Is(err, ErrNotRoleKey) {
		t.Errorf("a key that is not a root key: %v", err)
	}
	if err := Check(again, time.Now()); err != nil {
		t.Errorf("Check: %v", err)
	}
	SetThreshold(again, "targets", 2)
	if err := Check(again, time.Now()); !errors.Is(err, ErrRoot) {
		t.Errorf("targets threshold 2 with one key: %v", err)
	}
}

func TestExternalCommandSigner(t *testing.T) {
	// The "hardware" key: a private key the repository code never sees,
	// used by a command that reads bytes on stdin and prints a signature.
	priv, _ := signing.Generate(signing.Ed25519, 0)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "hsm.pem")
	signing.WritePrivateKey(keyFile, priv)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := signing.TUFKey(priv.Public())
	cmdSigner := &signing.CommandSigner{Public: pub, Argv: []string{exe, "-test.run=^TestHelperSign$", "--", keyFile}}
	t.Setenv("UPDOG_HELPER_SIGN", "1")

	r, keys := testRoot(t)
	AddKey(r, pub, "timestamp")
	SetThreshold(r, "timestamp", 2)
	SignRoot(ctx, r, nil, keys[:1], false)
	out := filepath.Join(t.TempDir(), "repo")
	if _, err := Create(ctx, r, "", out, Options{Signers: append(keys, cmdSigner)}); err != nil {
		t.Fatalf("publish with an external signer: %v", err)
	}
	srv := serve(t, out)
	if _, err := Download(ctx, rootRaw(t, r), srv.URL+"/metadata", srv.URL+"/targets", nil, t.TempDir(), DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestHelperSign is the external signing command of
// TestExternalCommandSigner, not a test.
func TestHelperSign(t *testing.T) {
	if os.Getenv("UPDOG_HELPER_SIGN") == "" {
		t.Skip("helper process for TestExternalCommandSigner")
	}
	k, err := signing.LoadPrivateKey(os.Args[len(os.Args)-1])
	if err != nil {
		os.Exit(3)
	}
	msg, _ := readAll(os.Stdin)
	sig, _ := k.Sign(nil, msg, crypto.Hash(0))
	os.Stdout.Write(sig)
	os.Exit(0)
}

func readAll(f *os.File) ([]byte, error) {
	var b bytes.Buffer
	_, err := b.ReadFrom(f)
	return b.Bytes(), err
}

func TestCheckExpiry(t *testing.T) {
	r, keys := testRoot(t)
	out := filepath.Join(t.TempDir(), "repo")
	now := time.Now()
	if _, err := Create(ctx, r, "", out, Options{Signers: keys, TimestampExpires: now.Add(2 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	ex, err := CheckExpiry(ctx, filepath.Join(out, "metadata"), 3*24*time.Hour, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	soon := map[string]bool{}
	for _, e := range ex {
		soon[e.Role] = e.Soon
	}
	if !soon["timestamp"] || soon["targets"] || soon["snapshot"] || soon["root"] {
		t.Errorf("expiring within 3 days: %+v", ex)
	}
}
