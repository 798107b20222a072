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

// fakeLock is a FleetLock server with a number of slots, in one of the
// dialects seen in the field: airlock's (the default: 500 failed_lock
// when full), poseidon/fleetlock's (423 locked) or updog-lockd's (423
// with the slot count and holders).
type fakeLock struct {
	mu      sync.Mutex
	slots   int
	holders map[string]bool
	calls   []string
	dialect string
	// refused, when set, runs after each refusal with the number of
	// refusals so far (under mu: it may change holders).
	refused  func(n int)
	nRefused int
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
			w.Header().Set("Content-Type", "application/json")
			switch l.dialect {
			case "poseidon":
				w.WriteHeader(http.StatusLocked)
				json.NewEncoder(w).Encode(map[string]string{"kind": "locked", "value": "reboot lease held by another node"})
			case "updog-lockd":
				w.WriteHeader(http.StatusLocked)
				json.NewEncoder(w).Encode(map[string]any{"kind": "failed_lock_semaphore_full",
					"value": "all slots are held", "slots": l.slots, "holders": len(l.holders)})
			default:
				w.WriteHeader(http.StatusInternalServerError)
				json.NewEncoder(w).Encode(map[string]string{"kind": "failed_lock", "value": "semaphore full"})
			}
			l.nRefused++
			if l.refused != nil {
				l.refused(l.nRefused)
			}
			return
		}
		l.holders[id] = true
	case "/v1/steady-state":
		delete(l.holders, id)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// count returns how many requests were sent to path.
func (l *fakeLock) count(path string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.calls {
		if c == path {
			n++
		}
	}
	return n
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
	// Refusals are asked again (1ms apart, see lockUpdater) for 250ms, not
	// the default minutes: long enough for a second request on a loaded
	// two-core machine under -race (30ms once let only one through).
	f.cfg.Reboot = RebootConfig{Strategy: StrategyFleetLock, FleetLockURL: srv.URL, FleetLockWait: &Duration{250 * time.Millisecond}}
	if err := f.cfg.Reboot.fill(); err != nil {
		t.Fatal(err)
	}
	return f, l
}

func (f *fixture) lockUpdater() *Updater {
	f.t.Helper()
	return f.lockUpdaterWith(nil)
}

