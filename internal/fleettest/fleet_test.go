package fleettest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/updog/updog/internal/fleetlock"
	"github.com/updog/updog/internal/fleettest"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/lockd"
)

func TestMain(m *testing.M) {
	code := m.Run()
	fleettest.Cleanup()
	os.Exit(code)
}

const (
	slots  = 2
	nHosts = 20
	prefix = "/updog-lockd/"
)

// world is etcd, updog-lockd on it, and a reader of the holders.
type world struct {
	etcd    *fleettest.Etcd
	lockd   *fleettest.Lockd
	reader  *lockd.Server
	rng     *rand.Rand
	rngMu   sync.Mutex
	tracker *fleettest.Tracker
}

func newWorld(t *testing.T) *world {
	t.Helper()
	etcdBin := testutil.Tool(t, "etcd")
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FLEETTEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (set FLEETTEST_SEED to replay the same choices)", seed)
	w := &world{rng: rand.New(rand.NewPCG(seed, 15)), tracker: &fleettest.Tracker{Slots: slots}}
	w.etcd = fleettest.StartEtcd(t, etcdBin)
	bin := fleettest.Build(t, testutil.ProjectRoot(), "./cmd/updog-lockd")
	w.lockd = fleettest.StartLockd(t, bin, "--etcd-endpoints", w.etcd.Endpoint, "--slots", strconv.Itoa(slots),
		"--etcd-prefix", prefix, "--request-timeout", "500ms")
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{w.etcd.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A second lockd.Server on the same keys, used only to read them.
	w.reader, err = lockd.New(lockd.Config{KV: c, Prefix: prefix, Slots: slots, RequestTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) intn(n int) int {
	w.rngMu.Lock()
	defer w.rngMu.Unlock()
	return w.rng.IntN(n)
}

func (w *world) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(w.intn(int(hi-lo)+1))
}

func (w *world) hosts(failing ...int) []*fleettest.SimHost {
	var hs []*fleettest.SimHost
	for i := range nHosts {
		hs = append(hs, &fleettest.SimHost{
			Name:            fmt.Sprintf("host-%02d", i),
			Hold:            w.between(100*time.Millisecond, 300*time.Millisecond),
			Poll:            w.between(30*time.Millisecond, 80*time.Millisecond),
			FailHealthCheck: slices.Contains(failing, i),
			Tracker:         w.tracker,
		})
	}
	return hs
}

func (w *world) fleet(t *testing.T, hs []*fleettest.SimHost) *fleettest.Fleet {
	var hosts []fleettest.Host
	for _, h := range hs {
		hosts = append(hosts, h)
	}
	return w.fleetOf(t, hosts)
}

// holderIDs reads the holders of the default group from etcd (through a
// lockd.Server on the same keys).
func (w *world) holderIDs(ctx context.Context) ([]string, error) {
	st, err := w.reader.Get(ctx, fleetlock.DefaultGroup)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, h := range st.Holders {
		ids = append(ids, h.ID)
	}
	return ids, nil
}

func (w *world) fleetOf(t *testing.T, hosts []fleettest.Host) *fleettest.Fleet {
	return &fleettest.Fleet{
		Hosts: hosts,
		Client: func(h fleettest.Host) *fleetlock.Client {
			return &fleetlock.Client{Base: w.lockd.URL, ID: h.ID(), Attempts: 3, RequestTimeout: 2 * time.Second,
				Backoff: func(int) time.Duration { return w.between(20*time.Millisecond, 60*time.Millisecond) }}
		},
		Slots:        slots,
		Holders:      w.holderIDs,
		RestartDelay: func() time.Duration { return w.between(20*time.Millisecond, 150*time.Millisecond) },
		Logf:         t.Logf,
	}
}

func (w *world) holders(t *testing.T) []string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := w.reader.Get(context.Background(), fleetlock.DefaultGroup)
		if err == nil {
			var ids []string
			for _, h := range st.Holders {
				ids = append(ids, h.ID)
			}
			slices.Sort(ids)
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("reading the holders: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type chaosLog struct {
	mu                                sync.Mutex
	lockdKills, etcdPauses, hostKills int
}

// span is a range of durations to pick from.
type span struct{ lo, hi time.Duration }

// chaosPlan is how much chaos to make, and how often.
type chaosPlan struct {
	hostKills  int
	hostEvery  span
	lockdKills int
	lockdEvery span // before each kill
	lockdDown  span
	etcdPauses int
	etcdEvery  span // before each pause
	etcdFor    span
	// victims narrows the running hosts (indexes) to those worth
	// killing now; nil kills any.
	victims func(running []int) []int
}

// simChaos is the chaos of the simulated fleet (it finishes in seconds).
var simChaos = chaosPlan{
	hostKills: 20, hostEvery: span{100 * time.Millisecond, 300 * time.Millisecond},
	lockdKills: 3, lockdEvery: span{500 * time.Millisecond, 1200 * time.Millisecond}, lockdDown: span{50 * time.Millisecond, 400 * time.Millisecond},
	etcdPauses: 1, etcdEvery: span{800 * time.Millisecond, 1500 * time.Millisecond}, etcdFor: span{2 * time.Second, 3 * time.Second},
}

// chaos kills random hosts, kills and restarts updog-lockd, and pauses
// etcd with SIGSTOP, until the fleet finishes.
func (w *world) chaos(t *testing.T, log *chaosLog) func(ctx context.Context, r *fleettest.Run) {
	return w.chaosWith(t, log, simChaos)
}

func (w *world) chaosWith(t *testing.T, log *chaosLog, p chaosPlan) func(ctx context.Context, r *fleettest.Run) {
	return func(ctx context.Context, r *fleettest.Run) {
		var wg sync.WaitGroup
		wg.Go(func() { // hosts: a bounded number of crashes
			for i := 0; i < p.hostKills && ctx.Err() == nil; i++ {
				if sleepCtx(ctx, w.between(p.hostEvery.lo, p.hostEvery.hi)) != nil {
					return
				}
				run := r.Running()
				if p.victims != nil {
					run = p.victims(run)
				}
				if len(run) > 0 && r.KillHost(run[w.intn(len(run))]) {
					log.mu.Lock()
					log.hostKills++
					log.mu.Unlock()
				}
			}
		})
		wg.Go(func() { // updog-lockd: SIGKILL, down a while, restart
			for i := 0; i < p.lockdKills && ctx.Err() == nil; i++ {
				if sleepCtx(ctx, w.between(p.lockdEvery.lo, p.lockdEvery.hi)) != nil {
					return
				}
				w.lockd.Kill()
				log.mu.Lock()
				log.lockdKills++
				log.mu.Unlock()
				_ = sleepCtx(ctx, w.between(p.lockdDown.lo, p.lockdDown.hi))
				if err := w.lockd.Restart(t); err != nil {
					t.Errorf("restarting updog-lockd: %v", err)
					return
				}
			}
		})
		wg.Go(func() { // etcd: SIGSTOP for a while
			for i := 0; i < p.etcdPauses && ctx.Err() == nil; i++ {
				if sleepCtx(ctx, w.between(p.etcdEvery.lo, p.etcdEvery.hi)) != nil {
					return
				}
				if err := w.etcd.Pause(); err != nil {
					t.Errorf("pausing etcd: %v", err)
					return
				}
				log.mu.Lock()
				log.etcdPauses++
				log.mu.Unlock()
				_ = sleepCtx(context.Background(), w.between(p.etcdFor.lo, p.etcdFor.hi))
				if err := w.etcd.Resume(); err != nil {
					t.Errorf("resuming etcd: %v", err)
				}
			}
		})
		wg.Wait()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func checkSafety(t *testing.T, w *world, res fleettest.Result) {
	t.Helper()
	if len(res.Over) > 0 || res.MaxHolders > slots {
		t.Errorf("etcd had more than %d holders: max %d\n%v", slots, res.MaxHolders, res.Over)
	}
	if max, over := w.tracker.Max(); max > slots || len(over) > 0 {
		t.Errorf("more than %d hosts held a slot at once: max %d\n%v", slots, max, over)
	}
	if res.Samples == 0 {
		t.Errorf("no sample of the holders was taken")
	}
}

// TestHostileFleetRollout is issue 15's proof on the lock side: 20 hosts
// go through pre-reboot -> switch and reboot -> steady-state against
// updog-lockd with 2 slots on a real etcd, while hosts and updog-lockd are
// killed at random and etcd is paused with SIGSTOP. Never more than 2
// holders (sampled from etcd, and counted exactly on the hosts' side);
// every host ends on the new release; no slot is left held.
func TestHostileFleetRollout(t *testing.T) {
	start := time.Now()
	w := newWorld(t)
	hs := w.hosts()
	f := w.fleet(t, hs)
	var log chaosLog
	f.Chaos = w.chaos(t, &log)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res := f.Run(ctx, nil)
	t.Logf("fleet: %d done, %d failed, %d unfinished in %v; %d host kills, %d updog-lockd kills, %d etcd pauses; %d samples (max %d holders), %d failed samples",
		len(res.Done), len(res.Failed), len(res.Unfinished), res.Elapsed.Round(time.Millisecond), log.hostKills, log.lockdKills, log.etcdPauses, res.Samples, res.MaxHolders, res.SampleErrors)
	checkSafety(t, w, res)
	if len(res.Done) != nHosts {
		t.Errorf("%d of %d hosts finished; unfinished %v", len(res.Done), nHosts, res.Unfinished)
	}
	for _, h := range hs {
		if h.Phase() != fleettest.Done {
			t.Errorf("%s ends %v", h.Name, h.Phase())
		}
	}
	if left := w.holders(t); len(left) != 0 {
		t.Errorf("slots still held at the end: %v", left)
	}
	if log.etcdPauses == 0 || log.lockdKills == 0 {
		t.Logf("note: the fleet finished before all chaos ran (%d etcd pauses, %d lockd kills)", log.etcdPauses, log.lockdKills)
	}
	// updog-lockd stops cleanly on SIGTERM.
	w.lockd.Stop(10 * time.Second)
	if err := w.lockd.Err(); err != nil {
		t.Errorf("updog-lockd after SIGTERM: %v\n%s", err, w.lockd.Output())
	}
	t.Logf("TestHostileFleetRollout took %v", time.Since(start).Round(time.Millisecond))
}

// TestHostileFleetBadRelease: two hosts fail their health check after the
// reboot and keep their slots, so the rollout stops at 2 failures; after
// an operator releases their slots (`updog fleet-lock release` sends
// steady-state with their IDs) the others go through.
func TestHostileFleetBadRelease(t *testing.T) {
	start := time.Now()
	w := newWorld(t)
	hs := w.hosts(3, 11)
	f := w.fleet(t, hs)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	res := f.Run(ctx, func(done, failed int) bool { return failed == 2 })
	checkSafety(t, w, res)
	failed := slices.Sorted(slices.Values(res.Failed))
	if !slices.Equal(failed, []string{"host-03", "host-11"}) {
		t.Fatalf("failed hosts %v, want host-03 and host-11", failed)
	}
	if held := w.holders(t); !slices.Equal(held, failed) {
		t.Fatalf("holders after 2 failures %v, want the failed hosts %v", held, failed)
	}
	doneBefore := len(res.Done)

	// The rollout is stopped: the remaining hosts are refused for as long
	// as we care to watch.
	var waiting []*fleettest.SimHost
	for _, h := range hs {
		if h.Phase() == fleettest.Staged {
			waiting = append(waiting, h)
		}
	}
	refusedBefore := 0
	for _, h := range waiting {
		refusedBefore += h.Refusals()
	}
	wctx, wcancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	res = f.Run(wctx, nil)
	wcancel()
	checkSafety(t, w, res)
	if len(res.Done) != doneBefore {
		t.Errorf("hosts went through while 2 failed hosts held the slots: %d done, %d before", len(res.Done), doneBefore)
	}
	refusedAfter := 0
	for _, h := range waiting {
		refusedAfter += h.Refusals()
	}
	if len(waiting) > 0 && refusedAfter == refusedBefore {
		t.Errorf("the waiting hosts were not even refused")
	}

	// The operator releases the failed hosts' slots.
	for _, id := range failed {
		op := &fleetlock.Client{Base: w.lockd.URL, ID: id}
		if err := op.SteadyState(ctx); err != nil {
			t.Fatalf("releasing %s: %v", id, err)
		}
		w.tracker.Leave(id)
	}
	res = f.Run(ctx, nil)
	checkSafety(t, w, res)
	if len(res.Done) != nHosts-2 || len(res.Unfinished) != 0 {
		t.Errorf("after the release: %d done, unfinished %v; want %d done", len(res.Done), res.Unfinished, nHosts-2)
	}
	if left := w.holders(t); len(left) != 0 {
		t.Errorf("slots still held at the end: %v", left)
	}
	t.Logf("TestHostileFleetBadRelease: %d hosts went through before the rollout stopped; took %v", doneBefore, time.Since(start).Round(time.Millisecond))
}
