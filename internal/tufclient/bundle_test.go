package tufclient

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/internal/tufclient/tuftest"
)

type entry struct {
	name string
	typ  byte
	body string
	link string
}

func tarOf(t *testing.T, es []entry) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)), Linkname: e.link, ModTime: time.Unix(0, 0)}
		if e.typ == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "bundle.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// bundleFromSim writes s as a bundle directory and as a tar of it.
func bundleFromSim(t *testing.T, s *tuftest.Sim) (dir, tarPath string) {
	t.Helper()
	dir = t.TempDir()
	s.WriteTo(dir)
	var es []entry
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if fi.IsDir() {
			es = append(es, entry{name: filepath.ToSlash(rel) + "/", typ: tar.TypeDir})
			return nil
		}
		b, _ := os.ReadFile(p)
		es = append(es, entry{name: filepath.ToSlash(rel), body: string(b)})
		return nil
	})
	return dir, tarOf(t, es)
}

// A bundle, directory or tar, is verified by the same client, with no
// request to any server.
func TestOpenBundle(t *testing.T) {
	s := tuftest.New(t)
	s.AddTarget("targets", "manifest.json", []byte(`{"updates":[]}`))
	s.Delegate("targets", role("team", []string{"team/*"}, false))
	s.AddTarget("team", "team/image", []byte("team image"))
	s.Publish("targets", "team")
	dir, tarPath := bundleFromSim(t, s)
	s.ResetRequests()
	for _, p := range []string{dir, tarPath} {
		b, err := OpenBundle(ctx, p, BundleOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		c, err := New(Options{MetadataURL: b.MetadataURL, TargetsURL: b.TargetsURL, Root: s.TrustedRoot(), CacheDir: t.TempDir(),
			Now: func() time.Time { return s.Now }})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		for name, want := range map[string]string{"manifest.json": `{"updates":[]}`, "team/image": "team image"} {
			if got, err := c.ReadTarget(ctx, name, 0); err != nil || string(got) != want {
				t.Errorf("%s: %q %v", name, got, err)
			}
		}
		unpacked := b.Dir
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if p == tarPath {
			if _, err := os.Stat(unpacked); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("Close left %s: %v", unpacked, err)
			}
		} else if _, err := os.Stat(dir); err != nil {
			t.Errorf("Close removed the bundle directory: %v", err)
		}
	}
	if n := len(s.Requests()) + len(s.TargetRequests()); n != 0 {
		t.Errorf("%d requests to the server", n)
	}
}

// An expired bundle is refused with an error naming what expired; the
// offline grace lets an expired timestamp through.
func TestBundleExpired(t *testing.T) {
	s := tuftest.New(t)
	s.Timestamp.Signed.Expires = s.Now.Add(time.Hour)
	s.Publish("targets")
	dir, _ := bundleFromSim(t, s)
	b, err := OpenBundle(ctx, dir, BundleOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	later := func() time.Time { return s.Now.Add(3 * time.Hour) }
	c, _ := New(Options{MetadataURL: b.MetadataURL, TargetsURL: b.TargetsURL, Root: s.TrustedRoot(), Now: later})
	err = c.Refresh(ctx)
	var ee *ExpiredError
	if !errors.As(err, &ee) || ee.Role != "timestamp" || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired bundle: %v", err)
	}
	c, _ = New(Options{MetadataURL: b.MetadataURL, TargetsURL: b.TargetsURL, Root: s.TrustedRoot(), Now: later, OfflineGrace: 24 * time.Hour})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if used, by := c.GraceUsed(); !used || by != 2*time.Hour {
		t.Errorf("GraceUsed %v %s", used, by)
	}
}

func TestHostileBundleEntries(t *testing.T) {
	ok := entry{name: "metadata/1.root.json", body: "{}"}
	for _, c := range []struct {
		name string
		es   []entry
		o    BundleOptions
	}{
		{"parent escape", []entry{{name: "../evil", body: "x"}}, BundleOptions{}},
		{"inner escape", []entry{{name: "metadata/../../evil", body: "x"}}, BundleOptions{}},
		{"absolute", []entry{{name: "/etc/evil", body: "x"}}, BundleOptions{}},
		{"outside the layout", []entry{ok, {name: "bin/evil", body: "x"}}, BundleOptions{}},
		{"file at the top", []entry{{name: "evil", body: "x"}}, BundleOptions{}},
		{"symlink", []entry{{name: "metadata/", typ: tar.TypeDir}, {name: "metadata/link", typ: tar.TypeSymlink, link: "/etc/passwd"}}, BundleOptions{}},
		{"symlink then write through it", []entry{{name: "targets", typ: tar.TypeSymlink, link: "/tmp"}, {name: "targets/evil", body: "x"}}, BundleOptions{}},
		{"hard link", []entry{ok, {name: "metadata/hard", typ: tar.TypeLink, link: "metadata/1.root.json"}}, BundleOptions{}},
		{"fifo", []entry{{name: "metadata/fifo", typ: tar.TypeFifo}}, BundleOptions{}},
		{"device", []entry{{name: "metadata/dev", typ: tar.TypeBlock}}, BundleOptions{}},
		{"duplicate", []entry{ok, ok}, BundleOptions{}},
		{"oversized entry", []entry{{name: "targets/big", body: strings.Repeat("x", 1000)}}, BundleOptions{MaxSize: 999}},
		{"oversized total", []entry{{name: "targets/a", body: strings.Repeat("x", 600)}, {name: "targets/b", body: strings.Repeat("x", 600)}}, BundleOptions{MaxSize: 1000}},
		{"too many entries", []entry{{name: "targets/a", body: "1"}, {name: "targets/b", body: "2"}, {name: "targets/c", body: "3"}}, BundleOptions{MaxEntries: 2}},
		{"backslash", []entry{{name: "metadata\\..\\..\\evil", body: "x"}}, BundleOptions{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := tarOf(t, c.es)
			tmp := t.TempDir()
			c.o.TempDir = tmp
			b, err := OpenBundle(ctx, p, c.o)
			if !errors.Is(err, ErrBundle) {
				if b != nil {
					b.Close()
				}
				t.Fatalf("%v, want ErrBundle", err)
			}
			// Nothing is left behind, and nothing was written outside.
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("left %v", ents)
			}
			if _, err := os.Lstat(filepath.Join(filepath.Dir(tmp), "evil")); err == nil {
				t.Error("wrote outside the bundle")
			}
		})
	}
}

// A truncated tar and a FIFO in place of a bundle file.
func TestHostileBundleFiles(t *testing.T) {
	p := tarOf(t, []entry{{name: "targets/a", body: strings.Repeat("x", 5000)}})
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:2000], 0o644)
	if _, err := OpenBundle(ctx, p, BundleOptions{TempDir: t.TempDir()}); err == nil {
		t.Error("a truncated tar opened")
	}
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := mkfifo(fifo); err != nil {
		t.Skip(err)
	}
	if _, err := OpenBundle(ctx, fifo, BundleOptions{TempDir: t.TempDir()}); !errors.Is(err, ErrBundle) {
		t.Errorf("FIFO: %v", err)
	}
	// A directory without metadata/.
	if _, err := OpenBundle(ctx, t.TempDir(), BundleOptions{}); !errors.Is(err, ErrBundle) {
		t.Errorf("empty directory: %v", err)
	}
}
