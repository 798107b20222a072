package vmtest

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/vmtest/plan"
)

// TestVM is issue 11's test: a real boot chain, dm-verity, updog updating
// its own disk from a repository on a second disk, and automatic fallback,
// in QEMU.
//
//  1. 1.0.0, built with imgbuild build, boots: set A, 1.0.0, the verity
//     target in the device-mapper table, the active set found by updog
//     through /sys.
//  2. 1.1.0 is published on the USB disk; the guest runs `updog update
//     --reboot`; the next boot is set B, 1.1.0; its init runs `updog
//     mark-good` and `updog status --json` shows it marked.
//  3. From that state (a copy of the disk each time), three broken 1.2.0s:
//     a root with a byte flipped after its verity tree was made (updog
//     refuses it before the switch); a failing health check (never marked
//     good, the init restarts, set A is tried once, the guest comes back to
//     B); a good release whose new root gets a byte flipped on the disk
//     after the switch (dm-verity fails that boot, the guest comes back to
//     B). After each, `updog status` reports the failed attempt and
//     `updog check-update` skips the release.
//  4. From that state again, `updog rollback --reboot` boots set A, 1.0.0.
//  5. A disk with no bootable set: the boot selector says so and powers
//     off.
func TestVM(t *testing.T) {
	if os.Getenv("UPDOG_VM") == "" {
		t.Skip("the VM test boots QEMU for several minutes: make test-vm runs it (UPDOG_VM=1)")
	}
	start := time.Now()
	l := newLab(t)
	defer func() {
		t.Logf("TestVM took %.1fs (consoles in %s)", time.Since(start).Seconds(), l.artifacts)
	}()

	r100 := l.buildRelease("1.0.0", "1.0.0", true, true)
	r110 := l.buildRelease("1.1.0", "1.1.0", true, false)
	badRoot := l.buildRelease("1.2.0", "1.2.0-badroot", true, false)
	l.corruptRoot(badRoot)
	unhealthy := l.buildRelease("1.2.0", "1.2.0-unhealthy", false, false)
	good120 := l.buildRelease("1.2.0", "1.2.0-good", true, false)
	repo2 := l.repository("step2", "", r100, r110)
	t.Logf("releases and repositories built in %.1fs", time.Since(start).Seconds())

	status := plan.Step{Name: "status", Cmd: []string{"updog", "--json", "status"}}
	check := plan.Step{Name: "check-update", Cmd: []string{"updog", "check-update"}}

	// Steps 1 and 2: one machine, two boots.
	disk := l.hostDisk(r100, "host.img")
	usb := l.usbDisk("step2", repo2, plan.Plan{Phase: "update", Boots: []plan.Boot{
		{Steps: []plan.Step{status, check, {Name: "update", Cmd: []string{"updog", "update", "--reboot"}}}},
		{Steps: []plan.Step{status}},
	}})
	r := l.boot("1-2-update", disk, usb)
	c := newChecker(t, r)
	c.choices("a", "b")
	c.boots("a 1.0.0", "b 1.1.0")
	if b := c.boot(0); b != nil {
		if len(b.DMTable) != 1 || !strings.Contains(b.DMTable[0], " verity 1 ") || !strings.Contains(b.DMTable[0], "restart_on_corruption") {
			c.errorf("step 1: the root's device-mapper table is %q, not one dm-verity target with restart_on_corruption", b.DMTable)
		}
		if !slices.Equal(b.DMStatus, []string{"verity V"}) {
			c.errorf("step 1: the verity target's status is %q, want verified (V)", b.DMStatus)
		}
		if !strings.HasSuffix(b.RootBacking, "partition 4 under dm-0") {
			c.errorf("step 1: the root is %q, want ROOT-A (partition 4) under dm-0", b.RootBacking)
		}
	}
	if st := c.status(0); st != nil && (st.Active != "a" || st.Running == nil || st.Running.Version != "1.0.0") {
		c.errorf("step 1: updog status: active %q running %+v, want set a (found through /sys) running 1.0.0", st.Active, st.Running)
	}
	c.stepExit("check-update", 0, 0, "1.1.0")
	if st := c.status(1); st != nil && (st.Active != "b" || st.Sets["b"] == nil || !st.Sets["b"].Successful || st.AwaitingMarkGood) {
		c.errorf("step 2: after mark-good, updog status --json does not show set b marked good: %+v", st)
	}
	c.stepExit("mark-good", 1, 0, "")
	c.done()
	good := l.snapshot(disk, "host-step2.img")

	// Step 3, from the good state of step 2 each time.
	// afterFailure checks the last boot of a broken release's phase: back
	// on set B, 1.1.0; updog status lists 1.2.0 among the releases that
	// failed here, with the reason; check-update skips it.
	afterFailure := func(c *checker, boot int, why string) {
		st := c.status(boot)
		if st == nil {
			return
		}
		if st.Active != "b" || st.Running == nil || st.Running.Version != "1.1.0" {
			c.errorf("%s: running %+v on set %q, want 1.1.0 on b", why, st.Running, st.Active)
		}
		found := false
		for _, f := range st.Failed {
			found = found || (f.Version == "1.2.0" && f.Reason != "")
		}
		if !found {
			c.errorf("%s: updog status does not report the failed attempt at 1.2.0: failed %+v, last attempt %+v", why, st.Failed, st.LastAttempt)
		}
		c.stepExit("check-update", boot, 3, "skipping 1.2.0")
	}

	// 3a: a root with a flipped byte: refused before the switch.
	repo := l.repository("badroot", repo2, r100, r110, badRoot)
	disk = l.snapshot(good, "host-3a.img")
	usb = l.usbDisk("badroot", repo, plan.Plan{Phase: "badroot", Boots: []plan.Boot{
		{Steps: []plan.Step{{Name: "update", Cmd: []string{"updog", "update", "--reboot"}}, status}, Then: plan.ActionReboot},
		{Steps: []plan.Step{status, check}},
	}})
	r = l.boot("3a-badroot", disk, usb)
	c = newChecker(t, r)
	c.choices("b", "b")
	c.boots("b 1.1.0", "b 1.1.0")
	c.stepExit("update", 0, 1, "does not verify")
	if st := c.status(0); st != nil && (st.LastAttempt == nil || st.LastAttempt.Outcome != "failed" || st.Sets["a"] == nil ||
		st.Sets["a"].Priority != 0 || st.Sets["a"].Tries != 0 || st.Sets["a"].Successful) {
		c.errorf("3a: after the refused update, last attempt %+v and set a %+v: want a failed attempt and set a unbootable", st.LastAttempt, st.Sets["a"])
	}
	// The issue asks for the refused release to be skipped from then on,
	// like the two that fell back: updog must record a release whose
	// signed images do not verify as failed here (in state.json's
	// "failed"), which mark-good on the next boot does not erase.
	afterFailure(c, 1, "3a (corrupt root: the release refused at verification must be recorded as failed here)")
	c.done()

	// 3b: a failing health check: never marked good; set A is tried once
	// and the guest comes back to B on its own.
	repo = l.repository("unhealthy", repo2, r100, r110, unhealthy)
	disk = l.snapshot(good, "host-3b.img")
	usb = l.usbDisk("unhealthy", repo, plan.Plan{Phase: "unhealthy", Boots: []plan.Boot{
		{Steps: []plan.Step{{Name: "update", Cmd: []string{"updog", "update", "--reboot"}}}},
		{}, // 1.2.0: mark-good fails, the init restarts before any step
		{Steps: []plan.Step{status, check}},
	}})
	r = l.boot("3b-unhealthy", disk, usb)
	c = newChecker(t, r)
	c.choices("b", "a", "b")
	c.boots("b 1.1.0", "a 1.2.0", "b 1.1.0")
	c.stepExit("mark-good", 1, 1, "health check failed")
	afterFailure(c, 2, "3b (failing health check)")
	c.done()

	// 3c: media corruption of the new root after the switch: dm-verity
	// fails that boot (restart_on_corruption) and the guest comes back to
	// B on its own.
	repo = l.repository("media", repo2, r100, r110, good120)
	disk = l.snapshot(good, "host-3c.img")
	usb = l.usbDisk("media", repo, plan.Plan{Phase: "media", Boots: []plan.Boot{
		{Steps: []plan.Step{{Name: "update", Cmd: []string{"updog", "update"}},
			{Name: "flip", Flip: &plan.Flip{Set: "a", Part: "root", Offset: flipOffset}}}, Then: plan.ActionReboot},
		{Steps: []plan.Step{status, check}},
	}})
	r = l.boot("3c-media", disk, usb)
	c = newChecker(t, r)
	c.choices("b", "a", "b")
	c.boots("b 1.1.0", "b 1.1.0")
	c.stepExit("update", 0, 0, "")
	c.stepExit("flip", 0, 0, "")
	if !r.has("corrupt") {
		c.errorf("3c: the console shows no dm-verity corruption on the boot of set a")
	}
	afterFailure(c, 1, "3c (media corruption)")
	c.done()

	// Step 4: rollback, from the good state of step 2.
	disk = l.snapshot(good, "host-4.img")
	usb = l.usbDisk("rollback", repo2, plan.Plan{Phase: "rollback", Boots: []plan.Boot{
		{Steps: []plan.Step{{Name: "rollback", Cmd: []string{"updog", "rollback", "--reboot"}}}},
		{Steps: []plan.Step{status}},
	}})
	r = l.boot("4-rollback", disk, usb)
	c = newChecker(t, r)
	c.choices("b", "a")
	c.boots("b 1.1.0", "a 1.0.0")
	if st := c.status(1); st != nil && st.Active != "a" {
		c.errorf("4: after the rollback updog status says set %q is active", st.Active)
	}
	c.done()

	// No bootable set: the selector says so and powers the machine off
	// (it does not loop, and nothing boots).
	disk = l.snapshot(good, "host-none.img")
	l.unbootable(disk)
	r = l.boot("5-none-bootable", disk, usb)
	c = newChecker(t, r)
	c.choices()
	c.boots()
	if !r.hasLine("no bootable partition set") || !r.hasLine("powering off") {
		c.errorf("the console does not say that no set is bootable and that the machine powers off")
	}
	c.done()
}

