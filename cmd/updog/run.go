package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/internal/hugeheap"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/updater"
)

// Exit codes.
const (
	exitOK       = cli.ExitOK
	exitError    = cli.ExitFailure
	exitUsage    = cli.ExitUsage
	exitNoUpdate = 3
	exitNotYet   = 4
	exitLocked   = 5
	exitWaiting  = 6
)

const usage = `Usage: updog [--config FILE] [--disk PATH] [--active a|b] [--json] [--log-level LEVEL] COMMAND [options]

Commands:
  check-update   the release this host would take (--all: every applicable release)
  update         write the release into the inactive set, verify it, switch to it
  update-image   write and verify only
  update-apply   switch to the set update-image wrote and verified
  update-revert  undo a switch before its reboot
  rollback       boot the other set next (refused when it would not boot)
  mark-good      run the health checks; only if all pass, mark the running set good
  status         the sets, the running release, a pending update, the last attempt
  reboot-needed  exit 0 when a verified update waits for a reboot, 1 when not (kured)
  fleet-lock release
                 give this host's fleet lock slot back (after a failed release)

Run updog COMMAND --help for the options of each.
` + exitHelp

const exitHelp = `
Exit status: 0 success (check-update: an update is available now), 1 error,
2 usage error, 3 no update available, 4 an update exists but this host's
wave has not come yet, 5 another updog holds the lock, 6 the update is
written and verified but the reboot strategy holds the switch (outside the
maintenance windows, no fleet lock slot, or strategy off). reboot-needed:
0 a reboot is needed, 1 not.
`

// env is what the tests inject.
type env struct {
	now    func() time.Time
	host   gptprio.HostInfo
	reboot func(context.Context) error
	// stderrIsTerminal forces the progress mode in tests.
	terminal *bool
}

type globals struct {
	config, disk, active, logLevel string
	json                           bool
	sectorSize                     int
}

func (g *globals) register(fs *pflag.FlagSet) {
	fs.StringVar(&g.config, "config", updater.DefaultConfigPath, "configuration `FILE`")
	fs.StringVar(&g.disk, "disk", "", "whole-disk device or disk image `PATH` (default: the disk holding /)")
	fs.StringVar(&g.active, "active", "", "the running set, `a|b` (default: found through /sys on a host)")
	fs.BoolVar(&g.json, "json", false, "machine-readable output; progress as JSON lines on stderr")
	fs.StringVar(&g.logLevel, "log-level", "warn", "log `LEVEL`: debug, info, warn or error")
	fs.IntVar(&g.sectorSize, "sector-size", 0, "logical sector size of an image file, 512 or 4096 (default: detected)")
}

type command struct {
	synopsis string
	help     string
	flags    func(fs *pflag.FlagSet, o *cmdOpts)
	run      func(ctx context.Context, c *cmdCtx) error
	// locks is set for commands that change the disk or the state.
	locks bool
}

type cmdOpts struct {
	all, now, dryRun, reboot bool
	noCheckpoints            bool
	image, from              string
	grace, lockWait          time.Duration
}

// markGoodLockWait is how long mark-good waits for another updog (a
// check-update from a timer) to release the lock: failing would leave a
// healthy set unmarked, to be rolled back at the next reboot.
const markGoodLockWait = 5 * time.Minute

// offline registers --from and --offline-grace.
func (o *cmdOpts) offline(fs *pflag.FlagSet) {
	fs.StringVar(&o.from, "from", "", "read the repository from an offline bundle (`FILE.tar` or directory from tuftool export) instead of the network")
	fs.DurationVar(&o.grace, "offline-grace", 0, "accept timestamp and snapshot metadata expired by at most this `DURATION` (never a rollback)")
}

type cmdCtx struct {
	name   string
	g      *globals
	o      *cmdOpts
	u      *updater.Updater
	stdout io.Writer
	stderr io.Writer
	prog   interface{ Wait() }
}

