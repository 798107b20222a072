// Package fleettest runs the processes that fleet tests need, on
// 127.0.0.1 only: a single-member etcd with a temporary data directory,
// updog-lockd, and commands built from this module. It is imported only
// by tests (it imports "testing", never testutil and never the etcd
// client, so that the import rules stay checkable on non-test code).
//
// Every process is started with its own PID recorded and is stopped by
// that PID (SIGTERM, then SIGKILL) in t.Cleanup; nothing is ever killed by
// name.
package fleettest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// StartTimeout bounds how long a process may take to become ready.
const StartTimeout = 60 * time.Second

// Proc is a child process started by this package.
type Proc struct {
	Cmd  *exec.Cmd
	Name string
	Log  *logBuffer

	mu      sync.Mutex
	done    chan struct{}
	waitErr error
	stopped bool // SIGSTOP sent, SIGCONT not yet
}

// PID returns the process ID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.done }

// Err returns the process's exit error, once Exited is closed.
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// Output returns what the process wrote so far (bounded).
func (p *Proc) Output() string { return p.Log.String() }

func start(t testing.TB, name string, cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{Cmd: cmd, Name: name, Log: &logBuffer{max: 1 << 20}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Log, p.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(p.done)
	}()
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	return p, nil
}

// Pause stops the process with SIGSTOP (as a hung machine would).
func (p *Proc) Pause() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	return p.Cmd.Process.Signal(syscall.SIGSTOP)
}

// Resume continues a paused process with SIGCONT.
func (p *Proc) Resume() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = false
	return p.Cmd.Process.Signal(syscall.SIGCONT)
}

// Kill kills the process with SIGKILL (a crash) and waits for it.
func (p *Proc) Kill() {
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends SIGTERM (after SIGCONT, should it be paused) and waits up to
// grace before SIGKILL. It is a no-op on an exited process.
func (p *Proc) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.mu.Lock()
	if p.stopped {
		_ = p.Cmd.Process.Signal(syscall.SIGCONT)
		p.stopped = false
	}
	p.mu.Unlock()
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.Cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// Etcd is a single-member etcd cluster on 127.0.0.1.
type Etcd struct {
	*Proc
	Endpoint string // http://127.0.0.1:PORT, the client URL
	Dir      string // data directory
	bin      string
	args     []string
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartEtcd starts the etcd binary at bin (find it with
// testutil.Tool(t, "etcd")) on free ports of 127.0.0.1 with a data
// directory in t.TempDir(), waits until it reports healthy, and stops it
// by its PID when the test ends.
func StartEtcd(t testing.TB, bin string) *Etcd {
	t.Helper()
	var lastErr error
	for try := 0; try < 3; try++ { // a port taken between FreePort and etcd's bind
		e, err := startEtcd(t, bin)
		if err == nil {
			return e
		}
		lastErr = err
	}
	t.Fatalf("etcd did not start: %v", lastErr)
	return nil
}

func startEtcd(t testing.TB, bin string) (*Etcd, error) {
	dir := filepath.Join(t.TempDir(), "etcd")
	client := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	args := []string{
		"--name", "fleettest",
		"--data-dir", dir,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--listen-peer-urls", peer,
		"--initial-advertise-peer-urls", peer,
		"--initial-cluster", "fleettest=" + peer,
		"--initial-cluster-state", "new",
		"--log-level", "warn",
	}
	e := &Etcd{Endpoint: client, Dir: dir, bin: bin, args: args}
	if err := e.start(t); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Etcd) start(t testing.TB) error {
	cmd := exec.Command(e.bin, e.args...)
	cmd.Env = cleanEnv("ETCD_")
	p, err := start(t, "etcd", cmd)
	if err != nil {
		return err
	}
	e.Proc = p
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if err := waitHealthy(ctx, e.Endpoint+"/health", p); err != nil {
		p.Stop(5 * time.Second)
		return fmt.Errorf("%w\n%s", err, p.Output())
	}
	return nil
}

// Restart stops etcd (SIGTERM) and starts it again on the same ports and
// data directory.
func (e *Etcd) Restart(t testing.TB) {
	t.Helper()
	e.Stop(10 * time.Second)
	if err := e.start(t); err != nil {
		t.Fatalf("restarting etcd: %v", err)
	}
}

// cleanEnv returns the environment without variables starting with
// prefix (etcd reads its flags from ETCD_* variables too).
func cleanEnv(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// waitHealthy polls url until it answers 200 with "true" in the body, the
// process exits, or ctx ends.
func waitHealthy(ctx context.Context, url string, p *Proc) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := hc.Get(url)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(string(body), "true") {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready: %v", p.Name, p.Err())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w", p.Name, url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logBuffer keeps the first max bytes written to it.
type logBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(len(p), room)]...)
	}
	return len(p), nil
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

var builds sync.Map // package path -> *buildResult

type buildResult struct {
	once sync.Once
	path string
	err  error
	dir  string
}

// Build builds a command of this module (e.g. "./cmd/updog-lockd") once
// per test process into a temporary directory and returns the binary's
// path. The directory is removed by Cleanup (call it from TestMain, or
// leave it to the OS's temporary directory cleaning).
func Build(t testing.TB, root, pkg string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(pkg, &buildResult{})
	b := v.(*buildResult)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "fleettest-build-")
		if err != nil {
			b.err = err
			return
		}
		b.dir = dir
		b.path = filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %w\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// Cleanup removes the binaries built by Build.
func Cleanup() {
	builds.Range(func(_, v any) bool {
		if b := v.(*buildResult); b.dir != "" {
			os.RemoveAll(b.dir)
		}
		return true
	})
}

// Lockd is an updog-lockd process.
type Lockd struct {
	*Proc
	URL  string // http://127.0.0.1:PORT, the FleetLock base URL
	bin  string
	args []string
}

// StartLockd starts the updog-lockd binary at bin on a free port of
// 127.0.0.1 with extra arguments (e.g. "--etcd-endpoints", e.Endpoint,
// "--slots", "2") and waits until it accepts connections.
func StartLockd(t testing.TB, bin string, extra ...string) *Lockd {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", FreePort(t))
	l := &Lockd{URL: "http://" + addr, bin: bin, args: append([]string{"--listen", addr}, extra...)}
	if err := l.start(t); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *Lockd) start(t testing.TB) error {
	p, err := start(t, "updog-lockd", exec.Command(l.bin, l.args...))
	if err != nil {
		return err
	}
	l.Proc = p
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	addr := strings.TrimPrefix(l.URL, "http://")
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("updog-lockd exited: %v\n%s", p.Err(), p.Output())
		case <-ctx.Done():
			return fmt.Errorf("updog-lockd not listening on %s: %w\n%s", addr, ctx.Err(), p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Restart starts a new updog-lockd on the same address after the old one
// exited (killed or stopped).
func (l *Lockd) Restart(t testing.TB) error {
	select {
	case <-l.Exited():
	default:
		return errors.New("updog-lockd is still running")
	}
	return l.start(t)
}
