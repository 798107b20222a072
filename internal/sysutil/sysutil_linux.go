package sysutil

import (
	"os"

	"golang.org/x/sys/unix"
)

// Reboot flushes every file system's dirty data and restarts the machine
// at once (reboot(2) with LINUX_REBOOT_CMD_RESTART). It returns only on
// failure (EPERM when not root).
func Reboot() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART); err != nil {
		return os.NewSyscallError("reboot", err)
	}
	return nil
}

// Sync flushes every file system's dirty data (sync(2)).
func Sync() { unix.Sync() }
