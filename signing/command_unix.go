//go:build unix

package signing

import (
	"os/exec"
	"syscall"
)

// inOwnGroup runs cmd in a new process group and makes its cancellation
// kill the whole group, so a shell wrapper's children stop too.
func inOwnGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
