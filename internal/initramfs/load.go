package initramfs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/updog/updog/internal/safefile"
)

// ErrLoad means a required module could not be loaded.
var ErrLoad = errors.New("initramfs: loading a kernel module")

// LoadModules loads the modules the list at root/ModuleListName names, in
// its order, with finit_module(2) (Linux only; elsewhere it fails with
// errors.ErrUnsupported). A module already loaded or built in is fine; a
// failure of an optional one is logged and skipped; a failure of any other
// is returned (matching ErrLoad). A missing list means there is nothing to
// load. It returns how many modules it loaded.
func LoadModules(root string, log *slog.Logger) (int, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := safefile.ReadFile(filepath.Join(root, ModuleListName), MaxModuleList)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrLoad, err)
	}
	list, err := ParseModuleList(b)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range list {
		loaded, err := loadModule(filepath.Join(root, e.Path))
		switch {
		case err != nil && e.Optional:
			log.Info("optional module not loaded", "module", e.Path, "err", err)
		case err != nil:
			return n, fmt.Errorf("%w: %s: %w", ErrLoad, e.Path, err)
		case loaded:
			n++
		}
	}
	return n, nil
}
