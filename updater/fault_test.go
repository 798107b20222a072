package updater

import (
	"context"
	"errors"
	"math/rand"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/repo"
)

// cutter serves the repository but cuts the body of each target request
// at the next of a list of random offsets, so the download completes only
// through Range resumes.
type cutter struct {
	mu   sync.Mutex
	cuts []int64 // offsets into the whole download, ascending
	next int
	sent int64
	f    *fixture
	hits int
}

func (c *cutter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.URL.Path, "/targets/") || strings.HasSuffix(r.URL.Path, ManifestTarget) {
		c.f.fileServer().ServeHTTP(w, r)
		return
	}
	c.mu.Lock()
	c.hits++
	budget := int64(-1)
	if c.next < len(c.cuts) {
		budget = c.cuts[c.next] - c.sent
		if budget < 0 {
			budget = 0
		}
		c.next++
	}
	c.mu.Unlock()
	cw := &cutWriter{ResponseWriter: w, budget: budget, c: c}
	c.f.fileServer().ServeHTTP(cw, r)
	if cw.cut {
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
}

type cutWriter struct {
	http.ResponseWriter
	budget int64
	cut    bool
	c      *cutter
}

func (w *cutWriter) Write(p []byte) (int, error) {
	if w.budget >= 0 && int64(len(p)) > w.budget {
		p = p[:w.budget]
		w.cut = true
	}
	n, err := w.ResponseWriter.Write(p)
	w.c.mu.Lock()
	w.c.sent += int64(n)
	w.c.mu.Unlock()
	if w.budget >= 0 {
		w.budget -= int64(n)
	}
	if w.cut {
		if fl, ok := w.ResponseWriter.(http.Flusher); ok {
			fl.Flush()
		}
		return n, errors.New("cut")
	}
	return n, err
}

// TestHostileConnectionCutAt100Offsets: the server drops the connection at
// 100 random offsets of the download; Range resumes still get the update
// done, byte-identical.
func TestHostileConnectionCutAt100Offsets(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.codec = CodecRaw // the largest download: 5 MiB and change
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	total := int64(len(r.boot) + len(r.root) + len(r.hash))
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewSource(seed))
	c := &cutter{f: f}
	for i := 0; i < 100; i++ {
		c.cuts = append(c.cuts, rnd.Int63n(total))
	}
	sortInt64(c.cuts)
	f.setHandler(c)
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now },
		Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }, Retries: 5}})
	if err != nil {
		t.Fatal(err)
	}
	u.Lock(context.Background())
	defer u.Unlock()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update through 100 cuts (seed %d): %v", seed, err)
	}
	f.assertSetHolds(gptprio.SetB, r)
	st, _ := u.Status(context.Background())
	if st.LastAttempt == nil || st.LastAttempt.Resumes < 50 {
		t.Fatalf("expected the download to resume many times, status says %+v (target requests %d)", st.LastAttempt, c.hits)
	}
	t.Logf("target requests: %d, resumes: %d", c.hits, st.LastAttempt.Resumes)
}

func sortInt64(a []int64) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// TestHostileStalledServer: a server that stops sending mid-body ends in a
// stall-timeout error, and the host is left safe.
func TestHostileStalledServer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	f.cfg.StallTimeout.Duration = 300 * time.Millisecond
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasSuffix(req.URL.Path, r.names.Root) {
			f.fileServer().ServeHTTP(w, req)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(10<<20))
		w.Write(make([]byte, 1000))
		w.(http.Flusher).Flush()
		<-release // stall
	}))
	before := f.snapshotActive()
	u := f.updater()
	start := time.Now()
	_, err := u.Update(context.Background(), UpdateOptions{Apply: true})
	if !errors.Is(err, fetch.ErrStalled) {
		t.Fatalf("stalled server: %v", err)
	}
	t.Logf("gave up after %s: %v", time.Since(start).Round(time.Millisecond), err)
	f.assertSafe(before)
}

// TestHostileCancelMidWrite: SIGTERM (a cancelled context) in the middle
// of the root image leaves the active set untouched and the inactive set
// unbootable, and a rerun completes.
func TestHostileCancelMidWrite(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.codec = CodecRaw
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, r.names.Root) {
			cancel() // the signal arrives as the root image starts
			time.Sleep(50 * time.Millisecond)
		}
		f.fileServer().ServeHTTP(w, req)
	}))
	before := f.snapshotActive()
	u := f.updater()
	_, err := u.Update(ctx, UpdateOptions{Apply: true})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled update: %v", err)
	}
	f.assertSafe(before)
	st, _ := u.Status(context.Background())
	if st.LastAttempt == nil || st.LastAttempt.Outcome != "interrupted" {
		t.Fatalf("status after the interruption: %+v", st.LastAttempt)
	}
	f.setHandler(nil)
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, r)
}

// TestHostileSecondUpdogLocked: a second updog fails at once, naming the
// first one's PID.
func TestHostileSecondUpdogLocked(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	u1 := f.updater()
	_ = u1
	u2, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a"})
	if err != nil {
		t.Fatal(err)
	}
	err = u2.Lock(context.Background())
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.PID == 0 {
		t.Fatalf("second updog: %v", err)
	}
}

// TestUnprovenRunningSetProtectsFallback: booted into the new set but not
// yet marked good, an update must not overwrite the only known-good set.
func TestUnprovenRunningSetProtectsFallback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatal(err)
	}
	f.holds[gptprio.SetB] = "1.1.0"
	u.Unlock()
	f.reboot()
	f.addRelease("1.2.0", nil)
	f.publish(repo.Options{})
	u = f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); !errors.Is(err, ErrUnproven) {
		t.Fatalf("update from an unproven set: %v", err)
	}
	tb, l := f.table()
	if a := gptprio.Attrs(tb, l, gptprio.SetA); !a.Successful() || !a.WillBoot() {
		t.Fatalf("the known-good set A was touched: %v", a)
	}
}

// TestHealthCheckGatesMarkGood: a failing check leaves the set unmarked,
// and the next boot falls back.
func TestHealthCheckGatesMarkGood(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatal(err)
	}
	f.holds[gptprio.SetB] = "1.1.0"
	u.Unlock()
	f.reboot()
	f.healthCheck("10-ok", "echo fine")
	f.healthCheck("20-bad", "echo 'kubelet is not ready' >&2; exit 3")
	f.healthCheck("30-never", "touch "+f.dir+"/ran30")
	u = f.updater()
	rep, err := u.MarkGood(context.Background())
	if !errors.Is(err, ErrHealth) || rep == nil || len(rep.Checks) != 2 || !strings.Contains(rep.Checks[1].Output, "kubelet") {
		t.Fatalf("failing health check: %v %+v", err, rep)
	}
	tb, l := f.table()
	if gptprio.Attrs(tb, l, gptprio.SetB).Successful() {
		t.Fatal("set B was marked good despite a failed check")
	}
	u.Unlock()
	if f.reboot() != gptprio.SetA {
		t.Fatal("no fallback after an unmarked boot")
	}
	// A check that hangs is stopped by health_timeout.
	f.healthCheck("20-bad", "sleep 60")
	f.cfg.HealthTimeout.Duration = 200 * time.Millisecond
	u = f.updater()
	start := time.Now()
	rep, err = u.MarkGood(context.Background())
	if !errors.Is(err, ErrHealth) || time.Since(start) > 30*time.Second || !strings.Contains(rep.Checks[1].Error, "timed out") {
		t.Fatalf("hanging check: %v %+v", err, rep)
	}
}
