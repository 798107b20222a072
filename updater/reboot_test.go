package updater

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/window"
	"github.com/updog/updog/repo"
)

// fakeLock is a FleetLock server with a number of slots, in airlock's
// dialect (500 failed_lock when full).
type fakeLock struct {
	mu      sync.Mutex
	slots   int
	holders map[string]bool
	calls   []string
}

func (l *fakeLock) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ClientParams struct{ Group, ID string } `json:"client_params"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	id := body.ClientParams.ID
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, r.URL.Path)
	if r.Header.Get("fleet-lock-protocol") != "true" || id == "" {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/v1/pre-reboot":
		if !l.holders[id] && len(l.holders) >= l.slots {
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(map[string]string{"kind": "failed_lock", "value": "semaphore full"})
			return
		}
		l.holders[id] = true
	case "/v1/steady-state":
		delete(l.holders, id)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (l *fakeLock) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.holders)
}

func fleetFixture(t *testing.T, slots int) (*fixture, *fakeLock) {
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	l := &fakeLock{slots: slots, holders: map[string]bool{}}
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	f.cfg.Reboot = RebootConfig{Strategy: StrategyFleetLock, FleetLockURL: srv.URL}
	if err := f.cfg.Reboot.fill(); err != nil {
		t.Fatal(err)
	}
	return f, l
}

func (f *fixture) lockUpdater() *Updater {
	f.t.Helper()
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: f.active.String(), Now: func() time.Time { return f.now },
		LockBackoff: func(int) time.Duration { return time.Millisecond }})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(u.Unlock)
	return u
}

// TestFleetLockCycle: no switch before the slot is held; the slot is
// given back only after mark-good on the new set.
func TestFleetLockCycle(t *testing.T) {
	t.Parallel()
	f, l := fleetFixture(t, 1)
	ctx := context.Background()
	l.holders["someone-else"] = true
	u := f.lockUpdater()
	_, err := u.Update(ctx, UpdateOptions{Apply: true})
	var we *WaitingError
	if !errors.As(err, &we) || we.Reason != WaitLock {
		t.Fatalf("update with the slot taken: %v", err)
	}
	tb, lay := f.table()
	if a := gptprio.Attrs(tb, lay, gptprio.SetB); a.WillBoot() {
		t.Fatalf("switched without the lock: %v", a)
	}
	st, _ := u.Status(ctx)
	if st.State != "waiting_lock" {
		t.Fatalf("state %q, want waiting_lock", st.State)
	}
	if need, _, _ := u.RebootNeeded(ctx); !need {
		t.Fatal("reboot-needed says no for a staged update")
	}
	u.Unlock()
	delete(l.holders, "someone-else")
	u = f.lockUpdater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update with a free slot: %v", err)
	}
	if l.held() != 1 {
		t.Fatalf("%d holders after the switch", l.held())
	}
	st, _ = u.Status(ctx)
	if st.State != "switched" || st.Reboot.Lock == nil || !st.Reboot.Lock.Held {
		t.Fatalf("after the switch: state %q lock %+v", st.State, st.Reboot.Lock)
	}
	u.Unlock()
	f.holds[gptprio.SetB] = "1.1.0"
	f.reboot()
	u = f.lockUpdater()
	// A start before mark-good keeps the slot.
	if _, err := u.Check(ctx, CheckOptions{}); !errors.Is(err, ErrNoUpdate) {
		t.Fatalf("check on the new set: %v", err)
	}
	if l.held() != 1 {
		t.Fatal("the slot was given back before mark-good")
	}
	if _, err := u.MarkGood(ctx); err != nil {
		t.Fatal(err)
	}
	if l.held() != 0 {
		t.Fatal("mark-good did not give the slot back")
	}
	st, _ = u.Status(ctx)
	if st.Reboot.Lock != nil || st.State != "idle" {
		t.Fatalf("after mark-good: %+v %q", st.Reboot.Lock, st.State)
	}
}

// TestFleetLockKeptAfterFailure: a release that falls back keeps its
// slot (the rollout stops); only fleet-lock release frees it.
func TestFleetLockKeptAfterFailure(t *testing.T) {
	t.Parallel()
	f, l := fleetFixture(t, 2)
	ctx := context.Background()
	u := f.lockUpdater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
		t.Fatal(err)
	}
	u.Unlock()
	f.holds[gptprio.SetB] = "1.1.0"
	f.reboot()
	f.reboot() // never marked good: back to A
	u = f.lockUpdater()
	if _, err := u.Check(ctx, CheckOptions{}); !errors.Is(err, ErrNoUpdate) {
		t.Fatalf("check after the fallback: %v", err)
	}
	if l.held() != 1 {
		t.Fatal("the slot of a failed release was given back")
	}
	st, _ := u.Status(ctx)
	if st.State != "failed" || st.Reboot.Lock == nil || !st.Reboot.Lock.Kept {
		t.Fatalf("status after the fallback: %q %+v", st.State, st.Reboot.Lock)
	}
	if need, why, _ := u.RebootNeeded(ctx); need {
		t.Fatalf("reboot-needed for a failed release: %s", why)
	}
	if err := u.ReleaseFleetLock(ctx); err != nil {
		t.Fatal(err)
	}
	if l.held() != 0 {
		t.Fatal("fleet-lock release did not give the slot back")
	}
}

// TestMaintenanceWindow: outside the window the update is staged and
// waits; inside, the next run switches without writing it again.
func TestMaintenanceWindow(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	f.now = time.Date(2026, 11, 2, 12, 0, 0, 0, time.UTC) // a Monday noon
	f.cfg.Reboot = RebootConfig{Strategy: StrategyPeriodic, Windows: []window.Spec{{Days: []string{"Mon"}, Start: "22:00", Length: "2h"}}}
	if err := f.cfg.Reboot.fill(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	u := f.updater()
	_, err := u.Update(ctx, UpdateOptions{Apply: true})
	var we *WaitingError
	if !errors.As(err, &we) || we.Reason != WaitWindow || we.Until.Hour() != 22 {
		t.Fatalf("update outside the window: %v", err)
	}
	st, _ := u.Status(ctx)
	if st.State != "waiting_window" || st.Reboot.InWindow {
		t.Fatalf("status: %q %+v", st.State, st.Reboot)
	}
	u.Unlock()
	f.now = time.Date(2026, 11, 2, 22, 30, 0, 0, time.UTC)
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/targets/") && !strings.HasSuffix(r.URL.Path, ManifestTarget) {
			t.Errorf("the staged update was downloaded again: %s", r.URL.Path)
		}
		f.fileServer().ServeHTTP(w, r)
	}))
	u = f.updater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update inside the window: %v", err)
	}
	tb, lay := f.table()
	if n, _ := gptprio.Next(tb); n != gptprio.SetB || !gptprio.Attrs(tb, lay, gptprio.SetB).WillBoot() {
		t.Fatal("not switched inside the window")
	}
}

// TestStrategyOff: update stages; update-apply switches.
func TestStrategyOff(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	f.cfg.Reboot = RebootConfig{Strategy: StrategyOff}
	f.cfg.Reboot.fill()
	ctx := context.Background()
	u := f.updater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); !errors.Is(err, ErrWaiting) {
		t.Fatalf("update with strategy off: %v", err)
	}
	if err := u.Apply(ctx, false); err != nil {
		t.Fatalf("update-apply: %v", err)
	}
	if need, _, _ := u.RebootNeeded(ctx); !need {
		t.Fatal("reboot-needed after the switch")
	}
}

// TestKilledAfterTheSwitch: updog killed after the switch's table write
// (the commit point) and before it recorded the switch: the next updog
// believes the disk (the switch is made), keeps the fleet lock slot, and
// neither downloads again nor rewrites the switched set.
func TestKilledAfterTheSwitch(t *testing.T) {
	t.Parallel()
	f, l := fleetFixture(t, 2)
	ctx := context.Background()
	u := f.lockUpdater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
		t.Fatal(err)
	}
	u.Unlock()
	// The state as a kill before recording the switch leaves it.
	st, err := u.store.load()
	if err != nil {
		t.Fatal(err)
	}
	st.Pending.Stage, st.Pending.AppliedAt = StageWritten, time.Time{}
	if err := u.store.save(st); err != nil {
		t.Fatal(err)
	}
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/targets/") && !strings.HasSuffix(r.URL.Path, ManifestTarget) {
			t.Errorf("downloaded again after the switch: %s", r.URL.Path)
		}
		f.fileServer().ServeHTTP(w, r)
	}))
	u = f.lockUpdater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update after the kill: %v", err)
	}
	if l.held() != 1 {
		t.Fatalf("%d holders: the slot covering the switch was given back", l.held())
	}
	s, _ := u.Status(ctx)
	if s.State != "switched" || s.Pending == nil || s.Pending.Stage != StageApplied {
		t.Fatalf("status after the kill: %q %+v", s.State, s.Pending)
	}
	tb, lay := f.table()
	if a := gptprio.Attrs(tb, lay, gptprio.SetB); a.Priority() != 2 || a.Tries() != 1 {
		t.Fatalf("set B was touched: %v", a)
	}
}
