package fleettest_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/internal/fleetlock"
	"github.com/updog/updog/internal/fleettest"
	"github.com/updog/updog/internal/testutil"
)

// The fleet test with real updog processes: every host is a disk image,
// a state directory, a machine ID, an os-release and a health check
// directory, driven by updog, signpost and nothing simulated, against
// updog-lockd on a real etcd and a repository published with tuftool and
// updata and served on 127.0.0.1.

const (
	variant    = "fleet"
	oldVersion = "1.0.0"
	newVersion = "1.1.0"
)

// updogWorld is a world (etcd, updog-lockd) plus the binaries, a
// published repository holding newVersion and its HTTP server.
type updogWorld struct {
	*world
	dir  string
	bin  map[string]string
	root string // the trusted root.json
	srv  *httptest.Server
	// targetBytes counts the bytes of release images served (downloads
	// and resumed downloads); releaseBytes is one whole download.
	targetBytes, targetGets atomic.Int64
	releaseBytes            int64
}

func newUpdogWorld(t *testing.T) *updogWorld {
	t.Helper()
	start := time.Now()
	w := &updogWorld{world: newWorld(t), dir: t.TempDir(), bin: map[string]string{}}
	etcd := time.Since(start)
	for _, name := range []string{"updog", "signpost", "imgbuild", "tuftool", "updata"} {
		w.bin[name] = fleettest.Build(t, testutil.ProjectRoot(), "./cmd/"+name)
	}
	built := time.Since(start)
	w.publish(t)
	t.Logf("etcd and updog-lockd up in %v, binaries built in %v, repository published in %v",
		etcd.Round(time.Millisecond), (built - etcd).Round(time.Millisecond), (time.Since(start) - built).Round(time.Millisecond))
	return w
}

// must runs one of the built commands and fails the test unless it exits 0.
func (w *updogWorld) must(t *testing.T, name string, args ...string) string {
	t.Helper()
	r, err := fleettest.RunProc(context.Background(), w.bin[name], args...)
	if err != nil || r.Code != 0 {
		t.Fatalf("%v\n%s", err, r)
	}
	return r.Stdout
}

func hostArch() string {
	switch runtime.GOARCH {
	case "arm64":
		return "aarch64"
	}
	return "x86_64"
}

