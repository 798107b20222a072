//go:build unix

package safefile

import (
	"os"

	"golang.org/x/sys/unix"
)

func openNonblock(path string, flag int) (*os.File, error) {
	return os.OpenFile(path, flag|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
}

// setBlocking clears O_NONBLOCK, so reads of a regular file or block device
// behave as usual.
func setBlocking(f *os.File) error {
	fd := int(f.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return os.NewSyscallError("fcntl(F_GETFL)", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK); err != nil {
		return os.NewSyscallError("fcntl(F_SETFL)", err)
	}
	return nil
}
