package repo

import (
	"encoding/json"
	"errors"
	"testing"
)

// The seed corpora in testdata/fuzz/ are tough's root.json files (and a few
// of its other metadata files, for the JSON check), from
// ../shared/testdata/bottlerocket/tough. Run with
// go test -fuzz=FuzzParseRoot ./repo/ (and FuzzCheckDuplicates).

// FuzzParseRoot: ParseRoot never panics; what it accepts is a root of a
// positive version that encodes and parses again to the same signed part.
func FuzzParseRoot(f *testing.F) {
	f.Add([]byte(`{"signed":{"_type":"root"},"signatures":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRoot(data)
		if err != nil {
			if !errors.Is(err, ErrRoot) {
				t.Fatalf("an error without ErrRoot: %v", err)
			}
			return
		}
		if r.Signed.Version < 1 {
			t.Fatalf("accepted version %d", r.Signed.Version)
		}
		b, err := r.ToBytes(false)
		if err != nil {
			return // go-tuf cannot always re-encode what it read (e.g. odd times)
		}
		again, err := ParseRoot(b)
		if err != nil {
			t.Fatalf("a root we parsed, re-encoded, does not parse: %v\n%s", err, b)
		}
		if !sameSigned(r, again) {
			t.Fatal("the signed part changed through encoding")
		}
		_ = Verify(r, nil) // must not panic
	})
}

// FuzzCheckDuplicates: the strict JSON check never panics, and accepts
// only valid JSON.
func FuzzCheckDuplicates(f *testing.F) {
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Add([]byte(`[{"a":{"b":[1,2,{"c":null}]}}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := checkDuplicates(data); err == nil && !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
	})
}
