// Package blockdev is the one way updog reaches a disk: a small Device
// interface over regular (image) files and Linux block devices alike.
//
// What it owns: opening a path, learning its size and logical sector size
// (from the BLKGETSIZE64 and BLKSSZGET ioctls on block devices, in
// blockdev_linux.go only), and presenting a partition as a Device of its own
// with [Window].
//
// What it must never do: interpret the bytes it moves. Parsers and writers
// (gptprio, verity) take a Device, never a path. It never blocks opening a
// path: a FIFO, a directory or a character device given as a disk is
// refused at once (through internal/safefile).
//
// Concurrency: a File may be used from several goroutines at once for
// ReadAt and WriteAt (they are positional, as with *os.File); Sync and Close
// must not race with each other.
package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/updog/updog/internal/safefile"
)

// Device is a random-access disk: a regular file, a block device, a window of
// either, or an in-memory fake in tests.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Sync flushes every completed WriteAt to stable storage. It is
	// mandatory: a Device that cannot sync must return an error, never
	// pretend.
	Sync() error
	// Size is the length of the device in bytes.
	Size() int64
	// SectorSize is the logical sector size in bytes (512 or 4096).
	SectorSize() int
}

// DefaultSectorSize is the logical sector size assumed for regular files
// when Options.SectorSize is zero.
const DefaultSectorSize = 512

// ErrReadOnly is returned by WriteAt on a device opened read-only.
var ErrReadOnly = errors.New("blockdev: device opened read-only")

// Options controls Open.
type Options struct {
	// ReadOnly opens the device without write access.
	ReadOnly bool
	// Exclusive opens with O_EXCL. On Linux, O_EXCL on a block device fails
	// with EBUSY when the device (or, for a whole disk, any of its
	// partitions) is mounted or held by device-mapper. Use it for the
	// inactive partition before writing an image into it; never for the
	// booted whole disk, whose partitions are always held.
	Exclusive bool
	// Direct opens read-only with O_DIRECT on Linux, so reads come from the
	// device, not the page cache: what an updater reads back is what the
	// disk holds. Reads go through an aligned bounce buffer, so callers
	// may read at any offset and length. Off Linux it is ignored.
	Direct bool
	// DirectWrite writes around the page cache where it can: on Linux a
	// second descriptor of the same file is opened with O_DIRECT, and
	// every write of at least 256 KiB of whole 4 KiB blocks goes through it
	// (from an aligned bounce buffer when the caller's memory is not
	// aligned); partial blocks and small writes go through the page cache
	// as before. Writing an image this way costs a fraction of the CPU
	// (no copy into the page cache, no write-back of it) and leaves the
	// host's page cache to the running system. Where the filesystem takes
	// no O_DIRECT (tmpfs), or off Linux, every write goes through the page
	// cache. Sync is needed for durability all the same.
	DirectWrite bool
	// SectorSize overrides the logical sector size of a regular file
	// (disk images have no sector size of their own). It must be 512 or
	// 4096 when set, and is ignored for block devices, which report theirs.
	SectorSize int
}

// File is a Device backed by an *os.File: a regular file or a block device.
type File struct {
	f          *os.File
	size       int64
	sectorSize int
	readOnly   bool
	blockDev   bool
	direct     *directReader // set with Options.Direct
	dw         *directWriter // set with Options.DirectWrite
}

var _ Device = (*File)(nil)

// Open opens a regular file or a block device node as a Device. Anything
// else (a FIFO, a directory, a character device such as /dev/zero) is
// refused at once with an error matching safefile.ErrNotRegular: the path
// is opened without blocking and checked on the open descriptor, so a FIFO
// never hangs the caller.
//
// With Options.Exclusive the open uses O_EXCL: on a Linux block device it
// fails with EBUSY (errors.Is(err, syscall.EBUSY)) while the device is
// mounted, held by device-mapper or opened exclusively by someone else; on
// a regular file it has no effect.
func Open(path string, o Options) (*File, error) {
	if o.SectorSize != 0 && o.SectorSize != 512 && o.SectorSize != 4096 {
		return nil, fmt.Errorf("blockdev: sector size %d is not 512 or 4096", o.SectorSize)
	}
	flag := os.O_RDWR
	if o.ReadOnly || o.Direct {
		flag = os.O_RDONLY
		o.ReadOnly = true
	}
	if o.Direct {
		flag |= directFlag
	}
	if o.Exclusive {
		flag |= exclusiveFlag
	}
	f, err := safefile.Open(path, flag, safefile.AllowBlockDevice)
	if err != nil {
		// A directory opened for writing fails before safefile can look
		// at it (EISDIR): say what it is, as for the other kinds.
		if fi, serr := os.Stat(path); serr == nil && fi.IsDir() {
			err = &safefile.KindError{Path: path, Mode: fi.Mode(), Want: "a regular file or a block device"}
		}
		return nil, fmt.Errorf("blockdev: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &File{f: f, readOnly: o.ReadOnly}
	if o.Direct && directFlag != 0 {
		d.direct = newDirectReader(f)
	}
	if o.DirectWrite && !o.ReadOnly {
		// Refused (no O_DIRECT here): writes go through the page cache.
		d.dw, _ = openDirectWriter(f)
	}
	if fi.Mode().IsRegular() {
		d.size = fi.Size()
		d.sectorSize = o.SectorSize
		if d.sectorSize == 0 {
			d.sectorSize = DefaultSectorSize
		}
		return d, nil
	}
	// safefile let only regular files and block devices through.
	d.blockDev = true
	if d.size, d.sectorSize, err = blockGeometry(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("blockdev: %s: %w", path, err)
	}
	return d, nil
}

// ReadAt implements io.ReaderAt.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if d.direct != nil {
		return d.direct.ReadAt(p, off, d.size)
	}
	return d.f.ReadAt(p, off)
}

