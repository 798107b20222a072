// Package atomicfile replaces files so that a crash leaves either the old or
// the new contents, never a mixture or nothing.
//
// The sequence is: create a temporary file in the same directory, write,
// fsync, close, rename over the destination (the commit point), then fsync
// the directory so the rename itself is durable.
//
// [WriteFile] and [Write] replace exactly the path they are given, with the
// permission they are given: they suit files the program owns (state
// files). [ReplaceFile] and [Replace] edit a file the way an editor should:
// they follow symlinks to the real file and replace that, in its own
// directory, keeping its mode and owner; they suit files a user names.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNotRegular means Replace was asked to replace something that is not a
// regular file (a directory, a FIFO, a device).
var ErrNotRegular = errors.New("atomicfile: not a regular file")

// WriteFile atomically replaces path with data, with permission perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write atomically replaces path with what fill writes, with permission
// perm. If fill or any step fails, path is left as it was and the temporary
// file is removed.
func Write(path string, perm os.FileMode, fill func(io.Writer) error) (err error) {
	return write(path, fill, func(f *os.File) error { return f.Chmod(perm) })
}

// ReplaceFile atomically replaces the file path names with data, as
// [Replace] does.
func ReplaceFile(path string, data []byte, perm os.FileMode) error {
	return Replace(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Replace atomically replaces the file that path names with what fill
// writes, as an editor should:
//   - When path is a symlink (or a chain of them), the file it finally
//     names is replaced, in that file's directory; the links stay as they
//     are. A link to nothing is an error.
//   - An existing file keeps its mode (permission, setuid, setgid and
//     sticky bits) and its owner and group: running as root, the new file
//     is given to the old owner; otherwise the group is kept where the
//     caller may set it. perm applies only when the file is new.
//   - Anything but a regular file (a directory, a FIFO, a device) is
//     refused with ErrNotRegular, and left as it is.
//
// As with Write, the rename is the commit point: a crash or an error
// before it leaves the old file as it was and no temporary file behind
// (but for a crash), and the directory is synced after it.
func Replace(path string, perm os.FileMode, fill func(io.Writer) error) error {
	real, err := Resolve(path)
	if err != nil {
		return err
	}
	old, err := os.Lstat(real)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return write(real, fill, func(f *os.File) error { return f.Chmod(perm) })
	case err != nil:
		return err
	case !old.Mode().IsRegular():
		return fmt.Errorf("%w: %s is %s; refusing to replace it", ErrNotRegular, real, describe(old.Mode()))
	}
	return write(real, fill, func(f *os.File) error {
		if err := keepOwner(f, old); err != nil {
			return fmt.Errorf("giving the new %s the old file's owner: %w", real, err)
		}
		// After chown, which may clear the setuid and setgid bits.
		return f.Chmod(old.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky))
	})
}

// Resolve returns the path Replace writes for path: path with every
// symlink resolved (filepath.EvalSymlinks) when it exists, path itself when
// nothing is there. A symlink to nothing is an error.
func Resolve(path string) (string, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return path, nil
	} else if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("resolving the symlink %s: %w", path, err)
	}
	return real, nil
}

func describe(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return fmt.Sprintf("a special file (%v)", m)
}

// write does the work of Write and Replace; prepare sets the temporary
// file's mode (and owner) before anything is written to it.
func write(path string, fill func(io.Writer) error, prepare func(*os.File) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = prepare(f); err != nil {
		return err
	}
	if err = fill(f); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}
