package updater

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/repo"
)

// TestZstdFramesRestart: a stream of independent frames restarts at any
// frame boundary with a fresh source and yields the rest exactly.
func TestZstdFramesRestart(t *testing.T) {
	t.Parallel()
	data := make([]byte, 3<<20+12345)
	for i := range data {
		data[i] = byte(i*7 + i/1000)
	}
	comp := zstdFrames(t, data, 256<<10)
	var points []restartPoint
	collect := func(src source) []byte {
		var out []byte
		for {
			pc, err := src.next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, pc.p...)
			if pc.restart != nil {
				points = append(points, *pc.restart)
			}
			pc.done()
		}
		src.close()
		return out
	}
	d, err := openSource(context.Background(), bytes.NewReader(comp), "", 0, 0, 2, nil)
	if err != nil || d.codec != CodecZstd || !d.restartable {
		t.Fatalf("%v %+v", err, d)
	}
	if out := collect(d.src); !bytes.Equal(out, data) {
		t.Fatal("decoded bytes differ")
	}
	if len(points) != 13 || points[len(points)-1].In != int64(len(comp)) || points[len(points)-1].Out != int64(len(data)) {
		t.Fatalf("restart points %+v", points)
	}
	for _, rp := range []restartPoint{points[0], points[5], points[11]} {
		points = nil
		d, err := openSource(context.Background(), bytes.NewReader(comp[rp.In:]), CodecZstd, rp.In, rp.Out, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if out := collect(d.src); !bytes.Equal(out, data[rp.Out:]) {
			t.Fatalf("restarting at %+v: wrong bytes", rp)
		}
	}
	// A frame that lies about its size, and a cut stream, are errors.
	bad := append([]byte(nil), comp...)
	d, _ = openSource(context.Background(), bytes.NewReader(bad[:len(bad)-3]), "", 0, 0, 2, nil)
	if _, err := copyImage(context.Background(), d.src, &discardAt{}, 0, 1<<30, nil, nil, nil, nil); !errors.Is(err, ErrZstdFrame) {
		t.Fatalf("a cut stream: %v", err)
	}
}

// countingServer wraps the fixture's server, counts target bytes served,
// and can stop serving (cancel the client) after a budget.
type countingServer struct {
	f      *fixture
	target string
	served atomic.Int64
	budget atomic.Int64 // cancel after this many target bytes (0: never)
	cancel func()
}

func (c *countingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, c.target) {
		c.f.fileServer().ServeHTTP(w, r)
		return
	}
	c.f.fileServer().ServeHTTP(&countingWriter{ResponseWriter: w, c: c}, r)
}

type countingWriter struct {
	http.ResponseWriter
	c *countingServer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if b := w.c.budget.Load(); b > 0 && w.c.served.Load()+int64(len(p)) > b {
		p = p[:max(0, b-w.c.served.Load())]
		n, _ := w.ResponseWriter.Write(p)
		w.c.served.Add(int64(n))
		if w.c.cancel != nil {
			w.c.cancel()
		}
		return n, errors.New("budget spent")
	}
	n, err := w.ResponseWriter.Write(p)
	w.c.served.Add(int64(n))
	return n, err
}

func resumeFixture(t *testing.T) (*fixture, *testRelease, int64) {
	f := newFixtureRoot(t, 32)
	f.frames = 1 << 20
	f.rootBytes = 24 << 20
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	fi, err := os.Stat(f.storedTarget(r.names.Root))
	if err != nil {
		t.Fatal(err)
	}
	return f, r, fi.Size()
}

// consumed counts the compressed bytes the updater read from the network
// (after the kernel's socket buffers), per image.
type consumed struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *consumed) Start(image, phase string, total int64) {}
func (c *consumed) Done(string, error)                     {}
func (c *consumed) Add(image string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int64{}
	}
	c.n[image] += n
}
func (c *consumed) get(image string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[image]
}

func (f *fixture) resumeUpdater(every int64, prog ...Progress) *Updater {
	f.t.Helper()
	o := Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now }, CheckpointEvery: every,
		Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }}}
	if len(prog) > 0 {
		o.Progress = prog[0]
	}
	u, err := New(o)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	return u
}

// interruption is an update stopped part way through the root image.
type interruption struct {
	r             *testRelease
	u             *Updater // locked
	cs            *countingServer
	rootLen, read int64 // the root target's length; the root bytes the updater read
}

// interruptRoot publishes release 1.1.0 (f's codec, frames and root size)
// and runs an update with checkpoints every every (negative: none) that
// is cancelled once the server has sent fraction of the root target.
func (f *fixture) interruptRoot(every int64, fraction float64) *interruption {
	f.t.Helper()
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	fi, err := os.Stat(f.storedTarget(r.names.Root))
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cs := &countingServer{f: f, target: r.names.Root, cancel: cancel}
	cs.budget.Store(int64(float64(fi.Size()) * fraction))
	f.setHandler(cs)
	var got consumed
	u := f.resumeUpdater(every, &got)
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); !errors.Is(err, context.Canceled) {
		f.t.Fatalf("interrupted update: %v", err)
	}
	return &interruption{r: r, u: u, cs: cs, rootLen: fi.Size(), read: got.get(KindRoot)}
}

