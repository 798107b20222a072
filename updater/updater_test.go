package updater

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
)

// TestUpdateEachCodec installs 1.2.0 (the newest of 1.1.0 and 1.2.0) from
// images compressed each way, then boots it and marks it good.
func TestUpdateEachCodec(t *testing.T) {
	t.Parallel()
	for _, c := range []Codec{CodecZstd, CodecXZ, CodecLZ4, CodecGzip, CodecRaw} {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.codec = c
			f.addRelease("1.1.0", nil)
			r12 := f.addRelease("1.2.0", nil)
			f.publish(repo.Options{})
			ctx := context.Background()

			u := f.updater()
			plan, err := u.Check(ctx, CheckOptions{})
			if err != nil {
				t.Fatalf("check: %v", err)
			}
			if got := plan.Update().Version.String(); got != "1.2.0" {
				t.Fatalf("check-update chose %s, want 1.2.0", got)
			}
			before := f.snapshotActive()
			if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
				t.Fatalf("update: %v", err)
			}
			f.holds[gptprio.SetB] = "1.2.0"
			f.assertSetHolds(gptprio.SetB, r12)
			after := f.snapshotActive()
			for n, s := range before.sums {
				if after.sums[n] != s {
					t.Fatalf("the active set's partition %d changed", n)
				}
			}
			st, err := u.Status(ctx)
			if err != nil || !st.RebootNeeded || st.Next != "b" || st.Pending == nil || st.Pending.Stage != StageApplied {
				t.Fatalf("status after update: %+v %v", st, err)
			}
			u.Unlock()
			if got := f.reboot(); got != gptprio.SetB {
				t.Fatalf("booted %v, want B", got)
			}
			u = f.updater()
			if _, err := u.MarkGood(ctx); err != nil {
				t.Fatalf("mark-good: %v", err)
			}
			tb, l := f.table()
			if a := gptprio.Attrs(tb, l, gptprio.SetB); !a.Successful() {
				t.Fatalf("set B not marked successful: %v", a)
			}
			st, _ = u.Status(ctx)
			if st.Pending != nil || st.Active != "b" || st.Running.Version.String() != "1.2.0" {
				t.Fatalf("status after mark-good: %+v", st)
			}
			if _, err := u.Check(ctx, CheckOptions{}); !errors.Is(err, ErrNoUpdate) {
				t.Fatalf("check after update: %v, want ErrNoUpdate", err)
			}
		})
	}
}

// TestFallbackSkipsFailedRelease: a new set booted but never marked good
// falls back; the release is then remembered and skipped, unless asked
// for by name.
func TestFallbackSkipsFailedRelease(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.addRelease("1.2.0", nil)
	f.publish(repo.Options{})
	ctx := context.Background()
	u := f.updater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
		t.Fatal(err)
	}
	f.holds[gptprio.SetB] = "1.2.0"
	u.Unlock()
	f.reboot() // B, its one try used
	f.reboot() // B was never marked good: back to A
	if f.active != gptprio.SetA {
		t.Fatalf("did not fall back: booted %v", f.active)
	}
	u = f.updater()
	plan, err := u.Check(ctx, CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v := plan.Update().Version.String(); v != "1.1.0" || len(plan.Skipped) != 1 || plan.Skipped[0].Version != "1.2.0" {
		t.Fatalf("after the fallback, chose %s skipping %+v; want 1.1.0 skipping 1.2.0", v, plan.Skipped)
	}
	st, _ := u.Status(ctx)
	if len(st.Failed) != 1 || st.LastAttempt == nil || st.LastAttempt.Outcome != "failed" {
		t.Fatalf("status does not show the failed boot: %+v", st)
	}
	plan, err = u.Check(ctx, CheckOptions{Image: "1.2.0"})
	if err != nil || plan.Update().Version.String() != "1.2.0" {
		t.Fatalf("--image 1.2.0: %v", err)
	}
}

