package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/manifest"
)

var clock = func() time.Time { return time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC) }

func ud(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb, clock)
	return out.String(), errb.String(), code
}

func mustUD(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := ud(args...)
	if code != 0 {
		t.Fatalf("updata %v: exit %d: %s", args, code, errs)
	}
	return out
}

var rel = []string{"--variant", "aws-k8s", "--arch", "x86_64"}

func withRel(cmd, path, version string, more ...string) []string {
	return append(append([]string{cmd, path}, append(rel, "--version", version)...), more...)
}

func TestEditCycle(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	policy := filepath.Join(testutil.Bottlerocket(t, "waves"), "default-waves.toml")
	mustUD(t, "init", m)
	if _, errs, code := ud("init", m); code != exitError || !strings.Contains(errs, "exists") {
		t.Errorf("init over an existing manifest: %d %s", code, errs)
	}
	mustUD(t, withRel("add-update", m, "1.0.0", "--boot", "b1", "--root", "r1", "--hash", "h1")...)
	mustUD(t, withRel("add-update", m, "1.1.0", "--boot", "b2", "--root", "r2", "--hash", "h2",
		"--boot-size", "10", "--root-size", "20480", "--hash-size", "30", "--verity-root-hash", strings.Repeat("ab", 32), "--verity-salt", "00",
		"--verity-data-blocks", "5")...)
	mustUD(t, withRel("set-waves", m, "1.1.0", "--wave-policy", policy, "--start-at", "2024-03-01T00:00:00Z")...)
	mustUD(t, withRel("pause", m, "1.1.0", "--at", "2024-03-01T06:00:00Z")...)
	mustUD(t, withRel("resume", m, "1.1.0")...) // at the clock's now

	b, _ := os.ReadFile(m)
	man, err := manifest.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := man.Find("aws-k8s", "x86_64", manifest.MustParseVersion("1.1.0"))
	if len(u.Waves) != 7 || u.Waves[1].Seed != 20 || u.Images.Sizes.Root != 20480 || u.Images.Verity.DataBlocks != 5 ||
		len(u.Pauses) != 1 || !u.Pauses[0].To.Equal(clock()) {
		t.Fatalf("manifest after edits:\n%s", b)
	}
	if man.Updates[0].MaxVersion.String() != "1.1.0" {
		t.Errorf("adding 1.1.0 did not raise 1.0.0's max_version: %s", man.Updates[0].MaxVersion)
	}

	out := mustUD(t, withRel("waves", m, "1.1.0", "--json")...)
	var w struct {
		Waves []struct {
			FirstSeed uint32  `json:"first_seed"`
			LastSeed  uint32  `json:"last_seed"`
			Share     float64 `json:"share_percent"`
		} `json:"waves"`
	}
	json.Unmarshal([]byte(out), &w)
	if len(w.Waves) != 7 || w.Waves[0].LastSeed != 19 || w.Waves[3].Share != 25 {
		t.Errorf("waves --json: %s", out)
	}
	text := mustUD(t, withRel("waves", m, "1.1.0")...)
	if !strings.Contains(text, "1843-2047") || !strings.Contains(text, "paused from 2024-03-01T06:00:00Z to 2024-03-01T12:00:00Z") {
		t.Errorf("waves:\n%s", text)
	}

	mustUD(t, "set-max-version", m, "--max-version", "1.0.0")
	out = mustUD(t, "validate", m)
	if !strings.Contains(out, "pulled back") || !strings.Contains(out, "is valid") {
		t.Errorf("validate after pulling 1.1.0 back: %q", out)
	}
	mustUD(t, withRel("remove-update", m, "1.1.0")...)
	if _, _, code := ud(withRel("remove-update", m, "1.1.0")...); code != exitError {
		t.Error("removing a missing release succeeded")
	}
}

