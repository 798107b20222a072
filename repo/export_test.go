package repo

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/updog/updog/internal/tufclient"
)

// readBundle opens a bundle and reads targets through a fresh client.
func readBundle(t *testing.T, bundle string, root []byte, names ...string) map[string]string {
	t.Helper()
	b, err := tufclient.OpenBundle(ctx, bundle, tufclient.BundleOptions{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := tufclient.New(tufclient.Options{MetadataURL: b.MetadataURL, TargetsURL: b.TargetsURL, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range names {
		data, err := c.ReadTarget(ctx, n, 0)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		got[n] = string(data)
	}
	return got
}

func TestExport(t *testing.T) {
	r, _, _, base, v3 := delegated(t)
	root := rootRaw(t, r)
	srv := serve(t, v3)
	for _, out := range []string{filepath.Join(base, "bundle.tar"), filepath.Join(base, "bundle-dir")} {
		res, err := Export(ctx, root, srv.URL+"/metadata", srv.URL+"/targets", out, []string{"team/image"}, ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Copied != 2 {
			t.Errorf("copied %d targets, want the image and the manifest", res.Copied)
		}
		srv.Close() // the bundle stands alone
		got := readBundle(t, out, root, "team/image", ManifestTarget)
		if got["team/image"] != "team image v1" || got[ManifestTarget] != `{"updates":[]}` {
			t.Errorf("%s: %v", out, got)
		}
		srv = serve(t, v3)
	}
	// The tar holds only regular files and directories under metadata/ and targets/.
	f, _ := os.Open(filepath.Join(base, "bundle.tar"))
	defer f.Close()
	tr := tar.NewReader(f)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	for _, want := range []string{"metadata/1.root.json", "metadata/timestamp.json", "metadata/2.team.json", "targets/team/"} {
		if !slices.Contains(names, want) {
			t.Errorf("tar lacks %s: %v", want, names)
		}
	}
}

// A source serving a tampered target: the export fails and leaves
// nothing at its output.
func TestHostileExportTamperedTarget(t *testing.T) {
	r, _, _, base, v3 := delegated(t)
	m, _ := filepath.Glob(filepath.Join(v3, "targets", "team", "*.image"))
	os.WriteFile(m[0], []byte("evil image v1"), 0o644)
	for _, out := range []string{filepath.Join(base, "b.tar"), filepath.Join(base, "b")} {
		_, err := Export(ctx, rootRaw(t, r), filepath.Join(v3, "metadata"), filepath.Join(v3, "targets"), out, nil, ClientOptions{})
		if err == nil {
			t.Fatalf("%s: exported a tampered target", out)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", out, err)
		}
	}
	noLeftovers(t, base, "v1", "v2", "v3", "in-create", "in-team")
}

func TestMirror(t *testing.T) {
	r, keys, _, base, v3 := delegated(t)
	root := rootRaw(t, r)
	srv := serve(t, v3)
	mirror := filepath.Join(base, "mirror")
	res, err := Mirror(ctx, root, srv.URL+"/metadata", srv.URL+"/targets", mirror, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 2 {
		t.Errorf("copied %d", res.Copied)
	}
	got := readBundle(t, mirror, root, "team/image", ManifestTarget)
	if got["team/image"] != "team image v1" {
		t.Errorf("mirror: %v", got)
	}
	// Nothing new: nothing copied.
	if res, err = Mirror(ctx, root, srv.URL+"/metadata", srv.URL+"/targets", mirror, ClientOptions{}); err != nil || res.Copied != 0 {
		t.Fatalf("second run: %+v %v", res, err)
	}
	// A new version upstream.
	v4 := filepath.Join(base, "v4")
	if _, err := Update(ctx, r, filepath.Join(v3, "metadata"), targetsDir(t, map[string]string{"boot.img": "boot"}), false, v4, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	srv.set(v4)
	if res, err = Mirror(ctx, root, srv.URL+"/metadata", srv.URL+"/targets", mirror, ClientOptions{}); err != nil || res.Copied != 1 {
		t.Fatalf("third run: %+v %v", res, err)
	}
	if got := readBundle(t, mirror, root, "boot.img"); got["boot.img"] != "boot" {
		t.Errorf("after the update: %v", got)
	}
	// The source rolls back to v3: refused, the mirror keeps v4.
	srv.set(v3)
	if _, err := Mirror(ctx, root, srv.URL+"/metadata", srv.URL+"/targets", mirror, ClientOptions{}); !errors.Is(err, tufclient.ErrRollback) {
		t.Fatalf("rollback: %v", err)
	}
	readBundle(t, mirror, root, "boot.img")
}

// A mirror source that serves a tampered target: refused, and the
// mirror's published version is untouched (no new timestamp, no partial
// file).
func TestHostileMirrorTamperedSource(t *testing.T) {
	r, keys, _, base, v3 := delegated(t)
	root := rootRaw(t, r)
	mirror := filepath.Join(base, "mirror")
	if _, err := Mirror(ctx, root, filepath.Join(v3, "metadata"), filepath.Join(v3, "targets"), mirror, ClientOptions{}); err != nil {
		t.Fatal(err)
	}
	tsBefore, _ := os.ReadFile(filepath.Join(mirror, "metadata", "timestamp.json"))
	v4 := filepath.Join(base, "v4")
	if _, err := Update(ctx, r, filepath.Join(v3, "metadata"), targetsDir(t, map[string]string{"boot.img": "boot"}), false, v4, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	m, _ := filepath.Glob(filepath.Join(v4, "targets", "*.boot.img"))
	os.WriteFile(m[0], []byte("evil"), 0o644)
	if _, err := Mirror(ctx, root, filepath.Join(v4, "metadata"), filepath.Join(v4, "targets"), mirror, ClientOptions{}); err == nil {
		t.Fatal("mirrored a tampered target")
	}
	tsAfter, _ := os.ReadFile(filepath.Join(mirror, "metadata", "timestamp.json"))
	if string(tsBefore) != string(tsAfter) {
		t.Error("the mirror's timestamp changed")
	}
	if m, _ := filepath.Glob(filepath.Join(mirror, "targets", "*boot.img*")); len(m) != 0 {
		t.Errorf("partial target left: %v", m)
	}
	readBundle(t, mirror, root, "team/image")
}
