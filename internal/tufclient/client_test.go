package tufclient

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/tufclient/tuftest"
	"github.com/updog/updog/signing"
)

var ctx = context.Background()

// fastFetcher never retries: the simulator does not fail transiently.
func fastFetcher() *fetch.Fetcher { return fetch.NewWith(fetch.Options{Retries: -1}) }

// client makes a client of s (cache "" keeps nothing) with the reference
// time now (zero: s.Now).
func client(t *testing.T, s *tuftest.Sim, cache string, now time.Time, edit ...func(*Options)) *Client {
	t.Helper()
	if now.IsZero() {
		now = s.Now
	}
	o := Options{MetadataURL: s.MetadataURL(), TargetsURL: s.TargetsURL(), Root: s.TrustedRoot(), CacheDir: cache,
		Now: func() time.Time { return now }, Fetcher: fastFetcher()}
	for _, e := range edit {
		e(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func refreshed(t *testing.T, s *tuftest.Sim, cache string) *Client {
	t.Helper()
	c := client(t, s, cache, time.Time{})
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRefreshAndReadTarget(t *testing.T) {
	s := tuftest.New(t)
	s.AddTarget("targets", "dir/file.txt", []byte("hello"))
	s.Publish("targets")
	c := refreshed(t, s, t.TempDir())
	b, err := c.ReadTarget(ctx, "dir/file.txt", 0)
	if err != nil || string(b) != "hello" {
		t.Fatalf("%q %v", b, err)
	}
	v := c.Versions()
	if v.Root != 1 || v.Timestamp != 2 || v.Snapshot != 2 || v.Targets != 2 {
		t.Errorf("versions %+v", v)
	}
	if got := c.Names(); !slices.Equal(got, []string{"dir/file.txt"}) {
		t.Errorf("names %v", got)
	}
	if used, _ := c.GraceUsed(); used {
		t.Error("grace used without expiry")
	}
	if err := c.Refresh(ctx); !errors.Is(err, ErrRefreshed) {
		t.Errorf("second refresh: %v", err)
	}
}

// The top-level requests of a first refresh, as the conformance suite
// expects them: root 2 (404), timestamp, snapshot 1, targets 1.
func TestRefreshRequests(t *testing.T) {
	s := tuftest.New(t)
	refreshed(t, s, t.TempDir())
	want := []tuftest.Request{{Role: "root", Version: 2}, {Role: "timestamp"}, {Role: "snapshot", Version: 1}, {Role: "targets", Version: 1}}
	if got := s.Requests(); !slices.Equal(got, want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
}

func TestCacheFilesAndRollback(t *testing.T) {
	s := tuftest.New(t)
	cache := t.TempDir()
	s.UpdateTimestamp() // v2
	refreshed(t, s, cache)
	for _, f := range []string{"root.json", "timestamp.json", "snapshot.json", "targets.json"} {
		if _, err := os.Stat(filepath.Join(cache, f)); err != nil {
			t.Errorf("cache: %v", err)
		}
	}
	// The repository serves an older timestamp than the cached one.
	s.Timestamp.Signed.Version = 1
	c := client(t, s, cache, time.Time{})
	if err := c.Refresh(ctx); !errors.Is(err, ErrRollback) {
		t.Fatalf("timestamp rollback: %v", err)
	}
	// A snapshot rollback named by a newer timestamp.
	s.Timestamp.Signed.Version = 2
	s.UpdateSnapshot() // snapshot 2, timestamp 3
	refreshed(t, s, cache)
	s.Snapshot.Signed.Version = 0
	s.UpdateSnapshot() // snapshot 1 again, timestamp 4
	if err := client(t, s, cache, time.Time{}).Refresh(ctx); !errors.Is(err, ErrRollback) {
		t.Fatalf("snapshot rollback: %v", err)
	}
}

func TestFreezeAndExpiry(t *testing.T) {
	s := tuftest.New(t)
	s.Timestamp.Signed.Expires = s.Now.Add(24 * time.Hour)
	s.UpdateTimestamp()
	cache := t.TempDir()
	refreshed(t, s, cache)
	// The repository is frozen: a day later the timestamp has expired.
	later := s.Now.Add(25 * time.Hour)
	err := client(t, s, cache, later).Refresh(ctx)
	var ee *ExpiredError
	if !errors.Is(err, ErrExpired) || !errors.As(err, &ee) || ee.Role != "timestamp" || ee.Version != 2 {
		t.Fatalf("frozen repository: %v", err)
	}
	var gotuf *metadata.ErrExpiredMetadata
	if !errors.As(err, &gotuf) {
		t.Errorf("go-tuf's type is not in the chain: %v", err)
	}
}

func TestOfflineGrace(t *testing.T) {
	type setup func(s *tuftest.Sim)
	expire := func(role string) setup {
		return func(s *tuftest.Sim) {
			e := s.Now.Add(time.Hour)
			switch role {
			case "timestamp":
				s.Timestamp.Signed.Expires = e
			case "snapshot":
				s.Snapshot.Signed.Expires = e
			case "targets":
				s.Targets.Signed.Expires = e
			case "root":
				s.Root.Signed.Expires = e
				s.BumpRoot()
			}
			s.Publish("targets")
		}
	}
	for _, c := range []struct {
		name   string
		setup  setup
		grace  time.Duration
		ok     bool
		role   string
		usedBy time.Duration
	}{
		{"timestamp within grace", expire("timestamp"), 3 * time.Hour, true, "", time.Hour},
		{"timestamp past grace", expire("timestamp"), 30 * time.Minute, false, "timestamp", 0},
		{"timestamp no grace", expire("timestamp"), 0, false, "timestamp", 0},
		{"snapshot within grace", expire("snapshot"), 3 * time.Hour, true, "", time.Hour},
		{"snapshot past grace", expire("snapshot"), 30 * time.Minute, false, "snapshot", 0},
		{"targets never", expire("targets"), 100 * time.Hour, false, "targets", 0},
		{"root never", expire("root"), 100 * time.Hour, false, "root", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := tuftest.New(t)
			c.setup(s)
			cl := client(t, s, t.TempDir(), s.Now.Add(2*time.Hour), func(o *Options) { o.OfflineGrace = c.grace })
			err := cl.Refresh(ctx)
			if c.ok {
				if err != nil {
					t.Fatal(err)
				}
				used, by := cl.GraceUsed()
				if !used || by != c.usedBy {
					t.Errorf("GraceUsed %v %s, want true %s", used, by, c.usedBy)
				}
				return
			}
			var ee *ExpiredError
			if !errors.As(err, &ee) || ee.Role != c.role {
				t.Fatalf("%v, want %s expired", err, c.role)
			}
		})
	}
}

// Grace never accepts a version that goes back.
func TestHostileOfflineGraceRollback(t *testing.T) {
	s := tuftest.New(t)
	cache := t.TempDir()
	s.Timestamp.Signed.Expires = s.Now.Add(time.Hour)
	s.Publish("targets")
	s.Publish("targets") // timestamp 3
	refreshed(t, s, cache)
	s.Timestamp.Signed.Version = 1
	c := client(t, s, cache, s.Now.Add(2*time.Hour), func(o *Options) { o.OfflineGrace = 24 * time.Hour })
	if err := c.Refresh(ctx); !errors.Is(err, ErrRollback) {
		t.Fatalf("rollback under grace: %v", err)
	}
}

// Fast-forward recovery (5.3.11): after the timestamp key rotates, the
// cached timestamp (version 100) no longer verifies and a lower version is
// accepted.
func TestTimestampFastForwardRecovery(t *testing.T) {
	s := tuftest.New(t)
	cache := t.TempDir()
	s.Timestamp.Signed.Version = 99
	s.UpdateTimestamp()
	refreshed(t, s, cache)
	s.RotateKeys("timestamp")
	s.BumpRoot()
	s.Timestamp.Signed.Version = 0
	s.UpdateTimestamp()
	c := refreshed(t, s, cache)
	if v := c.Versions(); v.Timestamp != 1 || v.Root != 2 {
		t.Fatalf("versions %+v", v)
	}
}

func TestRootRotation(t *testing.T) {
	s := tuftest.New(t)
	cache := t.TempDir()
	refreshed(t, s, cache)
	old := s.Signers["root"]
	k := tuftest.Key(t)
	id, _ := k.Key().ID()
	for _, oid := range slices.Clone(s.Root.Signed.Roles["root"].KeyIDs) {
		s.Root.Signed.RevokeKey(oid, "root")
	}
	s.Root.Signed.AddKey(k.Key(), "root")
	// Signed by the new key only: refused (the old threshold is not met).
	s.Signers["root"] = []signing.Signer{k}
	s.BumpRoot()
	if err := client(t, s, cache, time.Time{}).Refresh(ctx); !errors.Is(err, ErrSignature) {
		t.Fatalf("rotation without the old key: %v", err)
	}
	// Republish version 2 signed by both.
	s.SignedRoots = s.SignedRoots[:1]
	s.Signers["root"] = append([]signing.Signer{k}, old...)
	s.PublishRoot()
	c := refreshed(t, s, cache)
	if c.Versions().Root != 2 || !slices.Contains(c.tm.Root.Signed.Roles["root"].KeyIDs, id) {
		t.Fatalf("root %+v", c.Versions())
	}
	b, _ := os.ReadFile(filepath.Join(cache, "root.json"))
	if !bytes.Equal(b, s.SignedRoots[1]) {
		t.Error("the cached root is not version 2")
	}
}

func TestHostileTamperedTarget(t *testing.T) {
	s := tuftest.New(t)
	s.AddTarget("targets", "a", []byte("good content"))
	s.Publish("targets")
	c := refreshed(t, s, "")
	tf, err := c.Target("a")
	if err != nil {
		t.Fatal(err)
	}
	s.Override["targets/"+mustFile(t, c, tf)] = []byte("evil content")
	_, err = c.ReadTarget(ctx, "a", 0)
	if !errors.Is(err, fetch.ErrHash) {
		t.Fatalf("tampered target: %v", err)
	}
	s.Override["targets/"+mustFile(t, c, tf)] = []byte("good content and more")
	if _, err = c.ReadTarget(ctx, "a", 0); !errors.Is(err, fetch.ErrTooLong) {
		t.Fatalf("longer target: %v", err)
	}
	dst := filepath.Join(t.TempDir(), "a")
	if err := c.SaveTarget(ctx, tf, dst, nil); err == nil {
		t.Fatal("saved a tampered target")
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed target was left: %v", err)
	}
}

func mustFile(t *testing.T, c *Client, tf *metadata.TargetFiles) string {
	t.Helper()
	f, err := c.TargetFile(tf)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestHostileTargetNames(t *testing.T) {
	for _, name := range []string{"", "/etc/passwd", "../x", "a/../../x", ".", "a\x00b"} {
		if _, err := CheckTargetPath(name); !errors.Is(err, ErrTargetName) {
			t.Errorf("%q: %v", name, err)
		}
	}
	for name, want := range map[string]string{"a": "a", "a/b": "a/b", "foo/bar/baz/../x": "foo/bar/x", "./a": "a"} {
		if got, err := CheckTargetPath(name); err != nil || got != want {
			t.Errorf("%q: %q %v", name, got, err)
		}
	}
	// A signed target whose name climbs out of the targets directory is
	// never fetched.
	s := tuftest.New(t)
	s.AddTarget("targets", "../escape", []byte("x"))
	s.Publish("targets")
	c := refreshed(t, s, "")
	if _, err := c.Open(ctx, "../escape"); !errors.Is(err, ErrTargetName) {
		t.Fatalf("escaping target: %v", err)
	}
	if len(s.TargetRequests()) != 0 {
		t.Errorf("requested %v", s.TargetRequests())
	}
}

func TestConsistentSnapshotOff(t *testing.T) {
	s := tuftest.New(t)
	s.Root.Signed.ConsistentSnapshot = false
	s.BumpRoot()
	s.AddTarget("targets", "sub/file", []byte("plain names"))
	s.Publish("targets")
	c := refreshed(t, s, t.TempDir())
	b, err := c.ReadTarget(ctx, "sub/file", 0)
	if err != nil || string(b) != "plain names" {
		t.Fatalf("%q %v", b, err)
	}
	if got := s.TargetRequests(); !slices.Equal(got, []string{"sub/file"}) {
		t.Errorf("target requests %v", got)
	}
	for _, r := range s.Requests() {
		if r.Role != "root" && r.Version != 0 {
			t.Errorf("versioned request %v without consistent snapshots", r)
		}
	}
}

// A cached target that matches is recognised; anything else is not.
func TestHasTarget(t *testing.T) {
	s := tuftest.New(t)
	s.AddTarget("targets", "a", []byte("content"))
	s.Publish("targets")
	c := refreshed(t, s, "")
	tf, _ := c.Target("a")
	dir := t.TempDir()
	p := filepath.Join(dir, "a")
	if HasTarget(tf, p) {
		t.Error("missing file matches")
	}
	os.WriteFile(p, []byte("content"), 0o644)
	if !HasTarget(tf, p) {
		t.Error("good copy does not match")
	}
	os.WriteFile(p, []byte("contenT"), 0o644)
	if HasTarget(tf, p) {
		t.Error("bad copy matches")
	}
	if HasTarget(tf, dir) {
		t.Error("a directory matches")
	}
}

// goTUFTarget looks a target up with go-tuf's own updater, for the cases
// where it and our walk differ.
func goTUFTarget(t *testing.T, s *tuftest.Sim, names ...string) ([]*metadata.TargetFiles, error) {
	t.Helper()
	cfg, err := config.New(s.MetadataURL(), s.TrustedRoot())
	if err != nil {
		t.Fatal(err)
	}
	cfg.LocalMetadataDir = t.TempDir()
	cfg.LocalTargetsDir = t.TempDir()
	cfg.RemoteTargetsURL = s.TargetsURL()
	cfg.Fetcher = fastFetcher()
	up, err := updater.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Refresh(); err != nil {
		return nil, err
	}
	var out []*metadata.TargetFiles
	for _, n := range names {
		tf, err := up.GetTargetInfo(n)
		if err != nil {
			return out, err
		}
		out = append(out, tf)
	}
	return out, nil
}
