// Package initramfs builds the archives the boot chain's initramfs images
// are made of, and carries the kernel modules they need.
//
// What it owns: writing the "newc" cpio format the kernel unpacks into its
// initial root file system ([Writer]), reading it back ([Reader], for
// tests and checks), resolving a set of kernel modules with their
// dependencies from a modules tree ([ResolveModules], reading each
// module's .modinfo as depmod does), the list that records their load
// order in the archive ([ModuleList]) and, at boot, loading them in that
// order ([LoadModules], finit_module(2), in modules_linux.go).
//
// Archives are reproducible: every entry has uid and gid 0, the time the
// Writer was given, and inode numbers in order of writing. What it must
// never do: write an entry whose name climbs out of the archive's root
// (absolute paths are made relative, ".." is refused), or hold a file's
// data in memory (it is streamed). It is silent.
package initramfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Errors of the archive layer.
var (
	// ErrClosed is returned by a Writer used after Close.
	ErrClosed = errors.New("initramfs: write after close")
	// ErrName means an entry name is not a clean relative path.
	ErrName = errors.New("initramfs: bad entry name")
	// ErrFormat means an archive being read is not newc cpio.
	ErrFormat = errors.New("initramfs: not a newc cpio archive")
)

const (
	newcMagic  = "070701"
	headerLen  = 110
	trailer    = "TRAILER!!!"
	maxNameLen = 4096
	// MaxFileSize bounds one entry's data (the newc size field is 32 bits).
	MaxFileSize = 1<<32 - 1
)

// File mode type bits of cpio (the same as stat(2)'s).
const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// Writer writes a newc cpio archive. Directories leading to an entry are
// written before it when they were not written yet (mode 0755). The error
// is sticky: after a failed write every call returns it. A Writer is for
// one goroutine.
type Writer struct {
	w      io.Writer
	mtime  uint32
	ino    uint32
	dirs   map[string]bool
	err    error
	closed bool
}

// NewWriter returns a Writer that stamps every entry with mtime (seconds
// since the epoch; 0 is a good choice for reproducible archives).
func NewWriter(w io.Writer, mtime uint32) *Writer {
	return &Writer{w: w, mtime: mtime, ino: 0, dirs: map[string]bool{".": true}}
}

// cleanName checks and normalises an entry name: "/a/b", "a/b" and "./a/b"
// all give "a/b"; "..", an empty name or the root itself are refused.
func cleanName(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	if n == "" || strings.ContainsRune(n, 0) || len(n) > maxNameLen {
		return "", fmt.Errorf("%w: %q", ErrName, name)
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q climbs out of the archive", ErrName, name)
		}
	}
	n = path.Clean(n)
	if n == "." {
		return "", fmt.Errorf("%w: %q is the archive's root", ErrName, name)
	}
	return n, nil
}

func (w *Writer) check() error {
	if w.closed {
		return ErrClosed
	}
	return w.err
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return err
}

// parents writes the directories above name that were not written yet.
func (w *Writer) parents(name string) error {
	dir := path.Dir(name)
	if w.dirs[dir] {
		return nil
	}
	if err := w.parents(dir); err != nil {
		return err
	}
	return w.header(dir, modeDir|0o755, 0, 0, 0, 2)
}

func (w *Writer) header(name string, mode uint32, size int64, rdevMajor, rdevMinor uint32, nlink uint32) error {
	w.ino++
	h := fmt.Sprintf("%s%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		newcMagic, w.ino, mode, 0, 0, nlink, w.mtime, uint32(size), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	b := make([]byte, 0, headerLen+len(name)+4)
	b = append(b, h...)
	b = append(b, name...)
	b = append(b, 0)
	b = append(b, make([]byte, pad4(len(b)))...)
	if _, err := w.w.Write(b); err != nil {
		return w.fail(err)
	}
	if mode&0o170000 == modeDir {
		w.dirs[name] = true
	}
	return nil
}

func pad4(n int) int { return (4 - n%4) % 4 }

// Dir writes a directory entry.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	if err := w.check(); err != nil {
		return err
	}
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if err := w.parents(n); err != nil {
		return err
	}
	return w.header(n, modeDir|uint32(perm.Perm()), 0, 0, 0, 2)
}

// File writes a regular file of size bytes read from r: exactly size bytes
// are read (fewer is io.ErrUnexpectedEOF, and the archive is left broken:
// the error is sticky).
func (w *Writer) File(name string, perm fs.FileMode, r io.Reader, size int64) error {
	if err := w.check(); err != nil {
		return err
	}
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if size < 0 || size > MaxFileSize {
		return fmt.Errorf("initramfs: %s: size %d does not fit a newc archive (at most %d bytes)", n, size, int64(MaxFileSize))
	}
	if err := w.parents(n); err != nil {
		return err
	}
	if err := w.header(n, modeFile|uint32(perm.Perm()), size, 0, 0, 1); err != nil {
		return err
	}
	got, err := io.CopyN(w.w, r, size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("initramfs: %s: %d bytes, %d promised: %w", n, got, size, io.ErrUnexpectedEOF)
		}
		return w.fail(err)
	}
	if _, err := w.w.Write(make([]byte, pad4(int(size%4)))); err != nil {
		return w.fail(err)
	}
	return nil
}

