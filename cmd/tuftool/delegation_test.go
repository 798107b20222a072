package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/updog/updog/internal/tufclient"
)

// The delegation commands, update --incoming-metadata, download, export
// and mirror, end to end through the command line.
func TestDelegationExportMirrorCLI(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, k := range []string{"root", "targets", "ts", "team"} {
		must(t, "gen-key", "--type", "ed25519", "--out", p(k+".pem"))
	}
	root := p("root.json")
	must(t, "root", "init", root)
	must(t, "root", "add-key", root, "-k", p("root.pem"), "--role", "root")
	must(t, "root", "add-key", root, "-k", p("targets.pem"), "--role", "targets", "--role", "snapshot")
	must(t, "root", "add-key", root, "-k", p("ts.pem"), "--role", "timestamp")
	must(t, "root", "sign", root, "-k", p("root.pem"))
	tdir := p("targets")
	os.Mkdir(tdir, 0o755)
	os.WriteFile(filepath.Join(tdir, "manifest.json"), []byte(`{"updates":[]}`), 0o644)
	keys := []string{"-k", p("targets.pem"), "-k", p("ts.pem")}
	must(t, append([]string{"create", "--root", root, "--add-targets", tdir, "--outdir", p("repo1")}, keys...)...)

	must(t, "delegation", "--signing-role", "team", "create-role", "-k", p("team.pem"), "--outdir", p("in1"))
	if _, _, code := tt("delegation", "--signing-role", "targets", "add-role", "--delegated-role", "team", "--incoming-metadata", p("in1"),
		"--paths", "team/*", "--path-hash-prefixes", "ab", "--root", root, "--metadata-url", p("repo1/metadata"), "-k", p("targets.pem"), "--outdir", p("in2")); code != exitUsage {
		t.Errorf("paths and prefixes together: exit %d", code)
	}
	must(t, "delegation", "--signing-role", "targets", "add-role", "--delegated-role", "team", "--incoming-metadata", p("in1"),
		"--paths", "team/*", "--root", root, "--metadata-url", p("repo1/metadata"), "-k", p("targets.pem"), "--outdir", p("in2"))
	must(t, append([]string{"update", "--root", root, "--metadata-url", p("repo1/metadata"), "--incoming-metadata", p("in2"), "--outdir", p("repo2")}, keys...)...)

	img := p("img")
	os.Mkdir(img, 0o755)
	os.WriteFile(filepath.Join(img, "image"), []byte("team image"), 0o644)
	must(t, "delegation", "--signing-role", "team", "update-delegated-targets", "--add-targets", img, "--target-prefix", "team/",
		"--root", root, "--metadata-url", p("repo2/metadata"), "-k", p("team.pem"), "--outdir", p("in3"))
	// Signed with the wrong key: refused before anything is written.
	if _, errs, code := tt("delegation", "--signing-role", "team", "update-delegated-targets", "--add-targets", img, "--target-prefix", "team/",
		"--root", root, "--metadata-url", p("repo2/metadata"), "-k", p("ts.pem"), "--outdir", p("in-bad")); code != exitError || !strings.Contains(errs, "threshold") {
		t.Errorf("wrong key: %d %s", code, errs)
	}
	must(t, append([]string{"update", "--root", root, "--metadata-url", p("repo2/metadata"), "--incoming-metadata", p("in3"), "--outdir", p("repo3")}, keys...)...)

	must(t, "download", "--root", root, "--metadata-url", p("repo3/metadata"), "--targets-url", p("repo3/targets"), "--target-name", "team/image", p("out"))
	if b, _ := os.ReadFile(p("out/team/image")); string(b) != "team image" {
		t.Fatalf("downloaded %q", b)
	}

	must(t, "export", "--root", root, "--metadata-url", p("repo3/metadata"), "--targets-url", p("repo3/targets"), "--target-name", "team/image", "--out", p("bundle.tar"))
	must(t, "mirror", "--root", root, "--metadata-url", p("repo3/metadata"), "--targets-url", p("repo3/targets"), "--outdir", p("mirror"))
	rootRaw, _ := os.ReadFile(root)
	for _, b := range []string{p("bundle.tar"), p("mirror")} {
		bundle, err := tufclient.OpenBundle(context.Background(), b, tufclient.BundleOptions{TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		c, err := tufclient.New(tufclient.Options{MetadataURL: bundle.MetadataURL, TargetsURL: bundle.TargetsURL, Root: rootRaw})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Refresh(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"team/image", "manifest.json"} {
			if _, err := c.ReadTarget(context.Background(), n, 0); err != nil {
				t.Errorf("%s: %s: %v", b, n, err)
			}
		}
		bundle.Close()
	}

	// remove-role, then the role's target is gone.
	must(t, "delegation", "--signing-role", "targets", "remove-role", "--delegated-role", "team",
		"--root", root, "--metadata-url", p("repo3/metadata"), "-k", p("targets.pem"), "--outdir", p("in4"))
	must(t, append([]string{"update", "--root", root, "--metadata-url", p("repo3/metadata"), "--incoming-metadata", p("in4"), "--outdir", p("repo4")}, keys...)...)
	if _, _, code := tt("download", "--root", root, "--metadata-url", p("repo4/metadata"), "--targets-url", p("repo4/targets"), "--target-name", "team/image", p("out4")); code != exitError {
		t.Errorf("removed role's target: exit %d", code)
	}
	for _, args := range [][]string{{"delegation"}, {"delegation", "--signing-role", "x", "bogus"}, {"delegation", "--signing-role", "team", "create-role", "--outdir", p("x")}, {"export"}, {"mirror"}} {
		if _, _, code := tt(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}
