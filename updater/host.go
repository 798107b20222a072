package updater

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"runtime"
	"strings"

	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/waves"
)

// Running is the release the host runs, from os-release.
type Running struct {
	Variant string           `json:"variant"`
	Arch    string           `json:"arch"`
	Version manifest.Version `json:"version"`
	// BuildID is BUILD_ID when present (Bottlerocket sets the commit).
	BuildID string `json:"build_id,omitempty"`
}

// Arch maps GOARCH to the names manifests use (Bottlerocket's:
// x86_64, aarch64).
func Arch(goarch string) string {
	switch goarch {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i686"
	}
	return goarch
}

// HostArch is the architecture of the running binary.
func HostArch() string { return Arch(runtime.GOARCH) }

// ReadOSRelease reads VERSION_ID and VARIANT_ID from an os-release file.
func ReadOSRelease(path, arch string) (Running, error) {
	b, err := safefile.ReadFile(path, safefile.MaxConfig)
	if err != nil {
		return Running{}, fmt.Errorf("reading the running release: %w", err)
	}
	kv := ParseOSRelease(b)
	r := Running{Variant: kv["VARIANT_ID"], Arch: arch, BuildID: kv["BUILD_ID"]}
	if r.Variant == "" {
		return r, fmt.Errorf("%s has no VARIANT_ID: updog needs it to pick releases", path)
	}
	v := kv["VERSION_ID"]
	if v == "" {
		return r, fmt.Errorf("%s has no VERSION_ID", path)
	}
	if r.Version, err = manifest.ParseVersion(v); err != nil {
		return r, fmt.Errorf("%s: VERSION_ID %q: %w", path, v, err)
	}
	return r, nil
}

// ParseOSRelease parses os-release(5) text: KEY=value lines, values
// optionally quoted with shell quoting rules for the simple cases.
func ParseOSRelease(b []byte) map[string]string {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		out[strings.TrimSpace(k)] = unquoteShell(strings.TrimSpace(v))
	}
	return out
}

// unquoteShell undoes os-release(5)'s quoting, a subset of the shell's:
// 'single quotes' are literal; in "double quotes" a backslash escapes $,
// ", \ and `; anything else is kept as it is (bytes included, valid UTF-8
// or not).
func unquoteShell(v string) string {
	if len(v) < 2 || (v[0] != '"' && v[0] != '\'') || v[len(v)-1] != v[0] {
		return v
	}
	q, body := v[0], v[1:len(v)-1]
	if q == '\'' {
		return body
	}
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		if body[i] == '\\' && i+1 < len(body) && strings.IndexByte("$\"\\`", body[i+1]) >= 0 {
			i++
		}
		b.WriteByte(body[i])
	}
	return b.String()
}

// hostFromMachineID derives a stable seed and rollout ID from machine-id,
// as an application-specific hash (the raw machine-id is never sent).
func hostFromMachineID(machineID []byte) (waves.Host, error) {
	id := strings.TrimSpace(string(machineID))
	raw, err := hex.DecodeString(id)
	if err != nil || len(raw) != 16 {
		return waves.Host{}, fmt.Errorf("machine-id %q is not 32 hex digits", id)
	}
	sum := sha256.Sum256(append([]byte("updog rollout seed\x00"), raw...))
	var h waves.Host
	h.Seed = binary.BigEndian.Uint32(sum[:4]) % waves.MaxSeed
	copy(h.ID[:], sum[16:])
	return h, nil
}