// unbootable clears the gptprio bits of every BOOT partition of a disk
// image: no set has a priority, tries or the successful mark.
func (l *lab) unbootable(disk string) {
	ctx := context.Background()
	d, err := gptprio.OpenDisk(ctx, disk, gptprio.OpenOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	defer d.Close()
	_, _, err = d.Update(ctx, func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		for i, p := range t.Partitions {
			if p.Type == gptprio.TypeBoot {
				t.Partitions[i].Attributes = p.Attributes.WithPriority(0).WithTries(0).WithSuccessful(false)
			}
		}
		return t, nil
	})
	if err != nil {
		l.t.Fatal(err)
	}
}

// status is the part of `updog status --json` the test reads.
type status struct {
	Active  string `json:"active"`
	Running *struct {
		Version string `json:"version"`
	} `json:"running"`
	Sets map[string]*struct {
		Priority   int  `json:"priority"`
		Tries      int  `json:"tries"`
		Successful bool `json:"successful"`
	} `json:"sets"`
	LastAttempt *struct {
		Action  string `json:"action"`
		Outcome string `json:"outcome"`
		Error   string `json:"error"`
		Release *struct {
			Version string `json:"version"`
		} `json:"release"`
	} `json:"last_attempt"`
	Failed []struct {
		Version string `json:"version"`
		Reason  string `json:"reason"`
	} `json:"failed"`
	AwaitingMarkGood bool `json:"awaiting_mark_good"`
}

