// Package safefile opens files named by users without trusting what they
// name. A FIFO given where a key, a manifest or a disk was expected would
// block open(2) forever (and with it SIGINT handling); a character device
// such as /dev/zero or /dev/urandom would feed a parser without end; a
// directory gives confusing errors later. Open refuses all of them before
// reading a byte: it opens without blocking (O_NONBLOCK, which makes a
// FIFO's open return at once), checks what it opened with fstat (so the
// check and the use are the same file, with no race against a rename), and
// only then switches the descriptor back to blocking mode.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// ErrNotRegular means a path names something other than a regular file (or
// a block device, where those are accepted).
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge means a file is larger than the limit its reader accepts.
var ErrTooLarge = errors.New("file too large")

// KindError names the path and what it turned out to be.
type KindError struct {
	Path string
	Mode fs.FileMode
	Want string // "a regular file" or "a regular file or a block device"
}

func (e *KindError) Error() string {
	return fmt.Sprintf("%s is %s, not %s", e.Path, describe(e.Mode), e.Want)
}

// Is makes a KindError match ErrNotRegular.
func (e *KindError) Is(target error) bool { return target == ErrNotRegular }

func describe(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return fmt.Sprintf("a special file (mode %v)", m)
}

// Flags for Open.
const (
	// AllowBlockDevice accepts block device nodes as well as regular files.
	AllowBlockDevice = 1 << iota
)

// Open opens path with the given os.OpenFile flag (O_RDONLY, O_RDWR, plus
// O_EXCL or O_SYNC as wanted; never O_CREATE) after making sure, on the open
// descriptor, that it is a regular file (or a block device with
// AllowBlockDevice). It never blocks on a FIFO.
func Open(path string, flag int, allow int) (*os.File, error) {
	f, err := openNonblock(path, flag)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	m := fi.Mode()
	ok := m.IsRegular() || (allow&AllowBlockDevice != 0 && m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0)
	if !ok {
		f.Close()
		want := "a regular file"
		if allow&AllowBlockDevice != 0 {
			want = "a regular file or a block device"
		}
		return nil, &KindError{Path: path, Mode: m, Want: want}
	}
	if err := setBlocking(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ReadFile reads a whole regular file of at most limit bytes. A larger file
// is refused with ErrTooLarge before it is read (and, should it grow while
// being read, after limit+1 bytes).
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := Open(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > limit {
		return nil, fmt.Errorf("%s: %w: %d bytes, more than the %d accepted", path, ErrTooLarge, fi.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: %w: more than the %d bytes accepted", path, ErrTooLarge, limit)
	}
	return b, nil
}

// Limits for the small files updog's commands read.
const (
	// MaxConfig bounds configuration and policy files (TOML).
	MaxConfig = 1 << 20
	// MaxKey bounds key files.
	MaxKey = 1 << 20
	// MaxMetadata bounds a manifest or a TUF metadata file read from disk.
	MaxMetadata = 64 << 20
)