// noCheckpoints adds --no-checkpoints: an install that records no
// checkpoints, so that an interruption starts it over (what a checkpoint
// costs is measured against it: make bench).
func noCheckpoints(fs *pflag.FlagSet, o *cmdOpts) {
	fs.BoolVar(&o.noCheckpoints, "no-checkpoints", false, "record no checkpoints: an interrupted install starts over (for measurements)")
}

var commands = map[string]command{
	"check-update": {"[--all] [--now] [--image VERSION]", "the release this host would take",
		func(fs *pflag.FlagSet, o *cmdOpts) {
			fs.BoolVar(&o.all, "all", false, "list every applicable release (JSON: an array)")
			fs.BoolVar(&o.now, "now", false, "ignore the rollout waves")
			fs.StringVar(&o.image, "image", "", "this exact `VERSION`")
			o.offline(fs)
		}, cmdCheck, true},
	"update": {"[--reboot] [--now] [--image VERSION] [--dry-run]", "write, verify and switch to the release",
		func(fs *pflag.FlagSet, o *cmdOpts) {
			fs.BoolVar(&o.reboot, "reboot", false, "reboot into the new set when it is switched")
			fs.BoolVar(&o.now, "now", false, "ignore the rollout waves")
			fs.StringVar(&o.image, "image", "", "this exact `VERSION` (waves and earlier failures do not apply)")
			fs.BoolVar(&o.dryRun, "dry-run", false, "print the plan; change nothing")
			noCheckpoints(fs, o)
			o.offline(fs)
		}, cmdUpdate(true), true},
	"update-image": {"[--now] [--image VERSION] [--dry-run]", "write and verify the release into the inactive set; do not switch",
		func(fs *pflag.FlagSet, o *cmdOpts) {
			fs.BoolVar(&o.now, "now", false, "ignore the rollout waves")
			fs.StringVar(&o.image, "image", "", "this exact `VERSION`")
			fs.BoolVar(&o.dryRun, "dry-run", false, "print the plan; change nothing")
			noCheckpoints(fs, o)
			o.offline(fs)
		}, cmdUpdate(false), true},
	"update-apply": {"[--reboot]", "switch to the set update-image wrote and verified",
		func(fs *pflag.FlagSet, o *cmdOpts) {
			fs.BoolVar(&o.reboot, "reboot", false, "reboot into the new set")
		}, cmdApply, true},
	"update-revert": {"", "undo a switch before its reboot", nil, cmdRevert, true},
	"rollback": {"[--reboot]", "boot the other set next (refused when it would not boot)",
		func(fs *pflag.FlagSet, o *cmdOpts) {
			fs.BoolVar(&o.reboot, "reboot", false, "reboot into it")
		}, cmdRollback, true},
	"mark-good": {"", "run the health checks; only if all pass, mark the running set good", nil, cmdMarkGood, true},
	"status":    {"", "the sets, the running release, a pending update, the last attempt", nil, cmdStatus, false},
	"reboot-needed": {"", "exit 0 when a verified update waits for a reboot (written, or switched and not booted), 1 when not",
		nil, cmdRebootNeeded, false},
	"fleet-lock": {"release", "fleet-lock release: give this host's fleet lock slot back", nil, cmdFleetLock, true},
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, e env) int {
	g := &globals{}
	top := pflag.NewFlagSet("updog", pflag.ContinueOnError)
	top.SetOutput(io.Discard)
	top.SetInterspersed(false)
	g.register(top)
	help := top.BoolP("help", "h", false, "show this help")
	if err := top.Parse(args); err != nil {
		fmt.Fprintf(stderr, "updog: %v (see updog --help)\n", err)
		return exitUsage
	}
	rest := top.Args()
	if *help || (len(rest) > 0 && rest[0] == "help") {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	if len(rest) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	name := rest[0]
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "updog: unknown command %q (see updog --help)\n", name)
		return exitUsage
	}
	o := &cmdOpts{}
	// The globals given before the command stand unless repeated after it.
	given := map[string]string{}
	top.Visit(func(f *pflag.Flag) { given[f.Name] = f.Value.String() })
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	for k, v := range given {
		fs.Set(k, v)
	}
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	if cmd.locks {
		def := time.Duration(0)
		if name == "mark-good" {
			def = markGoodLockWait
		}
		fs.DurationVar(&o.lockWait, "lock-wait", def, "wait up to `DURATION` for another updog to release its lock (then exit 5)")
	}
	chelp := fs.BoolP("help", "h", false, "show this help")
	if err := fs.Parse(rest[1:]); err != nil {
		return cli.Report("updog", name, cli.Usagef("%s: %v (see updog %s --help)", name, err, name), stderr)
	}
	if *chelp {
		fmt.Fprintf(stdout, "Usage: updog [global options] %s %s\n\n%s.\n\nOptions:\n", name, cmd.synopsis, capitalize(cmd.help))
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fmt.Fprint(stdout, exitHelp)
		return exitOK
	}
	if name == "fleet-lock" {
		if fs.NArg() != 1 || fs.Arg(0) != "release" {
			return cli.Report("updog", name, cli.Usagef("fleet-lock: the only subcommand is release (see updog fleet-lock --help)"), stderr)
		}
	} else if fs.NArg() != 0 {
		return cli.Report("updog", name, cli.Usagef("%s takes no arguments, got %q (see updog %s --help)", name, fs.Args(), name), stderr)
	}
	return cli.Report("updog", name, execute(ctx, name, cmd, g, o, stdout, stderr, e), stderr)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func execute(ctx context.Context, name string, cmd command, g *globals, o *cmdOpts, stdout, stderr io.Writer, e env) error {
	if g.active != "" {
		if _, err := gptprio.ParseSet(g.active); err != nil {
			return cli.Usagef("--active %q: want a or b", g.active)
		}
	}
	if g.sectorSize != 0 && g.sectorSize != 512 && g.sectorSize != 4096 {
		return cli.Usagef("--sector-size %d: want 512 or 4096", g.sectorSize)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return cli.Usagef("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	if o.grace < 0 {
		return cli.Usagef("--offline-grace %s: want a positive duration", o.grace)
	}
	if o.lockWait < 0 {
		return cli.Usagef("--lock-wait %s: want a positive duration", o.lockWait)
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	cfg, err := updater.LoadConfig(g.config)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "updog: warning: %s\n", w)
	}
	if cfg.WantsHugePages() {
		// The heap in huge pages: far fewer page faults for an
		// install's working set (see hugeheap).
		hugeheap.Advise(hugeHeap)
	}
	c := &cmdCtx{name: name, g: g, o: o, stdout: stdout, stderr: stderr}
	opts := updater.Options{Config: cfg, Disk: g.disk, Active: g.active, SectorSize: g.sectorSize, Host: e.host,
		Now: e.now, Logger: logger, Reboot: e.reboot, From: o.from, OfflineGrace: o.grace, LockWait: o.lockWait}
	if o.noCheckpoints {
		opts.CheckpointEvery = -1
	}
	if prog := progressFor(g.json, stderr, e); prog != nil {
		opts.Progress = prog
		c.prog = prog
	}
	u, err := updater.New(opts)
	if err != nil {
		return err
	}
	c.u = u
	defer u.Close()
	if cmd.locks {
		if err := u.Lock(ctx); err != nil {
			return classify(err)
		}
		defer u.Unlock()
	}
	err = cmd.run(ctx, c)
	if c.prog != nil {
		c.prog.Wait()
	}
	return classify(interrupted(ctx, name, err))
}