// checker checks one run and dumps its logs if anything in it failed.
type checker struct {
	t      *testing.T
	r      *runResult
	failed bool
	// before is whether the test had failed before this run's checks
	// (then t.Failed says nothing about this run).
	before bool
}

func newChecker(t *testing.T, r *runResult) *checker {
	return &checker{t: t, r: r, before: r.failedBefore}
}

func (c *checker) errorf(format string, a ...any) {
	c.t.Helper()
	c.failed = true
	c.t.Errorf(c.r.phase+": "+format, a...)
}

func (c *checker) done() {
	for _, e := range c.r.events {
		if e.Event == plan.EventError {
			c.errorf("the guest reports: %s", e.Error)
		}
	}
	if c.failed || c.r.timedOut != "" || c.r.exitErr != nil || (!c.before && c.t.Failed()) {
		dump(c.t, c.r)
	}
}

func (c *checker) choices(want ...string) {
	c.t.Helper()
	if got := c.r.choices(); !slices.Equal(got, want) {
		c.errorf("the boot selector chose sets %v, want %v", got, want)
	}
}

// boots checks the guest's boots: "set version" each.
func (c *checker) boots(want ...string) {
	c.t.Helper()
	var got []string
	for _, b := range c.r.boots() {
		got = append(got, b.Set+" "+b.Version)
	}
	if !slices.Equal(got, want) {
		c.errorf("the guest booted %q, want %q", got, want)
	}
}

// boot returns the guest's i-th boot event (0-based).
func (c *checker) boot(i int) *plan.Event {
	b := c.r.boots()
	if i >= len(b) {
		return nil
	}
	return &b[i]
}

// stepsOfBoot returns the steps of the guest's i-th boot.
func (c *checker) stepsOfBoot(i int) []plan.Event {
	var out []plan.Event
	n := -1
	for _, e := range c.r.events {
		if e.Event == plan.EventBoot {
			n++
			continue
		}
		if n == i && e.Event == plan.EventStep {
			out = append(out, e)
		}
	}
	return out
}

// stepExit checks a step of boot i (-1: the last step of that name in
// the run) exited with code and printed want (stdout or stderr).
func (c *checker) stepExit(name string, boot, code int, want string) {
	c.t.Helper()
	var steps []plan.Event
	if boot < 0 {
		steps = c.r.steps(name)
	} else {
		for _, s := range c.stepsOfBoot(boot) {
			if s.Name == name {
				steps = append(steps, s)
			}
		}
	}
	if len(steps) == 0 {
		c.errorf("no step %s (boot %d)", name, boot+1)
		return
	}
	s := steps[len(steps)-1]
	if s.Exit != code || !strings.Contains(s.Stdout+s.Stderr, want) {
		c.errorf("step %s (boot %d): exit %d, want %d with %q in its output:\nstdout: %s\nstderr: %s%s", name, boot+1, s.Exit, code, want, s.Stdout, s.Stderr, s.Error)
	}
}

// status parses the status step of boot i.
func (c *checker) status(i int) *status {
	c.t.Helper()
	for _, s := range c.stepsOfBoot(i) {
		if s.Name != "status" {
			continue
		}
		var st status
		if err := json.Unmarshal([]byte(s.Stdout), &st); err != nil || s.Exit != 0 {
			c.errorf("updog status (boot %d): exit %d, %v\n%s%s", i+1, s.Exit, err, s.Stdout, s.Stderr)
			return nil
		}
		return &st
	}
	c.errorf("no updog status on boot %d", i+1)
	return nil
}
