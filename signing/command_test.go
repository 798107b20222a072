package signing

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/internal/safefile"
)

func commandSigner(t *testing.T, script string) *CommandSigner {
	t.Helper()
	k, _ := Generate(Ed25519, 0)
	pub, _ := TUFKey(k.Public())
	return &CommandSigner{Public: pub, Argv: []string{"sh", "-c", script}}
}

func TestCommandSignerErrors(t *testing.T) {
	k, _ := Generate(Ed25519, 0)
	pub, _ := TUFKey(k.Public())
	for _, argv := range [][]string{{"/nonexistent/signer"}, {"true"}, {"false"}} {
		c := &CommandSigner{Public: pub, Argv: argv}
		if _, err := c.Sign(context.Background(), []byte("x")); !errors.Is(err, ErrSignerFailed) {
			t.Errorf("%v: %v", argv, err)
		}
	}
	if _, err := (&CommandSigner{Public: pub}).Sign(context.Background(), []byte("x")); !errors.Is(err, ErrKey) {
		t.Errorf("no command: %v", err)
	}
	// The signer's stderr is in the error.
	_, err := commandSigner(t, "echo 'token not present' >&2; exit 1").Sign(context.Background(), []byte("x"))
	var ce *CommandError
	if !errors.As(err, &ce) || !errors.Is(err, ErrSignerFailed) || !strings.Contains(ce.Stderr, "token not present") {
		t.Errorf("stderr not reported: %v", err)
	}
	// A signature comes back as printed.
	sig, err := commandSigner(t, "cat >/dev/null; printf sig").Sign(context.Background(), []byte("x"))
	if err != nil || string(sig) != "sig" {
		t.Errorf("%q %v", sig, err)
	}
}

// TestHostileSignerFloods: a signer printing without end is stopped after
// MaxSignatureOutput bytes; one flooding stderr is kept to its tail.
func TestHostileSignerFloods(t *testing.T) {
	_, err := commandSigner(t, "yes").Sign(context.Background(), []byte("x"))
	if !errors.Is(err, ErrSignerOutput) {
		t.Fatalf("endless stdout: %v", err)
	}
	_, err = commandSigner(t, "yes 'an error line' | head -c 50000000 >&2; exit 1").Sign(context.Background(), []byte("x"))
	var ce *CommandError
	if !errors.As(err, &ce) || len(ce.Stderr) > MaxSignerStderr+3 || !strings.Contains(ce.Stderr, "an error line") {
		t.Fatalf("flooded stderr: %d bytes kept, %v", len(ce.Stderr), errors.Unwrap(err))
	}
}

// alive reports whether pid is a process that has not exited (a zombie
// waiting for its parent counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	for range 500 {
		if !alive(pid) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("process %d (the signer's child) is still running", pid)
}

// TestHostileSignerHangs: a signer that never finishes is stopped after
// its timeout, with its whole process group (a shell's child included).
func TestHostileSignerHangs(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := commandSigner(t, "sleep 1000 & echo $! > "+pidFile+"; echo waiting for a touch >&2; wait")
	c.Timeout = 2 * time.Second // time enough for the shell to start its child
	_, err := c.Sign(context.Background(), []byte("x"))
	var ce *CommandError
	if !errors.Is(err, ErrSignerTimeout) || !errors.As(err, &ce) || !strings.Contains(ce.Stderr, "waiting for a touch") {
		t.Fatalf("%v, want a timeout with the signer's stderr", err)
	}
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file: %q", b)
	}
	waitGone(t, pid)
}

// TestHostileSignerCancelled: cancelling the context (SIGINT, SIGTERM in
// the commands) stops the signer and its children.
func TestHostileSignerCancelled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	c := commandSigner(t, "sleep 1000 & echo $! > "+pidFile+".tmp; mv "+pidFile+".tmp "+pidFile+"; wait")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for range 1000 {
			if _, err := os.Stat(pidFile); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	_, err := c.Sign(ctx, []byte("x"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file: %q", b)
	}
	waitGone(t, pid)
}

// TestHostileKeyFiles: a FIFO, a directory or a device given as a key file
// is refused at once.
func TestHostileKeyFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, p := range []string{fifo, dir, "/dev/zero"} {
		done := make(chan [2]error, 1)
		go func() {
			_, e1 := LoadPrivateKey(p)
			_, e2 := LoadPublicKey(p)
			done <- [2]error{e1, e2}
		}()
		select {
		case errs := <-done:
			for _, err := range errs {
				if !errors.Is(err, safefile.ErrNotRegular) {
					t.Errorf("%s: %v", p, err)
				}
			}
		case <-time.After(time.Minute):
			t.Fatalf("%s: loading the key hung", p)
		}
	}
}

// TestPrivateKeyModeWhateverTheUmask: key files are 0600 even with a umask
// that would leave them less (or more) open.
func TestPrivateKeyModeWhateverTheUmask(t *testing.T) {
	old := syscall.Umask(0o277)
	defer syscall.Umask(old)
	k, _ := Generate(Ed25519, 0)
	p := filepath.Join(t.TempDir(), "k.pem")
	if err := WritePrivateKey(p, k); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != PrivateKeyMode {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}
