package updater

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// With checkpoints off (--no-checkpoints, for measurements) an install
// completes without ever writing a checkpoint, and an interrupted one
// leaves none: the rerun starts over and completes.
func TestNoCheckpoints(t *testing.T) {
	t.Parallel()
	f := newFixtureRoot(t, 32)
	f.frames = 1 << 20
	f.rootBytes = 16 << 20
	in := f.interruptRoot(-1, 0.5)
	if cp, err := in.u.store.loadCheckpoint(); err == nil && cp.Images[KindRoot] != nil && cp.Images[KindRoot].In > 0 {
		t.Fatalf("a checkpoint at %d with checkpoints off", cp.Images[KindRoot].In)
	}
	in.finish(f, -1)
	if _, err := os.Stat(filepath.Join(f.cfg.StateDir, checkpointFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a checkpoint file after the install: %v", err)
	}
}