// finish reruns the interrupted update in a new updater, unhindered, and
// checks set B holds the release.
func (in *interruption) finish(f *fixture, every int64) {
	f.t.Helper()
	in.u.Unlock()
	in.cs.budget.Store(0)
	u := f.resumeUpdater(every)
	defer u.Unlock()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		f.t.Fatalf("resumed update: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, in.r)
}

// TestResumeAfterInterruption: an install interrupted in the middle of
// the root image goes on from its checkpoint in a new process,
// re-downloading at most the checkpoint interval plus one frame.
func TestResumeAfterInterruption(t *testing.T) {
	t.Parallel()
	f, r, rootLen := resumeFixture(t)
	const every = 256 << 10
	ctx, cancel := context.WithCancel(context.Background())
	cs := &countingServer{f: f, target: r.names.Root, cancel: cancel}
	cs.budget.Store(rootLen * 6 / 10)
	f.setHandler(cs)
	var got consumed
	u := f.resumeUpdater(every, &got)
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted update: %v", err)
	}
	// Progress counts from the start of the image; only the download
	// phase is counted (verify has not started).
	read := got.get(KindRoot)
	st, err := u.Status(context.Background())
	if err != nil || st.Install == nil || st.Install.BytesDone == 0 || st.Install.BytesDone >= st.Install.BytesTotal {
		t.Fatalf("status during an interrupted install: %+v %v", st.Install, err)
	}
	cp, err := u.store.loadCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	u.Unlock()
	firstRun := cs.served.Load()
	cs.budget.Store(0)
	u = f.resumeUpdater(every)
	defer u.Unlock()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("resumed update: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, r)
	// What the updater had read, minus where it went on from: the bytes
	// it downloads twice. (The server sent more: what sat in the kernel's
	// socket buffers when the connection was dropped.)
	again := read - cp.Images[KindRoot].In
	frame := int64(len(zstdFrames(t, r.root[:1<<20], 1<<20)))
	t.Logf("first run: served %d, read %d, checkpoint at %d: %d bytes read twice (bound %d + read-ahead %d + a frame of %d); the server sent %d twice",
		firstRun, read, cp.Images[KindRoot].In, again, every, readAhead, frame, cs.served.Load()-rootLen)
	if again > every+readAhead+frame || again < 0 {
		t.Fatalf("%d bytes read twice after the interruption", again)
	}
	if _, err := os.Stat(filepath.Join(f.cfg.StateDir, checkpointFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the checkpoint outlived the install: %v", err)
	}
}

// A checkpoint that does not fit is discarded with a message, and the
// install starts over and completes correctly.
func TestCheckpointDiscarded(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		spoil func(f *fixture, path string)
		want  string
	}{
		{"another release", func(f *fixture, _ string) {
			f.addRelease("1.2.0", nil)
			f.publish(repo.Options{})
		}, "it is for"},
		{"tampered", func(_ *fixture, p string) {
			b, _ := os.ReadFile(p)
			b = bytes.Replace(b, []byte(`"resumes":0`), []byte(`"resumes":7`), 1)
			os.WriteFile(p, b, 0o600)
		}, "checksum"},
		{"past the partition end", func(_ *fixture, p string) {
			b, _ := os.ReadFile(p)
			var cp checkpoint
			json.Unmarshal(b, &cp)
			cp.Images[KindRoot].Out = 1 << 40
			cp.Sum = cp.sum()
			b, _ = json.Marshal(&cp)
			os.WriteFile(p, b, 0o600)
		}, "outside"},
		// The same release, its root target republished under the same
		// name with other bytes (compressed in other frames): the signed
		// length and hashes the checkpoint was made for are gone.
		{"the signed root target changed", func(f *fixture, _ string) {
			r := f.releases["1.1.0"]
			old, err := os.ReadFile(filepath.Join(f.staging, r.names.Root))
			if err != nil {
				f.t.Fatal(err)
			}
			comp := zstdFrames(f.t, r.root, 512<<10)
			if bytes.Equal(comp, old) {
				f.t.Fatal("the republished root target is the same")
			}
			if err := os.WriteFile(filepath.Join(f.staging, r.names.Root), comp, 0o644); err != nil {
				f.t.Fatal(err)
			}
			f.publish(repo.Options{})
		}, "the signed root target changed"},
		// The inactive root partition is another one now (its unique
		// GUID changed in the table).
		{"the inactive partition changed", func(f *fixture, _ string) {
			d, err := gptprio.OpenDisk(context.Background(), f.disk, gptprio.OpenOptions{})
			if err != nil {
				f.t.Fatal(err)
			}
			defer d.Close()
			if _, _, err := d.Update(context.Background(), func(t *gptprio.Table, l gptprio.Layout) (*gptprio.Table, error) {
				nt := t.Clone()
				nt.Partition(l.Sets[gptprio.SetB].Root).ID = gptprio.MustParseGUID("99999999-8888-4777-8666-555555555555")
				return nt, nil
			}); err != nil {
				f.t.Fatal(err)
			}
		}, "the root partition is not the one it was made for"},
		// Tampered checkpoints whose checksum was recomputed: valid files
		// that lie.
		{"a done image of the wrong size", func(f *fixture, p string) {
			editCheckpoint(f.t, p, func(cp *checkpoint) {
				if !cp.Images[KindBoot].Done {
					f.t.Fatal("the boot image is not done at the interruption")
				}
				cp.Images[KindBoot].Out -= 4096
			})
		}, "its boot image is done with"},
		{"input past the target's end", func(f *fixture, p string) {
			editCheckpoint(f.t, p, func(cp *checkpoint) { cp.Images[KindRoot].In = cp.Images[KindRoot].Length + 1 })
		}, "outside the image or the partition"},
		{"a garbage hash state", func(f *fixture, p string) {
			editCheckpoint(f.t, p, func(cp *checkpoint) {
				for alg := range cp.Images[KindRoot].InState {
					cp.Images[KindRoot].InState[alg] = []byte("not a hash state")
				}
			})
		}, "its root restart point"},
		{"another set", func(f *fixture, p string) {
			editCheckpoint(f.t, p, func(cp *checkpoint) { cp.Set = "a" })
		}, "it is for set a"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f, _, rootLen := resumeFixture(t)
			ctx, cancel := context.WithCancel(context.Background())
			cs := &countingServer{f: f, target: "root.ext4.zst", cancel: cancel}
			cs.budget.Store(rootLen / 2)
			f.setHandler(cs)
			u := f.resumeUpdater(256 << 10)
			if _, err := u.Update(ctx, UpdateOptions{}); !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted update: %v", err)
			}
			u.Unlock()
			p := filepath.Join(f.cfg.StateDir, checkpointFile)
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("no checkpoint after the interruption: %v", err)
			}
			c.spoil(f, p)
			cs.budget.Store(0)
			u = f.resumeUpdater(256 << 10)
			defer u.Unlock()
			plan, err := u.Update(context.Background(), UpdateOptions{})
			if err != nil {
				t.Fatalf("update after a spoiled checkpoint: %v", err)
			}
			st, _ := u.Status(context.Background())
			if st.LastAttempt == nil || !strings.Contains(st.LastAttempt.Note, c.want) {
				t.Fatalf("status does not say the checkpoint was discarded (%q): %+v", c.want, st.LastAttempt)
			}
			f.assertSetHolds(gptprio.SetB, f.releases[plan.Update().Version.String()])
		})
	}
}

