package vmtest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/updog/updog/vmtest/plan"
)

// Bounds on the guest. bootTimeout bounds each boot: from one sign of
// life of the boot chain to the next (the selector starting, the set
// chosen, the root switched to, the guest's init running, a step ending,
// a restart); a boot under software emulation takes 20-60 s here,
// kexec included.
const (
	bootTimeout = 4 * time.Minute
	// stepTimeout bounds one step of a plan (an update under emulation
	// writes and verifies about 120 MiB).
	stepTimeout = 8 * time.Minute
	// runTimeout bounds a whole QEMU run, however much progress it
	// shows: a guest that boots in a loop is stopped.
	runTimeout = 12 * time.Minute
)

// mark is a sign of progress on the console or the protocol port, with
// the host time it was first seen.
type mark struct {
	at   time.Time
	kind string // stage1, chose, kexec, stage2, switch, corrupt, restart, event
	set  string // for chose
	ev   *plan.Event
	line string
}

var (
	reStage1  = regexp.MustCompile(`bootsel: (\[[0-9.]+s\] )?stage one:`)
	reChose   = regexp.MustCompile(`bootsel: (\[[0-9.]+s\] )?booting set=([a-z]) `)
	reKexec   = regexp.MustCompile(`bootsel: (\[[0-9.]+s\] )?loaded .*starting it with kexec`)
	reStage2  = regexp.MustCompile(`bootsel: (\[[0-9.]+s\] )?stage two:`)
	reSwitch  = regexp.MustCompile(`bootsel: (\[[0-9.]+s\] )?root .* mounted read-only`)
	reCorrupt = regexp.MustCompile(`device-mapper: verity: .*(is corrupted|corruption)`)
	reRestart = regexp.MustCompile(`reboot: Restarting system|bootsel: .*restarting in`)
	reFailed  = regexp.MustCompile(`bootsel: .*boot failed`)
)

// runResult is one QEMU run.
type runResult struct {
	phase    string
	console  string // path
	proto    string // path
	marks    []mark
	events   []plan.Event
	elapsed  time.Duration
	exitErr  error
	timedOut string
	// failedBefore is whether the test had failed before this run.
	failedBefore bool
}

// choices are the sets the boot selector chose, in order.
func (r *runResult) choices() []string {
	var out []string
	for _, m := range r.marks {
		if m.kind == "chose" {
			out = append(out, m.set)
		}
	}
	return out
}

// boots are the guest's boot events.
func (r *runResult) boots() []plan.Event {
	var out []plan.Event
	for _, e := range r.events {
		if e.Event == plan.EventBoot {
			out = append(out, e)
		}
	}
	return out
}

// steps returns the step events named name, in order.
func (r *runResult) steps(name string) []plan.Event {
	var out []plan.Event
	for _, e := range r.events {
		if e.Event == plan.EventStep && e.Name == name {
			out = append(out, e)
		}
	}
	return out
}

func (r *runResult) has(kind string) bool {
	for _, m := range r.marks {
		if m.kind == kind {
			return true
		}
	}
	return false
}

// bootTimes are the wall-clock durations of the machine's boots: from the
// selector starting (the first console output of a boot is the firmware's,
// which the log does not mark) to the guest's init reporting, with the
// part spent from the selector's start to kexec.
func (r *runResult) bootTimes() []string {
	var out []string
	var start, kexec time.Time
	for _, m := range r.marks {
		switch m.kind {
		case "stage1":
			start, kexec = m.at, time.Time{}
		case "kexec":
			kexec = m.at
		case "event":
			if m.ev.Event == plan.EventBoot && !start.IsZero() {
				s := fmt.Sprintf("%.1fs", m.at.Sub(start).Seconds())
				if !kexec.IsZero() {
					s += fmt.Sprintf(" (selector to kexec %.1fs, kexec to init %.1fs)", kexec.Sub(start).Seconds(), m.at.Sub(kexec).Seconds())
				}
				out = append(out, s)
				start = time.Time{}
			}
		}
	}
	return out
}

// watcher follows a file as QEMU writes it, line by line.
type watcher struct {
	f    *os.File
	rd   *bufio.Reader
	part string
}

func (w *watcher) lines() []string {
	var out []string
	for {
		s, err := w.rd.ReadString('\n')
		w.part += s
		if err != nil {
			return out
		}
		out = append(out, strings.TrimRight(w.part, "\r\n"))
		w.part = ""
	}
}

// boot runs QEMU on disk (the host's disk, changed in place) and usb
// until the guest powers off, every boot bounded by bootTimeout (and a
// step by stepTimeout). The console and the protocol port are kept in the
// artifacts directory as <phase>.console.log and <phase>.proto.log.
func (l *lab) boot(phase, disk, usb string) *runResult {
	return l.bootWith(phase, disk, usb, []string{"-kernel", l.kernel, "-initrd", l.initrd, "-append", "console=ttyS0 quiet"})
}

