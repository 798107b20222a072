package main

import (
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test run this test binary as tuftool itself (to send it
// real signals).
func TestMain(m *testing.M) {
	if os.Getenv("TUFTOOL_TEST_AS_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// fixture is a root with a key per role, signed, and a directory of
// targets.
type fixture struct {
	dir, root, targets string
	keys               []string // -k arguments for every role
}

func (f *fixture) p(name string) string { return filepath.Join(f.dir, name) }

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	f.root = f.p("root.json")
	must(t, "gen-key", "--out", f.p("root.pem"))
	must(t, "gen-key", "--out", f.p("other.pem"))
	must(t, "gen-key", "--out", f.p("ts.pem"), "--public-out", f.p("ts.pub"))
	must(t, "root", "init", f.root)
	must(t, "root", "add-key", f.root, "-k", f.p("root.pem"), "--role", "root")
	must(t, "root", "add-key", f.root, "-k", f.p("other.pem"), "--role", "targets", "--role", "snapshot")
	must(t, "root", "add-key", f.root, "-k", f.p("ts.pub"), "--role", "timestamp")
	must(t, "root", "sign", f.root, "-k", f.p("root.pem"))
	f.targets = f.p("targets")
	os.Mkdir(f.targets, 0o755)
	os.WriteFile(filepath.Join(f.targets, "root.img"), []byte("root image"), 0o644)
	f.keys = []string{"-k", f.p("root.pem"), "-k", f.p("other.pem"), "-k", f.p("ts.pem")}
	return f
}

// noStaging checks that nothing but the expected names is in dir: no
// staging directory was left behind.
func noStaging(t *testing.T, dir string, expected ...string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.Contains(strings.Join(expected, "\x00")+"\x00", e.Name()+"\x00") {
			t.Errorf("left behind in %s: %s", dir, e.Name())
		}
	}
}

var fixtureFiles = []string{"root.json", "root.pem", "other.pem", "ts.pem", "ts.pub", "targets"}

// TestHostileSpecialFiles: a FIFO, a directory or /dev/zero given as a
// key, a root or a target (or among the targets) is refused at once with
// a message naming it, and nothing is left behind.
func TestHostileSpecialFiles(t *testing.T) {
	f := newFixture(t)
	fifo := f.p("fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	withFifo := f.p("with-fifo")
	os.Mkdir(withFifo, 0o755)
	os.WriteFile(filepath.Join(withFifo, "a.img"), []byte("a"), 0o644)
	syscall.Mkfifo(filepath.Join(withFifo, "b.img"), 0o644)
	out := f.p("repo")
	create := func(args ...string) []string {
		return append([]string{"create", "--outdir", out}, args...)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{create(append([]string{"--root", fifo}, f.keys...)...), "FIFO"},
		{create(append([]string{"--root", f.dir}, f.keys...)...), "directory"},
		{create(append([]string{"--root", "/dev/zero"}, f.keys...)...), "character device"},
		{create("--root", f.root, "-k", fifo), "FIFO"},
		{create("--root", f.root, "-k", "/dev/zero"), "character device"},
		{create("--root", f.root, "-k", f.dir), "directory"},
		{create("--root", f.root, "--key-command", fifo+"=true"), "FIFO"},
		{create(append([]string{"--root", f.root, "--add-targets", withFifo}, f.keys...)...), "FIFO"},
		{create(append([]string{"--root", f.root, "--add-targets", fifo}, f.keys...)...), "FIFO"},
		{create(append([]string{"--root", f.root, "--add-targets", "/dev/zero"}, f.keys...)...), "character device"},
		{[]string{"root", "sign", fifo, "-k", f.p("root.pem")}, "FIFO"},
		{[]string{"root", "add-key", f.root, "-k", fifo, "--role", "root"}, "FIFO"},
		{[]string{"download", "--root", fifo, "--metadata-url", f.dir, "--targets-url", f.dir, f.p("dl")}, "FIFO"},
	} {
		done := make(chan struct{})
		var errs string
		var code int
		go func() {
			defer close(done)
			_, errs, code = tt(c.args...)
		}()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Fatalf("tuftool %v hung", c.args)
		}
		if code != exitError || !strings.Contains(errs, c.want) {
			t.Errorf("tuftool %v: exit %d, %q; want exit 1 naming a %s", c.args, code, errs, c.want)
		}
	}
	noStaging(t, f.dir, append(fixtureFiles, "fifo", "with-fifo")...)
}

// TestHostileSignalStopsCreate: SIGTERM or SIGINT while create is running
// (here, waiting for an external signer) stops it cleanly: exit 1, the
// signer's process group killed, the staging directory removed, no output.
func TestHostileSignalStopsCreate(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			f := newFixture(t)
			ready := f.p("signer-ready")
			signer := f.p("signer.sh")
			// The external timestamp signer never answers: it says it started
			// (with its PID) and sleeps.
			script := "#!/bin/sh\necho $$ > " + ready + ".tmp\nmv " + ready + ".tmp " + ready + "\nexec sleep 1000\n"
			if err := os.WriteFile(signer, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			out := f.p("repo")
			cmd := exec.Command(exe, "create", "--root", f.root, "-k", f.p("root.pem"), "-k", f.p("other.pem"),
				"--key-command", f.p("ts.pub")+"="+signer, "--add-targets", f.targets, "--outdir", out)
			cmd.Env = append(os.Environ(), "TUFTOOL_TEST_AS_MAIN=1")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			var pid int
			for range 3000 {
				if b, err := os.ReadFile(ready); err == nil {
					pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if pid == 0 {
				t.Fatalf("the signer never started: %s", stderr.String())
			}
			if m, _ := filepath.Glob(filepath.Join(f.dir, ".repo.tmp-*")); len(m) != 1 {
				t.Fatalf("no staging directory while signing: %v", m)
			}
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("tuftool ignored %v", sig)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitError {
				t.Errorf("exit: %v, want status 1; stderr %s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "context canceled") {
				t.Errorf("stderr: %s", stderr.String())
			}
			noStaging(t, f.dir, append(fixtureFiles, "signer.sh", "signer-ready")...)
			for range 500 {
				if syscall.Kill(pid, 0) != nil || zombie(pid) {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Errorf("the signer (pid %d) still runs", pid)
		})
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// TestHostileCreateCancelled: a cancelled context during the target copy
// leaves nothing behind.
func TestHostileCreateCancelled(t *testing.T) {
	f := newFixture(t)
	big := f.p("big")
	os.Mkdir(big, 0o755)
	for i := range 3 {
		os.WriteFile(filepath.Join(big, "img"+strconv.Itoa(i)), make([]byte, 3<<20), 0o644)
	}
	ctx, cancel := contextWithCancel()
	e := &env{ctx: ctx, stdout: &strings.Builder{}, stderr: &strings.Builder{}, now: time.Now, getenv: func(string) string { return "" },
		progress: cancelOnFirst{cancel}}
	err := cmdCreate(e, append([]string{"--root", f.root, "--add-targets", big, "--outdir", f.p("repo")}, f.keys...))
	if !errors.Is(err, errCanceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
	noStaging(t, f.dir, append(fixtureFiles, "big")...)
}

// TestPublishedModes is issue 8 item 8: a published repository is served
// by a web server running as another user, so its directories are 0755 and
// its files 0644 whatever the umask; private keys stay 0600.
func TestPublishedModes(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	f := newFixture(t)
	for _, k := range []string{"root.pem", "other.pem", "ts.pem"} {
		if fi, _ := os.Stat(f.p(k)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", k, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(f.p("ts.pub")); fi.Mode().Perm() != 0o644 {
		t.Errorf("public key: mode %v, want 0644", fi.Mode().Perm())
	}
	must(t, append([]string{"create", "--root", f.root, "--add-targets", f.targets, "--outdir", f.p("repo")}, f.keys...)...)
	os.WriteFile(filepath.Join(f.targets, "boot.img"), []byte("boot"), 0o600)
	must(t, append([]string{"update", "--root", f.root, "--metadata-url", f.p("repo/metadata"), "--add-targets", f.targets, "--outdir", f.p("repo2")}, f.keys...)...)
	must(t, append([]string{"update", "--root", f.root, "--metadata-url", f.p("repo2/metadata"), "--timestamp-only", "--outdir", f.p("repo3")}, f.keys...)...)
	for _, repo := range []string{"repo", "repo2", "repo3"} {
		n := 0
		filepath.WalkDir(f.p(repo), func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			fi, _ := d.Info()
			want := fs.FileMode(0o644)
			if d.IsDir() {
				want = 0o755
			}
			if fi.Mode().Perm() != want {
				t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
			}
			n++
			return nil
		})
		if n < 7 {
			t.Errorf("%s: only %d entries", repo, n)
		}
	}
}

// TestHostileVersionOverflow is issue 8 item 11: a version with no
// successor is refused, never wrapped to a negative one.
func TestHostileVersionOverflow(t *testing.T) {
	f := newFixture(t)
	max := strconv.FormatInt(math.MaxInt64, 10)
	must(t, append([]string{"create", "--root", f.root, "--add-targets", f.targets, "--outdir", f.p("repo"), "--timestamp-version", max}, f.keys...)...)
	_, errs, code := tt(append([]string{"update", "--root", f.root, "--metadata-url", f.p("repo/metadata"), "--timestamp-only", "--outdir", f.p("repo2")}, f.keys...)...)
	if code != exitError || !strings.Contains(errs, "no successor") {
		t.Errorf("timestamp-only after version %s: exit %d %s", max, code, errs)
	}
	if _, err := os.Stat(f.p("repo2")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a refused update left its output")
	}
	for _, flag := range []string{"--timestamp-version", "--targets-version", "--snapshot-version"} {
		if _, _, code := tt(append([]string{"update", "--root", f.root, "--metadata-url", f.p("repo/metadata"), flag, "-5", "--outdir", f.p("repo2")}, f.keys...)...); code != exitUsage {
			t.Errorf("%s -5: exit %d, want usage", flag, code)
		}
	}
	// root bump-version of a root at the largest version.
	b, _ := os.ReadFile(f.root)
	huge := strings.Replace(string(b), `"version": 1`, `"version": `+max, 1)
	if huge == string(b) {
		t.Fatal("test setup: no version field")
	}
	os.WriteFile(f.p("huge.json"), []byte(huge), 0o644)
	if _, errs, code := tt("root", "bump-version", f.p("huge.json")); code != exitError || !strings.Contains(errs, "no successor") {
		t.Errorf("bump-version at %s: exit %d %s", max, code, errs)
	}
	if b2, _ := os.ReadFile(f.p("huge.json")); string(b2) != huge {
		t.Error("a refused bump-version changed the file")
	}
	neg := strings.Replace(string(b), `"version": 1`, `"version": -3`, 1)
	os.WriteFile(f.p("neg.json"), []byte(neg), 0o644)
	if _, _, code := tt("root", "bump-version", f.p("neg.json")); code != exitError {
		t.Errorf("bump-version of a negative version: exit %d", code)
	}
}

// TestHostileCheckExpiryHugeWithin is issue 8 item 12: a window too large
// for a duration holds every expiry (exit 3), never a wrapped-around "ok";
// what is not a duration at all is a usage error.
func TestHostileCheckExpiryHugeWithin(t *testing.T) {
	f := newFixture(t)
	must(t, append([]string{"create", "--root", f.root, "--outdir", f.p("repo")}, f.keys...)...)
	for _, w := range []string{"99999999 weeks", "2147483647 weeks", "15250 weeks 15250 weeks", "99999999999999999999 days"} {
		if out, errs, code := tt("check-expiry", "--metadata-url", f.p("repo/metadata"), "--within", w); code != exitExpiring || strings.Contains(out, " ok") {
			t.Errorf("--within %q: exit %d, want 3 (expiring): %s %s", w, code, out, errs)
		}
	}
	if _, _, code := tt("check-expiry", "--metadata-url", f.p("repo/metadata"), "--within", "forever"); code != exitUsage {
		t.Errorf("--within forever: exit %d, want 2", code)
	}
	// The largest window that fits (about 290 years) reports everything.
	if out, _, code := tt("check-expiry", "--metadata-url", f.p("repo/metadata"), "--within", "15000 weeks"); code != exitExpiring || strings.Contains(out, " ok") {
		t.Errorf("--within 15000 weeks: exit %d: %s", code, out)
	}
}

// TestSetThresholdWarns is issue 8 item 17: a threshold above the role's
// key count is reported at once, and root sign refuses such a root unless
// --ignore-threshold asks for a partial signature.
func TestSetThresholdWarns(t *testing.T) {
	f := newFixture(t)
	_, errs, code := tt("root", "set-threshold", f.root, "targets", "2")
	if code != 0 || !strings.Contains(errs, "warning") || !strings.Contains(errs, "targets has threshold 2 but lists 1 key") {
		t.Errorf("set-threshold 2 with 1 key: exit %d, stderr %q", code, errs)
	}
	if _, errs, code := tt("root", "sign", f.root, "-k", f.p("root.pem")); code != exitError || !strings.Contains(errs, "threshold cannot be met") {
		t.Errorf("sign: exit %d %s", code, errs)
	}
	must(t, "root", "sign", f.root, "-k", f.p("root.pem"), "--ignore-threshold")
	// Adding the second key mends it.
	must(t, "gen-key", "--out", f.p("t2.pem"))
	must(t, "root", "add-key", f.root, "-k", f.p("t2.pem"), "--role", "targets")
	must(t, "root", "sign", f.root, "-k", f.p("root.pem"))
	if _, errs, _ := tt("root", "set-threshold", f.root, "targets", "2"); strings.Contains(errs, "warning") {
		t.Errorf("a threshold that can be met warned: %s", errs)
	}
	if _, _, code := tt("root", "set-threshold", f.root, "targets", "0"); code != exitUsage {
		t.Errorf("threshold 0: exit %d", code)
	}
}

var errCanceled = context.Canceled

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// cancelOnFirst is a progress sink that cancels the run when the first
// bytes are copied.
type cancelOnFirst struct{ cancel context.CancelFunc }

func (c cancelOnFirst) Start(string, int64) {}
func (c cancelOnFirst) Add(int)             { c.cancel() }
func (c cancelOnFirst) Finish()             {}