// editCheckpoint rewrites a checkpoint file with edit applied and its
// checksum recomputed: a tampered file that is valid.
func editCheckpoint(t testing.TB, p string, edit func(cp *checkpoint)) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var cp checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		t.Fatal(err)
	}
	edit(&cp)
	cp.Sum = cp.sum()
	if b, err = json.Marshal(&cp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// journal is a partition that can lose power: it keeps the old contents
// of every range written since the last Sync, and crash puts them back
// (the disk as a power cut would leave it), failing every later write.
type journal struct {
	blockdev.Device
	mu      sync.Mutex
	old     []journalEntry
	dead    bool
	writes  int
	crashAt int // crash at this write (0: never)
	onCrash func()
}

type journalEntry struct {
	off int64
	b   []byte
}

var errPowerCut = errors.New("power cut")

func (j *journal) WriteAt(p []byte, off int64) (int, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.dead {
		return 0, errPowerCut
	}
	j.writes++
	if j.crashAt > 0 && j.writes >= j.crashAt {
		j.crashLocked()
		return 0, errPowerCut
	}
	prev := make([]byte, len(p))
	n, _ := j.Device.ReadAt(prev, off)
	j.old = append(j.old, journalEntry{off, prev[:n]})
	return j.Device.WriteAt(p, off)
}

func (j *journal) Sync() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.dead {
		return errPowerCut
	}
	j.old = nil
	return j.Device.Sync()
}

func (j *journal) crashLocked() {
	for i := len(j.old) - 1; i >= 0; i-- {
		j.Device.WriteAt(j.old[i].b, j.old[i].off)
	}
	j.old = nil
	j.dead = true
	if j.onCrash != nil {
		j.onCrash()
	}
}

// TestPowerCutMidRoot: a power cut while the root image is written loses
// everything since the last sync; the rerun resumes from the checkpoint
// (which never claims unsynced bytes) and ends byte-identical.
func TestPowerCutMidRoot(t *testing.T) {
	t.Parallel()
	f, r, _ := resumeFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	j := &journal{crashAt: 14, onCrash: cancel}
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now }, CheckpointEvery: 256 << 10,
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
	u.Lock(context.Background())
	if _, err := u.Update(ctx, UpdateOptions{Apply: true}); err == nil {
		t.Fatal("the update survived its power cut")
	}
	u.Unlock()
	cp, err := u.store.loadCheckpoint()
	if err != nil || cp.Images[KindRoot].Out == 0 {
		t.Fatalf("no checkpoint into the root before the cut: %+v %v", cp, err)
	}
	u = f.resumeUpdater(256 << 10)
	defer u.Unlock()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("after the power cut: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, r)
}
