package fleettest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/updog/updog/internal/fleetlock"
)

// updog's exit codes that a host's agent acts on (cmd/updog/run.go).
const (
	updogExitNoUpdate = 3
	updogExitWaiting  = 6
)

// Step is where an UpdogHost is in its update cycle. The step survives a
// kill of the host's processes, as the host's own agent would know it
// (a systemd unit that runs the next step after each boot).
type Step int

// The steps of an UpdogHost, in order. StepFallback, StepFellBack and
// StepFailed follow StepMarkGood when the health checks fail.
const (
	StepUpdate   Step = iota // `updog update` until the switch is made (exit 6: not yet)
	StepReboot               // `signpost next`, then the booted set's os-release
	StepMarkGood             // `updog mark-good`
	StepSettle               // the slot given back: status idle, else `updog update` gives it back on start
	StepDone                 // on the new release, no slot held
	StepFallback             // mark-good failed: the watchdog reboots, the bootloader falls back
	StepFellBack             // fell back: updog must say so and keep the slot
	StepFailed               // fell back; the slot is kept
)

func (s Step) String() string {
	return [...]string{"update", "reboot", "mark-good", "settle", "done", "fallback", "fell-back", "failed"}[s]
}

// UpdogHost is a Host whose every step is a real process: `updog update`
// (retried while it exits 6, the fleet lock refusing a slot), the reboot
// as `signpost next` plus the booted set's os-release, `updog mark-good`,
// and a check with `updog status --json` that the slot was given back
// (running `updog update`, which gives it back on start, when it was
// not). A cancelled ctx SIGKILLs the running updog; the next Cycle starts
// that step again with a fresh updog. The reboot steps are never cut
// short (a bootloader is not killed halfway; a host that dies while
// booting is a failed boot, which is another test).
//
// When mark-good fails, the host reboots again (its watchdog), the
// bootloader falls back, and Cycle checks that updog says so (state
// failed, the slot kept) and that a later `updog update` keeps the slot,
// then returns ErrHostFailed.
type UpdogHost struct {
	Name string
	// Updog and Signpost are the binaries.
	Updog, Signpost string
	// Config, Disk and OSRelease are the host's updog.toml, disk image
	// and os-release file (the one updog.toml names).
	Config, Disk, OSRelease string
	// MachineID is the host's machine-id file (the one updog.toml
	// names); its FleetLock ID is derived from it.
	MachineID string
	// StateDir is updog's state directory (the one updog.toml names),
	// shown in problem reports.
	StateDir string
	// LogLevel is updog's --log-level (default info).
	LogLevel string
	// Variant is os-release's VARIANT_ID; Versions maps a set ("a", "b")
	// to the VERSION_ID of the release it holds.
	Variant  string
	Versions map[string]string
	// Backoff returns the wait before running `updog update` again after
	// it exited 6 (or left the slot held) n times in a row; nil means
	// 200ms doubling up to 2s.
	Backoff func(n int) time.Duration
	// Holders returns the lock's holders, to check that a host whose disk
	// is switched holds a slot (nil: not checked).
	Holders func(ctx context.Context) ([]string, error)
	Tracker *Tracker
	// Logf logs (t.Logf); nil discards.
	Logf func(format string, args ...any)

	once  sync.Once
	id    string
	idErr error

	mu     sync.Mutex
	step   Step
	active string
	stats  HostStats
	waits  int // exits 6 (or slots left held) in a row
	// updateKilled: the last `updog update` of StepUpdate was SIGKILLed.
	updateKilled bool
	problems     []string
	lastError    string
	busy         string // the updog command running now
	history      []string
}

// historyLen is how many of a host's last processes a problem report shows.
const historyLen = 8

