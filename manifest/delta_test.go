package manifest

import (
	"bytes"
	"errors"
	"testing"
)

// TestDeltaRoundTrip: the optional delta targets of a release are read,
// validated and written back; a manifest without them stays without them.
func TestDeltaRoundTrip(t *testing.T) {
	m := mustParse(t, []byte(base))
	plain, _ := m.Encode()
	if bytes.Contains(plain, []byte(`"delta"`)) {
		t.Fatalf("a release without delta targets grew a delta field:\n%s", plain)
	}
	u := m.Updates[0]
	u.Images.Delta = &Delta{Seekable: "x-root.ext4.seek.zst", Index: "x-root.ext4.didx"}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	out, _ := m.Encode()
	back := mustParse(t, out)
	if d := back.Updates[0].Images.Delta; d == nil || *d != *u.Images.Delta {
		t.Fatalf("delta targets lost: %s", out)
	}
	if err := back.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestDeltaValidation: bad or clashing delta target names are refused.
func TestDeltaValidation(t *testing.T) {
	m := mustParse(t, []byte(base))
	root := m.Updates[0].Images.Root
	for _, d := range []Delta{
		{Seekable: "", Index: "i.didx"},
		{Seekable: "s.seek.zst", Index: ""},
		{Seekable: "../s.seek.zst", Index: "i.didx"},
		{Seekable: "s.seek.zst", Index: "a/../../i.didx"},
		{Seekable: "same", Index: "same"},
		{Seekable: root, Index: "i.didx"},
		{Seekable: "s.seek.zst", Index: root},
	} {
		m := mustParse(t, []byte(base))
		m.Updates[0].Images.Delta = &d
		if err := m.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("delta %+v: %v, want ErrInvalid", d, err)
		}
	}
}

// TestDeltaUnknownToOldReaders: an images object with a delta member
// parses; its unknown members are kept (as an old client keeps "delta").
func TestDeltaUnknownToOldReaders(t *testing.T) {
	m := mustParse(t, []byte(base))
	m.Updates[0].Images.Delta = &Delta{Seekable: "s", Index: "i"}
	out, _ := m.Encode()
	out = bytes.Replace(out, []byte(`"delta"`), []byte(`"delta2"`), 1)
	back := mustParse(t, out)
	if back.Updates[0].Images.Delta != nil {
		t.Fatal("an unknown member was read as delta")
	}
	again, _ := back.Encode()
	if !bytes.Contains(again, []byte(`"delta2"`)) {
		t.Fatalf("an unknown member was dropped:\n%s", again)
	}
}