// WriteAt implements io.WriterAt. A block device never grows: a write past
// its end fails with io.ErrShortWrite wrapped in context.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, ErrReadOnly
	}
	if d.blockDev && off+int64(len(p)) > d.size {
		return 0, fmt.Errorf("blockdev: write of %d bytes at offset %d past the end of %s (%d bytes): %w",
			len(p), off, d.f.Name(), d.size, io.ErrShortWrite)
	}
	var n int
	var err error
	if d.dw != nil {
		n, err = d.dw.writeAt(d.f, p, off)
	} else {
		n, err = d.f.WriteAt(p, off)
	}
	if end := off + int64(n); !d.blockDev && end > d.size {
		d.size = end
	}
	return n, err
}

// Sync flushes the file's data to stable storage (fsync).
func (d *File) Sync() error {
	if d.readOnly {
		return nil // nothing was written through this handle
	}
	return d.f.Sync()
}

// Size is the device size in bytes.
func (d *File) Size() int64 { return d.size }

// SectorSize is the logical sector size in bytes.
func (d *File) SectorSize() int { return d.sectorSize }

// IsBlockDevice reports whether the file is a block device node.
func (d *File) IsBlockDevice() bool { return d.blockDev }

// Name is the path the device was opened with.
func (d *File) Name() string { return d.f.Name() }

// OSFile is the open file underneath, for callers that lock it with
// flock(2) (internal/flock): the lock belongs to this open file, so it is
// released by Close at the latest. Reads and writes go through the Device
// methods, never through it.
func (d *File) OSFile() *os.File { return d.f }

// Close closes the device.
func (d *File) Close() error {
	if d.dw != nil {
		d.dw.close()
	}
	return d.f.Close()
}

// Reopen opens the file d has open again, with other options (for
// example DirectWrite for an image's partitions, or Direct to read back
// what was written): through /proc/self/fd on Linux, so it is the same
// file whatever happened to its path since; elsewhere by its name.
// Options.Exclusive is ignored: d holds the claim already.
func (d *File) Reopen(o Options) (*File, error) {
	o.Exclusive = false
	if o.SectorSize == 0 {
		o.SectorSize = d.sectorSize
	}
	path := d.f.Name()
	if directFlag != 0 {
		path = fmt.Sprintf("/proc/self/fd/%d", d.f.Fd())
	}
	return Open(path, o)
}

// directBytes is how many bytes WriteAt has written through O_DIRECT
// (Options.DirectWrite).
func (d *File) directBytes() int64 {
	if d.dw == nil {
		return 0
	}
	return d.dw.direct.Load()
}

// Window presents the n bytes of d starting at off (a partition) as a Device.
// Reads and writes outside the window fail rather than spilling into the
// neighbouring partition; Sync syncs the whole underlying device.
func Window(d Device, off, n int64) Device {
	return &window{d: d, off: off, n: n}
}

type window struct {
	d      Device
	off, n int64
}

// ErrOutOfRange is returned by a window's WriteAt when the write would cross
// the window's end.
var ErrOutOfRange = errors.New("blockdev: access outside the window")

func (w *window) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, ErrOutOfRange
	}
	if off >= w.n {
		return 0, io.EOF
	}
	short := false
	if max := w.n - off; int64(len(p)) > max {
		p, short = p[:max], true
	}
	n, err := w.d.ReadAt(p, w.off+off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

func (w *window) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > w.n {
		return 0, fmt.Errorf("writing %d bytes at offset %d of a %d-byte window: %w", len(p), off, w.n, ErrOutOfRange)
	}
	return w.d.WriteAt(p, w.off+off)
}

func (w *window) Sync() error     { return w.d.Sync() }
func (w *window) Size() int64     { return w.n }
func (w *window) SectorSize() int { return w.d.SectorSize() }

// StartWriteback asks the device to start writing back what was written
// in [off, off+n) without waiting, where it can (a File, or a Window over
// one); elsewhere it does nothing. Streaming writers call it after each
// write so that their periodic Sync, which alone makes the bytes durable,
// waits for little: the disk stays busy from the first byte.
func StartWriteback(d io.WriterAt, off, n int64) {
	switch d := d.(type) {
	case *File:
		d.startWriteback(off, n)
	case *window:
		if off >= 0 && off < d.n {
			StartWriteback(d.d, d.off+off, min(n, d.n-off))
		}
	}
}
