package manifest

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/waves"
)

// goodHash is a sha256 root hash.
const goodHash = "5f2ff3fa6b9a8f8ed9b0b8e1d1a3e1c4b7c1f3ca3dbd8f2e0e1e2f3a4b5c6d7e"

func withVerity(t *testing.T, v Verity, sizes *ImageSizes) *Manifest {
	t.Helper()
	m := mustParse(t, []byte(base))
	m.Updates[0].Images.Verity = &v
	m.Updates[0].Images.Sizes = sizes
	return m
}

// TestVerityValidation (issue 8 item 6): a root hash "zz", a salt "xyz"
// and a data block size of 3 used to pass validate.
func TestVerityValidation(t *testing.T) {
	ok := Verity{RootHash: goodHash, Salt: "00ff", Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 9}
	sizes := &ImageSizes{Boot: 1 << 20, Root: 9 * 4096, Hash: 1 << 16}
	if err := withVerity(t, ok, sizes).Validate(); err != nil {
		t.Fatalf("good verity refused: %v", err)
	}
	for _, good := range []func(v *Verity){
		func(v *Verity) { v.Hash = "" },                                  // sha256 by default
		func(v *Verity) { v.Salt = "" },                                  // no salt
		func(v *Verity) { v.DataBlockSize, v.HashBlockSize = 0, 0 },      // 4096 by default
		func(v *Verity) { v.DataBlockSize, v.HashBlockSize = 512, 1024 }, // any power of two 512..4096
		func(v *Verity) { v.DataBlocks = 0 },                             // not given
		func(v *Verity) { v.Hash, v.RootHash = "sha1", strings.Repeat("ab", 20) },
		func(v *Verity) { v.Hash, v.RootHash = "sha512", strings.Repeat("AB", 64) },
		func(v *Verity) { v.Salt = strings.Repeat("01", 256) },
	} {
		v := ok
		good(&v)
		if err := withVerity(t, v, sizes).Validate(); err != nil {
			t.Errorf("%+v refused: %v", v, err)
		}
	}
	for name, bad := range map[string]func(v *Verity){
		"root hash zz":          func(v *Verity) { v.RootHash = "zz" },
		"root hash short":       func(v *Verity) { v.RootHash = "abcd" },
		"root hash empty":       func(v *Verity) { v.RootHash = "" },
		"root hash long":        func(v *Verity) { v.RootHash = goodHash + "00" },
		"sha512 with 32 bytes":  func(v *Verity) { v.Hash = "sha512" },
		"sha1 with 32 bytes":    func(v *Verity) { v.Hash = "sha1" },
		"unknown hash":          func(v *Verity) { v.Hash = "md5" },
		"salt xyz":              func(v *Verity) { v.Salt = "xyz" },
		"salt odd length":       func(v *Verity) { v.Salt = "abc" },
		"salt too long":         func(v *Verity) { v.Salt = strings.Repeat("01", 257) },
		"data block size 3":     func(v *Verity) { v.DataBlockSize = 3 },
		"data block size 256":   func(v *Verity) { v.DataBlockSize = 256 },
		"data block size 8192":  func(v *Verity) { v.DataBlockSize = 8192 },
		"data block size 3000":  func(v *Verity) { v.DataBlockSize = 3000 },
		"hash block size 1000":  func(v *Verity) { v.HashBlockSize = 1000 },
		"negative block size":   func(v *Verity) { v.HashBlockSize = -4096 },
		"data blocks overflow":  func(v *Verity) { v.DataBlocks = math.MaxUint64 / 4096 * 2 },
		"data blocks past root": func(v *Verity) { v.DataBlocks = 10 },
	} {
		v := ok
		bad(&v)
		err := withVerity(t, v, sizes).Validate()
		if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrVerity) {
			t.Errorf("%s: %+v: Validate = %v, want ErrVerity", name, v, err)
		}
	}
	// data_blocks that overflow with no sizes given.
	v := ok
	v.DataBlocks = math.MaxInt64
	if err := withVerity(t, v, nil).Validate(); !errors.Is(err, ErrVerity) {
		t.Errorf("data_blocks %d: %v", v.DataBlocks, err)
	}
}

func TestImageSizes(t *testing.T) {
	for _, bad := range []ImageSizes{
		{Boot: 0, Root: 1, Hash: 1},
		{Boot: 1, Root: -1, Hash: 1},
		{Boot: 1, Root: 1, Hash: math.MaxInt64},
		{Boot: MaxImageSize + 1, Root: 1, Hash: 1},
	} {
		m := mustParse(t, []byte(base))
		m.Updates[0].Images.Sizes = &bad
		if err := m.Validate(); !errors.Is(err, ErrSize) {
			t.Errorf("sizes %+v: %v, want ErrSize", bad, err)
		}
	}
	m := mustParse(t, []byte(base))
	m.Updates[0].Images.Sizes = &ImageSizes{Boot: 1, Root: MaxImageSize, Hash: 4096}
	if err := m.Validate(); err != nil {
		t.Error(err)
	}
}

