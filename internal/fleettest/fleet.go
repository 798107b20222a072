package fleettest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/updog/updog/internal/fleetlock"
)

// Host is one machine of a fleet under test.
//
// Cycle runs the host's update-and-reboot cycle from whatever state the
// host is in (stage, take the slot with lock.PreReboot, switch, reboot,
// mark good, give the slot back with lock.SteadyState) and returns nil
// once the host runs the new release and holds no slot. A cancelled ctx is
// a crash (power cut, kill -9): Cycle returns, and the next Cycle must
// carry on from the state the host persisted, as updog does on its next
// start. ErrHostFailed means the host gave up for good (a failing health
// check: it fell back and keeps its slot); any other error is retried.
//
// SimHost simulates one in memory; UpdogHost drives real updog and
// signpost processes against the host's own disk image and state
// directory (its ID is the one updog derives from the host's machine ID).
type Host interface {
	ID() string
	Cycle(ctx context.Context, lock *fleetlock.Client) error
}

// ErrHostFailed: the host failed its health check after the reboot, fell
// back to the old release, and keeps its slot so that the rollout stops.
var ErrHostFailed = errors.New("fleettest: host failed its health check and keeps its slot")

// Fleet runs hosts concurrently against one FleetLock server while a
// sampler watches the server's holders and an optional chaos function
// kills things.
type Fleet struct {
	Hosts []Host
	// Client returns the FleetLock client of a host.
	Client func(Host) *fleetlock.Client
	// Slots is the most holders allowed at any time.
	Slots int
	// Holders returns the holders the lock server's store has now (the
	// fleet test reads etcd). Errors (etcd paused) are counted, not fatal.
	Holders func(ctx context.Context) ([]string, error)
	// SampleEvery is the sampling period (default 10ms).
	SampleEvery time.Duration
	// RestartDelay is how long a crashed host stays down (default 50ms).
	RestartDelay func() time.Duration
	// Chaos, when set, runs beside the hosts until they finish.
	Chaos func(ctx context.Context, r *Run)
	// Logf logs (t.Logf); nil discards.
	Logf func(format string, args ...any)
}

// Result is what a Run saw.
type Result struct {
	Done, Failed, Unfinished []string // host IDs
	HostKills                int
	Samples, SampleErrors    int
	MaxHolders               int
	// Over describes each sample with more than Slots holders.
	Over    []string
	Elapsed time.Duration
}

// Run is a fleet run in progress, as the chaos function sees it.
type Run struct {
	f      *Fleet
	mu     sync.Mutex
	cancel []context.CancelFunc // per host; nil when not running
	state  []string             // "", "done", "failed"
	kills  int
	change chan struct{}
}

// Running returns the indexes of the hosts whose Cycle is running.
func (r *Run) Running() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var idx []int
	for i, c := range r.cancel {
		if c != nil {
			idx = append(idx, i)
		}
	}
	return idx
}

// KillHost crashes host i (cancels its Cycle); it restarts after
// RestartDelay. It reports whether the host was running.
func (r *Run) KillHost(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cancel[i] == nil {
		return false
	}
	r.cancel[i]()
	r.cancel[i] = nil
	r.kills++
	return true
}

func (r *Run) logf(format string, args ...any) {
	if r.f.Logf != nil {
		r.f.Logf(format, args...)
	}
}

// Run runs every host until all are done or failed, stop (checked after
// each host finishes, with the counts so far) returns true, or ctx ends.
// Hosts keep their state across Runs, so a test may Run again.
func (f *Fleet) Run(ctx context.Context, stop func(done, failed int) bool) Result {
	start := time.Now()
	ctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	r := &Run{f: f, cancel: make([]context.CancelFunc, len(f.Hosts)), state: make([]string, len(f.Hosts)), change: make(chan struct{}, len(f.Hosts))}
	res := Result{}

	var sampler sync.WaitGroup
	sampler.Go(func() { f.sample(ctx, &res) })
	if f.Chaos != nil {
		sampler.Go(func() { f.Chaos(ctx, r) })
	}

	var hosts sync.WaitGroup
	for i, h := range f.Hosts {
		hosts.Go(func() { r.runHost(ctx, i, h) })
	}
	allDone := make(chan struct{})
	go func() { hosts.Wait(); close(allDone) }()
loop:
	for {
		select {
		case <-allDone:
			break loop
		case <-ctx.Done():
			break loop
		case <-r.change:
			done, failed := r.counts()
			if stop != nil && stop(done, failed) {
				break loop
			}
		}
	}
	cancelAll()
	<-allDone
	sampler.Wait()
	r.mu.Lock()
	for i, h := range f.Hosts {
		switch r.state[i] {
		case "done":
			res.Done = append(res.Done, h.ID())
		case "failed":
			res.Failed = append(res.Failed, h.ID())
		default:
			res.Unfinished = append(res.Unfinished, h.ID())
		}
	}
	res.HostKills = r.kills
	r.mu.Unlock()
	res.Elapsed = time.Since(start)
	return res
}

func (r *Run) counts() (done, failed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.state {
		switch s {
		case "done":
			done++
		case "failed":
			failed++
		}
	}
	return done, failed
}

func (r *Run) runHost(ctx context.Context, i int, h Host) {
	client := r.f.Client(h)
	for ctx.Err() == nil {
		hctx, cancel := context.WithCancel(ctx)
		r.mu.Lock()
		r.cancel[i] = cancel
		r.mu.Unlock()
		err := h.Cycle(hctx, client)
		r.mu.Lock()
		killed := r.cancel[i] == nil // KillHost cleared it
		r.cancel[i] = nil
		r.mu.Unlock()
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			r.finish(i, "done")
			return
		case errors.Is(err, ErrHostFailed):
			r.finish(i, "failed")
			return
		case killed:
		default:
			r.logf("host %s: %v (retrying)", h.ID(), err)
		}
		delay := 50 * time.Millisecond
		if r.f.RestartDelay != nil {
			delay = r.f.RestartDelay()
		}
		if sleep(ctx, delay) != nil {
			return
		}
	}
}

func (r *Run) finish(i int, state string) {
	r.mu.Lock()
	r.state[i] = state
	r.mu.Unlock()
	r.change <- struct{}{}
}

func (f *Fleet) sample(ctx context.Context, res *Result) {
	every := f.SampleEvery
	if every <= 0 {
		every = 10 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		// Each sample runs to its end (at most a second) even when the run
		// ends meanwhile: a run whose hosts had nothing left to do still
		// gets its one sample.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		holders, err := f.Holders(sctx)
		cancel()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			res.SampleErrors++
		default:
			res.Samples++
			res.MaxHolders = max(res.MaxHolders, len(holders))
			if len(holders) > f.Slots {
				res.Over = append(res.Over, fmt.Sprintf("%s: %d holders %v", time.Now().Format(time.StampMilli), len(holders), slices.Sorted(slices.Values(holders))))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
