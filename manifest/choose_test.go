package manifest

import (
	"errors"
	"testing"
)

// inlineManifest has what TestChoose's Bottlerocket files test, inline, so
// the update choice is tested without ../shared: several releases of one
// variant and two arches, one above max_version (pulled back).
const inlineManifest = `{
  "updates": [
    {"variant": "v", "arch": "x86_64", "version": "1.13.0", "max_version": "1.20.0", "waves": {},
     "images": {"boot": "b13", "root": "r13", "hash": "h13"}},
    {"variant": "v", "arch": "x86_64", "version": "1.15.0", "max_version": "1.20.0", "waves": {},
     "images": {"boot": "b15", "root": "r15", "hash": "h15"}},
    {"variant": "v", "arch": "x86_64", "version": "1.25.0", "max_version": "1.20.0", "waves": {},
     "images": {"boot": "b25", "root": "r25", "hash": "h25"}},
    {"variant": "v", "arch": "aarch64", "version": "1.16.0", "max_version": "1.20.0", "waves": {},
     "images": {"boot": "b16", "root": "r16", "hash": "h16"}},
    {"variant": "w", "arch": "x86_64", "version": "0.1.2", "max_version": "0.1.2", "waves": {},
     "images": {"boot": "b", "root": "r", "hash": "h"}}
  ],
  "migrations": {}
}`

func TestChooseInline(t *testing.T) {
	m, err := Parse([]byte(inlineManifest))
	if err != nil {
		t.Fatal(err)
	}
	v := MustParseVersion
	want13 := v("1.13.0")
	for _, c := range []struct {
		name, variant, arch, current, lock string
		want                               *Version
		wantV                              string
		err                                error
	}{
		{"newest below max_version", "v", "x86_64", "1.10.0", "", nil, "1.15.0", nil},
		{"other arch", "v", "aarch64", "1.10.0", "latest", nil, "1.16.0", nil},
		{"up to date", "v", "x86_64", "1.15.0", "", nil, "", ErrNoUpdate},
		{"above max_version moves down", "w", "x86_64", "0.1.3", "", nil, "0.1.2", nil},
		{"pulled-back release not offered", "v", "x86_64", "1.18.0", "", nil, "", ErrNoUpdate},
		{"lock down", "v", "x86_64", "1.15.0", "v1.13.0", nil, "1.13.0", nil},
		{"lock to a pulled-back version", "v", "x86_64", "1.10.0", "1.25.0", nil, "", ErrVersionNotFound},
		{"lock to the running version", "v", "x86_64", "1.13.0", "1.13.0", nil, "", ErrNoUpdate},
		{"explicit version beats the lock", "v", "x86_64", "1.10.0", "1.15.0", &want13, "1.13.0", nil},
		{"unknown variant", "x", "x86_64", "1.0.0", "", nil, "", ErrNoUpdate},
	} {
		u, err := m.Choose(Query{Variant: c.variant, Arch: c.arch, Current: v(c.current), Lock: c.lock, Want: c.want})
		switch {
		case c.err != nil && !errors.Is(err, c.err):
			t.Errorf("%s: err %v, want %v", c.name, err, c.err)
		case c.err == nil && (err != nil || u.Version.String() != c.wantV):
			t.Errorf("%s: %v %v, want %s", c.name, u, err, c.wantV)
		}
	}
}