// updaterWith is lockUpdater with options changed by opt (nil: none). The
// reboot never runs the system's: a test that asks for one sets
// Options.Reboot.
func (f *fixture) lockUpdaterWith(opt func(o *Options)) *Updater {
	f.t.Helper()
	o := Options{Config: f.cfg, Disk: f.disk, Active: f.active.String(), Now: func() time.Time { return f.now },
		LockBackoff: func(int) time.Duration { return time.Millisecond },
		Reboot: func(context.Context) error {
			f.t.Error("the system's reboot was asked for")
			return errors.New("no reboot in tests")
		}}
	if opt != nil {
		opt(&o)
	}
	u, err := New(o)
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
	// The refusal was asked again within the run (fleet_lock_wait), not
	// taken as the answer of one request.
	if n := l.count("/v1/pre-reboot"); n < 2 {
		t.Fatalf("%d pre-reboot requests in a run refused for fleet_lock_wait, want retries", n)
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
	// The strategy holds a staged update: status says staged (not
	// waiting for a window or a lock), and kured's sentinel says reboot.
	st, err := u.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "staged" || st.Pending == nil || st.Pending.Stage != StageWritten || st.Reboot.Waiting == nil || st.Reboot.Waiting.Reason != WaitOff {
		t.Fatalf("status with the update staged under strategy off: %q %+v %+v", st.State, st.Pending, st.Reboot.Waiting)
	}
	if need, why, _ := u.RebootNeeded(ctx); !need {
		t.Fatalf("reboot-needed with the update staged: %s", why)
	}
	if err := u.Apply(ctx, false); err != nil {
		t.Fatalf("update-apply: %v", err)
	}
	if need, _, _ := u.RebootNeeded(ctx); !need {
		t.Fatal("reboot-needed after the switch")
	}
	if st, _ := u.Status(ctx); st.State != "switched" {
		t.Fatalf("state after update-apply: %q, want switched", st.State)
	}
}

// TestStrategyOffKuredReboot: kured's reboot command, `updog update-apply
// --reboot`, switches to the staged set and reboots; status says
// rebooting until the host is down.
func TestStrategyOffKuredReboot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	f.cfg.Reboot = RebootConfig{Strategy: StrategyOff}
	if err := f.cfg.Reboot.fill(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	reboots := 0
	u := f.lockUpdaterWith(func(o *Options) {
		o.Reboot = func(context.Context) error { reboots++; return nil }
	})
	if _, err := u.Update(ctx, UpdateOptions{Apply: true, Reboot: true}); !errors.Is(err, ErrWaiting) || reboots != 0 {
		t.Fatalf("update --reboot with strategy off: %v, %d reboots", err, reboots)
	}
	if err := u.Apply(ctx, true); err != nil || reboots != 1 {
		t.Fatalf("update-apply --reboot: %v, %d reboots", err, reboots)
	}
	st, err := u.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "rebooting" || st.Reboot.Rebooting == nil || st.Pending == nil || st.Pending.Stage != StageApplied {
		t.Fatalf("status after update-apply --reboot: %q rebooting %v pending %+v", st.State, st.Reboot.Rebooting, st.Pending)
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var j struct {
		State  string `json:"state"`
		Reboot struct {
			Rebooting *time.Time `json:"rebooting"`
		} `json:"reboot"`
	}
	if err := json.Unmarshal(b, &j); err != nil || j.State != "rebooting" || j.Reboot.Rebooting == nil {
		t.Fatalf("status --json: %v %s", err, b)
	}
	tb, _ := f.table()
	if n, _ := gptprio.Next(tb); n != gptprio.SetB {
		t.Fatalf("next boot %v, want set B", n)
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

// TestFleetLockDialects: each server's "not now" (airlock's 500
// failed_lock, poseidon's 423 locked, updog-lockd's 423 with counts) is
// asked again within the run; the switch waits, and status --json says
// why in reboot.waiting, with the holders and slots when the server said.
func TestFleetLockDialects(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dialect, detail string
		holders, slots  int
	}{
		{"airlock", "HTTP 500 failed_lock", -1, -1},
		{"poseidon", "HTTP 423 locked", -1, -1},
		{"updog-lockd", "(1 of 1 slots held)", 1, 1},
	} {
		t.Run(tc.dialect, func(t *testing.T) {
			t.Parallel()
			f, l := fleetFixture(t, 1)
			l.dialect = tc.dialect
			l.holders["someone-else"] = true
			ctx := context.Background()
			u := f.lockUpdater()
			_, err := u.Update(ctx, UpdateOptions{Apply: true})
			var we *WaitingError
			if !errors.As(err, &we) || we.Reason != WaitLock || !strings.Contains(we.Detail, tc.detail) {
				t.Fatalf("update with the slot taken: %v (want a wait naming %q)", err, tc.detail)
			}
			if n := l.count("/v1/pre-reboot"); n < 2 {
				t.Errorf("%d pre-reboot requests, want the refusal asked again", n)
			}
			st, err := u.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(st)
			if err != nil {
				t.Fatal(err)
			}
			var j struct {
				State  string `json:"state"`
				Reboot struct {
					Waiting *struct {
						Reason  string `json:"reason"`
						Detail  string `json:"detail"`
						Holders *int   `json:"holders"`
						Slots   *int   `json:"slots"`
					} `json:"waiting"`
				} `json:"reboot"`
			}
			if err := json.Unmarshal(b, &j); err != nil {
				t.Fatal(err)
			}
			w := j.Reboot.Waiting
			if j.State != "waiting_lock" || w == nil || w.Reason != "lock" || w.Holders == nil || w.Slots == nil ||
				*w.Holders != tc.holders || *w.Slots != tc.slots {
				t.Fatalf("status --json: want state waiting_lock and reboot.waiting with holders %d slots %d:\n%s", tc.holders, tc.slots, b)
			}
			tb, lay := f.table()
			if gptprio.Attrs(tb, lay, gptprio.SetB).WillBoot() {
				t.Fatal("switched without the lock")
			}
		})
	}
}

// TestFleetLockGrantedWithinWait: a slot that frees up while the run asks
// again is taken in the same run: poseidon refuses three times, then
// grants, and the update switches without waiting for the next run.
func TestFleetLockGrantedWithinWait(t *testing.T) {
	t.Parallel()
	f, l := fleetFixture(t, 1)
	f.cfg.Reboot.FleetLockWait = &Duration{time.Minute}
	l.dialect = "poseidon"
	l.holders["someone-else"] = true
	l.refused = func(n int) {
		if n == 3 {
			delete(l.holders, "someone-else")
		}
	}
	ctx := context.Background()
	u := f.lockUpdater()
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if n := l.count("/v1/pre-reboot"); n != 4 {
		t.Errorf("%d pre-reboot requests, want 3 refused and 1 granted", n)
	}
	if st, _ := u.Status(ctx); st.State != "switched" || st.Reboot.Lock == nil || !st.Reboot.Lock.Held {
		t.Fatalf("after the grant: %q %+v", st.State, st.Reboot.Lock)
	}
}

// TestFleetLockWaitZeroAsksOnce: fleet_lock_wait = 0 sends one request.
func TestFleetLockWaitZeroAsksOnce(t *testing.T) {
	t.Parallel()
	f, l := fleetFixture(t, 1)
	f.cfg.Reboot.FleetLockWait = &Duration{0}
	l.holders["someone-else"] = true
	u := f.lockUpdater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); !errors.Is(err, ErrWaiting) {
		t.Fatalf("update: %v", err)
	}
	if n := l.count("/v1/pre-reboot"); n != 1 {
		t.Errorf("%d pre-reboot requests, want 1", n)
	}
}

// TestFleetLockWaitStopsOnSignal: SIGINT or SIGTERM (the command's
// context) stops a run that asks for a slot at once, however much of
// fleet_lock_wait is left; it is not reported as a refusal (exit 6), the
// disk is not switched, and the next run goes on from the staged update.
func TestFleetLockWaitStopsOnSignal(t *testing.T) {
	t.Parallel()
	f, l := fleetFixture(t, 1)
	f.cfg.Reboot.FleetLockWait = &Duration{time.Hour}
	l.holders["someone-else"] = true
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l.refused = func(n int) {
		if n == 3 {
			time.AfterFunc(20*time.Millisecond, cancel)
		}
	}
	u := f.lockUpdaterWith(func(o *Options) {
		o.LockBackoff = func(n int) time.Duration {
			if n < 3 {
				return time.Millisecond
			}
			return time.Hour
		}
	})
	start := time.Now()
	_, err := u.Update(ctx, UpdateOptions{Apply: true})
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrWaiting) {
		t.Fatalf("update stopped while asking: %v, want context.Canceled and not a wait", err)
	}
	if d := time.Since(start); d > time.Minute {
		t.Fatalf("the update took %v", d)
	}
	tb, lay := f.table()
	if gptprio.Attrs(tb, lay, gptprio.SetB).WillBoot() {
		t.Fatal("switched without the lock")
	}
	if need, why, _ := u.RebootNeeded(context.Background()); !need {
		t.Fatalf("the staged update is lost: %s", why)
	}
}
