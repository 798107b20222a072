package updater

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/updog/updog/internal/sysutil"
)

// Progress is told what an install is doing, for a progress bar or JSON
// lines. Calls come from one goroutine at a time per image.
type Progress interface {
	// Start begins a phase of one image: "download" counts compressed
	// bytes received, "verify" bytes read back.
	Start(image, phase string, total int64)
	// Add counts n more bytes of the current phase of image.
	Add(image string, n int64)
	// Done ends the phase (err is nil on success).
	Done(image string, err error)
}

type noProgress struct{}

func (noProgress) Start(string, string, int64) {}
func (noProgress) Add(string, int64)           {}
func (noProgress) Done(string, error)          {}

func rebootNow() error { return sysutil.Reboot() }

func runCommand(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %w: %s", name, args, err, out)
	}
	return nil
}
