package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/image"
	"github.com/updog/updog/manifest"
)

// testReleaseFile writes a release.json as imgbuild build writes it.
func testReleaseFile(t *testing.T, dir string, edit func(r *image.Release)) string {
	t.Helper()
	art := func(n string, size int64) image.Artifact {
		return image.Artifact{Target: n, Size: size, Length: 100, SHA256: strings.Repeat("ab", 32)}
	}
	r := &image.Release{Format: image.ReleaseFormat, Name: "updog", Variant: "aws-k8s", Arch: "x86_64", Version: "1.2.0",
		RootFS: "ext4", Compression: image.CompressZstd,
		Images: image.ReleaseImages{Boot: art("boot.zst", 40<<20), Root: art("root.zst", 920<<20), Hash: art("hash.zst", 7<<20)},
		Verity: image.ReleaseVerity{RootHash: strings.Repeat("cd", 32), Salt: strings.Repeat("01", 32), Hash: "sha256",
			DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 920 << 8}}
	if edit != nil {
		edit(r)
	}
	b, err := r.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "release.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAddFromRelease: --from-release gives the manifest every field of the
// release; an option given as well overrides it.
func TestAddFromRelease(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	rel := testReleaseFile(t, dir, nil)
	out := mustUD(t, "add-update", m, "--from-release", rel)
	if !strings.Contains(out, "aws-k8s x86_64 1.2.0") {
		t.Errorf("output %q", out)
	}
	u, err := readManifest(t, m).Find("aws-k8s", "x86_64", mustVersion(t, "1.2.0"))
	if err != nil {
		t.Fatal(err)
	}
	im := u.Images
	if im.Boot != "boot.zst" || im.Root != "root.zst" || im.Hash != "hash.zst" || im.Sizes == nil || im.Sizes.Root != 920<<20 ||
		im.Verity == nil || im.Verity.RootHash != strings.Repeat("cd", 32) || im.Verity.Salt != strings.Repeat("01", 32) ||
		im.Verity.DataBlocks != 920<<8 || im.Verity.Hash != "sha256" {
		t.Fatalf("images %+v sizes %+v verity %+v", im, im.Sizes, im.Verity)
	}
	// Flags override: another version and max_version of the same release.
	mustUD(t, "add-update", m, "--from-release", rel, "--version", "1.3.0", "--max-version", "2.0.0")
	u, err = readManifest(t, m).Find("aws-k8s", "x86_64", mustVersion(t, "1.3.0"))
	if err != nil || u.MaxVersion.String() != "2.0.0" || u.Images.Root != "root.zst" {
		t.Fatalf("override: %v %+v", err, u)
	}
	// The same release twice is refused as add-update refuses it.
	if _, errs, code := ud("add-update", m, "--from-release", rel); code != exitError || !strings.Contains(errs, "1.2.0") {
		t.Errorf("added twice: %d %s", code, errs)
	}
}

// TestHostileAddFromReleaseBad: a release.json that is not one, or whose
// fields add-update would refuse, changes nothing; a FIFO is refused
// without blocking.
func TestHostileAddFromReleaseBad(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	before, _ := os.ReadFile(m)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	notJSON := filepath.Join(dir, "not.json")
	os.WriteFile(notJSON, []byte("variant=x"), 0o644)
	for name, c := range map[string]struct {
		args []string
		code int
	}{
		"missing":         {[]string{"--from-release", filepath.Join(dir, "nope.json")}, exitError},
		"fifo":            {[]string{"--from-release", fifo}, exitError},
		"directory":       {[]string{"--from-release", dir}, exitError},
		"not json":        {[]string{"--from-release", notJSON}, exitError},
		"traversal":       {[]string{"--from-release", testReleaseFile(t, t.TempDir(), func(r *image.Release) { r.Images.Root.Target = "../../etc/x" })}, exitError},
		"bad root hash":   {[]string{"--from-release", testReleaseFile(t, t.TempDir(), func(r *image.Release) { r.Verity.RootHash = "zz" })}, exitError},
		"bad flag value":  {[]string{"--from-release", testReleaseFile(t, t.TempDir(), nil), "--version", "one"}, exitUsage},
		"override breaks": {[]string{"--from-release", testReleaseFile(t, t.TempDir(), nil), "--root", "a/b"}, exitUsage},
	} {
		done := make(chan struct{})
		var errs string
		var code int
		go func() {
			_, errs, code = ud(append([]string{"add-update", m}, c.args...)...)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: updata blocked", name)
		}
		if code != c.code {
			t.Errorf("%s: exit %d (%s), want %d", name, code, errs, c.code)
		}
		if after, _ := os.ReadFile(m); string(after) != string(before) {
			t.Errorf("%s: the manifest changed", name)
		}
	}
}

func mustVersion(t *testing.T, s string) manifest.Version {
	t.Helper()
	v, err := manifest.ParseVersion(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
