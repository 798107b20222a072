package initramfs

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/updog/updog/internal/safefile"
)

// loadModule loads one module file with finit_module(2); loaded is false
// when the kernel has it already (EEXIST).
func loadModule(path string) (loaded bool, err error) {
	f, err := safefile.Open(path, os.O_RDONLY, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return false, nil
		}
		return false, os.NewSyscallError("finit_module", err)
	}
	return true, nil
}
