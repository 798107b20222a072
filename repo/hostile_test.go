package repo

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/signing"
)

// TestErrorsKeepGoTUFTypes is issue 8 item 22: repo's errors wrap
// go-tuf's with %w, so callers find go-tuf's types through them.
func TestErrorsKeepGoTUFTypes(t *testing.T) {
	r, keys := testRoot(t)
	// A signature that does not verify: Verify and SignRoot.
	bad, _ := ParseRoot(rootRaw(t, r))
	bad.Signatures[0].Signature[0] ^= 1
	err := Verify(bad, nil)
	var unsigned *metadata.ErrUnsignedMetadata
	if !errors.Is(err, ErrThreshold) || !errors.As(err, &unsigned) {
		t.Errorf("Verify: %v, want ErrThreshold and *metadata.ErrUnsignedMetadata", err)
	}
	// A rotation signed by the new keys only.
	r2, _ := ParseRoot(rootRaw(t, r))
	BumpVersion(r2)
	newKey := key(t, "root2", signing.Ed25519)
	AddKey(r2, newKey.Key(), "root")
	id, _ := keys[0].Key().ID()
	RemoveKey(r2, id, "root")
	if err := SignRoot(ctx, r2, r, []signing.Signer{newKey}, false); !errors.As(err, &unsigned) {
		t.Errorf("SignRoot: %v, want *metadata.ErrUnsignedMetadata", err)
	}
	// Parsing: go-tuf's type check.
	tgt := metadata.Targets(time.Now().Add(time.Hour))
	b, _ := tgt.ToBytes(false)
	var typ *metadata.ErrValue
	if _, err := ParseRoot(b); !errors.Is(err, ErrRoot) || !errors.As(err, &typ) {
		t.Errorf("ParseRoot of targets metadata: %v, want ErrRoot and *metadata.ErrValue", err)
	}
	// Reading a repository whose timestamp is signed by a stranger.
	out := filepath.Join(t.TempDir(), "repo")
	if _, err := Create(ctx, r, "", out, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	tsPath := filepath.Join(out, "metadata", "timestamp.json")
	ts, _ := metadata.Timestamp().FromFile(tsPath)
	ts.Signatures = nil
	signing.SignMetadata(ctx, ts, key(t, "attacker", signing.Ed25519))
	b, _ = ts.ToBytes(true)
	os.WriteFile(tsPath, b, 0o644)
	_, err = CheckExpiry(ctx, filepath.Join(out, "metadata"), time.Hour, time.Now(), nil)
	if !errors.Is(err, ErrThreshold) || !errors.As(err, &unsigned) {
		t.Errorf("loading a repository with a forged timestamp: %v", err)
	}
}

// TestHostileVersions is issue 8 item 11 at the library: no version wraps
// around, and non-positive versions are refused.
func TestHostileVersions(t *testing.T) {
	r, keys := testRoot(t)
	base := t.TempDir()
	maxTS, maxTargets := filepath.Join(base, "max-ts"), filepath.Join(base, "max-targets")
	if _, err := Create(ctx, r, "", maxTS, Options{Signers: keys, TimestampVersion: math.MaxInt64}); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ctx, r, "", maxTargets, Options{Signers: keys, TargetsVersion: math.MaxInt64}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, repo string
		o          Options
		ts         bool
	}{
		{"timestamp-only after the largest timestamp version", maxTS, Options{}, true},
		{"update after the largest timestamp version", maxTS, Options{}, false},
		{"update after the largest targets version", maxTargets, Options{}, false},
		{"negative timestamp version", maxTargets, Options{TimestampVersion: -1}, true},
		{"negative snapshot version", maxTargets, Options{SnapshotVersion: -7}, false},
	} {
		c.o.Signers = keys
		if _, err := Update(ctx, r, filepath.Join(c.repo, "metadata"), "", c.ts, filepath.Join(base, "u"), c.o); !errors.Is(err, ErrVersion) {
			t.Errorf("%s: %v, want ErrVersion", c.name, err)
		}
	}
	if _, err := Create(ctx, r, "", filepath.Join(base, "c"), Options{Signers: keys, SnapshotVersion: -1}); !errors.Is(err, ErrVersion) {
		t.Errorf("Create with a negative version: %v", err)
	}
	noLeftovers(t, base, "max-ts", "max-targets")

	top, _ := ParseRoot(rootRaw(t, r))
	top.Signed.Version = math.MaxInt64
	if err := BumpVersion(top); !errors.Is(err, ErrVersion) || top.Signed.Version != math.MaxInt64 {
		t.Errorf("BumpVersion at the largest version: %v, version %d", err, top.Signed.Version)
	}
	// A root claiming to follow the largest version is no rotation.
	wrapped, _ := ParseRoot(rootRaw(t, r))
	wrapped.Signed.Version = math.MinInt64
	SignRoot(ctx, wrapped, nil, keys[:1], true)
	if err := Verify(wrapped, top); err == nil {
		t.Error("a wrapped-around version was taken for the successor")
	}
	b := rootRaw(t, r)
	b = []byte(replaceOnce(t, string(b), `"version": 1`, `"version": 0`))
	if _, err := ParseRoot(b); !errors.Is(err, ErrVersion) {
		t.Errorf("ParseRoot of version 0: %v", err)
	}
}

