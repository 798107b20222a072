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
			map[string]string{"data1.txt": "123\n456\n", "data2.txt": "abc\ndef\n"}, time.Time{}},
		{"tuf-reference-impl", "tuf-reference-impl/metadata/1.root.json", "tuf-reference-impl/metadata", "tuf-reference-impl/targets",
			map[string]string{"file1.txt": "This is an example target file.", "file2.txt": "This is an another example target file."}, time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"rotated-root", "rotated-root/1.root.json", "rotated-root", "rotated-root",
			map[string]string{}, time.Time{}},
		{"safe-target-paths", "safe-target-paths/metadata/1.root.json", "safe-target-paths/metadata", "safe-target-paths/targets",
			map[string]string{"foo/bar/baz/../data2.txt": "abc\ndef\n"}, time.Time{}},
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
				b, err := os.ReadFile(p)
				if err != nil || int64(len(b)) != g.Length {
					t.Errorf("%s: %d bytes, %v", g.Name, len(b), err)
				}
				want, ok := c.want[g.Name]
				if !ok || want == "" || !strings.HasPrefix(string(b), want) {
					t.Errorf("%s: content %q, want it to start with %q", g.Name, b, want)
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

// TestToughBrokenRoots: each of tough's broken root.json files is refused
// for its own reason: our sentinel, and go-tuf's error type beneath it.
func TestToughBrokenRoots(t *testing.T) {
	unsigned := func(err error) bool { var e *metadata.ErrUnsignedMetadata; return errors.As(err, &e) }
	value := func(err error) bool { var e *metadata.ErrValue; return errors.As(err, &e) }
	for _, c := range []struct {
		dir      string
		sentinel error
		cause    func(error) bool // go-tuf's error type, or our own
	}{
		{"no-root-json-signatures", ErrThreshold, unsigned},
		{"invalid-root-json-signature", ErrThreshold, unsigned},
		{"mismatched-root-json-keyids", ErrThreshold, value}, // a signature by a key the root does not list
		{"duplicate-sigs", ErrRoot, value},                   // go-tuf refuses two signatures by one key
		{"duplicate-sig-keys", ErrRoot, value},               // the same
		{"duplicate-keyid", ErrRoot, func(err error) bool { return errors.Is(err, ErrDuplicateKey) }},
	} {
		b := readFile(t, tough(t, c.dir, "root.json"))
		r, err := ParseRoot(b)
		if err == nil {
			err = Verify(r, nil)
		}
		if !errors.Is(err, c.sentinel) || !c.cause(err) {
			t.Errorf("%s: %v, want %v with its cause", c.dir, err, c.sentinel)
		}
	}
	// tough's expired root is well signed, and expired.
	r, err := ParseRoot(readFile(t, tough(t, "expired-root-json-signature", "root.json")))
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(r, nil); err != nil {
		t.Fatalf("expired-root-json-signature: %v", err)
	}
	if err := Check(r, time.Now()); !errors.Is(err, ErrExpired) {
		t.Errorf("expired-root-json-signature: %v, want ErrExpired", err)
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
