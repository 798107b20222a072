package repo

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/signing"
)

// delegated publishes a repository whose targets delegates team/* to a
// "team" role holding team/image: the two-step flow of tough's tuftool.
func delegated(t *testing.T) (r *Root, keys []signing.Signer, team signing.Signer, base, repoDir string) {
	t.Helper()
	r, keys = testRoot(t)
	team = key(t, "team", signing.Ed25519)
	base = t.TempDir()
	v1 := filepath.Join(base, "v1")
	if _, err := Create(ctx, r, targetsDir(t, map[string]string{"manifest.json": `{"updates":[]}`}), v1, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	// The team makes its role; the platform delegates to it.
	in, err := CreateRole(ctx, "team", RoleEdit{Signers: []signing.Signer{team}})
	if err != nil {
		t.Fatal(err)
	}
	inDir := filepath.Join(base, "in-create")
	if err := in.Write(inDir); err != nil {
		t.Fatal(err)
	}
	if in, err = ReadIncoming(inDir); err != nil {
		t.Fatal(err)
	}
	p, err := LoadPublished(ctx, r, filepath.Join(v1, "metadata"), nil)
	if err != nil {
		t.Fatal(err)
	}
	added, err := AddRole(ctx, p, "targets", Delegation{Name: "team", Paths: []string{"team/*"}}, in, RoleEdit{Signers: keys})
	if err != nil {
		t.Fatal(err)
	}
	v2 := filepath.Join(base, "v2")
	if _, err := Update(ctx, r, filepath.Join(v1, "metadata"), "", false, v2, Options{Signers: keys, Incoming: []*Incoming{added}}); err != nil {
		t.Fatal(err)
	}
	// The team publishes a target under its delegation.
	p, err = LoadPublished(ctx, r, filepath.Join(v2, "metadata"), nil)
	if err != nil {
		t.Fatal(err)
	}
	teamOut := filepath.Join(base, "in-team")
	in, err = UpdateDelegatedTargets(ctx, p, "team", targetsDir(t, map[string]string{"image": "team image v1"}), "team/", teamOut, RoleEdit{Signers: []signing.Signer{team}})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Write(teamOut); err != nil {
		t.Fatal(err)
	}
	if in, err = ReadIncoming(teamOut); err != nil {
		t.Fatal(err)
	}
	v3 := filepath.Join(base, "v3")
	if _, err := Update(ctx, r, filepath.Join(v2, "metadata"), "", false, v3, Options{Signers: keys, Incoming: []*Incoming{in}}); err != nil {
		t.Fatal(err)
	}
	return r, keys, team, base, v3
}

// go-tuf's client and ours download through a delegation we published;
// an update of the top-level targets carries the delegated role over byte
// for byte and keeps it in the snapshot.
func TestDelegationPublishAndDownload(t *testing.T) {
	r, keys, _, base, v3 := delegated(t)
	trusted := rootRaw(t, r)
	srv := serve(t, v3)
	got, err := goTUF(t, srv.URL, trusted, t.TempDir(), "team/image")
	if err != nil || string(got) != "team image v1" {
		t.Fatalf("go-tuf through the delegation: %q %v", got, err)
	}
	out := t.TempDir()
	if _, err := Download(ctx, trusted, srv.URL+"/metadata", srv.URL+"/targets", []string{"team/image"}, out, DownloadOptions{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "team", "image")); string(b) != "team image v1" {
		t.Fatalf("our client: %q", b)
	}

	v4 := filepath.Join(base, "v4")
	res, err := Update(ctx, r, filepath.Join(v3, "metadata"), targetsDir(t, map[string]string{"boot.img": "boot"}), false, v4, Options{Signers: keys})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(v3, "metadata", "2.team.json"))
	b, err := os.ReadFile(filepath.Join(v4, "metadata", "2.team.json"))
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("the delegated role was not carried over byte for byte: %v", err)
	}
	snap, err := metadata.Snapshot().FromFile(filepath.Join(v4, "metadata", "4.snapshot.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m := snap.Signed.Meta["team.json"]; m == nil || m.Version != 2 || res.SnapshotVersion != 4 {
		t.Fatalf("snapshot lists %v", snap.Signed.Meta)
	}
	srv.set(v4)
	if got, err := goTUF(t, srv.URL, trusted, t.TempDir(), "team/image"); err != nil || string(got) != "team image v1" {
		t.Fatalf("after a top-level update: %q %v", got, err)
	}
	// Timestamp-only keeps it too.
	v5 := filepath.Join(base, "v5")
	if _, err := Update(ctx, r, filepath.Join(v4, "metadata"), "", true, v5, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	srv.set(v5)
	if got, err := goTUF(t, srv.URL, trusted, t.TempDir(), "team/image"); err != nil || string(got) != "team image v1" {
		t.Fatalf("after a timestamp-only update: %q %v", got, err)
	}
}

func TestDelegationKeysAndRemoval(t *testing.T) {
	r, keys, team, base, v3 := delegated(t)
	meta := filepath.Join(v3, "metadata")
	p, err := LoadPublished(ctx, r, meta, nil)
	if err != nil {
		t.Fatal(err)
	}
	second := key(t, "team2", signing.Ed25519)
	in, err := AddDelegatedKey(ctx, p, "targets", "team", []*metadata.Key{second.Key()}, RoleEdit{Signers: keys})
	if err != nil {
		t.Fatal(err)
	}
	v4 := filepath.Join(base, "v4")
	if _, err := Update(ctx, r, meta, "", false, v4, Options{Signers: keys, Incoming: []*Incoming{in}}); err != nil {
		t.Fatal(err)
	}
	// The second key alone now signs the team role.
	p, _ = LoadPublished(ctx, r, filepath.Join(v4, "metadata"), nil)
	in, err = UpdateDelegatedTargets(ctx, p, "team", targetsDir(t, map[string]string{"image": "team image v2"}), "team/", filepath.Join(base, "in5"), RoleEdit{Signers: []signing.Signer{second}})
	if err != nil {
		t.Fatal(err)
	}
	v5 := filepath.Join(base, "v5")
	if _, err := Update(ctx, r, filepath.Join(v4, "metadata"), "", false, v5, Options{Signers: keys, Incoming: []*Incoming{in}}); err != nil {
		t.Fatal(err)
	}
	// Remove the first key: fine; remove the last: the threshold cannot be met.
	p, _ = LoadPublished(ctx, r, filepath.Join(v5, "metadata"), nil)
	id, _ := team.Key().ID()
	in, err = RemoveDelegatedKey(ctx, p, "targets", "team", id, RoleEdit{Signers: keys})
	if err != nil {
		t.Fatal(err)
	}
	v6 := filepath.Join(base, "v6")
	if _, err := Update(ctx, r, filepath.Join(v5, "metadata"), "", false, v6, Options{Signers: keys, Incoming: []*Incoming{in}}); err != nil {
		t.Fatal(err)
	}
	p, _ = LoadPublished(ctx, r, filepath.Join(v6, "metadata"), nil)
	id2, _ := second.Key().ID()
	if _, err := RemoveDelegatedKey(ctx, p, "targets", "team", id2, RoleEdit{Signers: keys}); !errors.Is(err, ErrThreshold) {
		t.Fatalf("removing the last key: %v", err)
	}
	// Remove the role: it leaves the snapshot and its target is gone.
	in, err = RemoveRole(ctx, p, "targets", "team", RoleEdit{Signers: keys})
	if err != nil {
		t.Fatal(err)
	}
	v7 := filepath.Join(base, "v7")
	if _, err := Update(ctx, r, filepath.Join(v6, "metadata"), "", false, v7, Options{Signers: keys, Incoming: []*Incoming{in}}); err != nil {
		t.Fatal(err)
	}
	c, err := tufclient.New(tufclient.Options{MetadataURL: filepath.Join(v7, "metadata"), TargetsURL: filepath.Join(v7, "targets"), Root: rootRaw(t, r)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Target("team/image"); !errors.Is(err, tufclient.ErrNoTarget) {
		t.Fatalf("removed role's target: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(v7, "metadata", "*.team.json")); len(m) != 0 {
		t.Errorf("removed role still published: %v", m)
	}
}

func TestHostileIncoming(t *testing.T) {
	r, keys, team, base, v3 := delegated(t)
	meta := filepath.Join(v3, "metadata")
	p, err := LoadPublished(ctx, r, meta, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Signed by a key the delegation does not list.
	stranger := key(t, "stranger", signing.Ed25519)
	_, err = UpdateDelegatedTargets(ctx, p, "team", targetsDir(t, map[string]string{"image": "evil"}), "team/", filepath.Join(base, "evil"), RoleEdit{Signers: []signing.Signer{stranger}})
	if !errors.Is(err, ErrThreshold) {
		t.Fatalf("signing with a stranger's key: %v", err)
	}
	// Forged after the fact: the bytes of an incoming role re-signed by a stranger.
	in, err := UpdateDelegatedTargets(ctx, p, "team", targetsDir(t, map[string]string{"image": "v2"}), "team/", filepath.Join(base, "ok"), RoleEdit{Signers: []signing.Signer{team}})
	if err != nil {
		t.Fatal(err)
	}
	forged := in.Roles["team"]
	forged.Signatures = nil
	signing.SignMetadata(ctx, forged, stranger)
	delete(in.raw, "team")
	if _, err := Update(ctx, r, meta, "", false, filepath.Join(base, "v4"), Options{Signers: keys, Incoming: []*Incoming{in}}); !errors.Is(err, ErrThreshold) {
		t.Fatalf("publishing a forged role: %v", err)
	}
	// An incoming version that does not go up.
	old, _ := p.Role("team")
	if _, err := Update(ctx, r, meta, "", false, filepath.Join(base, "v5"), Options{Signers: keys, Incoming: []*Incoming{newIncoming("team", old)}}); !errors.Is(err, ErrRollback) {
		t.Fatalf("incoming rollback: %v", err)
	}
	// A target the role is not trusted for.
	if _, err := UpdateDelegatedTargets(ctx, p, "team", targetsDir(t, map[string]string{"x": "x"}), "other/", filepath.Join(base, "o"), RoleEdit{Signers: []signing.Signer{team}}); !errors.Is(err, ErrDelegation) {
		t.Fatalf("target outside the delegated paths: %v", err)
	}
	// An incoming target whose bytes do not match the role's hashes.
	in, err = UpdateDelegatedTargets(ctx, p, "team", targetsDir(t, map[string]string{"image": "good"}), "team/", filepath.Join(base, "t"), RoleEdit{Signers: []signing.Signer{team}})
	if err != nil {
		t.Fatal(err)
	}
	m, _ := filepath.Glob(filepath.Join(base, "t", "targets", "team", "*.image"))
	if len(m) != 1 {
		t.Fatalf("incoming targets %v", m)
	}
	os.WriteFile(m[0], []byte("evil"), 0o644)
	if _, err := Update(ctx, r, meta, "", false, filepath.Join(base, "v6"), Options{Signers: keys, Incoming: []*Incoming{in}}); err == nil {
		t.Fatal("published a tampered incoming target")
	}
	// Top-level names and duplicates are refused.
	if _, err := CreateRole(ctx, "snapshot", RoleEdit{Signers: []signing.Signer{team}}); !errors.Is(err, ErrDelegation) {
		t.Errorf("a role named snapshot: %v", err)
	}
	created, _ := CreateRole(ctx, "team", RoleEdit{Signers: []signing.Signer{team}})
	if _, err := AddRole(ctx, p, "targets", Delegation{Name: "team", Paths: []string{"*"}}, created, RoleEdit{Signers: keys}); !errors.Is(err, ErrDelegation) {
		t.Errorf("delegating twice: %v", err)
	}
}

// A delegated role that has expired is not published: clients would
// refuse it.
func TestDelegatedRoleExpiredRefused(t *testing.T) {
	r, keys, team, base, v3 := delegated(t)
	p, _ := LoadPublished(ctx, r, filepath.Join(v3, "metadata"), nil)
	soon := time.Now().Add(time.Hour)
	in, err := UpdateDelegatedTargets(ctx, p, "team", targetsDir(t, map[string]string{"image": "v2"}), "team/", filepath.Join(base, "in"), RoleEdit{Signers: []signing.Signer{team}, Expires: soon})
	if err != nil {
		t.Fatal(err)
	}
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }
	_, err = Update(ctx, r, filepath.Join(v3, "metadata"), "", false, filepath.Join(base, "v4"), Options{Signers: keys, Incoming: []*Incoming{in}, Now: later})
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("expired delegated role: %v", err)
	}
}
