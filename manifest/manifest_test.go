package manifest

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/waves"
)

func loadFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Bottlerocket(t, "manifests"), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, b []byte) *Manifest {
	t.Helper()
	m, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBottlerocketManifestsRoundTrip(t *testing.T) {
	for _, name := range []string{"example.json", "example_2.json", "example_3_aarch64.json", "example_3_x86_64.json",
		"migrations.json", "multiple_aarch64.json", "multiple_x86_64.json", "regret.json", "single_wave.json"} {
		orig := loadFile(t, name)
		m, err := Parse(orig)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if err := m.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		out, err := m.Encode()
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		json.Unmarshal(orig, &a)
		json.Unmarshal(out, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: writing back changed the manifest:\n%s", name, out)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatal(err)
		}
		out2, _ := again.Encode()
		if string(out2) != string(out) {
			t.Errorf("%s: a second round trip is not stable", name)
		}
	}
	// The unknown fields Bottlerocket's manifests carry survive.
	out, _ := mustParse(t, loadFile(t, "example.json")).Encode()
	if !strings.Contains(string(out), `"status": "Ready"`) {
		t.Error("unknown field status dropped")
	}
	out, _ = mustParse(t, loadFile(t, "single_wave.json")).Encode()
	if !strings.Contains(string(out), `"datastore_versions"`) {
		t.Error("unknown field datastore_versions dropped")
	}
	out, _ = mustParse(t, loadFile(t, "example_2.json")).Encode()
	if !strings.Contains(string(out), `"2019-8-06T15:00:00Z"`) {
		t.Error("an unedited wave time was rewritten")
	}
}

func TestBadManifestsRefused(t *testing.T) {
	for name, want := range map[string]string{"bad-bound.json": "234ab32", "duplicate-bound.json": "twice"} {
		_, err := Parse(loadFile(t, name))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error about %s", name, err, want)
		}
	}
}

func TestChoose(t *testing.T) {
	v := MustParseVersion
	cases := []struct {
		file, variant, arch, current, lock string
		want                               string // "" = no update
		err                                error
	}{
		{"example_3_x86_64.json", "aws-k8s-1.15", "x86_64", "0.1.3", "", "0.1.2", nil},
		{"example_3_aarch64.json", "aws-k8s-1.15", "aarch64", "0.1.3", "", "0.1.2", nil},
		{"multiple_x86_64.json", "bottlerocket-aws-eks", "x86_64", "1.10.0", "", "1.15.0", nil},
		{"multiple_x86_64.json", "bottlerocket-aws-eks", "x86_64", "1.10.0", "1.13.0", "1.13.0", nil},
		{"multiple_x86_64.json", "bottlerocket-aws-eks", "x86_64", "1.15.0", "v1.13.0", "1.13.0", nil},
		{"multiple_x86_64.json", "bottlerocket-aws-eks", "x86_64", "1.10.0", "1.25.0", "", ErrVersionNotFound},
		{"multiple_x86_64.json", "bottlerocket-aws-eks", "x86_64", "1.15.0", "latest", "", ErrNoUpdate},
		{"multiple_aarch64.json", "bottlerocket-aws-eks", "aarch64", "1.10.0", "", "1.15.0", nil},
		{"regret.json", "bottlerocket-aws-eks", "x86_64", "1.18.0", "", "", ErrNoUpdate},
		{"example.json", "other-variant", "x86_64", "1.0.0", "", "", ErrNoUpdate},
	}
	for _, c := range cases {
		m := mustParse(t, loadFile(t, c.file))
		u, err := m.Choose(Query{Variant: c.variant, Arch: c.arch, Current: v(c.current), Lock: c.lock})
		switch {
		case c.err != nil && !errors.Is(err, c.err):
			t.Errorf("%s from %s lock %q: err %v, want %v", c.file, c.current, c.lock, err, c.err)
		case c.err == nil && (err != nil || u.Version.String() != c.want):
			t.Errorf("%s from %s lock %q: %v %v, want %s", c.file, c.current, c.lock, u, err, c.want)
		}
	}
	// updog update --image 1.13.0 (an explicit version) on multiple_x86_64.
	m := mustParse(t, loadFile(t, "multiple_x86_64.json"))
	want := v("1.13.0")
	if u, err := m.Choose(Query{Variant: "bottlerocket-aws-eks", Arch: "x86_64", Current: v("1.10.0"), Want: &want}); err != nil || u.Version != want {
		t.Errorf("explicit 1.13.0: %v %v", u, err)
	}
}