// publish builds newVersion's images (boot 1 MiB, root 2 MiB, the hash
// image by imgbuild verity format), signs a repository holding them with
// tuftool and serves it.
func (w *updogWorld) publish(t *testing.T) {
	t.Helper()
	keys := filepath.Join(w.dir, "keys")
	targets := filepath.Join(w.dir, "targets")
	build := filepath.Join(w.dir, "build")
	for _, d := range []string{keys, targets, build} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(keys, "root.pem")
	w.root = filepath.Join(w.dir, "root.json")
	w.must(t, "tuftool", "gen-key", "--type", "ed25519", "--out", key)
	w.must(t, "tuftool", "root", "init", w.root)
	w.must(t, "tuftool", "root", "add-key", w.root, "-k", key, "--role", "root", "--role", "targets", "--role", "snapshot", "--role", "timestamp")
	w.must(t, "tuftool", "root", "sign", w.root, "-k", key)
	manifest := filepath.Join(w.dir, "manifest.json")
	w.must(t, "updata", "init", manifest)

	images := map[string][]byte{"boot": make([]byte, 1<<20), "root": make([]byte, 2<<20)}
	rand.Read(images["boot"])
	rand.Read(images["root"]) // incompressible: the download is as long as the image
	rootImg, hashImg := filepath.Join(build, "root.img"), filepath.Join(build, "hash.img")
	if err := os.WriteFile(rootImg, images["root"], 0o644); err != nil {
		t.Fatal(err)
	}
	out := w.must(t, "imgbuild", "verity", "format", "--json", rootImg, hashImg)
	var info struct {
		RootHash   string `json:"root_hash"`
		Salt       string `json:"salt"`
		DataBlocks uint64 `json:"data_blocks"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("imgbuild verity format --json: %v\n%s", err, out)
	}
	hash, err := os.ReadFile(hashImg)
	if err != nil {
		t.Fatal(err)
	}
	images["hash"] = hash
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	name := func(kind string) string {
		return fmt.Sprintf("%s-%s-%s-%s.img.zst", variant, hostArch(), newVersion, kind)
	}
	for kind, b := range images {
		z := enc.EncodeAll(b, nil)
		w.releaseBytes += int64(len(z))
		if err := os.WriteFile(filepath.Join(targets, name(kind)), z, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w.must(t, "updata", "add-update", manifest, "--variant", variant, "--arch", hostArch(), "--version", newVersion,
		"--boot", name("boot"), "--root", name("root"), "--hash", name("hash"),
		"--boot-size", fmt.Sprint(len(images["boot"])), "--root-size", fmt.Sprint(len(images["root"])), "--hash-size", fmt.Sprint(len(hash)),
		"--verity-root-hash", info.RootHash, "--verity-salt", info.Salt, "--verity-data-blocks", fmt.Sprint(info.DataBlocks))
	mf, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(targets, "manifest.json"), mf, 0o644); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(w.dir, "repo")
	w.must(t, "tuftool", "create", "--root", w.root, "-k", key, "--add-targets", targets, "--outdir", repo)
	files := http.FileServer(http.Dir(repo))
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".zst") {
			w.targetGets.Add(1)
			rw = &countingWriter{ResponseWriter: rw, n: &w.targetBytes}
		}
		files.ServeHTTP(rw, r)
	}))
	t.Cleanup(w.srv.Close)
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// updogHosts makes nHosts hosts on oldVersion in set A, each with its own
// disk image (imgbuild disk, sparse), state directory, machine ID,
// os-release and health checks; the hosts numbered in failing get a
// health check that fails.
func (w *updogWorld) updogHosts(t *testing.T, failing ...int) []*fleettest.UpdogHost {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("%d hosts made in %v", nHosts, time.Since(start).Round(time.Millisecond)) }()
	hs := make([]*fleettest.UpdogHost, nHosts)
	errs := make([]error, nHosts)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	for i := range nHosts {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			hs[i], errs[i] = w.updogHost(i, slices.Contains(failing, i))
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]bool{}
	for _, h := range hs {
		if ids[h.ID()] || strings.HasPrefix(h.ID(), "invalid:") {
			t.Fatalf("%s: FleetLock ID %q is not unique or invalid", h.Name, h.ID())
		}
		ids[h.ID()] = true
	}
	return hs
}

func (w *updogWorld) updogHost(i int, failing bool) (*fleettest.UpdogHost, error) {
	name := fmt.Sprintf("host-%02d", i)
	dir := filepath.Join(w.dir, "hosts", name)
	health := filepath.Join(dir, "health.d")
	if err := os.MkdirAll(health, 0o755); err != nil {
		return nil, err
	}
	h := &fleettest.UpdogHost{
		Name: name, Updog: w.bin["updog"], Signpost: w.bin["signpost"],
		Config: filepath.Join(dir, "updog.toml"), Disk: filepath.Join(dir, "disk.img"),
		OSRelease: filepath.Join(dir, "os-release"), MachineID: filepath.Join(dir, "machine-id"), StateDir: filepath.Join(dir, "state"),
		Variant: variant, Versions: map[string]string{"a": oldVersion, "b": newVersion},
		// 300ms growing by half each time up to 1.5s, plus up to as much
		// again so that the fleet does not retry in step.
		Backoff: func(n int) time.Duration {
			d := 300 * time.Millisecond
			for range min(n-1, 4) {
				d = d * 3 / 2
			}
			d = min(d, 1500*time.Millisecond)
			return w.between(d, 2*d)
		},
		Holders: w.holderIDs, Tracker: w.tracker,
	}
	r, err := fleettest.RunProc(context.Background(), w.bin["imgbuild"], "disk", "--size", "224MiB", h.Disk)
	if err != nil || r.Code != 0 {
		return nil, fmt.Errorf("%s: %v\n%s", name, err, r)
	}
	check := "#!/bin/sh\necho healthy\n"
	if failing {
		check = "#!/bin/sh\necho 'the new release does not serve' >&2\nexit 1\n"
	}
	files := map[string]string{
		h.OSRelease:                        fmt.Sprintf("VARIANT_ID=%s\nVERSION_ID=%s\n", variant, oldVersion),
		h.MachineID:                        fmt.Sprintf("%08x%024x\n", 0xf1ee7000+i, i*7919+1),
		filepath.Join(health, "10-serves"): check,
		h.Config: fmt.Sprintf(`metadata_base_url = "%s/metadata"
targets_base_url = "%s/targets"
seed = %d
trusted_root = %q
state_dir = %q
os_release = %q
health_dir = %q
machine_id = %q
health_timeout = "30s"

[reboot]
strategy = "fleet_lock"
fleet_lock_url = %q
group = "default"
# Each run asks again for a second, not the default minutes: the host's
# agent (Cycle) runs updog again after exit 6, so that kills land on
# fresh processes.
fleet_lock_wait = "1s"
`, w.srv.URL, w.srv.URL, i*97, w.root, h.StateDir, h.OSRelease, health, h.MachineID, w.lockd.URL),
	}
	for path, content := range files {
		mode := os.FileMode(0o644)
		if filepath.Dir(path) == health {
			mode = 0o755
		}
		if err := os.WriteFile(path, []byte(content), mode); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// lateHost is a host that boots late: its first Cycle waits until ready
// says so.
type lateHost struct {
	fleettest.Host
	ready func() bool
}

func (l *lateHost) Cycle(ctx context.Context, c *fleetlock.Client) error {
	for !l.ready() {
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	return l.Host.Cycle(ctx, c)
}

// updogFleet is the fleet of hosts, with names for the IDs in messages.
// ready, when not nil, says when host i boots.
func (w *updogWorld) updogFleet(t *testing.T, hs []*fleettest.UpdogHost, ready func(i int) bool) (*fleettest.Fleet, func(ids []string) []string) {
	var hosts []fleettest.Host
	names := map[string]string{}
	for i, h := range hs {
		h.Logf = t.Logf
		names[h.ID()] = h.Name
		if ready != nil {
			hosts = append(hosts, &lateHost{Host: h, ready: func() bool { return ready(i) }})
			continue
		}
		hosts = append(hosts, h)
	}
	f := w.fleetOf(t, hosts)
	f.SampleEvery = 20 * time.Millisecond
	f.RestartDelay = func() time.Duration { return w.between(50*time.Millisecond, 300*time.Millisecond) }
	return f, func(ids []string) []string {
		var out []string
		for _, id := range ids {
			if n, ok := names[id]; ok {
				out = append(out, n)
			} else {
				out = append(out, id)
			}
		}
		sort.Strings(out)
		return out
	}
}

// checkHosts checks, with updog status, that the hosts run what they
// should, and reports what updog did wrong on the way.
func checkHosts(t *testing.T, hs []*fleettest.UpdogHost, failed ...int) {
	t.Helper()
	for i, h := range hs {
		for _, p := range h.Problems() {
			t.Errorf("%s", p)
		}
		st, r, err := h.Status()
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if slices.Contains(failed, i) {
			if st.Active != "a" || st.Running == nil || st.Running.Version != oldVersion || len(st.Failed) == 0 || st.Failed[0].Version != newVersion {
				t.Errorf("%s (failed its health check) should run %s in set A with %s recorded as failed:\n%s", h.Name, oldVersion, newVersion, r)
			}
			continue
		}
		if h.Step() != fleettest.StepDone || st.Active != "b" || st.Next != "b" || !st.Sets["b"].Successful || st.State != "idle" ||
			st.Pending != nil || st.Reboot.Lock != nil || st.Running == nil || st.Running.Version != newVersion {
			t.Errorf("%s ends at step %v, not on %s in set B marked good, idle, without a slot:\n%s", h.Name, h.Step(), newVersion, r)
		}
	}
}

// fleetStats sums the hosts' process statistics.
func fleetStats(hs []*fleettest.UpdogHost) string {
	var runs, refusals, settles, unchecked, errs int
	killed := map[string]int{}
	for _, h := range hs {
		s := h.Stats()
		runs += s.Runs
		refusals += s.Refusals
		settles += s.Settles
		unchecked += s.Unchecked
		errs += s.Errors
		for k, v := range s.Killed {
			killed[k] += v
		}
	}
	var ks []string
	for _, k := range slices.Sorted(maps.Keys(killed)) {
		ks = append(ks, fmt.Sprintf("%s %d", k, killed[k]))
	}
	return fmt.Sprintf("%d updog runs; SIGKILLed: %s; %d refused (exit 6); %d failed (exit 1) on the start right after a kill and were retried; %d slots given back on a later start; %d switched-disk checks skipped",
		runs, strings.Join(ks, ", "), refusals, errs, settles, unchecked)
}

// checkDownloads checks that a staged update is not downloaded again when
// `updog update` runs again after exit 6 (it goes straight to the slot
// and the switch): the repository served at most one release per host,
// plus one per update process killed or failed (a kill may cost the
// bytes after the last checkpoint, or the whole release).
func (w *updogWorld) checkDownloads(t *testing.T, hs []*fleettest.UpdogHost) {
	t.Helper()
	extra, refusals := 0, 0
	for _, h := range hs {
		s := h.Stats()
		extra += s.Killed["update"] + s.Errors
		refusals += s.Refusals
	}
	if refusals == 0 {
		t.Errorf("no update was refused a slot: the staged path was not exercised")
	}
	if served, limit := w.targetBytes.Load(), int64(nHosts+extra)*w.releaseBytes; served > limit {
		t.Errorf("the repository served %d bytes of images, more than %d releases of %d bytes (%d hosts, %d updates killed or failed, %d refused): staged updates were downloaded again",
			served, nHosts+extra, w.releaseBytes, nHosts, extra, refusals)
	}
}

func (w *updogWorld) servedStats() string {
	return fmt.Sprintf("%d image requests, %d bytes served (%.2f whole downloads of %d bytes for %d hosts)",
		w.targetGets.Load(), w.targetBytes.Load(), float64(w.targetBytes.Load())/float64(w.releaseBytes), w.releaseBytes, nHosts)
}

// busy narrows the running hosts to those running an updog command that
// changes something (not status) now: the kills land on real processes.
func busy(hs []*fleettest.UpdogHost) func(running []int) []int {
	return func(running []int) []int {
		var b []int
		for _, i := range running {
			if c := hs[i].Busy(); c != "" && c != "status" && c != "reboot-needed" {
				b = append(b, i)
			}
		}
		return b
	}
}

// TestHostileFleetUpdogRollout is issue 15's fleet proof with real
// processes: 20 hosts, each its own disk image and state, go from 1.0.0
// in set A to 1.1.0 in set B through `updog update` (staged, then retried
// while the fleet lock refuses a slot: exit 6), the switch, the reboot
// (`signpost next`), `updog mark-good` and the slot given back, against
// updog-lockd with 2 slots on a real etcd. Meanwhile running updog
// processes are SIGKILLed at random (a fresh updog starts the step
// again), updog-lockd is killed and restarted, and etcd is paused with
// SIGSTOP. Never more than 2 holders in etcd (sampled), never more than 2
// hosts between their switch and their mark-good, never a switched disk
// on a host without a slot; every host ends on 1.1.0 in set B, marked
// good, idle, and no slot is left held.
func TestHostileFleetUpdogRollout(t *testing.T) {
	start := time.Now()
	w := newUpdogWorld(t)
	hs := w.updogHosts(t)
	f, names := w.updogFleet(t, hs, nil)
	var log chaosLog
	plan := chaosPlan{
		hostKills: 60, hostEvery: span{100 * time.Millisecond, 500 * time.Millisecond},
		lockdKills: 4, lockdEvery: span{1500 * time.Millisecond, 4 * time.Second}, lockdDown: span{100 * time.Millisecond, 1500 * time.Millisecond},
		etcdPauses: 2, etcdEvery: span{2 * time.Second, 6 * time.Second}, etcdFor: span{2 * time.Second, 4 * time.Second},
		victims: busy(hs),
	}
	f.Chaos = w.chaosWith(t, &log, plan)
	t.Logf("setup took %v", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res := f.Run(ctx, nil)
	t.Logf("fleet: %d done, %d failed, %d unfinished in %v; %d host kills, %d updog-lockd kills, %d etcd pauses; %d samples (max %d holders), %d failed samples",
		len(res.Done), len(res.Failed), len(res.Unfinished), res.Elapsed.Round(time.Millisecond), log.hostKills, log.lockdKills, log.etcdPauses,
		res.Samples, res.MaxHolders, res.SampleErrors)
	t.Logf("hosts: %s", fleetStats(hs))
	t.Logf("repository: %s", w.servedStats())
	checkSafety(t, w.world, res)
	if len(res.Done) != nHosts {
		t.Errorf("%d of %d hosts finished; failed %v, unfinished %v", len(res.Done), nHosts, names(res.Failed), names(res.Unfinished))
	}
	checkHosts(t, hs)
	w.checkDownloads(t, hs)
	if left := w.holders(t); len(left) != 0 {
		t.Errorf("slots still held at the end: %v", names(left))
	}
	t.Logf("TestHostileFleetUpdogRollout took %v", time.Since(start).Round(time.Millisecond))
}

// TestHostileFleetUpdogBadRelease: two of the 20 hosts get a health check
// that fails. Three hosts go through first; then the two bad ones take the
// slots, their mark-good fails, the next reboot falls back to 1.0.0, and
// updog records the release as failed and keeps their slots (through
// SIGKILLs of their updog processes, kills of updog-lockd and a SIGSTOP
// of etcd, as in TestHostileFleetUpdogRollout; never more than 2 holders
// sampled), so the rollout stops at 2 failures:
// the 15 hosts still on 1.0.0 are refused (exit 6, "2 of 2 slots held",
// status waiting_lock) for as long as we watch. After an operator's
// `updog fleet-lock release` on the two, the rest finish.
func TestHostileFleetUpdogBadRelease(t *testing.T) {
	start := time.Now()
	w := newUpdogWorld(t)
	bad := []int{3, 11}
	hs := w.updogHosts(t, bad...)
	// The order of a rollout, made certain: a few hosts go through
	// first, then the two bad ones take the slots, and only then do the
	// others boot and ask (so that they are the ones left waiting).
	early := []int{0, 1, 2}
	f, names := w.updogFleet(t, hs, func(i int) bool {
		switch {
		case slices.Contains(early, i):
			return true
		case slices.Contains(bad, i):
			for _, e := range early {
				if hs[e].Step() != fleettest.StepDone {
					return false
				}
			}
			return true
		}
		for _, b := range bad {
			if hs[b].Step() < fleettest.StepReboot {
				return false
			}
		}
		return true
	})
	// The chaos of TestHostileFleetUpdogRollout while the rollout runs
	// into the bad release: updog processes SIGKILLed, updog-lockd killed
	// and restarted, etcd paused with SIGSTOP. None of it may let a third
	// host in or give a failed host's slot away.
	var log chaosLog
	f.Chaos = w.chaosWith(t, &log, chaosPlan{
		hostKills: 15, hostEvery: span{200 * time.Millisecond, 600 * time.Millisecond},
		lockdKills: 3, lockdEvery: span{time.Second, 3 * time.Second}, lockdDown: span{100 * time.Millisecond, 1500 * time.Millisecond},
		etcdPauses: 1, etcdEvery: span{time.Second, 3 * time.Second}, etcdFor: span{2 * time.Second, 4 * time.Second},
		victims: busy(hs),
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	res := f.Run(ctx, func(done, failed int) bool { return failed == 2 })
	f.Chaos = nil
	t.Logf("until 2 failures: %d done, %d failed in %v; %d host kills, %d updog-lockd kills, %d etcd pauses; %d samples (max %d holders), %d failed samples",
		len(res.Done), len(res.Failed), res.Elapsed.Round(time.Millisecond), log.hostKills, log.lockdKills, log.etcdPauses,
		res.Samples, res.MaxHolders, res.SampleErrors)
	if log.lockdKills == 0 || log.etcdPauses == 0 {
		t.Errorf("the rollout stopped before the chaos ran (%d updog-lockd kills, %d etcd pauses): this run shows less than it should",
			log.lockdKills, log.etcdPauses)
	}
	checkSafety(t, w.world, res)
	want := names([]string{hs[bad[0]].ID(), hs[bad[1]].ID()})
	if got := names(res.Failed); !slices.Equal(got, want) {
		t.Fatalf("failed hosts %v, want %v", got, want)
	}
	if held := names(w.holders(t)); !slices.Equal(held, want) {
		t.Fatalf("holders after 2 failures %v, want the failed hosts %v", held, want)
	}
	doneBefore := len(res.Done)
	t.Logf("%d hosts went through before the rollout stopped at 2 failures", doneBefore)
	if doneBefore != len(early) {
		t.Errorf("%d hosts went through before the rollout stopped at 2 failures, want the %d early ones", doneBefore, len(early))
	}

	// The rollout is stopped: the others are refused for as long as we
	// watch.
	var waiting []*fleettest.UpdogHost
	for _, h := range hs {
		if h.Step() == fleettest.StepUpdate {
			waiting = append(waiting, h)
		}
	}
	refusals := func() int {
		n := 0
		for _, h := range waiting {
			n += h.Stats().Refusals
		}
		return n
	}
	before := refusals()
	wctx, wcancel := context.WithTimeout(ctx, 4*time.Second)
	res = f.Run(wctx, nil)
	wcancel()
	checkSafety(t, w.world, res)
	if len(res.Done) != doneBefore {
		t.Errorf("hosts went through while 2 failed hosts kept the slots: %d done, %d before", len(res.Done), doneBefore)
	}
	if len(waiting) == 0 {
		t.Errorf("no host was left waiting when the rollout stopped: this run shows nothing")
	} else if refusals() == before {
		t.Errorf("the %d waiting hosts were not refused while we watched", len(waiting))
	}
	// Each of them, asked once more, is refused a slot and says so.
	for _, h := range waiting {
		r, err := h.Exec(ctx, "update")
		if err != nil {
			t.Fatal(err)
		}
		if r.Code != 6 || !strings.Contains(r.Stderr, "2 of 2 slots held") {
			t.Errorf("%s: want exit 6, refused with 2 of 2 slots held:\n%s", h.Name, r)
		}
		if st, r, err := h.Status(); err != nil {
			t.Error(err)
		} else if w := st.Reboot.Waiting; st.State != "waiting_lock" || w == nil || w.Reason != "lock" || w.Holders != 2 || w.Slots != 2 {
			t.Errorf("%s waits for a slot: want state waiting_lock and reboot.waiting with 2 holders of 2 slots:\n%s", h.Name, r)
		}
	}
	t.Logf("while stopped: %d refusals in %d waiting hosts", refusals()-before, len(waiting))

	// The operator releases the failed hosts' slots.
	for _, i := range bad {
		h := hs[i]
		r, err := h.Exec(ctx, "fleet-lock", "release")
		if err != nil || r.Code != 0 {
			t.Fatalf("%s: %v\n%s", h.Name, err, r)
		}
		if st, r, err := h.Status(); err != nil {
			t.Fatal(err)
		} else if st.Reboot.Lock != nil {
			t.Errorf("%s: the slot is still recorded after fleet-lock release:\n%s", h.Name, r)
		}
	}
	if held := w.holders(t); len(held) != 0 {
		t.Fatalf("holders after the operator's release: %v", names(held))
	}
	res = f.Run(ctx, nil)
	checkSafety(t, w.world, res)
	if len(res.Done) != nHosts-2 || len(res.Unfinished) != 0 {
		t.Errorf("after the release: %d done, unfinished %v; want %d done", len(res.Done), names(res.Unfinished), nHosts-2)
	}
	checkHosts(t, hs, bad...)
	w.checkDownloads(t, hs)
	if left := w.holders(t); len(left) != 0 {
		t.Errorf("slots still held at the end: %v", names(left))
	}
	t.Logf("hosts: %s", fleetStats(hs))
	t.Logf("repository: %s", w.servedStats())
	t.Logf("TestHostileFleetUpdogBadRelease took %v", time.Since(start).Round(time.Millisecond))
}
