package flock

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestLockFileExcludesAndNamesHolder(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	ctx := context.Background()
	h, err := LockFile(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description: a second open in
	// this process conflicts just as another process would.
	_, err = LockFile(ctx, p, 50*time.Millisecond)
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, ErrLocked) || le.PID != os.Getpid() {
		t.Fatalf("second locker: %v (%+v)", err, le)
	}
	if HolderPID(p) != os.Getpid() {
		t.Fatalf("holder pid %d", HolderPID(p))
	}
	// A waiter gets the lock once it is released.
	done := make(chan error, 1)
	go func() {
		h2, err := LockFile(ctx, p, 5*time.Second)
		if err == nil {
			h2.Release()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	h.Release() // twice is fine
}

func TestLockStopsOnCancel(t *testing.T) {
	p := filepath.Join(t.TempDir(), "lock")
	h, err := LockFile(context.Background(), p, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := LockFile(ctx, p, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled waiter: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("waiter ignored its context")
	}
}

// A lock held by another process (flock(1), as an operator's script would)
// is honoured.
func TestHostileLockHeldByOtherProcess(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) not installed")
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(p, nil, 0o644)
	cmd := exec.Command("flock", "-x", p, "sleep", "2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	time.Sleep(300 * time.Millisecond)
	f, _ := os.Open(p)
	defer f.Close()
	if err := Lock(context.Background(), f, Exclusive, 100*time.Millisecond); !errors.Is(err, ErrLocked) {
		t.Fatalf("lock held by flock(1): %v", err)
	}
	if err := Lock(context.Background(), f, Exclusive, 10*time.Second); err != nil {
		t.Fatalf("after flock(1) exits: %v", err)
	}
}