// bootWith is boot with the given firmware arguments: the stage-one
// kernel given to QEMU (-kernel, -initrd, -append), or a UEFI firmware
// (-bios OVMF.fd) that finds the boot loader on the disk.
func (l *lab) bootWith(phase, disk, usb string, firmware []string) *runResult {
	t := l.t
	r := &runResult{phase: phase, console: filepath.Join(l.artifacts, phase+".console.log"),
		proto: filepath.Join(l.artifacts, phase+".proto.log"), failedBefore: t.Failed()}
	for _, p := range []string{r.console, r.proto} {
		os.Remove(p)
		write(t, p, "")
	}
	// No network at all: -nodefaults adds no NIC, and -nic none says so.
	args := []string{"-machine", "pc", "-cpu", "max", "-m", "1024", "-smp", "1", "-nodefaults", "-no-user-config",
		"-nic", "none", "-display", "none", "-monitor", "none", "-rtc", "base=utc",
		"-drive", "file=" + disk + ",if=virtio,format=raw",
		"-drive", "file=" + usb + ",if=virtio,format=raw,readonly=on",
		"-serial", "file:" + r.console, "-serial", "file:" + r.proto}
	args = append(args, firmware...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, l.qemu, args...)
	var qemuOut strings.Builder
	cmd.Stdout, cmd.Stderr = &qemuOut, &qemuOut
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	t.Logf("%s: QEMU started (console: %s)", phase, r.console)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	open := func(p string) *watcher {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		return &watcher{f: f, rd: bufio.NewReader(f)}
	}
	con, pro := open(r.console), open(r.proto)
	defer con.f.Close()
	defer pro.f.Close()
	var mu sync.Mutex
	last, limit := time.Now(), bootTimeout
	poll := func() {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		for _, line := range con.lines() {
			kind, set := "", ""
			switch {
			case reStage1.MatchString(line):
				kind = "stage1"
			case reChose.MatchString(line):
				kind, set = "chose", reChose.FindStringSubmatch(line)[2]
			case reKexec.MatchString(line):
				kind = "kexec"
			case reStage2.MatchString(line):
				kind = "stage2"
			case reSwitch.MatchString(line):
				kind = "switch"
			case reCorrupt.MatchString(line):
				kind = "corrupt"
			case reFailed.MatchString(line):
				kind = "failed"
			case reRestart.MatchString(line):
				kind = "restart"
			}
			if kind != "" {
				r.marks = append(r.marks, mark{at: now, kind: kind, set: set, line: line})
				last, limit = now, bootTimeout
			}
		}
		for _, line := range pro.lines() {
			i := strings.Index(line, plan.Prefix)
			if i < 0 {
				continue
			}
			var ev plan.Event
			if err := json.Unmarshal([]byte(line[i+len(plan.Prefix):]), &ev); err != nil {
				t.Errorf("%s: a protocol line that does not parse: %q: %v", phase, line, err)
				continue
			}
			r.events = append(r.events, ev)
			r.marks = append(r.marks, mark{at: now, kind: "event", ev: &ev, line: line})
			last, limit = now, bootTimeout
			if ev.Event == plan.EventBoot || ev.Event == plan.EventStep {
				// The guest's next sign of life is the end of a step.
				limit = stepTimeout
			}
		}
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			poll()
			r.elapsed, r.exitErr = time.Since(start), err
			t.Logf("%s: the guest powered off after %.1fs; boots: %s\n%s", phase, r.elapsed.Seconds(), strings.Join(r.bootTimes(), "; "), r.timeline(start))
			if err != nil {
				t.Errorf("%s: QEMU: %v\n%s", phase, err, qemuOut.String())
			}
			return r
		case <-tick.C:
			poll()
			if time.Since(start) > runTimeout {
				r.timedOut = fmt.Sprintf("the run took more than %v (a boot loop?)", runTimeout)
			} else if time.Since(last) > limit {
				r.timedOut = fmt.Sprintf("no progress for %v (the limit of a boot or a step)", limit)
			}
			if r.timedOut != "" {
				cancel()
				<-done
				r.elapsed = time.Since(start)
				t.Errorf("%s: %s; the last sign was %q", phase, r.timedOut, lastLine(r))
				return r
			}
		}
	}
}

// timeline lists the marks with their time since QEMU started.
func (r *runResult) timeline(start time.Time) string {
	var b strings.Builder
	for _, m := range r.marks {
		what := m.kind
		switch {
		case m.kind == "chose":
			what += " " + m.set
		case m.ev != nil:
			what = m.ev.Event + " " + m.ev.Name
			if m.ev.Event == plan.EventBoot {
				what += fmt.Sprintf(" #%d: set %s, %s", m.ev.Boot, m.ev.Set, m.ev.Version)
			}
			if m.ev.Event == plan.EventStep {
				what += fmt.Sprintf(" (exit %d)", m.ev.Exit)
			}
		}
		fmt.Fprintf(&b, "    %7.1fs  %s\n", m.at.Sub(start).Seconds(), what)
	}
	return strings.TrimRight(b.String(), "\n")
}

func lastLine(r *runResult) string {
	if len(r.marks) == 0 {
		return "(nothing: the boot selector never started)"
	}
	return r.marks[len(r.marks)-1].line
}

// dump prints a run's console and protocol log (on failure).
func dump(t *testing.T, r *runResult) {
	t.Helper()
	for _, p := range []string{r.console, r.proto} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Logf("%s: %v", p, err)
			continue
		}
		t.Logf("===== %s (%d bytes) =====\n%s", p, len(b), b)
	}
}
