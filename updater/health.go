package updater

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/updog/updog/gptprio"
)

// maxCheckOutput bounds what is kept of one health check's output.
const maxCheckOutput = 64 << 10

// CheckResult is one health check's outcome.
type CheckResult struct {
	Name     string        `json:"name"`
	OK       bool          `json:"ok"`
	ExitCode int           `json:"exit_code"`
	Duration time.Duration `json:"duration_ns"`
	Output   string        `json:"output,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// HealthReport is what mark-good did.
type HealthReport struct {
	Set    string        `json:"set"`
	Checks []CheckResult `json:"checks"`
	Marked bool          `json:"marked"`
}

// healthChecks lists the executables in dir, in name order. Hidden files
// and editor leftovers are skipped; a check that is not executable or not a
// regular file is an error (a health check an operator thinks runs but
// does not is worse than none).
func healthChecks(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("health checks in %s: %w", dir, err)
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".") || strings.HasSuffix(n, "~") || strings.HasSuffix(n, ".dpkg-old") || strings.HasSuffix(n, ".rpmsave") {
			continue
		}
		p := filepath.Join(dir, n)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("health check %s: %w", p, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("%w: %s is not an executable regular file", ErrHealth, p)
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

// runCheck runs one check with a timeout, killing its whole process group
// when the time is up and after it exits (a check that leaves a child
// behind does not keep it), and keeps a bounded copy of its output.
func runCheck(ctx context.Context, path string, timeout time.Duration) CheckResult {
	r := CheckResult{Name: filepath.Base(path), ExitCode: -1}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	out := &limitedBuffer{max: maxCheckOutput}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	err := cmd.Start()
	if err == nil {
		err = cmd.Wait()
		// Whatever the check left running dies with it.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	r.Duration = time.Since(start)
	r.Output = out.String()
	if cmd.ProcessState != nil {
		r.ExitCode = cmd.ProcessState.ExitCode()
	}
	// A check that exited 0 passed, even if a child it started kept its
	// output open past the wait (exec.ErrWaitDelay).
	passed := cmd.ProcessState != nil && cmd.ProcessState.Success() && (err == nil || errors.Is(err, exec.ErrWaitDelay))
	switch {
	case cctx.Err() == context.DeadlineExceeded && !passed:
		r.Error = fmt.Sprintf("timed out after %s", timeout)
	case ctx.Err() != nil:
		r.Error = ctx.Err().Error()
	case !passed && err != nil:
		r.Error = err.Error()
	case !passed:
		r.Error = "failed"
	default:
		r.OK = true
	}
	return r
}

// limitedBuffer keeps the first max bytes written to it and counts the
// rest. (It is not a bytes.Buffer: io.Copy would use Buffer.ReadFrom and
// never pass through the limit.)
type limitedBuffer struct {
	buf       bytes.Buffer
	max       int
	truncated int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); room < len(p) {
		if room > 0 {
			b.buf.Write(p[:room])
		}
		b.truncated += int64(len(p) - max(room, 0))
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *limitedBuffer) String() string {
	s := b.buf.String()
	if b.truncated > 0 {
		s += fmt.Sprintf("\n[%d more bytes of output not kept]", b.truncated)
	}
	return s
}

var _ io.Writer = (*limitedBuffer)(nil)

// MarkGood runs the health checks and, only when all pass, marks the
// running set successful. A failed check leaves the set unmarked (so the
// next reboot falls back when the set is new) and returns ErrHealth.
func (u *Updater) MarkGood(ctx context.Context) (*HealthReport, error) {
	s, err := u.openSession(ctx, false, true)
	if err != nil {
		return nil, err
	}
	defer s.close()
	rep := &HealthReport{Set: s.active.String(), Checks: []CheckResult{}}
	checks, err := healthChecks(u.cfg.HealthDir)
	now := u.now().UTC()
	att := &Attempt{Action: "mark-good", Started: now}
	if p := s.st.Pending; p != nil && p.Set == s.active.String() {
		r := p.Release
		att.Release = &r
	}
	fail := func(err error) (*HealthReport, error) {
		att.Ended, att.Outcome, att.Error = u.now().UTC(), "failed", err.Error()
		s.st.LastAttempt = att
		if serr := u.store.save(s.st); serr != nil {
			err = errors.Join(err, serr)
		}
		return rep, err
	}
	if err != nil {
		return fail(err)
	}
	for _, c := range checks {
		r := runCheck(ctx, c, u.cfg.HealthTimeout.Duration)
		rep.Checks = append(rep.Checks, r)
		u.log.Info("health check", "check", r.Name, "ok", r.OK, "exit_code", r.ExitCode, "duration", r.Duration, "output", r.Output, "error", r.Error)
		if !r.OK {
			return fail(fmt.Errorf("%w: %s: %s; set %s is not marked good", ErrHealth, r.Name, firstNonEmpty(r.Error, "failed"), s.active))
		}
	}
	if err := s.edit(ctx, func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		return gptprio.MarkSuccessfulBoot(t, s.active)
	}); err != nil {
		return fail(err)
	}
	rep.Marked = true
	s.reconcile()
	att.Ended, att.Outcome = u.now().UTC(), "success"
	s.st.LastAttempt = att
	if err := u.store.save(s.st); err != nil {
		return rep, err
	}
	s.steadyState(ctx)
	return rep, nil
}

func firstNonEmpty(a ...string) string {
	for _, s := range a {
		if s != "" {
			return s
		}
	}
	return ""
}
