package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/flock"
	"github.com/updog/updog/internal/testutil"
)

// The end-to-end tests drive the built binaries: tuftool and updata
// publish, imgbuild makes the disk and the hash images, updog installs,
// signpost plays the bootloader.

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

func bins(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "updog-e2e-bin-")
		if binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/updog", "./cmd/tuftool", "./cmd/updata", "./cmd/signpost", "./cmd/imgbuild")
		cmd.Dir = testutil.ProjectRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// world is a published repository, a disk image and an updog config.
type world struct {
	t      *testing.T
	dir    string
	bin    string
	disk   string
	config string
	srv    *httptest.Server
	repo   string
	mu     sync.Mutex
	slow   time.Duration // per 64 KiB of target bodies
	images map[string]map[string][]byte
	active string
	// codec compresses new releases: zstd (default), xz, lz4, gzip, raw.
	codec string
}

func (w *world) run(name string, args ...string) (string, string, int) {
	w.t.Helper()
	cmd := exec.Command(filepath.Join(w.bin, name), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		w.t.Fatalf("%s: %v", name, err)
	}
	return out.String(), errb.String(), code
}

func (w *world) must(name string, args ...string) string {
	w.t.Helper()
	out, errs, code := w.run(name, args...)
	if code != 0 {
		w.t.Fatalf("%s %s: exit %d\n%s%s", name, strings.Join(args, " "), code, out, errs)
	}
	return out
}

func (w *world) updog(args ...string) (string, string, int) {
	w.t.Helper()
	return w.run("updog", append([]string{"--config", w.config, "--disk", w.disk, "--active", w.active}, args...)...)
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, dir: t.TempDir(), bin: bins(t), images: map[string]map[string][]byte{}, active: "a"}
	w.disk = filepath.Join(w.dir, "disk.img")
	w.must("imgbuild", "disk", "--size", "224MiB", "--disk-guid", "11111111-2222-4333-8444-555555555555", w.disk)
	keys := filepath.Join(w.dir, "keys")
	os.MkdirAll(keys, 0o700)
	w.must("tuftool", "gen-key", "--type", "ed25519", "--out", filepath.Join(keys, "root.pem"))
	root := filepath.Join(w.dir, "root.json")
	w.must("tuftool", "root", "init", root)
	w.must("tuftool", "root", "add-key", root, "-k", filepath.Join(keys, "root.pem"), "--role", "root", "--role", "targets", "--role", "snapshot", "--role", "timestamp")
	w.must("tuftool", "root", "sign", root, "-k", filepath.Join(keys, "root.pem"))
	w.must("updata", "init", filepath.Join(w.dir, "manifest.json"))
	os.MkdirAll(filepath.Join(w.dir, "targets"), 0o755)
	w.srv = httptest.NewServer(http.HandlerFunc(w.serve))
	t.Cleanup(w.srv.Close)
	os.WriteFile(filepath.Join(w.dir, "os-release"), []byte("VARIANT_ID=e2e\nVERSION_ID=1.0.0\n"), 0o644)
	os.WriteFile(filepath.Join(w.dir, "machine-id"), []byte("00112233445566778899aabbccddeeff\n"), 0o644)
	w.config = filepath.Join(w.dir, "updog.toml")
	os.WriteFile(w.config, []byte(fmt.Sprintf(`metadata_base_url = "%s/metadata"
targets_base_url = "%s/targets"
seed = 1000
version_lock = "latest"
ignore_waves = false
trusted_root = %q
state_dir = %q
os_release = %q
health_dir = %q
machine_id = %q
`, w.srv.URL, w.srv.URL, root, filepath.Join(w.dir, "state"), filepath.Join(w.dir, "os-release"),
		filepath.Join(w.dir, "health.d"), filepath.Join(w.dir, "machine-id"))), 0o644)
	return w
}

func (w *world) serve(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	dir, slow := w.repo, w.slow
	w.mu.Unlock()
	if slow > 0 && strings.Contains(r.URL.Path, "/targets/") {
		rw = &slowWriter{ResponseWriter: rw, d: slow}
	}
	http.FileServer(http.Dir(dir)).ServeHTTP(rw, r)
}

