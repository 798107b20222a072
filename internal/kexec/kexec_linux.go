package kexec

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// Load loads kernel (a bzImage or the architecture's kernel image) with
// initrd (nil for none) and cmdline for a later Exec. The files are read
// by the kernel during the call and may be closed afterwards. It needs
// CAP_SYS_BOOT; a kernel that enforces signatures refuses an unsigned
// image (EKEYREJECTED, or EPERM under lockdown).
func Load(kernel, initrd *os.File, cmdline string) error {
	if err := CheckCmdline(cmdline); err != nil {
		return err
	}
	ifd, flags := -1, 0
	if initrd != nil {
		ifd = int(initrd.Fd())
	} else {
		flags |= unix.KEXEC_FILE_NO_INITRAMFS
	}
	if err := unix.KexecFileLoad(int(kernel.Fd()), ifd, cmdline, flags); err != nil {
		return os.NewSyscallError("kexec_file_load", err)
	}
	return nil
}

// Unload drops a loaded image.
func Unload() error {
	if err := unix.KexecFileLoad(-1, -1, "", unix.KEXEC_FILE_UNLOAD); err != nil {
		return os.NewSyscallError("kexec_file_load(unload)", err)
	}
	return nil
}

// Exec flushes the file systems and starts the loaded kernel at once
// (reboot(2) with LINUX_REBOOT_CMD_KEXEC). It returns only on failure:
// EINVAL when nothing is loaded, EPERM without CAP_SYS_BOOT.
func Exec() error {
	unix.Sync()
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_KEXEC)
	if err == nil {
		err = errors.New("reboot(LINUX_REBOOT_CMD_KEXEC) returned")
	}
	return os.NewSyscallError("reboot", err)
}
