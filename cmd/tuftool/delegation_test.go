package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/signing"
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
	if _, err := os.Stat(p("in-bad")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused update left %s behind: %v", p("in-bad"), err)
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

// TestDelegationAddRemoveKeyCLI: delegation add-key and remove-key through
// the command. After add-key, the role signed by the new key alone is
// published and both our client and go-tuf's download through it; after
// remove-key, the role signed by the removed key alone (as a stale or
// hostile mirror would serve it) is refused by both, where the same
// signature was accepted while the key was listed.
func TestDelegationAddRemoveKeyCLI(t *testing.T) {
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, k := range []string{"root", "targets", "ts", "team"} {
		must(t, "gen-key", "--type", "ed25519", "--out", p(k+".pem"))
	}
	// The new key is ECDSA, given to add-key as a public key file only.
	must(t, "gen-key", "--type", "ecdsa", "--out", p("team2.pem"), "--public-out", p("team2.pub"))
	root := p("root.json")
	must(t, "root", "init", root)
	must(t, "root", "add-key", root, "-k", p("root.pem"), "--role", "root")
	must(t, "root", "add-key", root, "-k", p("targets.pem"), "--role", "targets", "--role", "snapshot")
	must(t, "root", "add-key", root, "-k", p("ts.pem"), "--role", "timestamp")
	must(t, "root", "sign", root, "-k", p("root.pem"))
	rootRaw, _ := os.ReadFile(root)
	tdir := p("targets")
	os.Mkdir(tdir, 0o755)
	os.WriteFile(filepath.Join(tdir, "manifest.json"), []byte(`{"updates":[]}`), 0o644)
	keys := []string{"-k", p("targets.pem"), "-k", p("ts.pem")}
	must(t, append([]string{"create", "--root", root, "--add-targets", tdir, "--outdir", p("repo1")}, keys...)...)
	update := func(from, incoming, to string) {
		t.Helper()
		must(t, append([]string{"update", "--root", root, "--metadata-url", p(from + "/metadata"), "--incoming-metadata", p(incoming), "--outdir", p(to)}, keys...)...)
	}
	teamTargets := func(from, key, content, out string) (string, int) {
		img := p("img-" + out)
		os.Mkdir(img, 0o755)
		os.WriteFile(filepath.Join(img, "image"), []byte(content), 0o644)
		_, errs, code := tt("delegation", "--signing-role", "team", "update-delegated-targets", "--add-targets", img, "--target-prefix", "team/",
			"--root", root, "--metadata-url", p(from+"/metadata"), "-k", p(key), "--outdir", p(out))
		return errs, code
	}
	must(t, "delegation", "--signing-role", "team", "create-role", "-k", p("team.pem"), "--outdir", p("in1"))
	must(t, "delegation", "--signing-role", "targets", "add-role", "--delegated-role", "team", "--incoming-metadata", p("in1"),
		"--paths", "team/*", "--root", root, "--metadata-url", p("repo1/metadata"), "-k", p("targets.pem"), "--outdir", p("in2"))
	update("repo1", "in2", "repo2")
	if errs, code := teamTargets("repo2", "team.pem", "team image v1", "in3"); code != 0 {
		t.Fatalf("update-delegated-targets: %d %s", code, errs)
	}
	update("repo2", "in3", "repo3")
	both(t, p("repo3"), rootRaw, "team image v1")
	// Before add-key the second key cannot sign the role.
	if errs, code := teamTargets("repo3", "team2.pem", "too early", "in-early"); code != exitError || !strings.Contains(errs, "threshold") {
		t.Errorf("the second key before add-key: %d %s", code, errs)
	}

	// add-key: targets lists team2 for team.
	teamID, team2ID := keyID(t, p("team.pem")), keyID(t, p("team2.pem"))
	for _, args := range [][]string{
		{"--root", root, "--metadata-url", p("repo3/metadata"), "-k", p("targets.pem"), "--outdir", p("x")},              // no --new-key
		{"--new-key", p("team2.pub"), "--root", root, "--metadata-url", p("repo3/metadata"), "--outdir", p("x")},         // no signing key
		{"--new-key", p("team2.pub"), "--metadata-url", p("repo3/metadata"), "-k", p("targets.pem"), "--outdir", p("x")}, // no --root
		{"--delegated-role", "", "--new-key", p("team2.pub"), "--root", root, "--metadata-url", p("repo3/metadata"), "-k", p("targets.pem"), "--outdir", p("x")},
	} {
		args = append([]string{"delegation", "--signing-role", "targets", "add-key"}, args...)
		if !slices.Contains(args, "--delegated-role") {
			args = append(args, "--delegated-role", "team")
		}
		if _, _, code := tt(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args[3:], code, exitUsage)
		}
	}
	if _, errs, code := tt("delegation", "--signing-role", "targets", "add-key", "--delegated-role", "team", "--new-key", p("team2.pub"),
		"--root", root, "--metadata-url", p("repo3/metadata"), "-k", p("team.pem"), "--outdir", p("in-badsigner")); code != exitError {
		t.Errorf("add-key signed by the team's key instead of targets': %d %s", code, errs)
	}
	out := must(t, "delegation", "--signing-role", "targets", "add-key", "--delegated-role", "team", "--new-key", p("team2.pub"),
		"--root", root, "--metadata-url", p("repo3/metadata"), "-k", p("targets.pem"), "--outdir", p("in4"))
	if !strings.Contains(out, "--incoming-metadata "+p("in4")) {
		t.Errorf("add-key output: %s", out)
	}
	update("repo3", "in4", "repo4")
	if ids := delegatedKeyIDs(t, p("repo4"), "team"); !slices.Contains(ids, teamID) || !slices.Contains(ids, team2ID) {
		t.Fatalf("after add-key team's keys are %v, want %s and %s", ids, teamID, team2ID)
	}
	// The role as published (signed by the first key) still verifies.
	both(t, p("repo4"), rootRaw, "team image v1")
	// The new key alone now signs it; both clients download through it.
	if errs, code := teamTargets("repo4", "team2.pem", "team image v2", "in5"); code != 0 {
		t.Fatalf("update-delegated-targets with the new key: %d %s", code, errs)
	}
	update("repo4", "in5", "repo5")
	both(t, p("repo5"), rootRaw, "team image v2")
	// Control: while the first key is listed, the same role signed by it
	// alone verifies.
	resign(t, p("repo5"), p("repo5-resigned"), "team", p("team.pem"))
	both(t, p("repo5-resigned"), rootRaw, "team image v2")

	// remove-key: targets unlists the first key.
	if _, _, code := tt("delegation", "--signing-role", "targets", "remove-key", "--delegated-role", "team",
		"--root", root, "--metadata-url", p("repo5/metadata"), "-k", p("targets.pem"), "--outdir", p("x")); code != exitUsage {
		t.Errorf("remove-key without --keyid: exit %d, want %d", code, exitUsage)
	}
	if _, _, code := tt("delegation", "--signing-role", "targets", "remove-key", "--delegated-role", "team", "--keyid", strings.Repeat("0", 64),
		"--root", root, "--metadata-url", p("repo5/metadata"), "-k", p("targets.pem"), "--outdir", p("in-unknown")); code == 0 {
		t.Error("remove-key of a key the role does not list succeeded")
	}
	must(t, "delegation", "--signing-role", "targets", "remove-key", "--delegated-role", "team", "--keyid", teamID,
		"--root", root, "--metadata-url", p("repo5/metadata"), "-k", p("targets.pem"), "--outdir", p("in6"))
	update("repo5", "in6", "repo6")
	if ids := delegatedKeyIDs(t, p("repo6"), "team"); slices.Contains(ids, teamID) || !slices.Contains(ids, team2ID) {
		t.Fatalf("after remove-key team's keys are %v, want only %s", ids, team2ID)
	}
	both(t, p("repo6"), rootRaw, "team image v2")
	// The removed key can no longer sign the role through the command...
	if errs, code := teamTargets("repo6", "team.pem", "from the removed key", "in-removed"); code != exitError || !strings.Contains(errs, "threshold") {
		t.Errorf("the removed key: %d %s", code, errs)
	}
	// (Its targets are staged into --outdir before the signing is checked;
	// no role metadata is written, so there is nothing to publish.)
	if m, _ := filepath.Glob(p("in-removed/metadata/*")); len(m) != 0 {
		t.Errorf("the refused role was written: %v", m)
	}
	// ...and neither client accepts the role signed by it alone.
	resign(t, p("repo6"), p("repo6-resigned"), "team", p("team.pem"))
	ours, theirs := download(t, p("repo6-resigned"), rootRaw, "team/image")
	if ours.err == nil || theirs.err == nil {
		t.Fatalf("the role signed by the removed key: ours %q %v, go-tuf %q %v", ours.data, ours.err, theirs.data, theirs.err)
	}
	if !errors.Is(ours.err, tufclient.ErrSignature) {
		t.Errorf("our client's refusal is not a signature failure: %v", ours.err)
	}
}