// interrupted says, when a signal ended the command, that a signal did,
// and for an install that the next run goes on from its checkpoint.
func interrupted(ctx context.Context, name string, err error) error {
	if err == nil || ctx.Err() == nil {
		return err
	}
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, context.Canceled) {
		cause = errors.New("signal received")
	}
	next := "nothing was changed past the last safe point"
	switch name {
	case "update", "update-image":
		next = "the inactive set cannot boot until an update completes; run `updog " + name + "` again to go on from the last checkpoint"
	}
	return fmt.Errorf("stopped (%v): %s (%w)", cause, next, err)
}

type progressWaiter interface {
	updater.Progress
	Wait()
}

func progressFor(asJSON bool, stderr io.Writer, e env) progressWaiter {
	if asJSON {
		return newJSONProgress(stderr)
	}
	term := false
	if e.terminal != nil {
		term = *e.terminal
	} else if f, ok := stderr.(*os.File); ok {
		term = cli.IsTerminal(f)
	}
	if !term {
		return nil
	}
	return newBarProgress(stderr)
}

// classify gives the updater's decisions their exit codes.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, updater.ErrLocked):
		return &cli.ExitError{Code: exitLocked, Err: err}
	case errors.Is(err, updater.ErrNoUpdate), errors.Is(err, manifest.ErrVersionNotFound):
		return &cli.ExitError{Code: exitNoUpdate, Err: err}
	case errors.Is(err, updater.ErrNotInWave):
		return &cli.ExitError{Code: exitNotYet, Err: err}
	case errors.Is(err, updater.ErrWaiting):
		return &cli.ExitError{Code: exitWaiting, Err: err}
	case errors.Is(err, updater.ErrActiveUnknown):
		return cli.Usagef("%v", err)
	}
	return err
}

