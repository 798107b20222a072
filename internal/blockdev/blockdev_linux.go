package blockdev

import (
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const exclusiveFlag = unix.O_EXCL

// blockGeometry asks the kernel for a block device's size and logical sector
// size.
func blockGeometry(f *os.File) (size int64, sectorSize int, err error) {
	fd := int(f.Fd())
	var sz uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&sz))); errno != 0 {
		return 0, 0, os.NewSyscallError("ioctl(BLKGETSIZE64)", errno)
	}
	ss, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
	if err != nil {
		return 0, 0, os.NewSyscallError("ioctl(BLKSSZGET)", err)
	}
	return int64(sz), ss, nil
}

// RereadPartitions asks the kernel to re-read the partition table of a whole
// disk (BLKRRPART). It fails with EBUSY while partitions are in use, which is
// normal on a booted disk: the kernel keeps its view and the new table is
// read at the next boot.
func (d *File) RereadPartitions() error {
	if !d.blockDev {
		return nil
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, d.f.Fd(), unix.BLKRRPART, 0); errno != 0 {
		return os.NewSyscallError("ioctl(BLKRRPART)", errno)
	}
	return nil
}

// DeviceOf returns the major and minor numbers of the device holding the
// filesystem that path is on.
func DeviceOf(path string) (major, minor uint32, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return unix.Major(st.Dev), unix.Minor(st.Dev), nil
}

// blockRdev returns the device number of a block device node.
func blockRdev(fi os.FileInfo) (uint64, bool) {
	m := fi.Mode()
	if m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0 {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Rdev), true
}

const directFlag = unix.O_DIRECT

// startWriteback starts writing the range back to the device without
// waiting (sync_file_range SYNC_FILE_RANGE_WRITE), so a later Sync finds
// little left to write. It is no durability promise: only Sync is.
func (d *File) startWriteback(off, n int64) {
	if d.readOnly || n <= 0 {
		return
	}
	_ = unix.SyncFileRange(int(d.f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