// TestThresholdAboveKeys is issue 8 item 17 at the library: a threshold
// above the role's key count is reported, and SignRoot refuses it unless
// signing partially.
func TestThresholdAboveKeys(t *testing.T) {
	r, keys := testRoot(t)
	if err := SetThreshold(r, "snapshot", 3); err != nil {
		t.Fatal(err)
	}
	err := CheckThresholds(r)
	var te *ThresholdError
	if !errors.Is(err, ErrThreshold) || !errors.As(err, &te) || len(te.Roles) != 1 || te.Roles[0] != (RoleKeys{"snapshot", 3, 1}) {
		t.Fatalf("CheckThresholds: %v", err)
	}
	if err := SignRoot(ctx, r, nil, keys[:1], false); !errors.As(err, &te) {
		t.Errorf("SignRoot: %v, want a *ThresholdError", err)
	}
	if err := SignRoot(ctx, r, nil, keys[:1], true); err != nil {
		t.Errorf("partial SignRoot: %v", err)
	}
}

// TestHostileTargets: a FIFO among the targets, or given as the targets
// directory, is refused at once; a cancelled copy leaves nothing behind.
func TestHostileTargets(t *testing.T) {
	r, keys := testRoot(t)
	base := t.TempDir()
	out := filepath.Join(base, "out")
	tdir := targetsDir(t, map[string]string{"a.img": "a"})
	fifo := filepath.Join(tdir, "b.img")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := Create(ctx, r, tdir, out, Options{Signers: keys}); !errors.Is(err, ErrTargetName) || !errors.Is(err, safefile.ErrNotRegular) {
			t.Errorf("a FIFO among the targets: %v", err)
		}
		if _, err := Create(ctx, r, fifo, out, Options{Signers: keys}); !errors.Is(err, ErrTargetsDir) || !errors.Is(err, safefile.ErrNotRegular) {
			t.Errorf("a FIFO as the targets directory: %v", err)
		}
		// A FIFO that replaces a target after the listing.
		s, err := stage(out)
		if err != nil {
			t.Error(err)
			return
		}
		defer s.abort()
		if _, _, err := s.addTarget(ctx, "b.img", fifo, nil); !errors.Is(err, safefile.ErrNotRegular) {
			t.Errorf("addTarget of a FIFO: %v", err)
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("publishing a FIFO hung")
	}
	os.Remove(fifo)
	noLeftovers(t, base)

	// Cancelled while copying: the staging directory goes.
	big := targetsDir(t, map[string]string{"x.img": string(make([]byte, 3<<20)), "y.img": "y"})
	c, cancel := context.WithCancel(ctx)
	_, err := Create(c, r, big, out, Options{Signers: keys, Progress: cancelProgress{cancel}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled create: %v", err)
	}
	noLeftovers(t, base)
	// And a cancelled update.
	if _, err := Create(ctx, r, tdir, out, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	c, cancel = context.WithCancel(ctx)
	_, err = Update(c, r, filepath.Join(out, "metadata"), big, false, filepath.Join(base, "u"), Options{Signers: keys, Progress: cancelProgress{cancel}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled update: %v", err)
	}
	noLeftovers(t, base, "out")
}

type cancelProgress struct{ cancel context.CancelFunc }

func (c cancelProgress) Start(string, int64) {}
func (c cancelProgress) Add(int)             { c.cancel() }
func (c cancelProgress) Finish()             {}

// TestPublicModes is issue 8 item 8 at the library: whatever the umask,
// and whatever the mode of a carried-over target, the published tree is
// 0755/0644; the source repository is not changed.
func TestPublicModes(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	r, keys := testRoot(t)
	base := t.TempDir()
	v1 := filepath.Join(base, "v1")
	if _, err := Create(ctx, r, targetsDir(t, map[string]string{"a.img": "a"}), v1, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	stored, _ := filepath.Glob(filepath.Join(v1, "targets", "*.a.img"))
	if len(stored) != 1 {
		t.Fatalf("stored: %v", stored)
	}
	os.Chmod(stored[0], 0o600) // as an older tuftool wrote it
	v2 := filepath.Join(base, "v2")
	if _, err := Update(ctx, r, filepath.Join(v1, "metadata"), targetsDir(t, map[string]string{"b.img": "b"}), false, v2, Options{Signers: keys}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(stored[0]); fi.Mode().Perm() != 0o600 {
		t.Errorf("the source repository's target changed mode: %v", fi.Mode().Perm())
	}
	n := 0
	filepath.WalkDir(v2, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := d.Info()
		want := PublicFileMode
		if d.IsDir() {
			want = PublicDirMode
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		n++
		return nil
	})
	if n != 3+4+2 {
		t.Errorf("%d entries in the published tree", n)
	}
}
