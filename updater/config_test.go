package updater

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
)

// renderTemplate fills Bottlerocket's updog-toml.template the way its
// settings would, with or without the proxy settings.
func renderTemplate(t *testing.T, proxy bool) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.Bottlerocket(t, "config"), "updog-toml.template"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	_, s, _ = strings.Cut(s, "+++\n") // drop the template's front matter
	r := strings.NewReplacer(
		"{{settings.updates.metadata-base-url}}", "https://updates.bottlerocket.aws/2020-07-07/aws-k8s-1.28/x86_64/",
		"{{settings.updates.targets-base-url}}", "https://updates.bottlerocket.aws/targets/",
		"{{settings.updates.seed}}", "1487",
		"{{settings.updates.version-lock}}", "latest",
		"{{settings.updates.ignore-waves}}", "false",
		"{{settings.network.https-proxy}}", "http://proxy.example:3128",
		`{{join_array ", " settings.network.no-proxy}}`, `"localhost", "169.254.169.254", ".cluster.local"`,
	)
	s = r.Replace(s)
	var out []string
	skip := false
	for _, line := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(line, "{{#if"):
			skip = !proxy
			continue
		case strings.HasPrefix(line, "{{/if}}"):
			skip = false
			continue
		}
		if !skip {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

func TestBottlerocketTemplateAccepted(t *testing.T) {
	t.Parallel()
	for _, proxy := range []bool{false, true} {
		text := renderTemplate(t, proxy)
		c, err := ParseConfig("updog.toml", []byte(text))
		if err != nil {
			t.Fatalf("rendered template (proxy %v):\n%s\n%v", proxy, text, err)
		}
		if len(c.Warnings) != 0 {
			t.Errorf("warnings on Bottlerocket's own keys: %v", c.Warnings)
		}
		if *c.Seed != 1487 || c.VersionLock != "latest" || c.IgnoreWaves || c.BootTries != 1 ||
			c.StateDir != DefaultStateDir || c.TrustedRoot != DefaultTrustedRoot || c.HealthTimeout.Duration != DefaultHealthTimeout {
			t.Errorf("decoded %+v", c)
		}
		if proxy && (c.HTTPSProxy != "http://proxy.example:3128" || len(c.NoProxy) != 3) {
			t.Errorf("proxy settings: %q %q", c.HTTPSProxy, c.NoProxy)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	base := "metadata_base_url = \"https://u.example/m\"\ntargets_base_url = \"https://u.example/t\"\n"
	for _, c := range []struct {
		name, text, key string
	}{
		{"missing metadata url", `targets_base_url = "https://x/t"`, "metadata_base_url"},
		{"relative dir", "metadata_base_url = \"repo/m\"\ntargets_base_url = \"https://x/t\"", "metadata_base_url"},
		{"ftp scheme", "metadata_base_url = \"ftp://x/m\"\ntargets_base_url = \"https://x/t\"", "metadata_base_url"},
		{"seed out of range", base + "seed = 2048", "seed"},
		{"seed negative", base + "seed = -1", "seed"},
		{"seed as string", base + "seed = \"12\"", "seed"},
		{"boot tries", base + "boot_tries = 16", "boot_tries"},
		{"health timeout", base + "health_timeout = \"soon\"", "health_timeout"},
		{"relative state dir", base + "state_dir = \"state\"", "state_dir"},
		{"syntax", base + "seed = = 1", "line 3"},
	} {
		_, err := ParseConfig("/etc/updog.toml", []byte(c.text))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), "/etc/updog.toml") {
			t.Errorf("%s: %v (want ErrConfig naming %s and the file)", c.name, err, c.key)
		}
	}
	c, err := ParseConfig("u.toml", []byte(base+"frobnicate = 1\n[future]\nfeature = \"on\"\n"))
	if err != nil || len(c.Warnings) != 2 {
		t.Fatalf("unknown keys: %v %v", err, c)
	}
	_, err = ParseConfig("u.toml", []byte(base+"health_timeout = 90\nstall_timeout = \"2 minutes\"\nmetadata_base_url = \"file:///media/usb/metadata\"\n"))
	if err == nil {
		t.Fatal("a key set twice was accepted")
	}
	c, err = ParseConfig("u.toml", []byte("metadata_base_url = \"file:///media/usb/metadata\"\ntargets_base_url = \"/media/usb/targets\"\nhealth_timeout = 90\nstall_timeout = \"2 minutes\"\n"))
	if err != nil || c.HealthTimeout.Duration != 90*time.Second || c.StallTimeout.Duration != 2*time.Minute {
		t.Fatalf("local locations and durations: %v %+v", err, c)
	}
}

// TestRebootConfigErrors: every mistake in [reboot] is refused, naming
// the key and the file.
func TestRebootConfigErrors(t *testing.T) {
	t.Parallel()
	base := "metadata_base_url = \"https://u.example/m\"\ntargets_base_url = \"https://u.example/t\"\n[reboot]\n"
	win := func(w string) string { return base + "strategy = \"periodic\"\nwindows = [" + w + "]\n" }
	for _, c := range []struct {
		name, text, key, why string
	}{
		{"unknown strategy", base + `strategy = "reboot_now"`, "reboot.strategy", "reboot_now"},
		{"strategy in the wrong case", base + `strategy = "Immediate"`, "reboot.strategy", "Immediate"},
		{"periodic without windows", base + `strategy = "periodic"`, "reboot.windows", "at least one"},
		{"periodic with an empty list", base + "strategy = \"periodic\"\nwindows = []", "reboot.windows", "at least one"},
		{"fleet_lock without a URL", base + `strategy = "fleet_lock"`, "reboot.fleet_lock_url", "missing"},
		{"fleet_lock with a relative URL", base + "strategy = \"fleet_lock\"\nfleet_lock_url = \"lock.example:8787\"", "reboot.fleet_lock_url", "http(s)"},
		{"fleet_lock with ftp", base + `fleet_lock_url = "ftp://lock.example/"`, "reboot.fleet_lock_url", "http(s)"},
		{"group with a slash", base + `group = "workers/a"`, "reboot.group", "workers/a"},
		{"group with a space", base + `group = "two words"`, "reboot.group", "two words"},
		{"group too long", base + `group = "` + strings.Repeat("g", 254) + `"`, "reboot.group", "not a valid group"},
		{"window in an unknown zone", win(`{days = ["Sat"], start = "02:00", length = "2h", time_zone = "Mars/Olympus_Mons"}`), "reboot.windows", "Mars/Olympus_Mons"},
		{"window without length", win(`{days = ["Sat"], start = "02:00"}`), "reboot.windows", "length"},
		{"window of no length", win(`{days = ["Sat"], start = "02:00", length = "0s"}`), "reboot.windows", "length"},
		{"window longer than a week", win(`{days = ["Sat"], start = "02:00", length = "169h"}`), "reboot.windows", "length"},
		{"window with a bad start", win(`{days = ["Sat"], start = "25:00", length = "2h"}`), "reboot.windows", "25:00"},
		{"window without days", win(`{start = "02:00", length = "2h"}`), "reboot.windows", "day"},
		{"window on no such day", win(`{days = ["Caturday"], start = "02:00", length = "2h"}`), "reboot.windows", "Caturday"},
		{"windows under another strategy", base + "strategy = \"immediate\"\nwindows = [{days = [\"Sat\"], start = \"02:00\", length = \"2h\", time_zone = \"Nowhere/Else\"}]", "reboot.windows", "Nowhere/Else"},
		{"fleet_lock_wait too long", base + "fleet_lock_url = \"https://lock.example/\"\nfleet_lock_wait = \"2h\"", "reboot.fleet_lock_wait", "longer"},
		{"fleet_lock_wait not a duration", base + "fleet_lock_url = \"https://lock.example/\"\nfleet_lock_wait = \"soon\"", "fleet_lock_wait", "soon"},
	} {
		_, err := ParseConfig("/etc/updog.toml", []byte(c.text))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.why) ||
			!strings.Contains(err.Error(), "/etc/updog.toml") {
			t.Errorf("%s: %v (want ErrConfig naming %s, %q and the file)", c.name, err, c.key, c.why)
		}
	}
}

