package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func tt(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb, time.Now)
	return out.String(), errb.String(), code
}

func must(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := tt(args...)
	if code != 0 {
		t.Fatalf("tuftool %v: exit %d: %s", args, code, errs)
	}
	return out
}

func TestPublisherWorkflow(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	must(t, "gen-key", "--type", "ed25519", "--out", p("root.pem"))
	must(t, "gen-key", "--type", "ecdsa", "--out", p("targets.pem"))
	must(t, "gen-key", "--type", "ed25519", "--out", p("ts.pem"), "--public-out", p("ts.pub"))
	if fi, _ := os.Stat(p("root.pem")); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode().Perm())
	}
	if _, errs, code := tt("gen-key", "--type", "ed25519", "--out", p("root.pem")); code == 0 {
		t.Errorf("gen-key overwrote a key: %s", errs)
	}
	root := p("root.json")
	must(t, "root", "init", root, "--expires", "in 52 weeks")
	must(t, "root", "add-key", root, "-k", p("root.pem"), "--role", "root")
	must(t, "root", "add-key", root, "-k", p("targets.pem"), "--role", "targets", "--role", "snapshot")
	must(t, "root", "add-key", root, "-k", p("ts.pub"), "--role", "timestamp") // a public key file
	if _, errs, code := tt("root", "sign", root, "-k", p("targets.pem")); code != exitError || !strings.Contains(errs, "not a root key") {
		t.Errorf("signing root with a targets key: %d %s", code, errs)
	}
	must(t, "root", "sign", root, "-k", p("root.pem"))

	targets := p("targets")
	os.Mkdir(targets, 0o755)
	os.WriteFile(filepath.Join(targets, "manifest.json"), []byte(`{"updates":[]}`), 0o644)
	os.WriteFile(filepath.Join(targets, "root.img"), bytes.Repeat([]byte("r"), 100000), 0o644)
	keys := []string{"-k", p("root.pem"), "-k", p("targets.pem"), "-k", p("ts.pem")}
	if _, errs, code := tt("create", "--root", root, "--add-targets", targets, "--outdir", p("repo"), "-k", p("targets.pem")); code != exitError || !strings.Contains(errs, "threshold") {
		t.Errorf("create without the timestamp key: %d %s", code, errs)
	}
	if _, err := os.Stat(p("repo")); !os.IsNotExist(err) {
		t.Error("a failed create left its output")
	}
	out := must(t, append([]string{"create", "--root", root, "--add-targets", targets, "--outdir", p("repo"), "--json"}, keys...)...)
	var res struct {
		Targets int `json:"targets"`
	}
	json.Unmarshal([]byte(out), &res)
	if res.Targets != 2 {
		t.Fatalf("create: %s", out)
	}

	// Download from the directory and over HTTP.
	must(t, "download", "--root", root, "--metadata-url", p("repo/metadata"), "--targets-url", p("repo/targets"), p("dl"))
	if b, _ := os.ReadFile(p("dl/root.img")); len(b) != 100000 {
		t.Errorf("downloaded root.img: %d bytes", len(b))
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(p("repo2"))))
	defer srv.Close()

	os.WriteFile(filepath.Join(targets, "boot.img"), []byte("boot"), 0o644)
	must(t, append([]string{"update", "--root", root, "--metadata-url", p("repo/metadata"), "--add-targets", targets, "--outdir", p("repo2")}, keys...)...)
	must(t, "download", "--root", root, "--metadata-url", srv.URL+"/metadata", "--targets-url", srv.URL+"/targets", "--target-name", "boot.img", p("dl2"))
	if b, _ := os.ReadFile(p("dl2/boot.img")); string(b) != "boot" {
		t.Errorf("boot.img over HTTP: %q", b)
	}
	must(t, append([]string{"update", "--root", root, "--metadata-url", srv.URL + "/metadata", "--timestamp-only", "--outdir", p("repo3"), "--timestamp-expires", "in 2 days"}, keys...)...)

	// check-expiry: the timestamp expires in 2 days.
	out, _, code := tt("check-expiry", "--metadata-url", p("repo3/metadata"), "--within", "3 days")
	if code != exitExpiring || !strings.Contains(out, "timestamp") {
		t.Errorf("check-expiry within 3 days: %d %s", code, out)
	}
	if _, _, code := tt("check-expiry", "--metadata-url", p("repo3/metadata"), "--within", "1 day"); code != 0 {
		t.Errorf("check-expiry within 1 day: %d", code)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"create"}, {"root"}, {"root", "frob", "x"}, {"gen-key"},
		{"download", "--root", "r.json"}, {"root", "expire", "r.json", "soon"}, {"check-expiry"}} {
		if _, _, code := tt(args...); code != exitUsage {
			t.Errorf("tuftool %v: exit %d, want usage", args, code)
		}
	}
	for _, cmd := range [][]string{{"gen-key"}, {"create"}, {"update"}, {"download"}, {"check-expiry"}, {"root"}, {"root", "sign"}} {
		out, _, code := tt(append(cmd, "--help")...)
		if code != 0 || !strings.Contains(out, "Usage") {
			t.Errorf("%v --help: %d %q", cmd, code, out)
		}
	}
}

// TestRootRotationCLI rotates the root key with the root subcommands and
// publishes the rotation; a client trusting version 1 follows it.
func TestRootRotationCLI(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	ids := map[string]string{}
	for _, k := range []string{"old", "new", "other", "unused"} {
		ids[k] = strings.TrimSpace(must(t, "gen-key", "--out", p(k+".pem")))
	}
	root := p("root.json")
	must(t, "root", "init", root)
	must(t, "root", "add-key", root, "-k", p("old.pem"), "--role", "root")
	must(t, "root", "add-key", root, "-k", p("other.pem"), "--role", "targets", "--role", "snapshot", "--role", "timestamp")
	must(t, "root", "sign", root, "-k", p("old.pem"))
	keys := []string{"-k", p("old.pem"), "-k", p("new.pem"), "-k", p("other.pem")}
	must(t, append([]string{"create", "--root", root, "--outdir", p("repo1")}, keys...)...)
	v1, _ := os.ReadFile(root)

	next := p("root2.json")
	os.WriteFile(next, v1, 0o644)
	must(t, "root", "bump-version", next)
	must(t, "root", "add-key", next, "-k", p("new.pem"), "--role", "root")
	if _, _, code := tt("root", "remove-key", next, ids["unused"]); code == 0 {
		t.Error("removing a key the root does not list succeeded")
	}
	must(t, "root", "remove-key", next, ids["old"], "--role", "root")
	must(t, "root", "expire", next, "in 30 days")
	if _, errs, code := tt("root", "sign", next, "-k", p("new.pem"), "--cross-sign", root); code == 0 {
		t.Errorf("a rotation signed by the new key alone was accepted")
	} else if !strings.Contains(errs, "threshold") {
		t.Errorf("unclear refusal: %s", errs)
	}
	must(t, "root", "sign", next, "-k", p("new.pem"), "-k", p("old.pem"), "--cross-sign", root)
	must(t, append([]string{"update", "--root", next, "--metadata-url", p("repo1/metadata"), "--outdir", p("repo2")}, keys...)...)
	if _, err := os.Stat(p("repo2/metadata/2.root.json")); err != nil {
		t.Fatal("the rotated root was not published")
	}
	must(t, "download", "--root", root, "--metadata-url", p("repo2/metadata"), "--targets-url", p("repo2/targets"), p("dl"))
}