func TestMigrations(t *testing.T) {
	m := mustParse(t, loadFile(t, "migrations.json"))
	v := MustParseVersion
	fwd, err := m.FindMigrations(v("1.0.0"), v("1.5.0"))
	if err != nil || strings.Join(fwd, ",") != "migration_1.1.0_a,migration_1.1.0_b,migration_1.5.0_shortcut" {
		t.Errorf("forward: %v %v", fwd, err)
	}
	back, err := m.FindMigrations(v("1.5.0"), v("1.0.0"))
	if err != nil || strings.Join(back, ",") != "migration_1.5.0_shortcut,migration_1.1.0_b,migration_1.1.0_a" {
		t.Errorf("backward: %v %v", back, err)
	}
	if _, err := m.FindMigrations(v("0.9.0"), v("1.5.0")); err == nil {
		t.Error("a missing migration path was not reported")
	}
}

const base = `{"updates": [{"variant": "v", "arch": "x86_64", "version": "1.0.0", "max_version": "1.0.0",
  "waves": {"0": "2024-01-01T00:00:00Z", "100": "2024-01-02T00:00:00Z"},
  "images": {"boot": "b", "root": "r", "hash": "h"}}], "migrations": {}}`

func TestValidationErrors(t *testing.T) {
	for name, c := range map[string]struct {
		json    string
		parse   bool // the error comes from Parse, not Validate
		mention string
	}{
		"bad version":       {strings.Replace(base, `"version": "1.0.0"`, `"version": "1.0"`, 1), true, "MAJOR.MINOR.PATCH"},
		"bad time":          {strings.Replace(base, `2024-01-02T00:00:00Z`, `tomorrow`, 1), true, "RFC 3339"},
		"negative seed":     {strings.Replace(base, `"100":`, `"-1":`, 1), true, "seed"},
		"missing images":    {strings.Replace(base, `"images"`, `"imagez"`, 1), true, "images"},
		"empty image name":  {strings.Replace(base, `"root": "r"`, `"root": ""`, 1), false, "root image"},
		"unordered waves":   {strings.Replace(base, `2024-01-02T00:00:00Z`, `2023-01-02T00:00:00Z`, 1), false, "unordered"},
		"first seed not 0":  {strings.Replace(base, `"0":`, `"5":`, 1), false, "not 0"},
		"duplicate release": {strings.Replace(base, `}]`, `}, {"variant": "v", "arch": "x86_64", "version": "1.0.0", "max_version": "1.0.0", "waves": {}, "images": {"boot": "b", "root": "r", "hash": "h"}}]`, 1), false, "duplicate"},
		"duplicate field":   {strings.Replace(base, `"arch": "x86_64",`, `"arch": "x86_64", "arch": "aarch64",`, 1), true, "twice"},
	} {
		m, err := Parse([]byte(c.json))
		if c.parse {
			if err == nil || !strings.Contains(err.Error(), c.mention) {
				t.Errorf("%s: Parse: %v", name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		err = m.Validate()
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.mention) {
			t.Errorf("%s: Validate: %v", name, err)
		}
	}
}

func TestAdditionsRoundTrip(t *testing.T) {
	m := mustParse(t, []byte(base))
	u := m.Updates[0]
	u.Images.Sizes = &ImageSizes{Boot: 1, Root: 9 * 4096, Hash: 3}
	u.Images.Verity = &Verity{RootHash: goodHash, Salt: "00", Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 9}
	at := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	if err := u.Pause(at); err != nil {
		t.Fatal(err)
	}
	if err := u.Pause(at); err == nil {
		t.Error("paused twice")
	}
	if err := u.Resume(at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	out, _ := m.Encode()
	back := mustParse(t, out)
	bu := back.Updates[0]
	if *bu.Images.Sizes != *u.Images.Sizes || *bu.Images.Verity != *u.Images.Verity || len(bu.Pauses) != 1 ||
		!bu.Pauses[0].To.Equal(at.Add(time.Hour)) {
		t.Fatalf("additions lost: %s", out)
	}
	if err := back.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestEdits(t *testing.T) {
	m := New()
	v := MustParseVersion
	add := func(ver string, maxV *Version) error {
		return m.AddUpdate(&Update{Variant: "v", Arch: "x86_64", Version: v(ver), Images: Images{Boot: "b", Root: "r", Hash: "h"}}, maxV)
	}
	if err := add("1.0.0", nil); err != nil {
		t.Fatal(err)
	}
	mv := v("1.5.0")
	if err := add("1.1.0", &mv); err != nil {
		t.Fatal(err)
	}
	if m.Updates[0].MaxVersion != mv {
		t.Error("a new max_version did not apply to the variant's other releases")
	}
	if err := add("1.1.0", nil); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate add: %v", err)
	}
	low := v("1.0.5")
	if err := add("1.2.0", &low); err == nil {
		t.Error("max_version below version accepted on add")
	}
	if err := add("1.2.0", nil); err != nil || m.Updates[2].MaxVersion != mv {
		t.Errorf("default max_version: %v %v", err, m.Updates[2].MaxVersion)
	}
	// Pull 1.2.0 back: hosts on it go down to 1.1.0.
	m.SetMaxVersion(v("1.1.0"), "v", "x86_64")
	u, err := m.Choose(Query{Variant: "v", Arch: "x86_64", Current: v("1.2.0")})
	if err != nil || u.Version != v("1.1.0") {
		t.Errorf("after pulling 1.2.0 back: %v %v", u, err)
	}
	if len(m.Warnings()) != 1 {
		t.Errorf("warnings: %v", m.Warnings())
	}
	p, _ := waves.ParsePolicy([]byte("[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 10\n[[waves]]\nstart_after = '1 day'\nfleet_percentage = 100\n"))
	if err := m.Updates[0].SetWaves(p, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if w := m.Updates[0].Waves; len(w) != 2 || w[1].Seed != 204 {
		t.Errorf("waves %+v", w)
	}
	if err := m.RemoveUpdate("v", "x86_64", v("1.0.0")); err != nil || len(m.Updates) != 2 {
		t.Errorf("remove: %v", err)
	}
	if err := m.RemoveUpdate("v", "x86_64", v("9.9.9")); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove missing: %v", err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestVersionOrder(t *testing.T) {
	order := []string{"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"}
	for i := 1; i < len(order); i++ {
		if !MustParseVersion(order[i-1]).Less(MustParseVersion(order[i])) {
			t.Errorf("%s is not below %s", order[i-1], order[i])
		}
	}
	for _, bad := range []string{"1.0", "01.0.0", "1.0.0-", "a.b.c", "v1.0.0"} {
		if _, err := ParseVersion(bad); !errors.Is(err, ErrVersion) {
			t.Errorf("%q accepted", bad)
		}
	}
	if v, err := ParseVersionLock("v1.2.3"); err != nil || v.String() != "1.2.3" {
		t.Errorf("lock with v: %v %v", v, err)
	}
}

// FuzzManifest: decoding, validating and encoding never panic; what we
// encode parses again; and a manifest that validates holds only safe names,
// sane sizes and verity parameters, and still validates after a round trip
// (so updata never writes what validate would refuse).
func FuzzManifest(f *testing.F) {
	f.Add([]byte(base))
	f.Add([]byte(`{"updates": []}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		verr := m.Validate()
		if verr != nil && !errors.Is(verr, ErrInvalid) {
			t.Fatalf("Validate error does not match ErrInvalid: %v", verr)
		}
		_ = m.Warnings()
		out, err := m.Encode()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of our own output: %v\n%s", err, out)
		}
		if verr != nil {
			return
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("valid manifest invalid after a round trip: %v\n%s", err, out)
		}
		for _, u := range m.Updates {
			for _, name := range []string{u.Images.Boot, u.Images.Root, u.Images.Hash} {
				if strings.ContainsAny(name, "/\\\x00\n") || name == "." || name == ".." || len(name) > MaxTargetName {
					t.Fatalf("unsafe image name %q validated", name)
				}
			}
			if strings.ContainsAny(u.Variant+u.Arch, "/ \n\x00") || u.Variant == "" || u.Arch == "" {
				t.Fatalf("unsafe variant %q or arch %q validated", u.Variant, u.Arch)
			}
			if sz := u.Images.Sizes; sz != nil && (sz.Boot <= 0 || sz.Root <= 0 || sz.Hash <= 0) {
				t.Fatalf("sizes %+v validated", *sz)
			}
			if v := u.Images.Verity; v != nil {
				if _, err := hex.DecodeString(v.RootHash); err != nil || len(v.RootHash) < 40 {
					t.Fatalf("root hash %q validated", v.RootHash)
				}
				if _, err := hex.DecodeString(v.Salt); err != nil {
					t.Fatalf("salt %q validated", v.Salt)
				}
				for _, bs := range []int{v.DataBlockSize, v.HashBlockSize} {
					if bs != 0 && (bs < 512 || bs > 4096 || bs&(bs-1) != 0) {
						t.Fatalf("block size %d validated", bs)
					}
				}
			}
			for _, w := range u.Waves {
				if w.Start.Year() < 0 || w.Start.Year() > 9999 {
					t.Fatalf("wave time %v validated", w.Start)
				}
			}
		}
	})
}