func writeJSON(w io.Writer, v any) error { return cli.WriteJSON(w, v) }

// releaseJSON is the manifest's fields of a release plus the host's place
// in its rollout.
func releaseJSON(u *manifest.Update, wave any, eligibleAt time.Time, waveNo int, reason string, extra map[string]any) (map[string]any, error) {
	b, err := json.Marshal(&manifest.Manifest{Updates: []*manifest.Update{u}})
	if err != nil {
		return nil, err
	}
	var m struct {
		Updates []map[string]any `json:"updates"`
	}
	if err := json.Unmarshal(b, &m); err != nil || len(m.Updates) != 1 {
		return nil, fmt.Errorf("encoding the release: %v", err)
	}
	out := m.Updates[0]
	if !eligibleAt.IsZero() {
		out["eligible_at"] = eligibleAt.UTC().Format(time.RFC3339)
	} else {
		out["eligible_at"] = nil
	}
	out["wave"] = waveNo
	if reason != "" {
		out["reason"] = reason
	}
	for k, v := range extra {
		out[k] = v
	}
	_ = wave
	return out, nil
}

func cmdCheck(ctx context.Context, c *cmdCtx) error {
	co := updater.CheckOptions{IgnoreWaves: c.o.now, Image: c.o.image}
	if c.o.all {
		list, running, err := c.u.CheckAll(ctx, co)
		if err != nil {
			return err
		}
		if c.g.json {
			arr := []map[string]any{}
			for _, l := range list {
				extra := map[string]any{"eligible": l.Wave.Eligible}
				if l.Failed != nil {
					extra["failed_here"] = l.Failed
				}
				j, err := releaseJSON(l.Update, nil, l.Wave.EligibleAt, l.Wave.Wave+1, l.Wave.Reason, extra)
				if err != nil {
					return err
				}
				arr = append(arr, j)
			}
			return writeJSON(c.stdout, arr)
		}
		fmt.Fprintf(c.stdout, "running %s\n", running.String())
		for _, l := range list {
			note := l.Wave.Reason
			if l.Failed != nil {
				note = "failed here before: " + l.Failed.Reason
			}
			fmt.Fprintf(c.stdout, "%s %s\t%s\n", l.Update.Variant, l.Update.Version, note)
		}
		return nil
	}
	plan, err := c.u.Check(ctx, co)
	for _, s := range planSkipped(plan) {
		fmt.Fprintf(c.stderr, "updog: skipping %s: it failed on this host before (%s); name it with --image to try it again\n", s.Version, s.Reason)
	}
	if plan != nil && plan.Update() != nil && (err == nil || errors.Is(err, updater.ErrNotInWave)) {
		if c.g.json {
			reason := ""
			if !plan.Wave.Eligible {
				reason = plan.Wave.Reason
			}
			j, jerr := releaseJSON(plan.Update(), nil, plan.Wave.EligibleAt, plan.Wave.Wave+1, reason,
				map[string]any{"eligible": plan.Wave.Eligible, "download_bytes": plan.DownloadBytes, "delta": plan.Delta})
			if jerr != nil {
				return jerr
			}
			if werr := writeJSON(c.stdout, j); werr != nil {
				return werr
			}
		} else if err == nil {
			fmt.Fprintf(c.stdout, "%s %s\n", plan.Update().Variant, plan.Update().Version)
		}
	}
	return err
}