func TestRollbackAndRevert(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	ctx := context.Background()
	u := f.updater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
		t.Fatal(err)
	}
	f.holds[gptprio.SetB] = "1.1.0"
	if err := u.Revert(ctx); err != nil {
		t.Fatalf("revert: %v", err)
	}
	tb, _ := f.table()
	if n, _ := gptprio.Next(tb); n != gptprio.SetA {
		t.Fatalf("after revert the next boot is %v", n)
	}
	if err := u.Revert(ctx); !errors.Is(err, ErrNotPending) {
		t.Fatalf("second revert: %v", err)
	}
	if err := u.Apply(ctx, false); err != nil {
		t.Fatalf("update-apply after revert: %v", err)
	}
	u.Unlock()
	f.reboot()
	u = f.updater()
	if _, err := u.MarkGood(ctx); err != nil {
		t.Fatal(err)
	}
	if err := u.Rollback(ctx, false); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	u.Unlock()
	if f.reboot() != gptprio.SetA {
		t.Fatal("rollback did not return to A")
	}
	// From A, roll back again to B (it is marked good): allowed. Then make B
	// unbootable and see rollback refused.
	u = f.updater()
	if err := u.Rollback(ctx, false); err != nil {
		t.Fatal(err)
	}
	u.Unlock()
	f.reboot()
	d, _ := gptprio.OpenDisk(ctx, f.disk, gptprio.OpenOptions{Active: "b"})
	d.Update(ctx, func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		return gptprio.ClearInactive(t, gptprio.SetB)
	})
	d.Close()
	u = f.updater()
	if err := u.Rollback(ctx, false); !errors.Is(err, ErrWontBoot) {
		t.Fatalf("rollback to a cleared set: %v", err)
	}
}

func TestVersionLockAndImage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.addRelease("1.2.0", nil)
	f.publish(repo.Options{})
	ctx := context.Background()
	f.cfg.VersionLock = "v1.1.0"
	u := f.updater()
	plan, err := u.Check(ctx, CheckOptions{})
	if err != nil || plan.Update().Version.String() != "1.1.0" {
		t.Fatalf("version lock 1.1.0: %v", err)
	}
	plan, err = u.Check(ctx, CheckOptions{Image: "1.2.0"})
	if err != nil || plan.Update().Version.String() != "1.2.0" {
		t.Fatalf("--image 1.2.0: %v", err)
	}
	if _, err := u.Check(ctx, CheckOptions{Image: "1.3.0"}); !errors.Is(err, manifest.ErrVersionNotFound) {
		t.Fatalf("--image 1.3.0: %v", err)
	}
}

func TestWavesDeferHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", func(u *manifest.Update, _ map[string][]byte) {
		// One wave opening a day from now.
		start := f.now.Add(24 * time.Hour)
		u.Waves = manifest.Waves{{Seed: 0, Start: manifest.WaveTime{Time: start}}}
	})
	f.publish(repo.Options{})
	ctx := context.Background()
	u := f.updater()
	plan, err := u.Check(ctx, CheckOptions{})
	if !errors.Is(err, ErrNotInWave) || plan.Wave.EligibleAt.IsZero() || plan.Wave.Eligible {
		t.Fatalf("check before the wave: %v %+v", err, plan.Wave)
	}
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); !errors.Is(err, ErrNotInWave) {
		t.Fatalf("update before the wave: %v", err)
	}
	if _, err := u.Check(ctx, CheckOptions{IgnoreWaves: true}); err != nil {
		t.Fatalf("--now: %v", err)
	}
	f.now = f.now.Add(3 * 24 * time.Hour)
	if _, err := u.Check(ctx, CheckOptions{}); err != nil {
		t.Fatalf("after the wave: %v", err)
	}
}

// TestQueryParametersAndLocalRepository: every request carries
// Bottlerocket's seed and version parameters; the same update works from
// a local directory and a file:// URL (a mirror on a USB stick).
func TestQueryParametersAndLocalRepository(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	var bad []string
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		if q.Get("seed") != "100" || q.Get("version") != "1.0.0" {
			f.mu.Lock()
			bad = append(bad, req.URL.String())
			f.mu.Unlock()
		}
		f.fileServer().ServeHTTP(w, req)
	}))
	u := f.updater()
	if _, err := u.Check(context.Background(), CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("requests without seed=100&version=1.0.0: %v", bad)
	}
	u.Unlock()
	for i, base := range []string{f.repoDir, "file://" + f.repoDir} {
		f.cfg.MetadataBaseURL, f.cfg.TargetsBaseURL = base+"/metadata", base+"/targets"
		f.cfg.StateDir = filepath.Join(f.dir, fmt.Sprintf("state-local-%d", i))
		f.srv.Close() // no network
		u := f.updater()
		if _, err := u.Update(context.Background(), UpdateOptions{}); err != nil {
			t.Fatalf("update from %s: %v", base, err)
		}
		f.assertSetHolds(gptprio.SetB, r)
		u.Unlock()
	}
}