// record keeps what one process (cmd, without the global flags) did.
func (h *UpdogHost) record(start time.Time, cmd string, r ProcResult) {
	line := fmt.Sprintf("%s +%v %s: exit %d", start.Format("15:04:05.000"), time.Since(start).Round(time.Millisecond), cmd, r.Code)
	if r.Killed {
		line += " (SIGKILLed)"
	}
	if out := strings.TrimSpace(r.Stdout + r.Stderr); out != "" {
		line += "\n    " + strings.ReplaceAll(out, "\n", "\n    ")
	}
	h.mu.Lock()
	h.history = append(h.history, line)
	if len(h.history) > historyLen {
		h.history = h.history[len(h.history)-historyLen:]
	}
	h.mu.Unlock()
}

// HostStats counts what an UpdogHost's processes did.
type HostStats struct {
	Runs      int            // updog processes started
	Killed    map[string]int // updog processes SIGKILLed, by command
	Refusals  int            // `updog update` exits 6
	Settles   int            // `updog update` runs to give a slot back
	Unchecked int            // switched-disk checks skipped (holders unreadable)
	Errors    int            // updog update runs that failed otherwise (exit 1) right after a kill: retried
}

// ID implements Host: the ID updog derives from the host's machine ID.
func (h *UpdogHost) ID() string {
	h.once.Do(func() {
		mid, err := os.ReadFile(h.MachineID)
		if err != nil {
			h.idErr = err
			return
		}
		h.id, h.idErr = fleetlock.DefaultID(mid)
	})
	if h.idErr != nil {
		return "invalid:" + h.Name
	}
	return h.id
}

// Step returns the host's step.
func (h *UpdogHost) Step() Step {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.step
}

// Active returns the set the host runs ("a" until its first reboot).
func (h *UpdogHost) Active() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.active == "" {
		return "a"
	}
	return h.active
}

// Stats returns what the host's processes did so far.
func (h *UpdogHost) Stats() HostStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.stats
	s.Killed = map[string]int{}
	for k, v := range h.stats.Killed {
		s.Killed[k] = v
	}
	return s
}

// Problems returns what the host saw updog do wrong (a switched disk
// without a slot, a status that contradicts the step).
func (h *UpdogHost) Problems() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.problems)
}

func (h *UpdogHost) problem(format string, args ...any) {
	msg := h.Name + ": " + fmt.Sprintf(format, args...)
	if st, err := os.ReadFile(filepath.Join(h.StateDir, "state.json")); err == nil {
		msg += "\n  state.json: " + strings.TrimSpace(string(st))
	}
	h.mu.Lock()
	msg += "\n  the host's last processes:\n  " + strings.Join(h.history, "\n  ")
	h.problems = append(h.problems, msg)
	h.mu.Unlock()
	h.logf("%s", msg)
}

func (h *UpdogHost) logf(format string, args ...any) {
	if h.Logf != nil {
		h.Logf(format, args...)
	}
}

func (h *UpdogHost) set(s Step) {
	h.mu.Lock()
	h.step = s
	h.mu.Unlock()
}

// ProcResult is one finished (or killed) process.
type ProcResult struct {
	Args           []string
	Stdout, Stderr string
	Code           int  // exit code; -1 when killed by a signal
	Killed         bool // SIGKILLed because ctx ended
}

