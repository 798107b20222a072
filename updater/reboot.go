package updater

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/fleetlock"
	"github.com/updog/updog/internal/safefile"
)

// The reboot strategy decides when a written and verified update may be
// switched to (and rebooted into); writing it may happen at any time.
// The switch is tied to the reboot because a power cut after a switch
// reboots the host into the new set: so under fleet_lock the switch is
// never made before the slot is held, and the slot is given back only when
// the new set is marked good on the next boot. A host whose new set fell
// back keeps its slot (a bad release then stops the rollout at the
// server's slot count instead of walking through the fleet) until an
// operator runs `updog fleet-lock release`.

// ErrWaiting means the update is written and verified but the reboot
// strategy holds the switch now: outside a maintenance window, no fleet
// lock slot, or the strategy is off. The error is a *WaitingError.
var ErrWaiting = errors.New("updater: the reboot strategy holds the switch")

// Reasons for waiting.
const (
	WaitWindow = "window"
	WaitLock   = "lock"
	WaitOff    = "off"
)

// WaitingError says why the switch waits.
type WaitingError struct {
	Reason string    `json:"reason"`
	Detail string    `json:"detail"`
	Until  time.Time `json:"until,omitzero"` // the next window, when waiting for one
	// Holders and Slots are the lock's, when the server said (-1 when
	// not).
	Holders int `json:"holders"`
	Slots   int `json:"slots"`
}

func (e *WaitingError) Error() string { return "waiting: " + e.Detail }

// Is makes a WaitingError match ErrWaiting.
func (e *WaitingError) Is(target error) bool { return target == ErrWaiting }

// LockState is the fleet lock slot as this host knows it.
type LockState struct {
	Held  bool      `json:"held"`
	Since time.Time `json:"since,omitzero"`
	Group string    `json:"group"`
	ID    string    `json:"id"`
	// Release is the release the slot was taken for.
	Release *Release `json:"release,omitempty"`
	// Kept is set when that release failed to boot: the slot is kept so
	// the rollout stops, until `updog fleet-lock release`.
	Kept   bool   `json:"kept"`
	Reason string `json:"reason,omitempty"`
}

// lockClient is the FleetLock client of this host.
func (u *Updater) lockClient() (*fleetlock.Client, error) {
	mid, err := safefile.ReadFile(u.cfg.MachineID, 4096)
	if err != nil {
		return nil, fmt.Errorf("the fleet lock identifies this host by its machine ID: %w", err)
	}
	id, err := fleetlock.DefaultID(mid)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.cfg.MachineID, err)
	}
	return &fleetlock.Client{Base: u.cfg.Reboot.FleetLockURL, Group: u.cfg.Reboot.Group, ID: id, Logger: u.log,
		Backoff: u.o.LockBackoff}, nil
}

// permit decides whether the switch may be made now, taking the fleet
// lock slot when the strategy says so. explicit is an operator's own
// update-apply or rollback: windows and the off strategy do not hold it
// back, the fleet lock still does.
func (s *session) permit(ctx context.Context, explicit bool) error {
	u := s.u
	rc := &u.cfg.Reboot
	now := u.now()
	if ws := rc.WindowSet(); !explicit && len(ws) > 0 && !ws.Contains(now) {
		start, _ := ws.Next(now)
		return s.waiting(&WaitingError{Reason: WaitWindow, Until: start, Holders: -1, Slots: -1,
			Detail: fmt.Sprintf("outside the maintenance windows; the next opens at %s", start.UTC().Format(time.RFC3339))})
	}
	switch rc.Strategy {
	case StrategyOff:
		if !explicit {
			return s.waiting(&WaitingError{Reason: WaitOff, Holders: -1, Slots: -1,
				Detail: "the reboot strategy is off: run updog update-apply to switch"})
		}
	case StrategyFleetLock:
		c, err := u.lockClient()
		if err != nil {
			return err
		}
		// Every "not now" (and every failure to reach the server) is
		// asked again with backoff for fleet_lock_wait; only then does
		// the switch wait for the next run. 0 asks once.
		if wait := rc.LockWait(); wait > 0 {
			c.MaxWait = wait
		} else {
			c.Attempts = 1
		}
		err = c.PreReboot(ctx)
		var re *fleetlock.RefusedError
		switch {
		case err != nil && ctx.Err() != nil:
			// SIGINT or SIGTERM while asking: stopped, not refused.
			return fmt.Errorf("asking the fleet lock for a slot: %w", err)
		case err == nil:
			rel := Release{}
			if p := s.st.Pending; p != nil {
				rel = p.Release
			}
			s.st.Lock = &LockState{Held: true, Since: now.UTC(), Group: c.Group, ID: c.ID, Release: &rel}
			s.st.Waiting = nil
			return u.store.save(s.st)
		case errors.As(err, &re):
			we := &WaitingError{Reason: WaitLock, Holders: re.Holders, Slots: re.Slots,
				Detail: fmt.Sprintf("the fleet lock refused a slot%s: %v", askedFor(c), err)}
			return s.waiting(we)
		case errors.Is(err, fleetlock.ErrUnavailable):
			return s.waiting(&WaitingError{Reason: WaitLock, Holders: -1, Slots: -1,
				Detail: fmt.Sprintf("the fleet lock server did not answer%s: %v", askedFor(c), err)})
		default:
			return err
		}
	}
	s.st.Waiting = nil
	return nil
}

