//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/internal/flock"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/manifest"
)

// guard is how long a command may take before a test calls it hung. It is
// a bound on a hang, not a timing assertion: every command here finishes
// in milliseconds.
const guard = 60 * time.Second

// udGuarded runs updata in-process, failing the test if it does not return
// within guard.
func udGuarded(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	type result struct {
		out, errs string
		code      int
	}
	done := make(chan result, 1)
	go func() {
		out, errs, code := ud(args...)
		done <- result{out, errs, code}
	}()
	select {
	case r := <-done:
		return r.out, r.errs, r.code
	case <-time.After(guard):
		t.Fatalf("updata %q hung", args)
		return "", "", 0
	}
}

// buildUpdata builds this command into a temporary directory.
func buildUpdata(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		testutil.Missing(t, "the go command is needed to build updata: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "updata")
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func readManifest(t *testing.T, path string) *manifest.Manifest {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return m
}

// TestHostileConcurrentAddUpdate (issue 8 item 7): 20 add-update processes
// at once used to all exit 0 and leave 4 releases.
func TestHostileConcurrentAddUpdate(t *testing.T) {
	bin := buildUpdata(t)
	m := filepath.Join(t.TempDir(), "manifest.json")
	mustUD(t, "init", m)
	const n = 20
	var wg sync.WaitGroup
	errs := make([]error, n)
	outs := make([][]byte, n)
	for i := range n {
		cmd := exec.Command(bin, withRel("add-update", m, fmt.Sprintf("1.0.%d", i),
			"--boot", "b", "--root", "r", "--hash", "h", "--lock-wait", "5m")...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = cmd.Wait()
			outs[i] = out.Bytes()
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("add-update 1.0.%d: %v: %s", i, err, outs[i])
		}
	}
	got := readManifest(t, m)
	if len(got.Updates) != n {
		t.Fatalf("%d releases remain, want %d: edits were lost", len(got.Updates), n)
	}
	for i := range n {
		if _, err := got.Find("aws-k8s", "x86_64", manifest.MustParseVersion(fmt.Sprintf("1.0.%d", i))); err != nil {
			t.Error(err)
		}
	}
}

// TestHostileLockHeldTooLong: a lock held by someone else gives a clear
// error after a bounded wait, and the manifest is left alone.
func TestHostileLockHeldTooLong(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	before, _ := os.ReadFile(m)
	held, err := flock.LockFile(context.Background(), filepath.Join(dir, ".manifest.json.lock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	_, errs, code := udGuarded(t, withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h", "--lock-wait", "50ms")...)
	if code != exitError || !strings.Contains(errs, fmt.Sprintf("locked by process %d", os.Getpid())) {
		t.Errorf("add-update with the lock held: exit %d: %s", code, errs)
	}
	if after, _ := os.ReadFile(m); !bytes.Equal(before, after) {
		t.Error("the manifest changed without the lock")
	}
	if _, errs, code := ud(withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h", "--lock-wait", "-1s")...); code != exitUsage {
		t.Errorf("a negative --lock-wait: exit %d: %s", code, errs)
	}
}

// TestHostileLockWaitStopsOnCancel: the lock wait ends when the context
// does (SIGINT/SIGTERM in main).
func TestHostileLockWaitStopsOnCancel(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	held, err := flock.LockFile(context.Background(), filepath.Join(dir, ".manifest.json.lock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h", "--lock-wait", "1h"),
			&bytes.Buffer{}, &errb, clock)
	}()
	cancel()
	select {
	case code := <-done:
		if code != exitError || !strings.Contains(errb.String(), "interrupted") {
			t.Errorf("exit %d: %s", code, errb.String())
		}
	case <-time.After(guard):
		t.Fatal("the lock wait did not stop when the context ended")
	}
}

// TestHostileSignalDuringLockWait: a real updata waiting for the lock stops
// on SIGTERM and leaves the manifest as it was.
func TestHostileSignalDuringLockWait(t *testing.T) {
	bin := buildUpdata(t)
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	before, _ := os.ReadFile(m)
	held, err := flock.LockFile(context.Background(), filepath.Join(dir, ".manifest.json.lock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release()
	cmd := exec.Command(bin, withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h", "--lock-wait", "1h")...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Give it a moment to reach the lock wait; either way it must stop.
	time.Sleep(300 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("updata exited 0 after SIGTERM: %s", errb.String())
		}
		t.Logf("updata after SIGTERM: %v: %s", err, errb.String())
	case <-time.After(guard):
		cmd.Process.Kill()
		t.Fatal("updata ignored SIGTERM while waiting for the lock")
	}
	if after, _ := os.ReadFile(m); !bytes.Equal(before, after) {
		t.Error("the manifest changed")
	}
}

// TestHostileSymlinkedManifest (issue 8 item 10): an edit through a
// symlink used to replace the link with a file and leave the real manifest
// unchanged.
func TestHostileSymlinkedManifest(t *testing.T) {
	root := t.TempDir()
	realDir, linkDir := filepath.Join(root, "repo"), filepath.Join(root, "work")
	os.Mkdir(realDir, 0o755)
	os.Mkdir(linkDir, 0o755)
	real := filepath.Join(realDir, "manifest.json")
	mustUD(t, "init", real)
	link := filepath.Join(linkDir, "manifest.json")
	if err := os.Symlink("../repo/manifest.json", link); err != nil {
		t.Fatal(err)
	}
	mustUD(t, withRel("add-update", link, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h")...)
	mustUD(t, withRel("pause", link, "1.0.0")...)
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced: %v %v", fi, err)
	}
	if got := readManifest(t, real); len(got.Updates) != 1 || len(got.Updates[0].Pauses) != 1 {
		t.Fatalf("the real manifest did not get the edits: %+v", got.Updates)
	}
	// The lock file lies beside the real manifest; nothing is left beside
	// the link.
	if _, err := os.Stat(filepath.Join(realDir, ".manifest.json.lock")); err != nil {
		t.Errorf("no lock file beside the real manifest: %v", err)
	}
	if ents, _ := os.ReadDir(linkDir); len(ents) != 1 {
		t.Errorf("files left beside the link: %v", ents)
	}
}

// TestHostileOwnershipKept (issue 8 item 19): an edit as root used to give
// the manifest to root.
func TestHostileOwnershipKept(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the manifest to another user")
	}
	m := filepath.Join(t.TempDir(), "manifest.json")
	mustUD(t, "init", m)
	if err := os.Chmod(m, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(m, 1234, 1234); err != nil {
		t.Fatal(err)
	}
	mustUD(t, withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h")...)
	fi, err := os.Stat(m)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 1234 || st.Gid != 1234 || fi.Mode().Perm() != 0o640 {
		t.Errorf("after an edit as root: owner %d:%d mode %v, want 1234:1234 0640", st.Uid, st.Gid, fi.Mode().Perm())
	}
	// The lock file root made is the manifest owner's too, so that user can
	// still edit it.
	fi, err = os.Stat(filepath.Join(filepath.Dir(m), ".manifest.json.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 1234 {
		t.Errorf("the lock file belongs to %d:%d, want 1234:1234", st.Uid, st.Gid)
	}
}

// TestHostileSpecialFiles (issue 8 item 4): a FIFO, a directory or a
// character device given as MANIFEST or --wave-policy fails at once with a
// clear error, instead of hanging or reading without end.
func TestHostileSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	good := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", good)
	mustUD(t, withRel("add-update", good, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h")...)
	policy := filepath.Join(testutil.Bottlerocket(t, "waves"), "default-waves.toml")
	kinds := map[string]string{fifo: "FIFO", sub: "directory", "/dev/zero": "character device"}
	for bad, kind := range kinds {
		for _, args := range [][]string{
			{"validate", bad},
			{"validate", "--json", bad},
			{"init", "--force", bad},
			withRel("waves", bad, "1.0.0"),
			withRel("add-update", bad, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h"),
			withRel("remove-update", bad, "1.0.0"),
			withRel("set-waves", bad, "1.0.0", "--wave-policy", policy, "--start-at", "now"),
			withRel("pause", bad, "1.0.0"),
			{"set-max-version", bad, "--max-version", "1.0.0"},
			withRel("set-waves", good, "1.0.0", "--wave-policy", bad, "--start-at", "now"),
		} {
			out, errs, code := udGuarded(t, args...)
			if code != exitError || !strings.Contains(out+errs, kind) {
				t.Errorf("updata %q: exit %d, stdout %q, stderr %q; want exit 1 naming a %s", args, code, out, errs, kind)
			}
		}
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v", err)
	}
	if _, err := os.Stat("/dev/.zero.lock"); err == nil {
		t.Error("a lock file was created in /dev")
	}
}

// TestHostileWaveOverflow (issue 8 item 5): start_after = '20000 weeks'
// with --start-at 2030-01-01 opened the wave in 1828, and --start-at
// 9999-12-31T23:59:59Z wrote a manifest validate refuses.
func TestHostileWaveOverflow(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	mustUD(t, withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h")...)
	before, _ := os.ReadFile(m)
	huge := filepath.Join(dir, "huge.toml")
	os.WriteFile(huge, []byte("[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 10\n[[waves]]\nstart_after = '20000 weeks'\nfleet_percentage = 100\n"), 0o644)
	policy := filepath.Join(testutil.Bottlerocket(t, "waves"), "default-waves.toml")
	for _, args := range [][]string{
		withRel("set-waves", m, "1.0.0", "--wave-policy", huge, "--start-at", "2030-01-01T00:00:00Z"),
		withRel("set-waves", m, "1.0.0", "--wave-policy", policy, "--start-at", "9999-12-31T23:59:59Z"),
		withRel("set-waves", m, "1.0.0", "--wave-policy", policy, "--start-at", "9999-12-28T00:00:00Z"),
	} {
		_, errs, code := ud(args...)
		if code != exitError {
			out, _ := os.ReadFile(m)
			t.Errorf("updata %q: exit %d, %s\n%s", args, code, errs, out)
		}
		if after, _ := os.ReadFile(m); !bytes.Equal(before, after) {
			t.Fatalf("updata %q changed the manifest", args)
		}
	}
	// The latest start that fits: what set-waves writes, validate accepts.
	mustUD(t, withRel("set-waves", m, "1.0.0", "--wave-policy", policy, "--start-at", "9999-12-25T23:59:59Z")...)
	mustUD(t, "validate", m)
}

// TestHostileTraversalNames (issue 8 item 16): image names like
// ../../../etc/shadow and an arch with a newline were accepted.
func TestHostileTraversalNames(t *testing.T) {
	dir := t.TempDir()
	m := filepath.Join(dir, "manifest.json")
	mustUD(t, "init", m)
	before, _ := os.ReadFile(m)
	for _, args := range [][]string{
		withRel("add-update", m, "1.0.0", "--boot", "../../../etc/shadow", "--root", "r", "--hash", "h"),
		withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "a/b", "--hash", "h"),
		withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", ".."),
		withRel("add-update", m, "1.0.0", "--boot", "b", "--root", "r", "--hash", "h\x00"),
		{"add-update", m, "--variant", "aws-k8s", "--arch", "x86_64\n", "--version", "1.0.0", "--boot", "b", "--root", "r", "--hash", "h"},
		{"add-update", m, "--variant", "aws k8s", "--arch", "x86_64", "--version", "1.0.0", "--boot", "b", "--root", "r", "--hash", "h"},
		{"add-update", m, "--variant", "../x", "--arch", "x86_64", "--version", "1.0.0", "--boot", "b", "--root", "r", "--hash", "h"},
		{"set-max-version", m, "--max-version", "1.0.0", "--arch", "x86_64\n"},
	} {
		if _, errs, code := ud(args...); code != exitUsage {
			t.Errorf("updata %q: exit %d (%s), want a usage error", args, code, errs)
		}
	}
	if after, _ := os.ReadFile(m); !bytes.Equal(before, after) {
		t.Fatal("the manifest changed")
	}
	// A manifest written by something else is refused by validate.
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"updates": [{"variant": "v", "arch": "x86_64\n", "version": "1.0.0", "max_version": "1.0.0",
  "waves": {}, "images": {"boot": "../../../etc/shadow", "root": "r", "hash": "h"}}]}`), 0o644)
	out, _, code := ud("validate", "--json", bad)
	var res struct {
		Valid    bool     `json:"valid"`
		Problems []string `json:"problems"`
	}
	json.Unmarshal([]byte(out), &res)
	if code != exitError || res.Valid || len(res.Problems) != 2 {
		t.Errorf("validate: exit %d: %s", code, out)
	}
}

// TestVerityFlags (issue 8 item 6): bad verity parameters are usage
// errors, and nothing is written.
func TestVerityFlags(t *testing.T) {
	m := filepath.Join(t.TempDir(), "manifest.json")
	mustUD(t, "init", m)
	before, _ := os.ReadFile(m)
	hash := strings.Repeat("ab", 32)
	for _, extra := range [][]string{
		{"--verity-root-hash", "zz"},
		{"--verity-root-hash", "abcd"},
		{"--verity-root-hash", hash, "--verity-salt", "xyz"},
		{"--verity-root-hash", hash, "--verity-data-block-size", "3"},
		{"--verity-root-hash", hash, "--verity-hash-block-size", "8192"},
		{"--verity-root-hash", hash, "--verity-hash", "md5"},
		{"--verity-root-hash", hash, "--verity-data-blocks", "18446744073709551615"},
		{"--boot-size", "1", "--root-size", "1", "--hash-size", "9223372036854775807"},
	} {
		args := withRel("add-update", m, "1.0.0", append([]string{"--boot", "b", "--root", "r", "--hash", "h"}, extra...)...)
		if _, errs, code := ud(args...); code != exitUsage {
			t.Errorf("add-update %q: exit %d (%s), want a usage error", extra, code, errs)
		}
	}
	if after, _ := os.ReadFile(m); !bytes.Equal(before, after) {
		t.Fatal("the manifest changed")
	}
}
