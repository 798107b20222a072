package updater

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/repo"
)

// TestCampaignProcess is TestCampaign with real processes and real
// SIGKILLs: the updog binary, built from cmd/updog, installs a release
// into the fixture's disk image as a child process (`updog --json
// update`), and the test kills it (SIGKILL) at seeded random moments
// spread over the whole install:
//   - in the boot, hash and root images' downloads, at a random byte of
//     the target as the server sends it (the server stops the process
//     there, counts what it has not read yet, and kills it);
//   - in the read-back verification: a random delay after the --json
//     progress line that starts it (boot, hash), or once the process has
//     read a random part of the root (/proc/PID/io; the lag in reading
//     the progress line moves some of these past the verification, into
//     the end of the install);
//   - around the switch, at the commit points, where the process stops
//     itself (the binary is built with internal/failpoint's tag, and
//     UPDOG_FAILPOINT names the point) for the test to look and kill it:
//     after the state says the set is written and before the install
//     drops its checkpoint, or once it dropped it (the state must say
//     written by then; one of the two, at random); once a run that found
//     the set staged dropped the checkpoint; inside the switch's table write (after its first
//     or second write: backup entries, backup header); after the switch
//     and before the state says applied. Watching the state directory
//     from outside (inotify) and stopping the process when it changed
//     missed these now and then: the process ran on while the watcher
//     woke up.
//
// After every kill set A is byte-identical to before and can boot, and
// either set A boots next and set B cannot boot, or (once the switch is
// made) set B boots next and holds the whole release; the install is
// rerun until it completes, and then set B holds the release and boots
// next. Every kill may cost at most the checkpoint interval plus the
// read-ahead plus one frame of re-download (8 MiB plus one frame): the
// bytes of the targets the killed process and those before it had read
// (sent by the server, less what still sat in the sockets' queues) that
// the next process asks for again.
//
// It builds a binary and kills it about 45 times: make test-slow runs it
// (UPDOG_CAMPAIGN set); UPDOG_CAMPAIGN_SEED replays a seed.
func TestCampaignProcess(t *testing.T) {
	if os.Getenv("UPDOG_CAMPAIGN") == "" {
		t.Skip("slow (builds updog and SIGKILLs it about 45 times): set UPDOG_CAMPAIGN=1 (make test-slow)")
	}
	const rootMiB = 64
	seed := time.Now().UnixNano()
	if s := os.Getenv("UPDOG_CAMPAIGN_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("UPDOG_CAMPAIGN_SEED: %v", err)
		}
	}
	t.Logf("process campaign: %d MiB root, seed %d (UPDOG_CAMPAIGN_SEED replays it)", rootMiB, seed)
	rnd := rand.New(rand.NewSource(seed))
	start := time.Now()
	bin := buildUpdog(t)
	t.Logf("built updog in %v", time.Since(start).Round(time.Millisecond))

	f := newFixtureRoot(t, rootMiB+8)
	// The binary checks the metadata's expiry against the clock.
	f.now = time.Now().UTC()
	f.frames = 8 << 20 // as imgbuild writes them
	f.rootBytes = rootMiB << 20
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	names := map[string]string{KindBoot: r.names.Boot, KindHash: r.names.Hash, KindRoot: r.names.Root}
	lengths := map[string]int64{}
	for kind, n := range names {
		fi, err := os.Stat(f.storedTarget(n))
		if err != nil {
			t.Fatal(err)
		}
		lengths[kind] = fi.Size()
	}
	frame := int64(len(zstdFrames(t, r.root[:8<<20], 8<<20)))
	config := filepath.Join(f.dir, "updog.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`metadata_base_url = %q
targets_base_url = %q
seed = 100
trusted_root = %q
state_dir = %q
os_release = %q
health_dir = %q
machine_id = %q
`, f.cfg.MetadataBaseURL, f.cfg.TargetsBaseURL, f.cfg.TrustedRoot, f.cfg.StateDir, f.cfg.OSRelease, f.cfg.HealthDir,
		f.cfg.MachineID)), 0o644); err != nil {
		t.Fatal(err)
	}
	before := f.snapshotActive()
	plan := planKills(rnd, lengths)
	srv := &procServer{f: f, names: names}
	_, sport, _ := net.SplitHostPort(f.srv.Listener.Addr().String())
	srv.port, _ = strconv.Atoi(sport)
	f.setHandler(srv)
	t.Logf("setup took %v; targets: boot %d, hash %d, root %d compressed bytes; %d kills planned",
		time.Since(start).Round(time.Millisecond), lengths[KindBoot], lengths[KindHash], lengths[KindRoot], len(plan))

	var runs []*procRun
	switched := false
	for i := 0; ; i++ {
		if i > len(plan)+5 {
			t.Fatalf("no end after %d runs", i)
		}
		var k *procKill
		if i < len(plan) {
			k = &plan[i]
		}
		if k != nil && testing.Verbose() {
			t.Logf("run %d: kill %s", i, k)
		}
		run := srv.runOnce(t, bin, config, f, k, int64(len(r.root)))
		runs = append(runs, run)
		if !run.killed {
			if run.err != nil {
				t.Fatalf("run %d failed without being killed: %v\n%s", i, run.err, run.tail())
			}
			break
		}
		if run.err == nil {
			t.Fatalf("run %d finished despite its kill", i)
		}
		// What a kill may leave: set A as it was, and either set A boots
		// next and set B cannot boot, or the switch was made and set B
		// holds the whole release.
		after := f.snapshotActive()
		for n, s := range before.sums {
			if after.sums[n] != s {
				t.Fatalf("kill %d (%s): set A's partition %d changed", i, run.where(), n)
			}
		}
		tb, l := f.table()
		next, err := gptprio.Next(tb)
		if err != nil {
			t.Fatalf("kill %d (%s): no set boots: %v", i, run.where(), err)
		}
		if !gptprio.Attrs(tb, l, gptprio.SetA).WillBoot() {
			t.Fatalf("kill %d (%s): set A cannot boot: %v", i, run.where(), gptprio.Attrs(tb, l, gptprio.SetA))
		}
		switch {
		case next == gptprio.SetB:
			if !gptprio.Attrs(tb, l, gptprio.SetB).WillBoot() {
				t.Fatalf("kill %d (%s): set B is next but cannot boot: %v", i, run.where(), gptprio.Attrs(tb, l, gptprio.SetB))
			}
			f.assertSetHolds(gptprio.SetB, r)
			switched = true
			run.next = "b"
		case switched:
			t.Fatalf("kill %d (%s): the next boot went back to set %s after the switch", i, run.where(), next)
		case gptprio.Attrs(tb, l, gptprio.SetB).WillBoot():
			t.Fatalf("kill %d (%s): set B can boot before the switch: %v", i, run.where(), gptprio.Attrs(tb, l, gptprio.SetB))
		default:
			run.next = "a"
		}
		run.cp = readCheckpointFile(t, filepath.Join(f.cfg.StateDir, checkpointFile))
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
	if _, err := os.Stat(filepath.Join(f.cfg.StateDir, checkpointFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the checkpoint outlived the install: %v", err)
	}

	// What each kill cost: of each target, the bytes read before (by the
	// killed process or an earlier one) that the next process asks for
	// again.
	limit := DefaultCheckpointEvery + readAhead + frame
	var readTwice, sentTwice []int64
	phases := map[string]int{}
	read, sent := map[string]int64{}, map[string]int64{} // the furthest offsets reached
	for i, run := range runs[:len(runs)-1] {
		for kind := range run.from {
			read[kind] = max(read[kind], run.sent[kind]-run.queued[kind])
			sent[kind] = max(sent[kind], run.sent[kind])
		}
		nx := runs[i+1]
		var again, sentAgain int64
		for kind, from := range nx.from {
			again += max(0, read[kind]-from)
			sentAgain += max(0, sent[kind]-from)
		}
		readTwice, sentTwice = append(readTwice, again), append(sentTwice, sentAgain)
		phases[run.phase()]++
		t.Logf("kill %2d %-44s next boot %s; checkpoint %s; the next run asks for %s: %d bytes read twice (%d sent twice)",
			i, run.where(), run.next, cpSummary(run.cp), fromSummary(nx.from), again, sentAgain)
		if ip := run.cp.image(run.kill); ip != nil && !ip.Done && nx.from[run.kill.image] != ip.In {
			t.Errorf("kill %d: the checkpoint restarts the %s image at %d, the next run asked for it from %d",
				i, run.kill.image, ip.In, nx.from[run.kill.image])
		}
		if again > limit {
			t.Errorf("kill %d (%s) cost %d bytes of re-download, more than %d (%d + %d + a frame of %d)",
				i, run.where(), again, limit, DefaultCheckpointEvery, readAhead, frame)
		}
	}
	mx, med := stats(readTwice)
	smx, smed := stats(sentTwice)
	t.Logf("%d kills (%v), %d runs in %v; read twice per kill: max %d, median %d (bound %d); sent twice: max %d, median %d; seed %d",
		len(runs)-1, phases, len(runs), time.Since(start).Round(time.Millisecond), mx, med, limit, smx, smed, seed)
	if len(runs)-1 < 30 {
		t.Errorf("only %d kills landed before the install completed (seed %d)", len(runs)-1, seed)
	}
	// Every commit point is reached, each by a run of its own.
	for _, k := range plan {
		if k.phase == "commit" && phases["commit: "+k.image] == 0 {
			t.Errorf("no kill at the commit point %q (seed %d)", k.image, seed)
		}
	}
}

// buildUpdog builds cmd/updog into a temporary directory.
func buildUpdog(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-tags", "updog_failpoints", "-o", filepath.Join(dir, "updog"), "./cmd/updog")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/updog: %v\n%s", err, out)
	}
	return filepath.Join(dir, "updog")
}

// procKill is a planned kill: at byte at of an image's target as the
// server sends it (phase "download"); a delay after the progress line
// that starts an image's verification, or a part of the root read
// (phase "verify"); or at a commit point (phase "commit", image says
// which; at counts the table's writes of a torn switch).
type procKill struct {
	phase string // download, verify, commit
	image string
	at    int64
	frac  float64 // of the root's verification
	delay time.Duration
}

func (k *procKill) String() string {
	switch k.phase {
	case "download":
		return fmt.Sprintf("download %s at %d", k.image, k.at)
	case "verify":
		if k.image == KindRoot {
			return fmt.Sprintf("verify root at %.0f%%", 100*k.frac)
		}
		return fmt.Sprintf("verify %s +%v", k.image, k.delay.Round(time.Microsecond))
	case "commit":
		if k.image == commitTorn {
			return fmt.Sprintf("commit: %s after write %d", k.image, k.at)
		}
		return "commit: " + k.image
	}
	return k.phase
}

var imageOrder = map[string]int{KindBoot: 0, KindHash: 1, KindRoot: 2}

// planKills spreads about 45 kills over an install, in its order.
func planKills(rnd *rand.Rand, lengths map[string]int64) []procKill {
	var plan []procKill
	for _, x := range []struct {
		image string
		n     int
	}{{KindBoot, 2}, {KindHash, 2}, {KindRoot, 28}} {
		var at []int64
		for i := 0; i < x.n; i++ {
			at = append(at, rnd.Int63n(lengths[x.image]))
		}
		sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
		for _, a := range at {
			plan = append(plan, procKill{phase: "download", image: x.image, at: a})
		}
	}
	plan = append(plan,
		procKill{phase: "verify", image: KindBoot, delay: time.Duration(rnd.Int63n(int64(time.Millisecond)))},
		procKill{phase: "verify", image: KindHash, delay: time.Duration(rnd.Int63n(int64(time.Millisecond)))})
	var fr []float64
	for i := 0; i < 5; i++ {
		fr = append(fr, rnd.Float64()*0.8)
	}
	sort.Float64s(fr)
	for _, x := range fr {
		plan = append(plan, procKill{phase: "verify", image: KindRoot, frac: x})
	}
	// Inside the table write: after its first write (the backup entries)
	// or its second (the backup header), in a random order; the third
	// (the primary entries) makes the switch (the primary no longer
	// matches its header: the backup, new, is read).
	torn := []int64{1, 2}
	rnd.Shuffle(len(torn), func(i, j int) { torn[i], torn[j] = torn[j], torn[i] })
	// A run stopped after the state says written leaves the next to find
	// the set staged: of the two points of the install's own path, one is
	// reached; then the staged path's.
	first := procKill{phase: "commit", image: commitWritten}
	if rnd.Intn(2) == 0 {
		first.image = commitDropped
	}
	plan = append(plan, first, procKill{phase: "commit", image: commitDroppedStaged})
	for _, n := range torn {
		plan = append(plan, procKill{phase: "commit", image: commitTorn, at: n})
	}
	return append(plan, procKill{phase: "commit", image: commitSwitched})
}

// The commit points a "commit" kill stops at.
const (
	// The install dropped its checkpoint: the state must say written by
	// then (a checkpoint dropped while the state said "writing" made the
	// rerun start over: the test found that defect, fixed since).
	commitDropped = "checkpoint dropped"
	// The state says written; the switch is not made.
	commitWritten = "state written"
	// A run that found the set written and verified (staged) dropped the
	// checkpoint a killed run left.
	commitDroppedStaged = "checkpoint dropped (staged)"
	// The switch's table write is under way: at writes of it.
	commitTorn = "switch torn"
	// The switch is made; the state does not say applied.
	commitSwitched = "switched"
)

// procServer serves the repository to the child processes, records what
// each run asks for and is sent, and kills a run at its planned byte.
type procServer struct {
	f     *fixture
	names map[string]string
	port  int
	mu    sync.Mutex
	run   *procRun
}

// procRun is one updog process and what happened to it.
type procRun struct {
	kill   *procKill
	proc   *os.Process
	mu     sync.Mutex
	killed bool
	err    error
	// from is, per image, the lowest offset asked for; sent the furthest
	// offset sent; queued the bytes sent but still in the sockets' queues
	// (not read by updog) when it was killed.
	from, sent, queued map[string]int64
	last               string // the last progress line before the kill
	lines              []string
	next               string
	cp                 *checkpoint
}

func (run *procRun) where() string {
	s := "no kill"
	if run.kill != nil {
		s = run.kill.String()
	}
	if run.last != "" {
		s += " (after " + run.last + ")"
	}
	return s
}

// phase is where the kill landed: the planned place, or for a delay the
// last progress line seen.
func (run *procRun) phase() string {
	switch {
	case run.kill.phase == "download" || run.kill.phase == "commit":
		return run.kill.phase + ": " + run.kill.image
	case run.last == "":
		return "start"
	}
	f := strings.Fields(run.last)
	if f[0] == "done" && f[1] == "verify" && f[2] == KindRoot {
		return "after verify root"
	}
	return f[1] + " " + f[2]
}

func (run *procRun) tail() string {
	run.mu.Lock()
	defer run.mu.Unlock()
	l := run.lines
	if len(l) > 40 {
		l = l[len(l)-40:]
	}
	return strings.Join(l, "\n")
}

// runOnce runs `updog --json update` until it ends or is killed.
func (ps *procServer) runOnce(t *testing.T, bin, config string, f *fixture, k *procKill, rootBytes int64) *procRun {
	t.Helper()
	run := &procRun{kill: k, from: map[string]int64{}, sent: map[string]int64{}, queued: map[string]int64{}}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// At a lower priority, so that the test sees its progress lines
	// without delay on two cores.
	cmd := exec.CommandContext(ctx, "nice", "-n", "10", bin, "--config", config, "--disk", f.disk, "--active", "a", "--json", "update")
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if k != nil && k.phase == "commit" {
		cmd.Env = append(os.Environ(), "UPDOG_FAILPOINT="+k.failpoints())
	}
	ps.mu.Lock()
	ps.run = run
	ps.mu.Unlock()
	defer func() {
		ps.mu.Lock()
		ps.run = nil
		ps.mu.Unlock()
	}()
	run.mu.Lock() // the server waits for proc
	if err := cmd.Start(); err != nil {
		run.mu.Unlock()
		t.Fatal(err)
	}
	run.proc = cmd.Process
	run.mu.Unlock()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(stop)
	if k != nil && k.phase == "commit" {
		// A commit point this run never reaches (the install it would
		// stop was done by an earlier run): stop ends commitKill.
		wg.Add(1)
		go func() {
			defer wg.Done()
			run.commitKill(t, f, stop)
		}()
	}
	var timer *time.Timer
	armed := false
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		run.mu.Lock()
		run.lines = append(run.lines, line)
		var pl struct{ Event, Phase, Image string }
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &pl) == nil && pl.Event != "" {
			ev := pl.Event + " " + pl.Phase + " " + pl.Image
			if !run.killed {
				run.last = ev
			}
			switch {
			case k == nil || armed || run.killed:
			case k.phase == "verify" && k.image == KindRoot && ev == "start verify root":
				armed = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					run.killAtRead(int64(k.frac*float64(rootBytes)), stop)
				}()
			case k.phase == "verify" && ev == "start verify "+k.image:
				armed = true
				timer = time.AfterFunc(k.delay, func() { run.kill1() })
			}
		}
		run.mu.Unlock()
	}
	run.err = cmd.Wait()
	if timer != nil {
		timer.Stop()
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if ctx.Err() != nil {
		t.Fatalf("updog ran for more than 90 s:\n%s", strings.Join(run.lines, "\n"))
	}
	// A kill sent after the process had ended on its own did not land.
	var ee *exec.ExitError
	if run.killed && (run.err == nil || errors.As(run.err, &ee) && ee.ExitCode() >= 0) {
		run.killed = false
	}
	return run
}

// kill1 kills the process, once.
func (run *procRun) kill1() {
	run.mu.Lock()
	defer run.mu.Unlock()
	if !run.killed && run.proc.Kill() == nil {
		run.killed = true
	}
}

// killAtRead kills the process once it has read n more bytes
// (/proc/PID/io rchar: the root's read-back is most of them).
func (run *procRun) killAtRead(n int64, stop chan struct{}) {
	from, err := readChars(run.proc.Pid)
	if err != nil {
		run.kill1()
		return
	}
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := readChars(run.proc.Pid)
		if err != nil || c-from >= n {
			run.kill1()
			return
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func readChars(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "rchar: "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no rchar")
}

// failpoints is the UPDOG_FAILPOINT sequence that stops the process at
// the commit point of k (see internal/failpoint; buildUpdog builds with
// them).
func (k *procKill) failpoints() string {
	switch k.image {
	case commitWritten:
		return "state-written"
	case commitDropped:
		return "checkpoint-dropped"
	case commitDroppedStaged:
		return "checkpoint-dropped-staged"
	case commitTorn:
		return "switch-begin" + strings.Repeat(",gpt-step", int(k.at))
	case commitSwitched:
		return "switch-done"
	}
	panic("unknown commit point " + k.image)
}

// commitKill waits for the process to stop itself at its commit point
// (SIGSTOP, from its failpoint), checks what the state and the disk say
// there, and kills it. A process that ends first never stopped: its run
// is not killed.
func (run *procRun) commitKill(t *testing.T, f *fixture, stop chan struct{}) {
	for !testutil.Stopped(run.proc.Pid) {
		select {
		case <-stop:
			return
		case <-time.After(time.Millisecond):
		}
	}
	tb, tbErr := readTable(f.disk)
	st, next := "", nextBoot(tb, tbErr)
	var state State
	if b, err := os.ReadFile(filepath.Join(f.cfg.StateDir, stateFile)); err == nil && json.Unmarshal(b, &state) == nil && state.Pending != nil {
		st = state.Pending.Stage
	}
	_, cpErr := os.Stat(filepath.Join(f.cfg.StateDir, checkpointFile))
	want := "a" // the switch is not made
	if run.kill.image == commitSwitched {
		want = "b"
	}
	if st != StageWritten {
		t.Errorf("at the commit point %q the state says %q, want %q", run.kill, st, StageWritten)
	}
	if next != want {
		t.Errorf("at the commit point %q the table says %s boots next, want %s", run.kill, next, want)
	}
	if run.kill.image != commitWritten && !errors.Is(cpErr, os.ErrNotExist) {
		t.Errorf("at the commit point %q the checkpoint is still there (%v)", run.kill, cpErr)
	}
	if run.kill.image == commitWritten && cpErr != nil {
		t.Errorf("at the commit point %q the checkpoint is gone (%v)", run.kill, cpErr)
	}
	if run.kill.image == commitTorn {
		// gptprio.Write's order: the backup entries (the backup copy no
		// longer matches its header, unless an earlier torn switch left
		// the new one), then the backup header (a whole new backup copy);
		// the primary copy, old, is the one read.
		if tbErr != nil {
			tb = &gptprio.Table{PrimaryProblem: tbErr}
		}
		newBackup := tb.BackupProblem == nil && tb.BackupStale
		if tb.PrimaryProblem != nil || run.kill.at == 2 && !newBackup || run.kill.at == 1 && tb.BackupProblem == nil && !newBackup {
			t.Errorf("at the commit point %q: primary copy %v, backup copy %v, backup differs %v", run.kill, tb.PrimaryProblem, tb.BackupProblem, tb.BackupStale)
		}
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if !run.killed && run.proc.Kill() == nil {
		run.killed = true
		run.last = fmt.Sprintf("state %s, table says %s boots next", st, next)
	}
}

// nextBoot says which set a table read with readTable boots next.
func nextBoot(tb *gptprio.Table, err error) string {
	if err != nil {
		return "?"
	}
	n, err := gptprio.Next(tb)
	if err != nil {
		return "none"
	}
	return n.String()
}

func (ps *procServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind := ""
	for k, n := range ps.names {
		if strings.HasSuffix(r.URL.Path, n) {
			kind = k
		}
	}
	ps.mu.Lock()
	run := ps.run
	ps.mu.Unlock()
	if kind == "" || run == nil || r.Method != http.MethodGet {
		ps.f.fileServer().ServeHTTP(w, r)
		return
	}
	from := int64(0)
	if rg := r.Header.Get("Range"); strings.HasPrefix(rg, "bytes=") {
		s, _, _ := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
		from, _ = strconv.ParseInt(s, 10, 64)
	}
	run.mu.Lock()
	if f, ok := run.from[kind]; !ok || from < f {
		run.from[kind] = from
	}
	run.mu.Unlock()
	pw := &procWriter{ResponseWriter: w, ps: ps, run: run, kind: kind, off: from, remote: r.RemoteAddr}
	ps.f.fileServer().ServeHTTP(pw, r)
	if pw.cut {
		panic(http.ErrAbortHandler)
	}
}

type procWriter struct {
	http.ResponseWriter
	ps     *procServer
	run    *procRun
	kind   string
	off    int64
	remote string
	cut    bool
}

func (w *procWriter) Write(p []byte) (int, error) {
	if w.cut {
		return 0, errors.New("killed")
	}
	run := w.run
	run.mu.Lock()
	k := run.kill
	hit := k != nil && k.phase == "download" && !run.killed &&
		(imageOrder[w.kind] > imageOrder[k.image] || w.kind == k.image && w.off+int64(len(p)) > k.at)
	run.mu.Unlock()
	if hit {
		// Send up to the planned byte (nothing when the run is past the
		// planned image already), stop the process, count what it has
		// not read, and kill it.
		if w.kind == k.image {
			p = p[:max(0, k.at-w.off)]
		} else {
			p = p[:0]
		}
	}
	n, err := w.ResponseWriter.Write(p)
	w.off += int64(n)
	run.mu.Lock()
	run.sent[w.kind] = max(run.sent[w.kind], w.off)
	run.mu.Unlock()
	if !hit {
		return n, err
	}
	if fl, ok := w.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	w.cut = true
	run.mu.Lock()
	defer run.mu.Unlock()
	proc := run.proc
	if proc.Signal(syscall.SIGSTOP) == nil {
		waitStopped(proc.Pid)
		_, cport, _ := net.SplitHostPort(w.remote)
		c, _ := strconv.Atoi(cport)
		run.queued[w.kind] = socketQueued(w.ps.port, c)
		if proc.Kill() == nil {
			run.killed = true
		}
	}
	return n, errors.New("killed")
}

// waitStopped waits (a second at most) for a process to stop after
// SIGSTOP.
func waitStopped(pid int) {
	for i := 0; i < 1000 && !testutil.Stopped(pid); i++ {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// socketQueued is the bytes on their way from the server's socket on
// port sport to the client's on port cport: the server's send queue and
// the client's receive queue (/proc/net/tcp). 0 when not found.
func socketQueued(sport, cport int) int64 {
	var n int64
	for _, p := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 5 {
				continue
			}
			port := func(a string) int {
				_, h, _ := strings.Cut(a, ":")
				v, _ := strconv.ParseInt(h, 16, 32)
				return int(v)
			}
			tx, rx, _ := strings.Cut(fs[4], ":")
			txn, _ := strconv.ParseInt(tx, 16, 64)
			rxn, _ := strconv.ParseInt(rx, 16, 64)
			switch l, rm := port(fs[1]), port(fs[2]); {
			case l == sport && rm == cport:
				n += txn
			case l == cport && rm == sport:
				n += rxn
			}
		}
	}
	return n
}

// readCheckpointFile reads and checks the checkpoint a killed process
// left (nil when there is none).
func readCheckpointFile(t *testing.T, p string) *checkpoint {
	t.Helper()
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	c := &checkpoint{}
	if err := json.Unmarshal(b, c); err != nil {
		t.Fatalf("a killed process left an unreadable checkpoint: %v", err)
	}
	if c.Sum != c.sum() {
		t.Fatal("a killed process left a checkpoint whose checksum does not match")
	}
	return c
}

// image is the checkpoint's progress of the image a download kill hit.
func (c *checkpoint) image(k *procKill) *imageProgress {
	if c == nil || k == nil || k.phase != "download" {
		return nil
	}
	return c.Images[k.image]
}

func cpSummary(c *checkpoint) string {
	if c == nil {
		return "none"
	}
	var s []string
	for _, kind := range []string{KindBoot, KindHash, KindRoot} {
		ip := c.Images[kind]
		switch {
		case ip == nil:
		case ip.Done:
			s = append(s, kind+" done")
		default:
			s = append(s, fmt.Sprintf("%s at %d", kind, ip.In))
		}
	}
	return strings.Join(s, ", ")
}

func fromSummary(from map[string]int64) string {
	var s []string
	for _, kind := range []string{KindBoot, KindHash, KindRoot} {
		if v, ok := from[kind]; ok {
			s = append(s, fmt.Sprintf("%s from %d", kind, v))
		}
	}
	if len(s) == 0 {
		return "nothing"
	}
	return strings.Join(s, ", ")
}

// readTable reads the disk's table without its lock (the process holding
// it is stopped). It runs on commitKill's goroutine: no t.Fatal there.
func readTable(disk string) (*gptprio.Table, error) {
	d, err := blockdev.Open(disk, blockdev.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return gptprio.Read(d)
}