// TestFailedEditsLeaveManifestIntact: every refused edit leaves the file
// byte for byte as it was.
func TestFailedEditsLeaveManifestIntact(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	mustUD(t, withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h")...)
	before, _ := os.ReadFile(m)
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 50\n"), 0o644)
	for _, args := range [][]string{
		withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h"), // duplicate
		withRel("add-update", m, "2.0.0", "--boot", "b", "--root", "r", "--hash", "h", "--max-version", "1.5.0"),
		withRel("set-waves", m, "1.0.0", "--wave-policy", bad, "--start-at", "now"),
		withRel("set-waves", m, "9.9.9", "--wave-policy", bad, "--start-at", "now"),
		withRel("resume", m, "1.0.0"),
		withRel("pause", m, "1.0.0", "--at", "yesterday"),
		{"set-max-version", m, "--max-version", "2.0.0", "--variant", "nope"},
	} {
		if _, _, code := ud(args...); code == 0 {
			t.Errorf("updata %v succeeded", args)
		}
		if after, _ := os.ReadFile(m); !bytes.Equal(before, after) {
			t.Fatalf("updata %v changed the manifest", args)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if n := e.Name(); n != "manifest.json" && n != "bad.toml" && n != ".manifest.json.lock" {
			t.Errorf("temporary file left behind: %s", n)
		}
	}
}

func TestValidateBottlerocketFiles(t *testing.T) {
	dir := testutil.Bottlerocket(t, "manifests")
	if out, errs, code := ud("validate", filepath.Join(dir, "regret.json")); code != 0 || !strings.Contains(out, "ignored") {
		t.Errorf("regret.json: %d %q %q", code, out, errs)
	}
	for _, f := range []string{"bad-bound.json", "duplicate-bound.json"} {
		out, _, code := ud("validate", "--json", filepath.Join(dir, f))
		var res struct {
			Valid    bool     `json:"valid"`
			Problems []string `json:"problems"`
		}
		json.Unmarshal([]byte(out), &res)
		if code != exitError || res.Valid || len(res.Problems) == 0 {
			t.Errorf("%s: exit %d %s", f, code, out)
		}
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"nope"}, {"init"}, {"add-update", "m.json"}, {"waves", "m.json", "--variant", "x"},
		{"set-max-version", "m.json", "--max-version", "one"}} {
		if _, _, code := ud(args...); code != exitUsage {
			t.Errorf("updata %v: exit %d, want usage", args, code)
		}
	}
	if out, _, code := ud("add-update", "--help"); code != 0 || !strings.Contains(out, "--verity-root-hash") {
		t.Errorf("add-update --help: %d %q", code, out)
	}
}

// TestSetWavesPastStart (issue 8 item 20): a start in the past is allowed
// but warned about, on stderr and in the output.
func TestSetWavesPastStart(t *testing.T) {
	m := filepath.Join(t.TempDir(), "manifest.json")
	policy := filepath.Join(testutil.Bottlerocket(t, "waves"), "default-waves.toml")
	mustUD(t, "init", m)
	mustUD(t, withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h")...)
	// The clock says 2024-03-01T12:00:00Z.
	out, errs, code := ud(withRel("set-waves", m, "1.0.0", "--wave-policy", policy, "--start-at", "2024-02-29T12:00:00Z")...)
	if code != 0 || !strings.Contains(errs, "warning") || !strings.Contains(errs, "in the past") || !strings.Contains(out, "in the past") {
		t.Errorf("a start a day ago: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if !strings.Contains(errs, "3 of 7 waves") {
		t.Errorf("the warning does not say how many waves are open: %q", errs)
	}
	out, errs, code = ud(withRel("set-waves", m, "1.0.0", "--wave-policy", policy, "--start-at", "2024-02-29T12:00:00Z", "--json")...)
	var res struct {
		Past     bool     `json:"start_in_past"`
		Warnings []string `json:"warnings"`
		Waves    []any    `json:"waves"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || !res.Past || len(res.Warnings) != 1 || len(res.Waves) != 7 || errs == "" {
		t.Errorf("--json: exit %d, %v: %s (stderr %q)", code, err, out, errs)
	}
	// Now and the future: no warning.
	for _, at := range []string{"now", "2024-03-01T12:00:00Z", "2024-04-01T00:00:00Z"} {
		out, errs, code := ud(withRel("set-waves", m, "1.0.0", "--wave-policy", policy, "--start-at", at, "--json")...)
		json.Unmarshal([]byte(out), &res)
		if code != 0 || errs != "" || res.Past || len(res.Warnings) != 0 {
			t.Errorf("--start-at %s: exit %d, %s, stderr %q", at, code, out, errs)
		}
	}
}