func (r ProcResult) String() string {
	return fmt.Sprintf("$ %s\nexit %d\n%s%s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

// RunProc runs bin with args until it exits, SIGKILLing it when ctx ends
// (and when the test process dies). An error is returned only when the
// process could not be started.
func RunProc(ctx context.Context, bin string, args ...string) (ProcResult, error) {
	r := ProcResult{Args: append([]string{filepath.Base(bin)}, args...), Code: -1}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	r.Stdout, r.Stderr = out.String(), errb.String()
	if cmd.ProcessState != nil {
		r.Code = cmd.ProcessState.ExitCode()
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		ws, ok := ee.Sys().(syscall.WaitStatus)
		r.Killed = ok && ws.Signaled() && ctx.Err() != nil
		return r, nil
	case err == nil:
		return r, nil
	}
	return r, fmt.Errorf("running %s: %w", r.Args[0], err)
}

// Exec runs updog with the host's configuration, disk and running set
// (an operator's command, say), SIGKILLing it when ctx ends.
func (h *UpdogHost) Exec(ctx context.Context, args ...string) (ProcResult, error) {
	return h.updog(ctx, args...)
}

// updog runs updog with the host's configuration, disk and running set.
func (h *UpdogHost) updog(ctx context.Context, args ...string) (ProcResult, error) {
	level := h.LogLevel
	if level == "" {
		level = "info"
	}
	all := append([]string{"--config", h.Config, "--disk", h.Disk, "--active", h.Active(), "--log-level", level}, args...)
	name := args[len(args)-1]
	h.mu.Lock()
	h.stats.Runs++
	h.busy = name
	h.mu.Unlock()
	start := time.Now()
	r, err := RunProc(ctx, h.Updog, all...)
	h.record(start, "updog "+strings.Join(args, " "), r)
	h.mu.Lock()
	h.busy = ""
	if r.Killed {
		if h.stats.Killed == nil {
			h.stats.Killed = map[string]int{}
		}
		h.stats.Killed[name]++
	}
	h.mu.Unlock()
	return r, err
}

// Busy returns the updog command the host runs now ("" when none).
func (h *UpdogHost) Busy() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.busy
}

// StatusJSON is the part of `updog status --json` the fleet test reads.
type StatusJSON struct {
	Active string `json:"active"`
	Next   string `json:"next"`
	State  string `json:"state"`
	Sets   map[string]struct {
		Priority   int  `json:"priority"`
		Tries      int  `json:"tries"`
		Successful bool `json:"successful"`
	} `json:"sets"`
	Running *struct {
		Version string `json:"version"`
	} `json:"running"`
	Pending *struct {
		Version string `json:"version"`
		Set     string `json:"set"`
		Stage   string `json:"stage"`
	} `json:"pending"`
	Failed []struct {
		Version string `json:"version"`
		Reason  string `json:"reason"`
	} `json:"failed"`
	Reboot struct {
		Lock *struct {
			Held   bool   `json:"held"`
			Kept   bool   `json:"kept"`
			ID     string `json:"id"`
			Reason string `json:"reason"`
		} `json:"fleet_lock"`
		Waiting *struct {
			Reason  string `json:"reason"`
			Holders int    `json:"holders"`
			Slots   int    `json:"slots"`
		} `json:"waiting"`
	} `json:"reboot"`
}

// Status runs `updog status --json` (not killed by ctx's end: it is a
// read).
func (h *UpdogHost) Status() (*StatusJSON, ProcResult, error) {
	r, err := h.updog(context.Background(), "--json", "status")
	if err != nil {
		return nil, r, err
	}
	if r.Code != 0 {
		return nil, r, fmt.Errorf("%s: updog status failed:\n%s", h.Name, r)
	}
	var st StatusJSON
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		return nil, r, fmt.Errorf("%s: updog status --json: %w\n%s", h.Name, err, r)
	}
	return &st, r, nil
}

// reboot plays the bootloader and writes the booted set's os-release. It
// is not cut short by ctx.
func (h *UpdogHost) reboot() (string, error) {
	start := time.Now()
	r, err := RunProc(context.Background(), h.Signpost, "--disk", h.Disk, "next")
	h.record(start, "signpost next", r)
	if err != nil {
		return "", err
	}
	set := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || h.Versions[set] == "" {
		return "", fmt.Errorf("%s: signpost next:\n%s", h.Name, r)
	}
	rel := fmt.Sprintf("VARIANT_ID=%s\nVERSION_ID=%s\n", h.Variant, h.Versions[set])
	tmp := h.OSRelease + ".tmp"
	if err := os.WriteFile(tmp, []byte(rel), 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, h.OSRelease); err != nil {
		return "", err
	}
	h.mu.Lock()
	h.active = set
	h.mu.Unlock()
	return set, nil
}

