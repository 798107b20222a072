package repo

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/signing"
)

// Attack tests, each named after the attack: a client (our Download, which
// uses go-tuf for metadata and streams targets itself) must refuse.

type published struct {
	root  *Root
	keys  []signing.Signer
	dir   string // the repository
	srv   *dirServer
	trust []byte
}

func publish(t *testing.T, o Options) *published {
	t.Helper()
	r, keys := testRoot(t)
	p := &published{root: r, keys: keys, dir: filepath.Join(t.TempDir(), "repo"), trust: rootRaw(t, r)}
	o.Signers = keys
	if _, err := Create(ctx, r, targetsDir(t, map[string]string{"root.img": "the real root image"}), p.dir, o); err != nil {
		t.Fatal(err)
	}
	p.srv = serve(t, p.dir)
	return p
}

func (p *published) download(t *testing.T, o DownloadOptions) (string, error) {
	t.Helper()
	out := t.TempDir()
	_, err := Download(ctx, p.trust, p.srv.URL+"/metadata", p.srv.URL+"/targets", []string{"root.img"}, out, o)
	if err != nil {
		if ents, _ := os.ReadDir(out); len(ents) != 0 {
			t.Errorf("a refused download left %v behind", ents)
		}
	}
	return out, err
}

func storedTarget(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "targets", "*.root.img"))
	if len(m) != 1 {
		t.Fatalf("stored targets: %v", m)
	}
	return m[0]
}

func TestAttackTamperedTarget(t *testing.T) {
	p := publish(t, Options{})
	os.WriteFile(storedTarget(t, p.dir), []byte("the evil root image"), 0o644) // same length
	if _, err := p.download(t, DownloadOptions{}); !errors.Is(err, fetch.ErrHash) {
		t.Fatalf("tampered target: %v", err)
	}
}

func TestAttackTamperedMetadata(t *testing.T) {
	p := publish(t, Options{})
	f := filepath.Join(p.dir, "metadata", "1.targets.json")
	b, _ := os.ReadFile(f)
	evil := strings.Replace(string(b), `"length": 19`, `"length": 20`, 1)
	if evil == string(b) {
		t.Fatal("test setup: the targets metadata did not change")
	}
	os.WriteFile(f, []byte(evil), 0o644)
	_, err := p.download(t, DownloadOptions{})
	var unsigned *metadata.ErrUnsignedMetadata
	if !errors.As(err, &unsigned) {
		t.Fatalf("tampered targets metadata: %v", err)
	}
}

func TestAttackWrongKey(t *testing.T) {
	p := publish(t, Options{})
	f := filepath.Join(p.dir, "metadata", "timestamp.json")
	ts, _ := metadata.Timestamp().FromFile(f)
	ts.Signed.Version++
	ts.Signatures = nil
	if err := signing.SignMetadata(ctx, ts, key(t, "attacker", signing.Ed25519)); err != nil {
		t.Fatal(err)
	}
	b, _ := ts.ToBytes(true)
	os.WriteFile(f, b, 0o644)
	_, err := p.download(t, DownloadOptions{})
	var unsigned *metadata.ErrUnsignedMetadata
	if !errors.As(err, &unsigned) {
		t.Fatalf("timestamp signed by a key the root does not list: %v", err)
	}
}

func TestAttackThresholdNotMet(t *testing.T) {
	p := publish(t, Options{})
	// Root version 2 (properly signed) asks for two targets signatures;
	// the served targets carry one.
	second := key(t, "targets2", signing.Ed25519)
	r2, _ := ParseRoot(p.trust)
	BumpVersion(r2)
	AddKey(r2, second.Key(), "targets")
	SetThreshold(r2, "targets", 2)
	if err := SignRoot(ctx, r2, p.root, p.keys[:1], false); err != nil {
		t.Fatal(err)
	}
	WriteRoot(filepath.Join(p.dir, "metadata", "2.root.json"), r2)
	_, err := p.download(t, DownloadOptions{})
	var unsigned *metadata.ErrUnsignedMetadata
	if !errors.As(err, &unsigned) {
		t.Fatalf("targets below threshold: %v", err)
	}
	// Our publisher refuses to produce such a repository at all.
	if _, err := Update(ctx, r2, filepath.Join(p.dir, "metadata"), "", false, filepath.Join(t.TempDir(), "x"), Options{Signers: p.keys}); !errors.Is(err, ErrThreshold) {
		t.Fatalf("publishing below threshold: %v", err)
	}
}

func TestAttackExpiredTimestamp(t *testing.T) {
	p := publish(t, Options{TimestampExpires: time.Now().Add(time.Hour)})
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	_, err := p.download(t, DownloadOptions{Now: later})
	var exp *metadata.ErrExpiredMetadata
	if !errors.As(err, &exp) {
		t.Fatalf("expired timestamp: %v", err)
	}
}

func TestAttackRolledBackSnapshotVersion(t *testing.T) {
	p := publish(t, Options{})
	v1 := p.dir
	v2 := filepath.Join(t.TempDir(), "v2")
	if _, err := Update(ctx, p.root, filepath.Join(v1, "metadata"), targetsDir(t, map[string]string{"root.img": "fixed root image!!!"}), false, v2, Options{Signers: p.keys}); err != nil {
		t.Fatal(err)
	}
	// A client learns snapshot version 2.
	p.srv.set(v2)
	cache := t.TempDir()
	if _, err := goTUF(t, p.srv.URL, p.trust, cache, "root.img"); err != nil {
		t.Fatal(err)
	}
	// The attacker (holding the timestamp key, or replaying) serves the old
	// repository under a new timestamp that points at snapshot version 1.
	ts, _ := metadata.Timestamp().FromFile(filepath.Join(v2, "metadata", "timestamp.json"))
	old, _ := os.ReadFile(filepath.Join(v1, "metadata", "1.snapshot.json"))
	ts.Signed.Version = 3
	ts.Signed.Meta["snapshot.json"] = &metadata.MetaFiles{Version: 1, Length: int64(len(old)), Hashes: metadata.Hashes{"sha256": sha(old)}}
	if err := signing.SignMetadata(ctx, ts, p.keys[3]); err != nil {
		t.Fatal(err)
	}
	b, _ := ts.ToBytes(true)
	os.WriteFile(filepath.Join(v1, "metadata", "timestamp.json"), b, 0o644)
	p.srv.set(v1)
	_, err := goTUF(t, p.srv.URL, p.trust, cache, "root.img")
	var bad *metadata.ErrBadVersionNumber
	if !errors.As(err, &bad) {
		t.Fatalf("rolled-back snapshot version: %v", err)
	}
}

// TestAttackEndlessData: the server sends more bytes than the signed length
// (here, without end). The download stops one byte past the length.
func TestAttackEndlessData(t *testing.T) {
	p := publish(t, Options{})
	sent := make(chan int64, 1)
	files := http.FileServer(http.Dir(p.dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".root.img") {
			n, _ := io.Copy(w, io.LimitReader(endless{}, 1<<30))
			sent <- n
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out := t.TempDir()
	_, err := Download(c, p.trust, srv.URL+"/metadata", srv.URL+"/targets", []string{"root.img"}, out, DownloadOptions{})
	if !errors.Is(err, fetch.ErrTooLong) {
		t.Fatalf("endless data: %v", err)
	}
	srv.CloseClientConnections()
	if n := <-sent; n > 64<<20 {
		t.Errorf("the client kept reading: the server sent %d bytes", n)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'A'
	}
	return len(p), nil
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}
