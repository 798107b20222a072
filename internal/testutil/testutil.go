// Package testutil holds helpers shared by tests: locating the shared
// Bottlerocket test data beside the project, requiring external tools, and
// telling whether a child process is stopped.
//
// Both follow one rule: when something a test needs is missing, the test
// skips with a message saying what is missing, except under CI (CI set in
// the environment), where a missing dependency is a failure, so that a green
// CI run means the comparison really ran.
package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// InCI reports whether the tests run under CI.
func InCI() bool { return os.Getenv("CI") != "" }

// Missing skips the test, or fails it under CI.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI is set, so this is a failure: "+format, args...)
	}
	t.Skipf(format, args...)
}

// ProjectRoot returns the directory holding go.mod.
func ProjectRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Bottlerocket returns the path of ../shared/testdata/bottlerocket/<elem...>
// beside the project root, skipping (or failing under CI) when it is absent.
func Bottlerocket(t testing.TB, elem ...string) string {
	t.Helper()
	dir := filepath.Join(append([]string{ProjectRoot(), "..", "shared", "testdata", "bottlerocket"}, elem...)...)
	if _, err := os.Stat(dir); err != nil {
		Missing(t, "shared Bottlerocket test data not found at %s: %v", dir, err)
	}
	return dir
}

// Tool returns the path of an external command, skipping (or failing under
// CI) when it is not installed.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/sbin"} {
			if _, err2 := os.Stat(filepath.Join(dir, name)); err2 == nil {
				return filepath.Join(dir, name)
			}
		}
		Missing(t, "%s is not installed (make test installs it as root on Debian): %v", name, err)
	}
	return p
}

// Run runs a command and returns its combined output, failing the test on
// a non-zero exit.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// Stopped reports whether process pid is stopped (SIGSTOP, or a tracer's
// stop), from /proc/PID/stat.
func Stopped(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	j := bytes.LastIndexByte(b, ')')
	return j > 0 && j+2 < len(b) && (b[j+2] == 'T' || b[j+2] == 't')
}
