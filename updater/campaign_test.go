package updater

import (
	"context"
	"errors"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/repo"
)

// The campaign: one release installed while the test interrupts it at
// random points of its root image's download (seeded, the seed printed):
// it drops the HTTP connection (updog goes on with a Range request), kills
// updog (from that instant nothing more of it reaches the disk or the
// state directory), or cuts the power (the same, and the partition loses
// every write since its last sync). After each kill or power cut a new
// updog goes on from the checkpoint. The install must end with set B
// byte-identical to the release and switched to, set A untouched, and no
// interruption may cost more than the checkpoint interval plus the
// read-ahead plus one frame of re-download.
//
// make test runs a 48 MiB release with 30 points; UPDOG_CAMPAIGN=full
// (the slow tier of .ci/run) runs the 256 MiB with 200 points.
func TestCampaign(t *testing.T) {
	t.Parallel()
	rootMiB, points := 48, 30
	if os.Getenv("UPDOG_CAMPAIGN") == "full" {
		rootMiB, points = 256, 200
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("UPDOG_CAMPAIGN_SEED"); s != "" {
		seed, _ = strconv.ParseInt(s, 10, 64)
	}
	t.Logf("campaign: %d MiB root, %d interruption points, seed %d (UPDOG_CAMPAIGN_SEED replays it)", rootMiB, points, seed)
	rnd := rand.New(rand.NewSource(seed))

	f := newFixtureRoot(t, int64(rootMiB)+8)
	f.frames = 8 << 20 // as imgbuild writes them
	f.rootBytes = rootMiB << 20
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	fi, err := os.Stat(f.storedTarget(r.names.Root))
	if err != nil {
		t.Fatal(err)
	}
	rootLen := fi.Size()
	frame := int64(len(zstdFrames(t, r.root[:8<<20], 8<<20)))
	before := f.snapshotActive()

	c := &campaign{f: f, target: r.names.Root}
	for i := 0; i < points; i++ {
		c.points = append(c.points, point{at: rnd.Int63n(rootLen), kind: []string{"cut", "kill", "power"}[rnd.Intn(3)]})
	}
	sort.Slice(c.points, func(i, j int) bool { return c.points[i].at < c.points[j].at })
	f.setHandler(c)

	var readTwice, sentTwice []int64
	kinds := map[string]int{}
	for run := 0; ; run++ {
		if run > 3*points+10 {
			t.Fatalf("no end after %d runs", run)
		}
		ctx, cancel := context.WithCancel(context.Background())
		prog := &consumed{}
		j := &journal{}
		u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now }, Progress: prog,
			Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }, Retries: 10},
			WrapPartition: func(kind string, d blockdev.Device) blockdev.Device {
				if kind != KindRoot {
					return d
				}
				j.Device = d
				return j
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := u.Lock(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.arm(func(kind string) {
			u.store.frozen.Store(true)
			j.mu.Lock()
			if kind == "power" {
				j.crashLocked()
			} else {
				j.dead = true
			}
			j.mu.Unlock()
			cancel()
		})
		_, err = u.Update(ctx, UpdateOptions{Apply: true})
		crash := c.disarm()
		u.Unlock()
		cancel()
		if crash == "" {
			if err != nil {
				t.Fatalf("run %d failed without being interrupted: %v", run, err)
			}
			break
		}
		kinds[crash]++
		if err == nil {
			t.Fatalf("run %d finished despite a %s", run, crash)
		}
		// Where the next run goes on from.
		cp, lerr := u.store.loadCheckpoint()
		resume := int64(0)
		if lerr == nil && cp.Images[KindRoot] != nil && !cp.Images[KindRoot].Done {
			resume = cp.Images[KindRoot].In
		}
		readTwice = append(readTwice, prog.get(KindRoot)-resume)
		sentTwice = append(sentTwice, c.lastSent()-resume)
	}
	f.assertSetHolds(gptprio.SetB, r)
	tb, l := f.table()
	if n, _ := gptprio.Next(tb); n != gptprio.SetB || !gptprio.Attrs(tb, l, gptprio.SetB).WillBoot() {
		t.Fatalf("set B is not the next boot: %v", gptprio.Attrs(tb, l, gptprio.SetB))
	}
	after := f.snapshotActive()
	for n, s := range before.sums {
		if after.sums[n] != s {
			t.Fatalf("set A's partition %d changed", n)
		}
	}
	max, med := stats(readTwice)
	smax, smed := stats(sentTwice)
	t.Logf("interruptions: %v; restarts %d; read twice per restart: max %d, median %d; sent twice by the server (socket buffers included): max %d, median %d; frame %d bytes",
		kinds, len(readTwice), max, med, smax, smed, frame)
	if limit := DefaultCheckpointEvery + readAhead + frame; max > limit {
		t.Fatalf("an interruption cost %d bytes of re-download, more than %d", max, limit)
	}
}

func stats(v []int64) (max, median int64) {
	if len(v) == 0 {
		return 0, 0
	}
	s := append([]int64(nil), v...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)-1], s[len(s)/2]
}

type point struct {
	at   int64
	kind string
}

// campaign serves the repository and interrupts the root image's
// download at its points.
type campaign struct {
	f      *fixture
	target string
	mu     sync.Mutex
	points []point
	next   int
	crash  func(kind string)
	hit    string // the kind of the crash of the current run
	sent   int64  // the furthest offset of the root served in this run
}

func (c *campaign) arm(crash func(string)) {
	c.mu.Lock()
	c.crash, c.hit, c.sent = crash, "", 0
	c.mu.Unlock()
}

func (c *campaign) disarm() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.crash = nil
	return c.hit
}

func (c *campaign) lastSent() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sent
}

func (c *campaign) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, c.target) {
		c.f.fileServer().ServeHTTP(w, r)
		return
	}
	start := int64(0)
	if rg := r.Header.Get("Range"); strings.HasPrefix(rg, "bytes=") {
		start, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64)
	}
	cw := &campaignWriter{ResponseWriter: w, c: c, off: start}
	c.f.fileServer().ServeHTTP(cw, r)
	if cw.cut {
		panic(http.ErrAbortHandler)
	}
}

type campaignWriter struct {
	http.ResponseWriter
	c   *campaign
	off int64
	cut bool
}

func (w *campaignWriter) Write(p []byte) (int, error) {
	if w.cut {
		return 0, errors.New("cut")
	}
	c := w.c
	c.mu.Lock()
	var act string
	var crash func(string)
	if c.next < len(c.points) && c.hit == "" && w.off+int64(len(p)) > c.points[c.next].at {
		pt := c.points[c.next]
		c.next++
		p = p[:max(0, pt.at-w.off)]
		act, crash = pt.kind, c.crash
		if act != "cut" {
			c.hit = act
		}
	}
	c.mu.Unlock()
	n, err := w.ResponseWriter.Write(p)
	w.off += int64(n)
	c.mu.Lock()
	c.sent = max(c.sent, w.off)
	c.mu.Unlock()
	if act != "" {
		if fl, ok := w.ResponseWriter.(http.Flusher); ok {
			fl.Flush()
		}
		if act != "cut" && crash != nil {
			crash(act)
		}
		w.cut = true
		return n, errors.New("interrupted")
	}
	return n, err
}
