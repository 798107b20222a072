package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/updog/updog/image"
)

// TestAddFromReleaseDelta: a release.json naming delta artifacts puts
// them in the manifest as the release's optional delta targets; one
// without them adds none; the flags override, and are given both or
// neither.
func TestAddFromReleaseDelta(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	withDelta := func(r *image.Release) {
		r.Delta = &image.ReleaseDelta{
			Seekable:  image.Artifact{Target: "root.ext4.seek.zst", Size: r.Images.Root.Size, Length: 120, SHA256: strings.Repeat("ef", 32)},
			Index:     image.Artifact{Target: "root.ext4.didx", Size: 80, Length: 80, SHA256: strings.Repeat("12", 32)},
			FrameSize: 65536,
		}
	}
	mustUD(t, "add-update", m, "--from-release", testReleaseFile(t, t.TempDir(), withDelta))
	u, err := readManifest(t, m).Find("aws-k8s", "x86_64", mustVersion(t, "1.2.0"))
	if err != nil {
		t.Fatal(err)
	}
	if d := u.Images.Delta; d == nil || d.Seekable != "root.ext4.seek.zst" || d.Index != "root.ext4.didx" {
		t.Fatalf("delta targets %+v", d)
	}
	mustUD(t, "add-update", m, "--from-release", testReleaseFile(t, t.TempDir(), nil), "--version", "1.3.0")
	if u, _ := readManifest(t, m).Find("aws-k8s", "x86_64", mustVersion(t, "1.3.0")); u == nil || u.Images.Delta != nil {
		t.Fatalf("a release without delta artifacts got delta targets: %+v", u)
	}
	mustUD(t, "add-update", m, "--from-release", testReleaseFile(t, t.TempDir(), withDelta), "--version", "1.4.0",
		"--delta-index", "other.didx")
	if u, _ := readManifest(t, m).Find("aws-k8s", "x86_64", mustVersion(t, "1.4.0")); u == nil || u.Images.Delta == nil || u.Images.Delta.Index != "other.didx" {
		t.Fatalf("--delta-index did not override: %+v", u)
	}
	for _, args := range [][]string{
		{"--delta-seekable", "s.seek.zst"},
		{"--delta-seekable", "s", "--delta-index", "s"},
		{"--delta-seekable", "../s", "--delta-index", "i"},
	} {
		a := append([]string{"add-update", m, "--variant", "v", "--arch", "x86_64", "--version", "2.0.0", "--boot", "b", "--root", "r", "--hash", "h"}, args...)
		if _, errs, code := ud(a...); code != exitUsage {
			t.Errorf("%v: exit %d (%s), want %d", args, code, errs, exitUsage)
		}
	}
}
