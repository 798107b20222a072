package fleettest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/updog/updog/internal/fleetlock"
)

// Phase is a simulated host's persisted state.
type Phase int

// The phases of a SimHost, in order. Failed is the end of a host whose
// health check fails: it fell back and keeps its slot.
const (
	Staged Phase = iota // new release written, waiting for a slot
	Locked              // slot held: switching and rebooting
	Good                // booted the new release and marked it good
	Done                // slot given back
	Failed              // health check failed; keeps the slot
)

func (p Phase) String() string {
	return [...]string{"staged", "locked", "good", "done", "failed"}[p]
}

// Tracker counts, exactly, the hosts that believe they hold a slot (from
// the grant to the moment they are back up and about to release it). As
// a host enters Locked only after the server granted it and leaves it
// before asking to release, this count never exceeds the server's: a
// count over the slots at any instant is a double grant.
type Tracker struct {
	Slots int

	mu      sync.Mutex
	holding map[string]bool
	max     int
	over    []string
}

// Enter records that id holds a slot: call it only after the server
// granted it.
func (tr *Tracker) Enter(id string) {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.holding == nil {
		tr.holding = map[string]bool{}
	}
	tr.holding[id] = true
	tr.max = max(tr.max, len(tr.holding))
	if len(tr.holding) > tr.Slots {
		tr.over = append(tr.over, fmt.Sprintf("%d hosts hold slots: %v", len(tr.holding), slices.Sorted(maps.Keys(tr.holding))))
	}
}

// Leave records that id no longer holds a slot (an operator released a
// failed host's slot).
func (tr *Tracker) Leave(id string) {
	if tr == nil {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	delete(tr.holding, id)
}

// Max returns the most hosts that held a slot at once; Over describes
// each moment more than Slots did.
func (tr *Tracker) Max() (int, []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.max, slices.Clone(tr.over)
}

// SimHost is a host simulated in memory: its phase survives a crash
// (Cycle's ctx cancelled), as updog's state directory does.
type SimHost struct {
	Name string
	// Hold is how long the switch and the reboot take with the slot held.
	Hold time.Duration
	// Poll is the wait before asking again after a refusal or an error.
	Poll time.Duration
	// FailHealthCheck makes the new release fail after the reboot.
	FailHealthCheck bool
	Tracker         *Tracker

	mu      sync.Mutex
	phase   Phase
	refused int
}

// ID implements Host.
func (h *SimHost) ID() string { return h.Name }

// Phase returns the host's phase.
func (h *SimHost) Phase() Phase {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.phase
}

// Refusals returns how many pre-reboot requests were refused.
func (h *SimHost) Refusals() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refused
}

func (h *SimHost) set(p Phase) {
	h.mu.Lock()
	h.phase = p
	h.mu.Unlock()
}

// Cycle implements Host, the way updog's fleet_lock strategy does: send
// steady-state first when the running release is marked good; ask for a
// slot until granted; switch and reboot; mark good; release.
func (h *SimHost) Cycle(ctx context.Context, lock *fleetlock.Client) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch h.Phase() {
		case Staged:
			err := lock.PreReboot(ctx)
			if err == nil {
				// The grant is the commit point: persist, then count.
				h.set(Locked)
				h.Tracker.Enter(h.Name)
				continue
			}
			if errors.Is(err, fleetlock.ErrRefused) {
				h.mu.Lock()
				h.refused++
				h.mu.Unlock()
			} else if !errors.Is(err, fleetlock.ErrUnavailable) {
				return err
			}
			if err := sleep(ctx, h.Poll); err != nil {
				return err
			}
		case Locked:
			// Switch, reboot (the simulated `signpost next`), boot.
			if err := sleep(ctx, h.Hold); err != nil {
				return err
			}
			if h.FailHealthCheck {
				h.set(Failed)
				return ErrHostFailed
			}
			h.Tracker.Leave(h.Name)
			h.set(Good)
		case Good:
			if err := lock.SteadyState(ctx); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if err := sleep(ctx, h.Poll); err != nil {
					return err
				}
				continue
			}
			h.set(Done)
		case Done:
			return nil
		case Failed:
			return ErrHostFailed
		}
	}
}