func planSkipped(p *updater.Plan) []updater.Failure {
	if p == nil {
		return nil
	}
	return p.Skipped
}

func cmdUpdate(apply bool) func(context.Context, *cmdCtx) error {
	return func(ctx context.Context, c *cmdCtx) error {
		plan, err := c.u.Update(ctx, updater.UpdateOptions{CheckOptions: updater.CheckOptions{IgnoreWaves: c.o.now, Image: c.o.image},
			DryRun: c.o.dryRun, Apply: apply, Reboot: c.o.reboot})
		for _, s := range planSkipped(plan) {
			fmt.Fprintf(c.stderr, "updog: skipping %s: it failed on this host before (%s)\n", s.Version, s.Reason)
		}
		if errors.Is(err, updater.ErrWaiting) && plan != nil && plan.Update() != nil {
			u := plan.Update()
			if c.g.json {
				var we *updater.WaitingError
				errors.As(err, &we)
				if werr := writeJSON(c.stdout, map[string]any{"release": u, "set": plan.Set, "images": plan.Images, "switched": false,
					"staged": true, "waiting": we}); werr != nil {
					return werr
				}
				return err
			}
			fmt.Fprintf(c.stdout, "wrote and verified %s %s %s in set %s; not switched: %v\n", u.Variant, u.Arch, u.Version, strings.ToUpper(plan.Set), err)
			return err
		}
		if err != nil && !(c.o.dryRun && plan != nil && plan.Update() != nil && errors.Is(err, updater.ErrNotInWave)) {
			return err
		}
		if c.g.json {
			res := map[string]any{"dry_run": c.o.dryRun, "release": plan.Update(), "set": plan.Set, "images": plan.Images,
				"download_bytes": plan.DownloadBytes, "switched": apply && !c.o.dryRun, "wave": plan.Wave, "delta": plan.Delta}
			if werr := writeJSON(c.stdout, res); werr != nil {
				return werr
			}
			return err
		}
		u := plan.Update()
		if c.o.dryRun {
			fmt.Fprintf(c.stdout, "would install %s %s %s into set %s (dry run: nothing written)\n", u.Variant, u.Arch, u.Version, strings.ToUpper(plan.Set))
			for _, img := range plan.Images {
				fmt.Fprintf(c.stdout, "  %-4s %s: %d bytes to download -> partition %d (%s, %d bytes)\n",
					img.Kind, img.Target, img.DownloadBytes, img.Partition, img.PartitionName, img.PartitionBytes)
			}
			if plan.Delta != nil {
				fmt.Fprintf(c.stdout, "  %s\n", plan.Delta)
			}
			if !plan.Wave.Eligible {
				fmt.Fprintf(c.stdout, "  not yet: %s\n", plan.Wave.Reason)
			}
			return err
		}
		if plan.Staged {
			fmt.Fprintf(c.stdout, "%s %s %s was already written and verified in set %s\n", u.Variant, u.Arch, u.Version, strings.ToUpper(plan.Set))
		} else {
			fmt.Fprintf(c.stdout, "wrote and verified %s %s %s in set %s (%d bytes downloaded)\n", u.Variant, u.Arch, u.Version,
				strings.ToUpper(plan.Set), plan.DownloadBytes)
			if d := plan.Delta; d != nil && d.Use && d.FellBack == "" {
				fmt.Fprintf(c.stdout, "  the root image by delta: %d bytes in %d range requests instead of %d\n", d.Fetched, d.Made, d.FullBytes)
			}
		}
		if apply {
			fmt.Fprintf(c.stdout, "set %s boots next (one try); reboot to start it, then run updog mark-good\n", strings.ToUpper(plan.Set))
		} else {
			fmt.Fprintln(c.stdout, "run updog update-apply to boot it next")
		}
		return nil
	}
}