// askedFor says for how long a refused pre-reboot was asked.
func askedFor(c *fleetlock.Client) string {
	if c.MaxWait <= 0 {
		return ""
	}
	return fmt.Sprintf(" (asked for %v)", c.MaxWait)
}

// waiting records why the switch waits, for status.
func (s *session) waiting(we *WaitingError) error {
	s.st.Waiting = &Waiting{WaitingError: *we, Since: s.u.now().UTC()}
	if err := s.u.store.save(s.st); err != nil {
		return errors.Join(we, err)
	}
	return we
}

// Waiting is the last reason the switch waited.
type Waiting struct {
	WaitingError
	Since time.Time `json:"since"`
}

// steadyState gives the fleet lock slot back when the running set is
// marked good and no switched update waits for its boot: on every start
// (so a host that died between steps never holds a slot forever) and
// after mark-good. A slot kept after a failed boot is not given back.
// Failures are logged, not returned: the next start tries again.
func (s *session) steadyState(ctx context.Context) {
	u := s.u
	if u.cfg.Reboot.Strategy != StrategyFleetLock || len(s.l.Sets) < 2 || s.disk.Active == nil {
		return
	}
	if l := s.st.Lock; l != nil && l.Kept {
		return
	}
	if p := s.st.Pending; p != nil && p.Stage == StageApplied {
		return
	}
	if !gptprio.Attrs(s.t, s.l, s.active).Successful() {
		return
	}
	if n, err := gptprio.Next(s.t); err != nil || n != s.active {
		// The disk boots another set next: a switch is made (whatever the
		// state file says) and the slot covers its reboot.
		return
	}
	c, err := u.lockClient()
	if err == nil {
		err = c.SteadyState(ctx)
	}
	if err != nil {
		u.log.Warn("could not give the fleet lock slot back; the next start tries again", "err", err)
		return
	}
	if s.st.Lock != nil {
		s.st.Lock = nil
		if err := u.store.save(s.st); err != nil {
			u.log.Warn("saving state", "err", err)
		}
	}
}

// ReleaseFleetLock is `updog fleet-lock release`: give the slot back
// whatever this host thinks it holds (an operator's decision after a
// failed release).
func (u *Updater) ReleaseFleetLock(ctx context.Context) error {
	if u.cfg.Reboot.Strategy != StrategyFleetLock {
		return fmt.Errorf("the reboot strategy is %s, not fleet_lock: there is no slot to release", u.cfg.Reboot.Strategy)
	}
	c, err := u.lockClient()
	if err != nil {
		return err
	}
	if err := c.SteadyState(ctx); err != nil {
		return err
	}
	st, err := u.store.load()
	if err != nil {
		return err
	}
	st.Lock = nil
	return u.store.save(st)
}

// RebootNeeded says whether a verified update waits for a reboot: written
// (and not yet switched) or switched and not yet booted. A release that
// failed here before does not count. kured's --reboot-sentinel-command
// uses it (with update-apply --reboot as its reboot command).
func (u *Updater) RebootNeeded(ctx context.Context) (bool, string, error) {
	s, err := u.openSession(ctx, true, true)
	if err != nil {
		return false, "", err
	}
	defer s.close()
	p := s.st.Pending
	if p == nil {
		return false, "no update is pending", nil
	}
	rec := s.st.Sets[p.Set]
	if rec == nil || !rec.Verified || p.Set == s.active.String() {
		return false, "no verified update waits in the inactive set", nil
	}
	if f := s.st.failedBefore(p.Release); f != nil {
		return false, fmt.Sprintf("%s failed here before: %s", p.Version, f.Reason), nil
	}
	switch p.Stage {
	case StageWritten:
		return true, fmt.Sprintf("%s is written and verified in set %s; switch and reboot", p.Version, p.Set), nil
	case StageApplied:
		return true, fmt.Sprintf("%s is switched to in set %s; reboot to start it", p.Version, p.Set), nil
	}
	return false, "the install is not finished", nil
}