// TestHostileTargetNames (issue 8 item 16): image names like
// ../../../etc/shadow and an arch with a newline used to pass validate.
func TestHostileTargetNames(t *testing.T) {
	for _, name := range []string{
		"../../../etc/shadow", "a/b", "/etc/passwd", ".", "..", "x\x00y", "x\ny", "tab\tname", "del\x7f",
		"a..b", `back\slash`, strings.Repeat("n", 256), "\xff\xfe", "esc\x1b[31m",
	} {
		if err := CheckTargetName(name); !errors.Is(err, ErrName) {
			t.Errorf("CheckTargetName(%q) = %v, want ErrName", name, err)
		}
		for _, field := range []string{"boot", "root", "hash"} {
			m := mustParse(t, []byte(base))
			im := &m.Updates[0].Images
			*map[string]*string{"boot": &im.Boot, "root": &im.Root, "hash": &im.Hash}[field] = name
			if err := m.Validate(); !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrName) {
				t.Errorf("%s image %q: Validate = %v, want ErrName", field, name, err)
			}
		}
	}
	for _, name := range []string{"bottlerocket-x86_64-0.2.1-root.ext4.lz4", "a", "x.img", ".hidden", strings.Repeat("n", 255), "名前.img"} {
		if err := CheckTargetName(name); err != nil {
			t.Errorf("CheckTargetName(%q): %v", name, err)
		}
	}
	for _, id := range []string{"", "x86_64\n", "a b", "../x", "a/b", ".", "..", "-rf", ".x", "x;rm", "é", strings.Repeat("a", 65), "a\x00"} {
		if err := CheckVariant(id); !errors.Is(err, ErrName) {
			t.Errorf("CheckVariant(%q) = %v", id, err)
		}
		if err := CheckArch(id); !errors.Is(err, ErrName) {
			t.Errorf("CheckArch(%q) = %v", id, err)
		}
		m := mustParse(t, []byte(base))
		m.Updates[0].Arch = id
		if err := m.Validate(); !errors.Is(err, ErrName) {
			t.Errorf("arch %q: Validate = %v", id, err)
		}
		m = mustParse(t, []byte(base))
		m.Updates[0].Variant = id
		if err := m.Validate(); !errors.Is(err, ErrName) {
			t.Errorf("variant %q: Validate = %v", id, err)
		}
	}
	for _, id := range []string{"aws-k8s-1.15", "bottlerocket-aws-eks", "x86_64", "aarch64", "aws-k8s-1.29-nvidia", "vmware-k8s-1.30-fips", strings.Repeat("a", 64)} {
		if err := CheckVariant(id); err != nil {
			t.Errorf("CheckVariant(%q): %v", id, err)
		}
	}
	// The JSON route: what validate reads from a file.
	for _, edit := range []func(string) string{
		func(s string) string { return strings.Replace(s, `"boot": "b"`, `"boot": "../../../etc/shadow"`, 1) },
		func(s string) string { return strings.Replace(s, `"arch": "x86_64"`, `"arch": "x86_64\n"`, 1) },
		func(s string) string { return strings.Replace(s, `"variant": "v"`, `"variant": "v\u0000"`, 1) },
	} {
		m := mustParse(t, []byte(edit(base)))
		if err := m.Validate(); !errors.Is(err, ErrName) {
			t.Errorf("%s: Validate = %v", edit(base), err)
		}
	}
}

// TestWaveTimesBounded: times past year 9999 are refused by validate, and
// Encode never writes a wave time it could not read back.
func TestWaveTimesBounded(t *testing.T) {
	m := mustParse(t, []byte(base))
	u := m.Updates[0]
	p, err := waves.ParsePolicy([]byte("[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 10\n[[waves]]\nstart_after = '1 day'\nfleet_percentage = 100\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := u.SetWaves(p, time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)); err == nil {
		out, _ := m.Encode()
		t.Fatalf("waves past 9999 set:\n%s", out)
	}
	u.SetSchedule(waves.Schedule{Waves: []waves.Wave{{Seed: 0, Start: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}})
	if err := m.Validate(); !errors.Is(err, waves.ErrSchedule) {
		t.Errorf("Validate with a wave in 10000: %v", err)
	}
	if out, err := m.Encode(); err == nil {
		t.Errorf("Encode wrote a wave time in 10000:\n%s", out)
	}
	u.SetSchedule(waves.Schedule{})
	u.Pauses = []waves.Pause{{From: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}}
	if err := m.Validate(); !errors.Is(err, waves.ErrSchedule) {
		t.Errorf("Validate with a pause in 10000: %v", err)
	}
	if out, err := m.Encode(); err == nil {
		t.Errorf("Encode wrote a pause in 10000:\n%s", out)
	}
	// Times that are in range as written but not in UTC are refused by
	// Parse: they could not be written back.
	if _, err := Parse([]byte(strings.Replace(base, `"2024-01-02T00:00:00Z"`, `"9999-12-31T23:00:00-05:00"`, 1))); !errors.Is(err, ErrTime) {
		t.Errorf("a wave in 10000 UTC: %v", err)
	}
	if _, err := Parse([]byte(strings.Replace(base, `"images"`, `"pauses": [{"from": "0000-01-01T00:00:00+01:00"}], "images"`, 1))); err == nil {
		t.Error("a pause in year -1 UTC was parsed")
	}
}