// checkSwitched checks, between two of the host's processes (nothing
// changes its disk then), that a disk switched to the new set belongs to
// a host that holds a slot: the switch is never made before the slot is
// held, and the slot is not given back before the new set is marked good.
func (h *UpdogHost) checkSwitched(after string) {
	if h.Holders == nil {
		return
	}
	r, err := RunProc(context.Background(), h.Signpost, "--disk", h.Disk, "--json", "status")
	if err != nil || r.Code != 0 {
		h.problem("signpost status after %s: %v\n%s", after, err, r)
		return
	}
	var st struct {
		Next string `json:"next"`
		Sets map[string]struct {
			Successful bool `json:"successful"`
		} `json:"sets"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &st); err != nil {
		h.problem("signpost status --json: %v\n%s", err, r)
		return
	}
	if st.Next == h.Active() || st.Sets[st.Next].Successful {
		return // not switched to an unproven set
	}
	held, known := h.holds()
	switch {
	case !known:
		h.mu.Lock()
		h.stats.Unchecked++
		h.mu.Unlock()
	case !held:
		h.problem("after %s the disk boots set %s next (not marked good) but the host holds no slot", after, st.Next)
	}
}

// checkRebootNeeded checks `updog reboot-needed` (kured's sentinel
// command): exit 0 when a verified update waits for a reboot, 1 when not.
func (h *UpdogHost) checkRebootNeeded(want int, when string) {
	r, err := h.updog(context.Background(), "reboot-needed")
	if err != nil || r.Code != want {
		h.problem("updog reboot-needed %s: want exit %d: %v\n%s", when, want, err, r)
	}
}

// holds asks the lock's store whether the host holds a slot; known is
// false when it could not be read (etcd paused) for a while.
func (h *UpdogHost) holds() (held, known bool) {
	if h.Holders == nil {
		return false, false
	}
	for try := 0; try < 10; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ids, err := h.Holders(ctx)
		cancel()
		if err == nil {
			return slices.Contains(ids, h.ID()), true
		}
		time.Sleep(500 * time.Millisecond)
	}
	return false, false
}

// backoff waits before the n-th retry in a row.
func (h *UpdogHost) backoff(ctx context.Context, n int) error {
	d := min(200*time.Millisecond<<min(n-1, 4), 2*time.Second)
	if h.Backoff != nil {
		d = h.Backoff(n)
	}
	return sleep(ctx, d)
}

// Cycle implements Host. lock is not used: updog talks to the lock server
// named in its configuration.
func (h *UpdogHost) Cycle(ctx context.Context, _ *fleetlock.Client) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch h.Step() {
		case StepUpdate:
			afterKill := h.updateKilled
			r, err := h.updog(ctx, "update")
			if err != nil {
				return err
			}
			h.updateKilled = r.Killed
			if !r.Killed && r.Code == 0 {
				// The slot was granted before the switch: count the host
				// as holding it until it runs mark-good.
				h.Tracker.Enter(h.ID())
			}
			h.checkSwitched("updog update (exit " + fmt.Sprint(r.Code) + ")")
			switch {
			case r.Killed:
				return ctx.Err()
			case r.Code == 0:
				h.checkRebootNeeded(0, "after the switch")
				h.mu.Lock()
				h.waits = 0
				h.mu.Unlock()
				h.set(StepReboot)
			case r.Code == updogExitWaiting:
				h.mu.Lock()
				h.stats.Refusals++
				h.waits++
				first, n := h.stats.Refusals == 1, h.waits
				h.mu.Unlock()
				if first {
					h.checkRebootNeeded(0, "with the update staged")
				}
				if err := h.backoff(ctx, n); err != nil {
					return err
				}
			default:
				// Nothing in the fleet test makes an update fail (the lock
				// server's troubles are exit 6): one failed start after a
				// SIGKILL is counted (and shown), anything else is a
				// problem.
				h.mu.Lock()
				h.stats.Errors++
				h.mu.Unlock()
				if !afterKill {
					h.problem("updog update failed, and not right after a kill:\n%s", r)
				}
				return fmt.Errorf("%s: updog update:\n%s", h.Name, r)
			}
		case StepReboot:
			if _, err := h.reboot(); err != nil {
				return err
			}
			h.set(StepMarkGood)
		case StepMarkGood:
			// From here on the host may give the slot back.
			h.Tracker.Leave(h.ID())
			r, err := h.updog(ctx, "mark-good")
			if err != nil {
				return err
			}
			switch {
			case r.Killed:
				// As a host's agent would: when the set was marked good
				// before the kill, the next step is the one after
				// mark-good (and the next start of updog gives the slot
				// back); otherwise mark-good runs again.
				if st, _, err := h.Status(); err == nil && st.Sets[h.Active()].Successful {
					h.set(StepSettle)
				}
				return ctx.Err()
			case r.Code == 0:
				h.set(StepSettle)
			default:
				h.mu.Lock()
				h.lastError = r.String()
				h.mu.Unlock()
				h.logf("%s: mark-good failed (the watchdog reboots it):\n%s", h.Name, r)
				h.set(StepFallback)
			}
		case StepSettle:
			st, r, err := h.Status()
			if err != nil {
				return err
			}
			if st.Active != "b" || !st.Sets["b"].Successful || st.Pending != nil || st.State != "idle" {
				h.problem("after mark-good: status is not set B good and idle:\n%s", r)
				h.set(StepFailed)
				return ErrHostFailed
			}
			held, known := h.holds()
			if st.Reboot.Lock == nil && !held {
				if !known {
					h.mu.Lock()
					h.stats.Unchecked++
					h.mu.Unlock()
				}
				h.checkRebootNeeded(1, "on the new release")
				h.set(StepDone)
				continue
			}
			// The slot was not given back (mark-good was killed, or the
			// lock server was down): the next start of updog gives it
			// back, as the host's timer would run it.
			h.mu.Lock()
			h.stats.Settles++
			settles := h.stats.Settles
			h.mu.Unlock()
			if settles > 30 {
				h.problem("the slot is still held after %d starts of updog on the new release (state: %v, lock server: %v):\n%s",
					settles, st.Reboot.Lock != nil, held, r)
				h.set(StepFailed)
				return ErrHostFailed
			}
			r, err = h.updog(ctx, "update")
			if err != nil {
				return err
			}
			if r.Killed {
				return ctx.Err()
			}
			if r.Code != updogExitNoUpdate {
				h.problem("updog update on the new release: want exit %d (no update)\n%s", updogExitNoUpdate, r)
			}
			h.mu.Lock()
			h.waits++
			n := h.waits
			h.mu.Unlock()
			if err := h.backoff(ctx, n); err != nil {
				return err
			}
		case StepDone:
			return nil
		case StepFallback:
			set, err := h.reboot()
			if err != nil {
				return err
			}
			if set != "a" {
				h.problem("the reboot after a failed mark-good booted set %s, want the fallback to a", set)
			}
			h.set(StepFellBack)
		case StepFellBack:
			st, r, err := h.Status()
			if err != nil {
				return err
			}
			if st.State != "failed" || st.Reboot.Lock == nil || !st.Reboot.Lock.Kept || len(st.Failed) == 0 {
				h.problem("after the fallback: want state failed, the release recorded as failed and the slot kept:\n%s", r)
			}
			// A later start (the agent's timer) skips the failed release
			// and keeps the slot.
			r, err = h.updog(ctx, "update")
			if err != nil {
				return err
			}
			if r.Killed {
				return ctx.Err()
			}
			if r.Code != updogExitNoUpdate {
				h.problem("updog update after the fallback: want exit %d (the failed release is skipped)\n%s", updogExitNoUpdate, r)
			}
			if st, r, err := h.Status(); err != nil {
				return err
			} else if st.Reboot.Lock == nil || !st.Reboot.Lock.Kept || st.State != "failed" {
				h.problem("updog update after the fallback gave the slot up:\n%s", r)
			}
			h.checkRebootNeeded(1, "after the fallback")
			h.set(StepFailed)
			return ErrHostFailed
		case StepFailed:
			return ErrHostFailed
		}
	}
}

// LastError returns the output of the last failed mark-good.
func (h *UpdogHost) LastError() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lastError
}
