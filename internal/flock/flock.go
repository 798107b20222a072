// Package flock takes BSD flock(2) locks with a bounded wait.
//
// Two uses share it: the partition table of a disk is changed only under an
// exclusive lock on the whole-disk device node or image file (the convention
// of systemd's "Locking Block Device Access", which udev honours), and
// files that several processes edit (a manifest, updog's state directory)
// are changed only under an exclusive lock on a lock file beside them.
//
// flock locks belong to the open file description: they are released when
// the file is closed or the process dies, so a crashed holder never leaves
// a stale lock behind.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// DefaultWait is how long a writer waits for a lock before giving up.
const DefaultWait = 10 * time.Second

// pollEvery is how often a waiting locker tries again.
const pollEvery = 20 * time.Millisecond

// ErrLocked means the lock is held by someone else and the wait ran out.
var ErrLocked = errors.New("flock: locked by another process")

// LockedError says which file is locked and, for lock files written by
// [LockFile], the PID of the process that holds it (0 when unknown).
type LockedError struct {
	Path string
	PID  int
	Wait time.Duration
}

func (e *LockedError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("%s is locked by %s (waited %s)", e.Path, who, e.Wait)
}

// Is makes a LockedError match ErrLocked.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Mode is shared or exclusive.
type Mode int

// Lock modes.
const (
	Shared Mode = iota
	Exclusive
)

// Lock takes a lock on f, trying every few milliseconds for at most wait
// (0 means one try). It stops early, returning ctx.Err(), when ctx ends.
// The lock lasts until Unlock or until f is closed.
func Lock(ctx context.Context, f *os.File, m Mode, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		err := tryLock(f, m)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errWouldBlock) {
			return &os.PathError{Op: "flock", Path: f.Name(), Err: err}
		}
		if !time.Now().Before(deadline) {
			return &LockedError{Path: f.Name(), Wait: wait}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollEvery):
		}
	}
}

// Unlock releases a lock taken with Lock.
func Unlock(f *os.File) error { return unlock(f) }

// Held is a lock file held by this process.
type Held struct{ f *os.File }

// LockFile creates (if needed) and exclusively locks the lock file at path,
// waiting at most wait, then records this process's PID in it so that a
// process that finds it locked can name the holder. The file is never
// removed (removing a lock file races with the next locker).
func LockFile(ctx context.Context, path string, wait time.Duration) (*Held, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("flock: lock file %s is not a regular file", path)
	}
	if err := Lock(ctx, f, Exclusive, wait); err != nil {
		var le *LockedError
		if errors.As(err, &le) {
			le.PID = readPID(f)
		}
		f.Close()
		return nil, err
	}
	pid := []byte(strconv.Itoa(os.Getpid()) + "\n")
	if err := f.Truncate(0); err == nil {
		f.WriteAt(pid, 0) // best effort: the PID only makes messages better
	}
	return &Held{f: f}, nil
}

func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// HolderPID reads the PID recorded in a lock file (0 when there is none).
func HolderPID(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	return readPID(f)
}

// Release unlocks and closes the lock file. It is safe to call on nil and
// more than once.
func (h *Held) Release() error {
	if h == nil || h.f == nil {
		return nil
	}
	f := h.f
	h.f = nil
	f.Truncate(0)
	unlock(f)
	return f.Close()
}
