package updater

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/repo"
)

// With checkpoints off (--no-checkpoints, for measurements) an install
// completes without ever writing a checkpoint, and an interrupted one
// leaves none: the rerun starts over and completes.
func TestNoCheckpoints(t *testing.T) {
	t.Parallel()
	f := newFixtureRoot(t, 32)
	f.frames = 1 << 20
	f.rootBytes = 16 << 20
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	fi, err := os.Stat(f.storedTarget(r.names.Root))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cs := &countingServer{f: f, target: r.names.Root, cancel: cancel}
	cs.budget.Store(fi.Size() / 2)
	f.setHandler(cs)
	u := f.resumeUpdater(-1)
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted update: %v", err)
	}
	if cp, err := u.store.loadCheckpoint(); err == nil && cp.Images[KindRoot] != nil && cp.Images[KindRoot].In > 0 {
		t.Fatalf("a checkpoint at %d with checkpoints off", cp.Images[KindRoot].In)
	}
	u.Unlock()
	cs.budget.Store(0)
	u = f.resumeUpdater(-1)
	defer u.Unlock()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, r)
	if _, err := os.Stat(filepath.Join(f.cfg.StateDir, checkpointFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a checkpoint file after the install: %v", err)
	}
}
