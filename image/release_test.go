package image

import (
	"errors"
	"strings"
	"testing"
)

func testRelease() *Release {
	art := func(n string, size int64) Artifact {
		return Artifact{Target: n, Size: size, Length: 10, SHA256: strings.Repeat("ab", 32)}
	}
	return &Release{Format: 1, Name: "updog", Variant: "v", Arch: "x86_64", Version: "1.0.0", RootFS: "ext4", Compression: CompressZstd,
		Images: ReleaseImages{Boot: art("b.zst", 40<<20), Root: art("r.zst", 4096*100), Hash: art("h.zst", 8192)},
		Verity: ReleaseVerity{RootHash: strings.Repeat("cd", 32), Salt: "00", Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 100}}
}

func TestReleaseRoundTrip(t *testing.T) {
	r := testRelease()
	b, err := r.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRelease(b)
	if err != nil {
		t.Fatal(err)
	}
	im := got.ManifestImages()
	if im.Root != "r.zst" || im.Sizes.Hash != 8192 || im.Verity.DataBlocks != 100 || im.Verity.Salt != "00" {
		t.Fatalf("manifest images %+v %+v %+v", im, im.Sizes, im.Verity)
	}
}

func TestParseReleaseRefuses(t *testing.T) {
	for name, edit := range map[string]func(r *Release){
		"format 2":        func(r *Release) { r.Format = 2 },
		"bad variant":     func(r *Release) { r.Variant = "../x" },
		"bad version":     func(r *Release) { r.Version = "1.0" },
		"target path":     func(r *Release) { r.Images.Root.Target = "../r.zst" },
		"zero size":       func(r *Release) { r.Images.Boot.Size = 0 },
		"bad sha256":      func(r *Release) { r.Images.Hash.SHA256 = "xyz" },
		"bad root hash":   func(r *Release) { r.Verity.RootHash = "12" },
		"blocks too many": func(r *Release) { r.Verity.DataBlocks = 101 },
		"no blocks":       func(r *Release) { r.Verity.DataBlocks = 0 },
	} {
		r := testRelease()
		edit(r)
		b, _ := r.MarshalIndent()
		if _, err := ParseRelease(b); !errors.Is(err, ErrRelease) {
			t.Errorf("%s: %v", name, err)
		}
	}
	b, _ := testRelease().MarshalIndent()
	for name, text := range map[string]string{
		"unknown field": strings.Replace(string(b), `"format"`, `"colour": 1, "format"`, 1),
		"trailing":      string(b) + "{}",
		"not json":      "format=1",
	} {
		if _, err := ParseRelease([]byte(text)); !errors.Is(err, ErrRelease) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