type result struct {
	data []byte
	err  error
}

// download reads a target from a repository directory served over HTTP,
// with our client and with go-tuf's, each starting from the root alone.
func download(t *testing.T, repoDir string, root []byte, name string) (ours, theirs result) {
	t.Helper()
	srv := httptest.NewServer(http.FileServer(http.Dir(repoDir)))
	defer srv.Close()
	ctx := context.Background()
	c, err := tufclient.New(tufclient.Options{MetadataURL: srv.URL + "/metadata", TargetsURL: srv.URL + "/targets", Root: root})
	if err == nil {
		if err = c.Refresh(ctx); err == nil {
			ours.data, err = c.ReadTarget(ctx, name, 0)
		}
	}
	ours.err = err

	theirs.data, theirs.err = func() ([]byte, error) {
		cache := t.TempDir()
		cfg, err := config.New(srv.URL+"/metadata", root)
		if err != nil {
			return nil, err
		}
		cfg.LocalMetadataDir = cache
		cfg.LocalTargetsDir = filepath.Join(cache, "targets")
		cfg.RemoteTargetsURL = srv.URL + "/targets"
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
		_, data, err := up.DownloadTarget(ti, filepath.Join(cache, "target"), "")
		return data, err
	}()
	return ours, theirs
}

// both checks that both clients download team/image with the content want.
func both(t *testing.T, repoDir string, root []byte, want string) {
	t.Helper()
	ours, theirs := download(t, repoDir, root, "team/image")
	for _, r := range []struct {
		who string
		result
	}{{"our client", ours}, {"go-tuf", theirs}} {
		if r.err != nil || string(r.data) != want {
			t.Errorf("%s, %s: team/image %q %v, want %q", filepath.Base(repoDir), r.who, r.data, r.err, want)
		}
	}
}

