package gptprio

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// GUID is a GPT GUID in its on-disk byte order: the first three fields
// little-endian, the last two big-endian ("mixed endian").
type GUID [16]byte

// Partition type GUIDs that updog cares about.
var (
	TypeBoot    = MustParseGUID("6b636168-7420-6568-2070-6c616e657421") // BOTTLEROCKET-BOOT; spells "hack the planet!" on disk
	TypeRoot    = MustParseGUID("5526016a-1a97-4ea4-b39a-b7c8c6ca4502")
	TypeHash    = MustParseGUID("598f10af-c955-4456-6a99-7720068a6cea")
	TypePrivate = MustParseGUID("440408bb-eb0b-4328-a6e5-a29038fad706")
	TypeEFI     = MustParseGUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
	TypeBIOS    = MustParseGUID("21686148-6449-6e6f-744e-656564454649")
)

// ParseGUID parses the canonical textual form
// xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (case-insensitive).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return g, fmt.Errorf("gptprio: %q is not a GUID (want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", s)
	}
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil {
		return g, fmt.Errorf("gptprio: %q is not a GUID: %w", s, err)
	}
	// Canonical text is big-endian throughout; swap the first three fields.
	g[0], g[1], g[2], g[3] = b[3], b[2], b[1], b[0]
	g[4], g[5] = b[5], b[4]
	g[6], g[7] = b[7], b[6]
	copy(g[8:], b[8:])
	return g, nil
}

// MustParseGUID is ParseGUID for constants; it panics on bad input.
func MustParseGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// String returns the canonical lower-case textual form.
func (g GUID) String() string {
	return fmt.Sprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%x-%x",
		g[3], g[2], g[1], g[0], g[5], g[4], g[7], g[6], g[8:10], g[10:])
}

// IsZero reports whether g is all zeros (an unused partition entry).
func (g GUID) IsZero() bool { return g == GUID{} }
