package safefile

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestHostileSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	reg := filepath.Join(dir, "reg")
	os.WriteFile(reg, []byte("hello"), 0o644)
	for _, p := range []string{fifo, dir, "/dev/zero", "/dev/null"} {
		done := make(chan error, 1)
		go func() { _, err := ReadFile(p, 100); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrNotRegular) {
				t.Errorf("%s: %v, want ErrNotRegular", p, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: ReadFile blocked", p)
		}
	}
	if _, err := Open("/dev/zero", os.O_RDONLY, AllowBlockDevice); !errors.Is(err, ErrNotRegular) {
		t.Errorf("char device accepted as block device: %v", err)
	}
	b, err := ReadFile(reg, 5)
	if err != nil || string(b) != "hello" {
		t.Fatalf("regular file: %q %v", b, err)
	}
	if _, err := ReadFile(reg, 4); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	// A symlink to a regular file is followed; to a FIFO, refused.
	ln := filepath.Join(dir, "ln")
	os.Symlink(fifo, ln)
	if _, err := ReadFile(ln, 10); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("symlink to FIFO: %v", err)
	}
	// The descriptor is blocking again: reads of a regular file work normally.
	f, err := Open(reg, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("J"), 0); err != nil {
		t.Fatal(err)
	}
}