// keyID is the TUF key id of a private key file.
func keyID(t *testing.T, path string) string {
	t.Helper()
	k, err := signing.LoadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Key().ID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// published returns the path of a role's newest metadata file in a
// repository directory (consistent snapshots: N.role.json).
func published(t *testing.T, repoDir, role string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(repoDir, "metadata", "*."+role+".json"))
	best, bestV := "", 0
	for _, f := range files {
		var v int
		if _, err := fmt.Sscanf(filepath.Base(f), "%d.", &v); err == nil && v > bestV {
			best, bestV = f, v
		}
	}
	if best == "" {
		t.Fatalf("no %s metadata in %s", role, repoDir)
	}
	return best
}

// delegatedKeyIDs lists the key ids the newest targets metadata of a
// repository directory gives a delegated role.
func delegatedKeyIDs(t *testing.T, repoDir, role string) []string {
	t.Helper()
	b, err := os.ReadFile(published(t, repoDir, "targets"))
	if err != nil {
		t.Fatal(err)
	}
	md, err := metadata.Targets().FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if md.Signed.Delegations == nil {
		return nil
	}
	for _, r := range md.Signed.Delegations.Roles {
		if r.Name == role {
			for _, id := range r.KeyIDs {
				if _, ok := md.Signed.Delegations.Keys[id]; !ok {
					t.Errorf("key id %s is listed for %s without a key", id, role)
				}
			}
			return r.KeyIDs
		}
	}
	return nil
}

// resign copies a repository directory and replaces the signatures on a
// role's newest metadata by one from key alone, content and version
// unchanged (the snapshot lists delegated roles by version only, so the
// copy is served as it is): what a stale or hostile mirror can serve.
func resign(t *testing.T, from, to, role, key string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
	f := published(t, to, role)
	b, _ := os.ReadFile(f)
	md, err := metadata.Targets().FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	var snap struct {
		Signed struct {
			Meta map[string]json.RawMessage `json:"meta"`
		} `json:"signed"`
	}
	sb, _ := os.ReadFile(published(t, to, "snapshot"))
	json.Unmarshal(sb, &snap)
	if m := string(snap.Signed.Meta[role+".json"]); strings.Contains(m, "hashes") || strings.Contains(m, "length") {
		t.Fatalf("the snapshot pins %s by hash (%s): re-signing it would be caught by that, not by its keys", role, m)
	}
	k, err := signing.LoadPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	md.Signatures = []metadata.Signature{}
	if err := signing.SignMetadata(context.Background(), md, s); err != nil {
		t.Fatal(err)
	}
	out, err := md.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
