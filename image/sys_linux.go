package image

import (
	"errors"
	"os"
	"syscall"
)

// Linux's lseek whence values for sparse files (SEEK_DATA, SEEK_HOLE).
const (
	seekData = 3
	seekHole = 4
)

// nextData returns where data starts at or after off in f, or ok=false
// when there is none before the end; unsupported says the file system
// cannot tell (everything is then data).
func nextData(f *os.File, off int64) (data int64, ok, unsupported bool) {
	d, err := syscall.Seek(int(f.Fd()), off, seekData)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return 0, false, false
	case err != nil:
		return 0, false, true
	}
	return d, true, false
}

// nextHole returns where the hole after off starts (the end of the file
// at the latest).
func nextHole(f *os.File, off int64) (int64, error) {
	return syscall.Seek(int(f.Fd()), off, seekHole)
}

// mknodat makes a device node or FIFO named name in the directory dir.
func mknodat(dir *os.File, name string, mode uint32, major, minor uint32) error {
	dev := uint64(major&0xfffff000)<<32 | uint64(major&0xfff)<<8 | uint64(minor&0xffffff00)<<12 | uint64(minor&0xff)
	if err := syscall.Mknodat(int(dir.Fd()), name, mode, int(dev)); err != nil {
		return os.NewSyscallError("mknodat", err)
	}
	return nil
}

// File type bits for mknodat.
const (
	modeChar  = syscall.S_IFCHR
	modeBlock = syscall.S_IFBLK
	modeFIFO  = syscall.S_IFIFO
)