func cmdApply(ctx context.Context, c *cmdCtx) error {
	if err := c.u.Apply(ctx, c.o.reboot); err != nil {
		return err
	}
	return report(c, "switched: the new set boots next; reboot to start it")
}

func cmdRevert(ctx context.Context, c *cmdCtx) error {
	if err := c.u.Revert(ctx); err != nil {
		return err
	}
	return report(c, "switch undone: the running set boots next")
}

func cmdRollback(ctx context.Context, c *cmdCtx) error {
	if err := c.u.Rollback(ctx, c.o.reboot); err != nil {
		return err
	}
	return report(c, "rolled back: the other set boots next")
}

func report(c *cmdCtx, msg string) error {
	if c.g.json {
		st, err := c.u.Status(context.Background())
		if err != nil {
			return err
		}
		return writeJSON(c.stdout, map[string]any{"command": c.name, "message": msg, "status": st})
	}
	fmt.Fprintln(c.stdout, msg)
	return nil
}

func cmdMarkGood(ctx context.Context, c *cmdCtx) error {
	rep, err := c.u.MarkGood(ctx)
	if c.g.json && rep != nil {
		if werr := writeJSON(c.stdout, rep); werr != nil {
			return werr
		}
		return err
	}
	if rep != nil {
		for _, r := range rep.Checks {
			status := "ok"
			if !r.OK {
				status = "FAILED: " + r.Error
			}
			fmt.Fprintf(c.stdout, "health check %s: %s\n", r.Name, status)
			if !r.OK && r.Output != "" {
				fmt.Fprintf(c.stdout, "%s\n", indent(r.Output))
			}
		}
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "set %s marked good\n", strings.ToUpper(rep.Set))
	return nil
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

func cmdStatus(ctx context.Context, c *cmdCtx) error {
	st, err := c.u.Status(ctx)
	if err != nil {
		return err
	}
	if c.g.json {
		return writeJSON(c.stdout, st)
	}
	w := c.stdout
	fmt.Fprintf(w, "Disk:     %s\n", st.Disk)
	if st.Running != nil {
		fmt.Fprintf(w, "Running:  %s\n", st.Running.String())
	} else {
		fmt.Fprintf(w, "Running:  unknown (%s)\n", st.RunningErr)
	}
	show := func(s string) string {
		if s == "" {
			return "unknown"
		}
		return "set " + strings.ToUpper(s)
	}
	fmt.Fprintf(w, "Active:   %s\nNext:     %s\n", show(st.Active), show(st.Next))
	names := make([]string, 0, len(st.Sets))
	for k := range st.Sets {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s := st.Sets[k]
		holds := "unknown contents"
		if s.Holds != nil {
			holds = s.Holds.Version
			if s.Holds.Source == "os-release" {
				holds += " (running, as os-release says)"
			}
			if s.Holds.Verified {
				holds += " (written and verified " + s.Holds.WrittenAt.Format(time.RFC3339) + ")"
			}
		}
		fmt.Fprintf(w, "Set %s:    priority=%d tries=%d successful=%t  %s\n", strings.ToUpper(k), s.Priority, s.Tries, s.Successful, holds)
	}
	if p := st.Pending; p != nil {
		fmt.Fprintf(w, "Pending:  %s in set %s: %s\n", p.Version, strings.ToUpper(p.Set), p.Stage)
	}
	switch {
	case st.RebootNeeded:
		fmt.Fprintln(w, "Reboot needed to start the new set.")
	case st.AwaitingMarkGood:
		fmt.Fprintln(w, "Running the new set: run updog mark-good once the host is healthy.")
	}
	if a := st.LastAttempt; a != nil {
		rel := ""
		if a.Release != nil {
			rel = " " + a.Release.Version
		}
		fmt.Fprintf(w, "Last:     %s%s: %s", a.Action, rel, a.Outcome)
		if a.Error != "" {
			fmt.Fprintf(w, " (%s)", a.Error)
		}
		fmt.Fprintln(w)
	}
	for _, f := range st.Failed {
		fmt.Fprintf(w, "Failed:   %s at %s: %s\n", f.Version, f.At.Format(time.RFC3339), f.Reason)
	}
	fmt.Fprintf(w, "State:    %s\n", st.State)
	r := st.Reboot
	fmt.Fprintf(w, "Reboot:   strategy %s", r.Strategy)
	if len(r.Windows) > 0 {
		fmt.Fprintf(w, "; windows %s", strings.Join(r.Windows, ", "))
		if !r.InWindow {
			fmt.Fprintf(w, " (next opens %s)", r.NextWindow.UTC().Format(time.RFC3339))
		}
	}
	fmt.Fprintln(w)
	if l := r.Lock; l != nil {
		switch {
		case l.Kept:
			fmt.Fprintf(w, "Lock:     slot kept in group %s: %s (updog fleet-lock release frees it)\n", l.Group, l.Reason)
		case l.Held:
			fmt.Fprintf(w, "Lock:     slot held in group %s since %s\n", l.Group, l.Since.Format(time.RFC3339))
		}
	}
	if wt := r.Waiting; wt != nil && st.State != "idle" {
		fmt.Fprintf(w, "Waiting:  %s\n", wt.Detail)
	}
	if in := st.Install; in != nil {
		fmt.Fprintf(w, "Install:  %s into set %s: %d of %d bytes, %d resumes", in.Release.Version, strings.ToUpper(in.Set), in.BytesDone, in.BytesTotal, in.Resumes)
		if in.Rate > 0 {
			fmt.Fprintf(w, ", %.1f MB/s", in.Rate/1e6)
		}
		if len(in.RestartsFromZero) > 0 {
			fmt.Fprintf(w, " (%s restart from zero after a process restart)", strings.Join(in.RestartsFromZero, ", "))
		}
		fmt.Fprintln(w)
	}
	if g := st.OfflineGrace; g != nil {
		fmt.Fprintf(w, "Grace:    expired metadata accepted at %s (expired by %s) under --offline-grace\n", g.At.Format(time.RFC3339), g.ExpiredBy)
	}
	fmt.Fprintf(w, "Seed:     %d (from %s)\n", st.Seed, st.SeedFrom)
	return nil
}

func cmdRebootNeeded(ctx context.Context, c *cmdCtx) error {
	need, why, err := c.u.RebootNeeded(ctx)
	if err != nil {
		return err
	}
	if c.g.json {
		if err := writeJSON(c.stdout, map[string]any{"reboot_needed": need, "reason": why}); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(c.stdout, why)
	}
	if !need {
		return &cli.ExitError{Code: 1, Err: errors.New(why), Quiet: true}
	}
	return nil
}

func cmdFleetLock(ctx context.Context, c *cmdCtx) error {
	if err := c.u.ReleaseFleetLock(ctx); err != nil {
		return err
	}
	return report(c, "the fleet lock slot is released")
}