type slowWriter struct {
	http.ResponseWriter
	d time.Duration
}

func (s *slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 64<<10)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		if f, ok := s.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		time.Sleep(s.d)
		p = p[k:]
	}
	return n, nil
}

// release builds a release's images (boot 1 MiB, root rootMiB, the hash
// image by imgbuild verity format), compresses them with zstd and adds
// them to the manifest.
func (w *world) release(version string, rootMiB int, extra ...string) {
	w.t.Helper()
	tmp := filepath.Join(w.dir, "build-"+version)
	os.MkdirAll(tmp, 0o755)
	boot, rootImg := make([]byte, 1<<20), make([]byte, rootMiB<<20)
	rand.Read(boot)
	rand.Read(rootImg) // incompressible: the download is as long as the image
	os.WriteFile(filepath.Join(tmp, "root.img"), rootImg, 0o644)
	out := w.must("imgbuild", "verity", "format", "--json", "--salt", strings.Repeat("ab", 32), "--uuid", "11111111-2222-4333-8444-555555555555",
		filepath.Join(tmp, "root.img"), filepath.Join(tmp, "hash.img"))
	var info struct {
		RootHash   string `json:"root_hash"`
		Salt       string `json:"salt"`
		DataBlocks uint64 `json:"data_blocks"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		w.t.Fatalf("%v: %s", err, out)
	}
	hash, _ := os.ReadFile(filepath.Join(tmp, "hash.img"))
	w.images[version] = map[string][]byte{"boot": boot, "root": rootImg, "hash": hash}
	ext := map[string]string{"": ".zst", "zstd": ".zst", "xz": ".xz", "lz4": ".lz4", "gzip": ".gz", "raw": ""}[w.codec]
	name := func(k string) string { return fmt.Sprintf("bottlerocket-e2e-x86_64-%s-%s%s", version, k, ext) }
	for k, b := range w.images[version] {
		os.WriteFile(filepath.Join(w.dir, "targets", name(k)), compressWith(w.t, w.codec, b), 0o644)
	}
	args := []string{"add-update", filepath.Join(w.dir, "manifest.json"), "--variant", "e2e", "--arch", "x86_64", "--version", version,
		"--boot", name("boot"), "--root", name("root"), "--hash", name("hash"),
		"--boot-size", fmt.Sprint(len(boot)), "--root-size", fmt.Sprint(len(rootImg)), "--hash-size", fmt.Sprint(len(hash)),
		"--verity-root-hash", info.RootHash, "--verity-salt", info.Salt, "--verity-data-blocks", fmt.Sprint(info.DataBlocks)}
	w.must("updata", append(args, extra...)...)
}

func zstdBytes(t *testing.T, b []byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(b, nil)
}

// compressWith compresses with the codec's own command-line tool (what a
// release engineer would run), zstd through the Go encoder.
func compressWith(t *testing.T, codec string, b []byte) []byte {
	t.Helper()
	var args []string
	switch codec {
	case "", "zstd":
		return zstdBytes(t, b)
	case "raw":
		return b
	case "xz":
		args = []string{"xz", "-c", "-T1", "-3"}
	case "lz4":
		args = []string{"lz4", "-c", "-9"}
	case "gzip":
		args = []string{"gzip", "-c"}
	}
	cmd := exec.Command(testutil.Tool(t, args[0]), args[1:]...)
	cmd.Stdin = bytes.NewReader(b)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return out
}

// publish makes a new repository version with tuftool and serves it.
func (w *world) publish() {
	w.t.Helper()
	mf, _ := os.ReadFile(filepath.Join(w.dir, "manifest.json"))
	os.WriteFile(filepath.Join(w.dir, "targets", "manifest.json"), mf, 0o644)
	out := filepath.Join(w.dir, fmt.Sprintf("repo-%d", time.Now().UnixNano()))
	key := filepath.Join(w.dir, "keys", "root.pem")
	w.mu.Lock()
	prev := w.repo
	w.mu.Unlock()
	if prev == "" {
		w.must("tuftool", "create", "--root", filepath.Join(w.dir, "root.json"), "-k", key, "--add-targets", filepath.Join(w.dir, "targets"), "--outdir", out)
	} else {
		w.must("tuftool", "update", "--root", filepath.Join(w.dir, "root.json"), "-k", key, "--metadata-url", filepath.Join(prev, "metadata"),
			"--add-targets", filepath.Join(w.dir, "targets"), "--outdir", out)
	}
	w.mu.Lock()
	w.repo = out
	w.mu.Unlock()
}

func (w *world) status() map[string]any {
	w.t.Helper()
	out, errs, code := w.updog("--json", "status")
	if code != 0 {
		w.t.Fatalf("status: %d %s", code, errs)
	}
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		w.t.Fatalf("%v: %s", err, out)
	}
	return st
}

// reboot plays the bootloader (signpost next) and the new root's
// os-release.
func (w *world) reboot(versionOf map[string]string) {
	w.t.Helper()
	out := w.must("signpost", "--disk", w.disk, "next")
	w.active = strings.TrimSpace(out)
	os.WriteFile(filepath.Join(w.dir, "os-release"), []byte("VARIANT_ID=e2e\nVERSION_ID="+versionOf[w.active]+"\n"), 0o644)
}

func (w *world) readPartition(set gptprio.Set, kind string, n int) []byte {
	w.t.Helper()
	d, err := gptprio.OpenDisk(context.Background(), w.disk, gptprio.OpenOptions{ReadOnly: true})
	if err != nil {
		w.t.Fatal(err)
	}
	defer d.Close()
	tb, l, err := d.Read(context.Background())
	if err != nil {
		w.t.Fatal(err)
	}
	num := map[string]int{"boot": l.Sets[set].Boot, "root": l.Sets[set].Root, "hash": l.Sets[set].Hash}[kind]
	b := make([]byte, n)
	if _, err := d.Device().ReadAt(b, int64(tb.Partition(num).FirstLBA)*int64(tb.SectorSize)); err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *world) assertSetHolds(set gptprio.Set, version string) {
	w.t.Helper()
	for k, b := range w.images[version] {
		if !bytes.Equal(w.readPartition(set, k, len(b)), b) {
			w.t.Fatalf("set %v %s partition does not hold %s", set, k, version)
		}
	}
}

func TestEndToEndWithBinaries(t *testing.T) {
	w := newWorld(t)
	w.release("1.1.0", 4)
	w.release("1.2.0", 4)
	w.publish()
	versions := map[string]string{"a": "1.0.0"}

	out, errs, code := w.updog("check-update")
	if code != 0 || strings.TrimSpace(out) != "e2e 1.2.0" {
		t.Fatalf("check-update: exit %d %q %s", code, out, errs)
	}
	out, _, code = w.updog("--json", "check-update")
	var cj map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &cj) != nil || cj["version"] != "1.2.0" || cj["eligible_at"] != nil && cj["eligible"] != true {
		t.Fatalf("check-update --json: %d %s", code, out)
	}
	out, _, code = w.updog("--json", "check-update", "--all")
	var all []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &all) != nil || len(all) != 2 {
		t.Fatalf("check-update --all: %d %s", code, out)
	}
	out, _, code = w.updog("update", "--dry-run")
	if code != 0 || !strings.Contains(out, "dry run") {
		t.Fatalf("update --dry-run: %d %s", code, out)
	}
	if st := w.status(); st["pending"] != nil {
		t.Fatalf("dry run changed the state: %v", st)
	}
	out, errs, code = w.updog("--json", "update")
	if code != 0 {
		t.Fatalf("update: %d %s %s", code, out, errs)
	}
	// --json progress: JSON lines on stderr.
	if !strings.Contains(errs, `"phase":"download"`) || !strings.Contains(errs, `"phase":"verify"`) {
		t.Fatalf("no JSON progress on stderr: %s", errs)
	}
	versions["b"] = "1.2.0"
	w.assertSetHolds(gptprio.SetB, "1.2.0")
	if st := w.status(); st["reboot_needed"] != true {
		t.Fatalf("status after update: %v", st)
	}
	w.reboot(versions)
	if w.active != "b" {
		t.Fatalf("booted %s, want b", w.active)
	}
	out, errs, code = w.updog("mark-good")
	if code != 0 || !strings.Contains(out, "marked good") {
		t.Fatalf("mark-good: %d %s %s", code, out, errs)
	}
	st := w.status()
	sets := st["sets"].(map[string]any)
	if sets["b"].(map[string]any)["successful"] != true || st["active"] != "b" {
		t.Fatalf("status after mark-good: %v", st)
	}
	if _, _, code := w.updog("check-update"); code != exitNoUpdate {
		t.Fatalf("check-update when up to date: exit %d, want %d", code, exitNoUpdate)
	}
	// rollback returns to A on the next boot.
	if out, errs, code := w.updog("rollback"); code != 0 {
		t.Fatalf("rollback: %d %s %s", code, out, errs)
	}
	w.reboot(versions)
	if w.active != "a" {
		t.Fatalf("after rollback booted %s", w.active)
	}
}

func TestEndToEndExitCodes(t *testing.T) {
	w := newWorld(t)
	w.release("1.1.0", 1)
	w.publish()
	// A wave a day away: exit 4, --now overrides.
	policy := filepath.Join(w.dir, "policy.toml")
	os.WriteFile(policy, []byte("[[waves]]\nstart_after = \"1 day\"\nfleet_percentage = 100\n"), 0o644)
	w.must("updata", "set-waves", filepath.Join(w.dir, "manifest.json"), "--variant", "e2e", "--arch", "x86_64", "--version", "1.1.0",
		"--wave-policy", policy, "--start-at", "now")
	w.publish()
	out, errs, code := w.updog("check-update")
	if code != exitNotYet {
		t.Fatalf("check-update before the wave: exit %d %s %s", code, out, errs)
	}
	out, _, code = w.updog("--json", "check-update")
	var cj map[string]any
	if code != exitNotYet || json.Unmarshal([]byte(out), &cj) != nil || cj["reason"] == nil || cj["eligible_at"] == nil {
		t.Fatalf("check-update --json before the wave: %d %s", code, out)
	}
	if _, _, code := w.updog("check-update", "--now"); code != 0 {
		t.Fatalf("--now: exit %d", code)
	}
	// Usage errors.
	for _, args := range [][]string{{"frobnicate"}, {"update", "--bogus"}, {"--active", "c", "status"}, {"status", "extra"}} {
		if _, _, code := w.updog(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	// A bad configuration names the key and the file.
	bad := filepath.Join(w.dir, "bad.toml")
	os.WriteFile(bad, []byte("metadata_base_url = \"x\"\n"), 0o644)
	_, errs, code = w.run("updog", "--config", bad, "--disk", w.disk, "--active", "a", "status")
	if code != exitError || !strings.Contains(errs, "metadata_base_url") || !strings.Contains(errs, bad) {
		t.Fatalf("bad config: %d %s", code, errs)
	}
	// --help on every command, with the exit codes.
	for name := range commands {
		out, _, code := w.run("updog", name, "--help")
		if code != 0 || !strings.Contains(out, "Exit status") {
			t.Errorf("%s --help: %d %s", name, code, out)
		}
	}
}

// TestHostileSecondUpdogExit5: a second updog changing the disk fails with
// exit 5 and names the first one's PID.
func TestHostileSecondUpdogExit5(t *testing.T) {
	w := newWorld(t)
	w.release("1.1.0", 8)
	w.publish()
	w.mu.Lock()
	w.slow = 20 * time.Millisecond
	w.mu.Unlock()
	first := exec.Command(filepath.Join(w.bin, "updog"), "--config", w.config, "--disk", w.disk, "--active", "a", "update")
	var firstOut bytes.Buffer
	first.Stdout, first.Stderr = &firstOut, &firstOut
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	defer first.Process.Kill()
	deadline := time.Now().Add(20 * time.Second)
	// Wait until the first holds the lock (it writes its PID into it).
	for flock.HolderPID(filepath.Join(w.dir, "state", "lock")) != first.Process.Pid {
		if time.Now().After(deadline) {
			t.Fatalf("the first updog never took the lock: %s", firstOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		_, errs, code := w.updog("update")
		if code == exitLocked {
			if !strings.Contains(errs, fmt.Sprint(first.Process.Pid)) {
				t.Fatalf("lock message does not name PID %d: %s", first.Process.Pid, errs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw the lock: last exit %d %s; first: %s", code, errs, firstOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	first.Process.Signal(syscall.SIGTERM)
	first.Wait()
}

// TestHostileSignalsMidWrite: SIGTERM and SIGKILL while the root image is
// being written leave the active set untouched and the inactive set
// unbootable; a rerun completes.
func TestHostileSignalsMidWrite(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			w := newWorld(t)
			w.release("1.1.0", 8)
			w.publish()
			w.mu.Lock()
			w.slow = 10 * time.Millisecond
			w.mu.Unlock()
			beforeA := map[string][]byte{}
			for _, k := range []string{"boot", "root", "hash"} {
				beforeA[k] = w.readPartition(gptprio.SetA, k, 1<<20)
			}
			stA := w.must("signpost", "--disk", w.disk, "--json", "status")
			cmd := exec.Command(filepath.Join(w.bin, "updog"), "--config", w.config, "--disk", w.disk, "--active", "a", "--json", "update")
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait for the root image's download to start.
			buf := make([]byte, 64<<10)
			var seen strings.Builder
			for !strings.Contains(seen.String(), `"image":"root"`) {
				n, err := stderr.Read(buf)
				seen.Write(buf[:n])
				if err != nil {
					t.Fatalf("updog ended before the root image: %s", seen.String())
				}
			}
			time.Sleep(200 * time.Millisecond)
			cmd.Process.Signal(sig)
			go func() {
				for {
					if _, err := stderr.Read(buf); err != nil {
						return
					}
				}
			}()
			err := cmd.Wait()
			if err == nil {
				t.Fatal("updog finished despite the signal")
			}
			for _, k := range []string{"boot", "root", "hash"} {
				if !bytes.Equal(w.readPartition(gptprio.SetA, k, 1<<20), beforeA[k]) {
					t.Fatalf("set A's %s partition changed", k)
				}
			}
			var st struct {
				Sets map[string]struct {
					Priority, Tries int
					Successful      bool
				} `json:"sets"`
				Next *string `json:"next"`
			}
			json.Unmarshal([]byte(w.must("signpost", "--disk", w.disk, "--json", "status")), &st)
			b := st.Sets["b"]
			if (b.Priority > 0 && b.Tries > 0) || b.Successful || st.Next == nil || *st.Next != "a" {
				t.Fatalf("after %v: set B %+v, next %v (was %s)", sig, b, st.Next, stA)
			}
			w.mu.Lock()
			w.slow = 0
			w.mu.Unlock()
			if out, errs, code := w.updog("update"); code != 0 {
				t.Fatalf("rerun after %v: %d %s %s", sig, code, out, errs)
			}
			w.assertSetHolds(gptprio.SetB, "1.1.0")
		})
	}
}

// TestOfflineBundleNoNetwork: an air-gapped host updates from a bundle
// made by tuftool export, in a network namespace with no interfaces (not
// even loopback up): the same verification, zero network. Both forms of
// bundle: a tar file (unpacked under the state directory, then removed)
// and a directory (read where it is).
func TestOfflineBundleNoNetwork(t *testing.T) {
	unshare := testutil.Tool(t, "unshare")
	if os.Geteuid() != 0 {
		testutil.Missing(t, "unshare -n needs root")
	}
	if out, err := exec.Command(unshare, "-n", "true").CombinedOutput(); err != nil {
		testutil.Missing(t, "unshare -n does not work here: %v %s", err, out)
	}
	for _, form := range []string{"bundle.tar", "bundle"} {
		t.Run(form, func(t *testing.T) {
			w := newWorld(t)
			w.release("1.1.0", 2)
			w.publish()
			bundle := filepath.Join(w.dir, form)
			w.must("tuftool", "export", "--root", filepath.Join(w.dir, "root.json"), "--metadata-url", w.srv.URL+"/metadata",
				"--targets-url", w.srv.URL+"/targets", "--out", bundle)
			if fi, err := os.Stat(bundle); err != nil || fi.IsDir() != (form == "bundle") {
				t.Fatalf("tuftool export --out %s made %v (%v)", form, fi, err)
			}
			w.srv.Close() // the repository is gone too
			offline := func(args ...string) (string, string, int) {
				cmd := exec.Command(unshare, append([]string{"-n", filepath.Join(w.bin, "updog"), "--config", w.config, "--disk", w.disk, "--active", w.active}, args...)...)
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				err := cmd.Run()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				}
				return out.String(), errb.String(), code
			}
			if out, errs, code := offline("check-update", "--from", bundle); code != 0 || strings.TrimSpace(out) != "e2e 1.1.0" {
				t.Fatalf("check-update from the bundle: %d %q %s", code, out, errs)
			}
			if out, errs, code := offline("update", "--from", bundle); code != 0 {
				t.Fatalf("update from the bundle: %d %s %s", code, out, errs)
			}
			w.assertSetHolds(gptprio.SetB, "1.1.0")
			if ents, _ := os.ReadDir(filepath.Join(w.dir, "state", "tmp")); len(ents) != 0 {
				t.Fatalf("the unpacked bundle was left behind: %v", ents)
			}
		})
	}
}

// TestOfflineBundleExpired: a bundle whose timestamp has expired is
// refused, saying how to get past it; --offline-grace accepts it, and
// status records that it did.
func TestOfflineBundleExpired(t *testing.T) {
	w := newWorld(t)
	w.release("1.1.0", 1)
	mf, _ := os.ReadFile(filepath.Join(w.dir, "manifest.json"))
	os.WriteFile(filepath.Join(w.dir, "targets", "manifest.json"), mf, 0o644)
	repoDir := filepath.Join(w.dir, "repo-short")
	expires := time.Now().Add(2 * time.Second).UTC().Format(time.RFC3339)
	w.must("tuftool", "create", "--root", filepath.Join(w.dir, "root.json"), "-k", filepath.Join(w.dir, "keys", "root.pem"),
		"--add-targets", filepath.Join(w.dir, "targets"), "--outdir", repoDir, "--timestamp-expires", expires)
	bundle := filepath.Join(w.dir, "bundle")
	w.must("tuftool", "export", "--root", filepath.Join(w.dir, "root.json"), "--metadata-url", filepath.Join(repoDir, "metadata"),
		"--targets-url", filepath.Join(repoDir, "targets"), "--out", bundle)
	time.Sleep(3 * time.Second)
	// Refused by check-update and update alike, with a message that says
	// the bundle has expired (which one, which role, when) and both ways
	// past it: a fresh bundle from tuftool export, or --offline-grace.
	for _, cmd := range []string{"check-update", "update"} {
		_, errs, code := w.updog(cmd, "--from", bundle)
		if code != exitError {
			t.Fatalf("%s of an expired bundle: exit %d, want %d: %s", cmd, code, exitError, errs)
		}
		for _, want := range []string{bundle, "too old", "timestamp", "expired", "get a fresh one (tuftool export)", "--offline-grace"} {
			if !strings.Contains(errs, want) {
				t.Errorf("%s of an expired bundle: the message does not say %q: %s", cmd, want, errs)
			}
		}
	}
	if out, errs, code := w.updog("update", "--from", bundle, "--offline-grace", "1h"); code != 0 {
		t.Fatalf("within the grace: %d %s %s", code, out, errs)
	}
	w.assertSetHolds(gptprio.SetB, "1.1.0")
	if st := w.status(); st["offline_grace"] == nil {
		t.Fatalf("status does not record the grace: %v", st)
	}
}

// TestEndToEndEachCodec: updog installs images compressed with each tool
// (xz, lz4 -9 as Bottlerocket ships, gzip, none) byte-identical.
func TestEndToEndEachCodec(t *testing.T) {
	for _, codec := range []string{"xz", "lz4", "gzip", "raw"} {
		t.Run(codec, func(t *testing.T) {
			w := newWorld(t)
			w.codec = codec
			w.release("1.1.0", 2)
			w.publish()
			if out, errs, code := w.updog("update"); code != 0 {
				t.Fatalf("update (%s): %d %s %s", codec, code, out, errs)
			}
			w.assertSetHolds(gptprio.SetB, "1.1.0")
		})
	}
}
