// Package kexec starts another kernel from a running one, as the boot
// selector does once it has chosen a partition set: the kernel, initrd and
// command line are loaded with kexec_file_load(2) (the kernel reads the
// files itself and, where the kernel is configured so, checks their
// signatures) and started with reboot(2)'s LINUX_REBOOT_CMD_KEXEC.
//
// The system calls are in kexec_linux.go; elsewhere every call fails with
// errors.ErrUnsupported. The package is silent and holds no state: the
// loaded image lives in the kernel until Exec or Unload.
package kexec

import (
	"errors"
	"fmt"
	"strings"
)

// MaxCmdline is the longest command line kexec_file_load takes, its
// terminating NUL included: COMMAND_LINE_SIZE on x86 and arm64.
const MaxCmdline = 2048

// ErrCmdline means a command line cannot be passed to the new kernel.
var ErrCmdline = errors.New("kexec: bad kernel command line")

// CheckCmdline checks a command line before it is loaded: at most
// MaxCmdline-1 bytes and no NUL or line break (the kernel would cut it
// there, silently dropping the rest: the dm-verity table among it).
func CheckCmdline(s string) error {
	if len(s)+1 > MaxCmdline {
		return fmt.Errorf("%w: %d bytes, more than the kernel's %d", ErrCmdline, len(s), MaxCmdline-1)
	}
	if strings.ContainsAny(s, "\x00\n\r") {
		return fmt.Errorf("%w: it holds a NUL or a line break", ErrCmdline)
	}
	return nil
}