// TestRebootConfigDefaults: no [reboot] is the immediate strategy in
// group "default" at any time; a fleet_lock_url alone means fleet_lock;
// fleet_lock_wait defaults to DefaultFleetLockWait, and 0 is kept (ask
// once).
func TestRebootConfigDefaults(t *testing.T) {
	t.Parallel()
	base := "metadata_base_url = \"https://u.example/m\"\ntargets_base_url = \"https://u.example/t\"\n"
	c, err := ParseConfig("u.toml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Reboot
	if r.Strategy != StrategyImmediate || r.Group != "default" || len(r.WindowSet()) != 0 || r.LockWait() != DefaultFleetLockWait {
		t.Fatalf("defaults: %+v wait %v", r, r.LockWait())
	}
	c, err = ParseConfig("u.toml", []byte(base+"[reboot]\nfleet_lock_url = \"http://lock.example:8787\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Reboot.Strategy != StrategyFleetLock || c.Reboot.Group != "default" || c.Reboot.LockWait() != 3*time.Minute {
		t.Fatalf("fleet_lock_url alone: %+v", c.Reboot)
	}
	c, err = ParseConfig("u.toml", []byte(base+`[reboot]
strategy = "periodic"
group = "workers.eu-1"
fleet_lock_wait = 0
windows = [
  { days = ["Sat", "sunday"], start = "23:30", length = "3h", time_zone = "Europe/Berlin" },
  { days = ["Wed"], start = "02:00", length = "90m" },
]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 0 || c.Reboot.Group != "workers.eu-1" || c.Reboot.FleetLockWait == nil || c.Reboot.LockWait() != 0 || len(c.Reboot.WindowSet()) != 2 {
		t.Fatalf("periodic: %+v %v", c.Reboot, c.Warnings)
	}
	c, err = ParseConfig("u.toml", []byte(base+"[reboot]\nstrategy = \"fleet_lock\"\nfleet_lock_url = \"https://lock.example/fleet/\"\nfleet_lock_wait = \"10 minutes\"\n"))
	if err != nil || c.Reboot.LockWait() != 10*time.Minute {
		t.Fatalf("fleet_lock_wait: %v %+v", err, c)
	}
}

func TestHostileConfigSpecialFiles(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/dev/zero", t.TempDir()} {
		done := make(chan error, 1)
		go func() { _, err := LoadConfig(p); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrConfig) {
				t.Errorf("%s: %v", p, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("LoadConfig(%s) hangs", p)
		}
	}
}

func FuzzConfig(f *testing.F) {
	f.Add([]byte("metadata_base_url = \"https://u/m\"\ntargets_base_url = \"https://u/t\"\nseed = 5\n"))
	f.Add([]byte("seed = 99999999999999999999\n"))
	f.Add([]byte("no_proxy = [1, 2]\nhealth_timeout = -5\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig("fuzz.toml", b)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error not matching ErrConfig: %v", err)
			}
			return
		}
		if c.BootTries < 1 || c.BootTries > 15 || c.StateDir == "" || (c.Seed != nil && (*c.Seed < 0 || *c.Seed >= 2048)) {
			t.Fatalf("accepted an out-of-range config: %+v", c)
		}
	})
}

func TestOSRelease(t *testing.T) {
	t.Parallel()
	kv := ParseOSRelease([]byte("NAME=Bottlerocket\nVERSION_ID=1.19.2\nVARIANT_ID='aws-k8s-1.28'\nPRETTY_NAME=\"Bottlerocket OS 1.19.2 (aws-k8s-1.28)\"\n# comment\nBUILD_ID=abc\n"))
	if kv["VERSION_ID"] != "1.19.2" || kv["VARIANT_ID"] != "aws-k8s-1.28" || kv["PRETTY_NAME"] != "Bottlerocket OS 1.19.2 (aws-k8s-1.28)" {
		t.Fatalf("%v", kv)
	}
	if Arch("amd64") != "x86_64" || Arch("arm64") != "aarch64" {
		t.Fatal("arch mapping")
	}
}

func FuzzOSRelease(f *testing.F) {
	f.Add([]byte("VARIANT_ID=v\nVERSION_ID=1.2.3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kv := ParseOSRelease(b)
		for k := range kv {
			if strings.ContainsAny(k, "\n=") {
				t.Fatalf("key %q", k)
			}
		}
		// Writing what was read and reading it again gives the same values.
		var out strings.Builder
		for k, v := range kv {
			if strings.ContainsAny(v, "\n\"\\\\'") || strings.ContainsAny(k, " \t#") {
				return
			}
			fmt.Fprintf(&out, "%s=\"%s\"\n", k, v)
		}
		again := ParseOSRelease([]byte(out.String()))
		for k, v := range kv {
			if again[k] != strings.TrimSpace(v) && again[k] != v {
				t.Fatalf("%q: %q then %q", k, v, again[k])
			}
		}
	})
}

// checkpoint_every is bounded by what an interruption may cost (issue 12:
// at most 8 MiB, plus the read-ahead and a frame).
func TestCheckpointEveryBound(t *testing.T) {
	t.Parallel()
	for v, ok := range map[int64]bool{64 << 10: true, MaxCheckpointEvery: true, MaxCheckpointEvery + 1: false, 1 << 40: false, 65535: false} {
		text := fmt.Sprintf("metadata_base_url = \"https://u.example/m\"\ntargets_base_url = \"https://u.example/t\"\ncheckpoint_every = %d\n", v)
		_, err := ParseConfig("u.toml", []byte(text))
		if ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "checkpoint_every") {
			t.Errorf("checkpoint_every = %d: %v", v, err)
		}
	}
}

// direct_io is off unless set, true or false, and a boolean.
func TestDirectIOKey(t *testing.T) {
	t.Parallel()
	base := "metadata_base_url = \"https://u.example/m\"\ntargets_base_url = \"https://u.example/t\"\n"
	for text, want := range map[string]bool{"": false, "direct_io = true\n": true, "direct_io = false\n": false} {
		c, err := ParseConfig("u.toml", []byte(base+text))
		if err != nil || c.DirectIO != want {
			t.Errorf("%q: %v %v", text, c, err)
		}
	}
	if _, err := ParseConfig("u.toml", []byte(base+"direct_io = \"yes\"\n")); err == nil || !strings.Contains(err.Error(), "direct_io") {
		t.Errorf("direct_io = \"yes\": %v", err)
	}
}

// huge_pages is on unless set false, and a boolean.
func TestHugePagesKey(t *testing.T) {
	t.Parallel()
	base := "metadata_base_url = \"https://u.example/m\"\ntargets_base_url = \"https://u.example/t\"\n"
	for text, want := range map[string]bool{"": true, "huge_pages = true\n": true, "huge_pages = false\n": false} {
		c, err := ParseConfig("u.toml", []byte(base+text))
		if err != nil || c.WantsHugePages() != want {
			t.Errorf("%q: %v %v", text, c, err)
		}
	}
	if _, err := ParseConfig("u.toml", []byte(base+"huge_pages = 1\n")); err == nil || !strings.Contains(err.Error(), "huge_pages") {
		t.Errorf("huge_pages = 1: %v", err)
	}
}