// Symlink writes a symbolic link name pointing at target.
func (w *Writer) Symlink(name, target string) error {
	if err := w.check(); err != nil {
		return err
	}
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if target == "" || strings.ContainsRune(target, 0) || len(target) > maxNameLen {
		return fmt.Errorf("%w: symbolic link target %q", ErrName, target)
	}
	if err := w.parents(n); err != nil {
		return err
	}
	if err := w.header(n, modeSymlink|0o777, int64(len(target)), 0, 0, 1); err != nil {
		return err
	}
	if _, err := io.WriteString(w.w, target+string(make([]byte, pad4(len(target))))); err != nil {
		return w.fail(err)
	}
	return nil
}

// CharDev writes a character device node (such as dev/console, 5:1, which
// the kernel opens as the first program's standard streams).
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	if err := w.check(); err != nil {
		return err
	}
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	if err := w.parents(n); err != nil {
		return err
	}
	return w.header(n, modeCharDev|uint32(perm.Perm()), 0, major, minor, 1)
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		w.closed = true
		return w.err
	}
	w.ino = 0
	err := w.header(trailer, 0, 0, 0, 0, 1)
	w.closed = true
	return err
}

// Entry is one archive member as Reader returns it.
type Entry struct {
	Name       string
	Mode       uint32 // type and permission bits, as stat(2)'s st_mode
	Size       int64
	Mtime      uint32
	UID, GID   uint32
	RdevMajor  uint32
	RdevMinor  uint32
	LinkTarget string // for symbolic links
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Mode&0o170000 == modeDir }

// IsRegular reports whether the entry is a regular file.
func (e *Entry) IsRegular() bool { return e.Mode&0o170000 == modeFile }

// IsSymlink reports whether the entry is a symbolic link.
func (e *Entry) IsSymlink() bool { return e.Mode&0o170000 == modeSymlink }

// IsCharDev reports whether the entry is a character device.
func (e *Entry) IsCharDev() bool { return e.Mode&0o170000 == modeCharDev }

// Reader reads a newc cpio archive entry by entry.
type Reader struct {
	r    io.Reader
	left int64 // data of the current entry not read yet
	pad  int
	done bool
}

// NewReader returns a Reader of the archive in r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// Next skips what is left of the current entry and returns the next one;
// io.EOF after the trailer.
func (r *Reader) Next() (*Entry, error) {
	if r.done {
		return nil, io.EOF
	}
	if _, err := io.CopyN(io.Discard, r.r, r.left+int64(r.pad)); err != nil {
		return nil, fmt.Errorf("%w: truncated entry data: %w", ErrFormat, err)
	}
	r.left, r.pad = 0, 0
	h := make([]byte, headerLen)
	if _, err := io.ReadFull(r.r, h); err != nil {
		return nil, fmt.Errorf("%w: truncated header: %w", ErrFormat, err)
	}
	if string(h[:6]) != newcMagic {
		return nil, fmt.Errorf("%w: magic %q", ErrFormat, h[:6])
	}
	var f [13]uint32
	for i := range f {
		var v uint32
		for _, c := range h[6+8*i : 14+8*i] {
			d, ok := hexVal(c)
			if !ok {
				return nil, fmt.Errorf("%w: header field %d is not hex", ErrFormat, i)
			}
			v = v<<4 | uint32(d)
		}
		f[i] = v
	}
	nameSize := int(f[11])
	if nameSize < 1 || nameSize > maxNameLen+1 {
		return nil, fmt.Errorf("%w: name size %d", ErrFormat, nameSize)
	}
	name := make([]byte, nameSize+pad4(headerLen+nameSize))
	if _, err := io.ReadFull(r.r, name); err != nil {
		return nil, fmt.Errorf("%w: truncated name: %w", ErrFormat, err)
	}
	if name[nameSize-1] != 0 {
		return nil, fmt.Errorf("%w: name not NUL-terminated", ErrFormat)
	}
	e := &Entry{Name: string(name[:nameSize-1]), Mode: f[1], UID: f[2], GID: f[3], Mtime: f[5], Size: int64(f[6]),
		RdevMajor: f[9], RdevMinor: f[10]}
	if e.Name == trailer {
		r.done = true
		return nil, io.EOF
	}
	r.left, r.pad = e.Size, pad4(int(e.Size%4))
	if e.IsSymlink() {
		if e.Size > maxNameLen {
			return nil, fmt.Errorf("%w: symbolic link %s: target of %d bytes", ErrFormat, e.Name, e.Size)
		}
		t := make([]byte, e.Size)
		if _, err := io.ReadFull(r, t); err != nil {
			return nil, err
		}
		e.LinkTarget = string(t)
	}
	return e, nil
}

// Read reads the current entry's data.
func (r *Reader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.left -= int64(n)
	if errors.Is(err, io.EOF) && r.left > 0 {
		err = fmt.Errorf("%w: truncated entry data: %w", ErrFormat, io.ErrUnexpectedEOF)
	}
	return n, err
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
