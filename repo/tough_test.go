package repo

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/testutil"
)

// These tests read tough's own test repositories.

func tough(t *testing.T, elem ...string) string {
	return testutil.Bottlerocket(t, append([]string{"tough"}, elem...)...)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDownloadToughRepositories(t *testing.T) {
	for _, c := range []struct {
		name, root, meta, targets string
		want                      map[string]string // name -> content prefix
		now                       time.Time
	}{
		{"consistent-snapshots", "consistent-snapshots/metadata/1.root.json", "consistent-snapshots/metadata", "consistent-snapshots/targets",
			map[string]string{"data1.txt": "", "data2.txt": ""}, time.Time{}},
		{"tuf-reference-impl", "tuf-reference-impl/metadata/1.root.json", "tuf-reference-impl/metadata", "tuf-reference-impl/targets",
			map[string]string{"file1.txt": "", "file2.txt": ""}, time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"rotated-root", "rotated-root/1.root.json", "rotated-root", "rotated-root",
			map[string]string{}, time.Time{}},
		{"safe-target-paths", "safe-target-paths/metadata/1.root.json", "safe-target-paths/metadata", "safe-target-paths/targets",
			map[string]string{"foo/bar/baz/../data2.txt": ""}, time.Time{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := t.TempDir()
			var names []string
			for n := range c.want {
				names = append(names, n)
			}
			o := DownloadOptions{}
			if !c.now.IsZero() {
				o.Now = func() time.Time { return c.now }
			}
			got, err := Download(ctx, readFile(t, tough(t, c.root)), tough(t, c.meta), tough(t, c.targets), names, out, o)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("downloaded %v", got)
			}
			for _, g := range got {
				p := filepath.Join(out, filepath.FromSlash(g.Name))
				rel, err := filepath.Rel(out, p)
				if err != nil || strings.HasPrefix(rel, "..") {
					t.Fatalf("%s was written outside the output directory", g.Name)
				}
				if fi, err := os.Stat(p); err != nil || fi.Size() != g.Length {
					t.Errorf("%s: %v", g.Name, err)
				}
			}
		})
	}
}

func TestToughRotatedRootReachesVersion2(t *testing.T) {
	ex, err := loadExisting(ctx, fetchNew(), tough(t, "rotated-root"))
	if err != nil {
		t.Fatal(err)
	}
	if ex.latest.Signed.Version != 2 {
		t.Fatalf("root version %d, want 2", ex.latest.Signed.Version)
	}
}

func TestToughExpiredRepository(t *testing.T) {
	root := readFile(t, tough(t, "expired-repository/metadata/1.root.json"))
	_, err := Download(ctx, root, tough(t, "expired-repository/metadata"), filepath.Join(tough(t, "expired-repository"), "targets"), nil, t.TempDir(), DownloadOptions{})
	var exp *metadata.ErrExpiredMetadata
	if !errors.As(err, &exp) || !strings.Contains(strings.ToLower(err.Error()), "timestamp") {
		t.Fatalf("expired repository: %v, want the timestamp's expiry", err)
	}
	// With the reference time moved back, the same repository loads.
	before := func() time.Time { return time.Date(1998, 6, 1, 0, 0, 0, 0, time.UTC) }
	if _, err := Download(ctx, root, tough(t, "expired-repository/metadata"), filepath.Join(tough(t, "expired-repository"), "targets"), []string{}, t.TempDir(), DownloadOptions{Now: before}); err != nil {
		t.Fatalf("with the clock set back: %v", err)
	}
}

// TestToughBrokenRoots: each of tough's broken root.json files is refused.
func TestToughBrokenRoots(t *testing.T) {
	for _, dir := range []string{"no-root-json-signatures", "invalid-root-json-signature", "mismatched-root-json-keyids",
		"duplicate-sigs", "duplicate-sig-keys", "duplicate-keyid"} {
		b := readFile(t, tough(t, dir, "root.json"))
		r, err := ParseRoot(b)
		if err == nil {
			err = Verify(r, nil)
		}
		if err == nil {
			t.Errorf("%s: accepted", dir)
			continue
		}
		if dir == "duplicate-keyid" && !errors.Is(err, ErrDuplicateKey) {
			t.Errorf("%s: %v, want a duplicate key error", dir, err)
		}
		t.Logf("%s: %v", dir, err)
	}
	// And the good ones pass.
	for _, f := range []string{"simple-rsa/root.json"} {
		r, err := ParseRoot(readFile(t, tough(t, f)))
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(r, nil); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func fetchNew() *fetch.Fetcher { return fetch.New() }
