package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/internal/flock"
)

// Exit codes.
const (
	exitOK         = cli.ExitOK
	exitError      = cli.ExitFailure
	exitUsage      = cli.ExitUsage
	exitNoBootable = 3
)

const usage = `Usage: signpost [--disk PATH] [--active a|b] [--json] [--dry-run] [--tries N] [--lock-wait D] COMMAND

Reads and changes the boot state (GPT priority bits) of an A/B disk.

Commands:
  status                   show the sets, their bits, the active and the next set
  mark-successful-boot     mark the active set as booted successfully
  clear-inactive           zero the inactive set's bits before writing images
  mark-inactive-valid      give the inactive set tries (1, or --tries N)
  upgrade-to-inactive      boot the inactive set next (it must be marked valid)
  cancel-upgrade           undo upgrade-to-inactive
  rollback-to-inactive     boot the inactive set next (it must be bootable)
  has-boot-ever-succeeded  print true or false
  rewrite-table            rewrite the table unchanged (repairs a damaged copy)
  next                     boot as the bootloader would: print the chosen set
                           and use up one of its tries

Options:
`

const exitHelp = `
Every command locks the disk (flock: shared to read, exclusive to write) and
fails if another process holds it longer than --lock-wait.

Exit status: 0 success, 1 error (including a disk left locked by another
process), 2 usage error (including --active contradicting the running
system), 3 no bootable set.
`

// command describes one subcommand.
type command struct {
	needsActive bool
	writes      bool
	// edit is the pure change a writing command makes, given the active
	// set (SetA when it is not needed and unknown).
	edit func(t *gptprio.Table, active gptprio.Set, o *options) (*gptprio.Table, error)
}

var commands = map[string]command{
	"status":                  {},
	"has-boot-ever-succeeded": {},
	"next":                    {writes: true},
	"rewrite-table": {writes: true, edit: func(t *gptprio.Table, _ gptprio.Set, _ *options) (*gptprio.Table, error) {
		return t.Clone(), nil
	}},
	"mark-successful-boot": {needsActive: true, writes: true, edit: func(t *gptprio.Table, a gptprio.Set, _ *options) (*gptprio.Table, error) {
		return gptprio.MarkSuccessfulBoot(t, a)
	}},
	"clear-inactive": {needsActive: true, writes: true, edit: func(t *gptprio.Table, a gptprio.Set, _ *options) (*gptprio.Table, error) {
		return gptprio.ClearInactive(t, a)
	}},
	"mark-inactive-valid": {needsActive: true, writes: true, edit: func(t *gptprio.Table, a gptprio.Set, o *options) (*gptprio.Table, error) {
		return gptprio.MarkInactiveValid(t, a, o.tries)
	}},
	"upgrade-to-inactive": {needsActive: true, writes: true, edit: func(t *gptprio.Table, a gptprio.Set, _ *options) (*gptprio.Table, error) {
		return gptprio.UpgradeToInactive(t, a)
	}},
	"cancel-upgrade": {needsActive: true, writes: true, edit: func(t *gptprio.Table, a gptprio.Set, _ *options) (*gptprio.Table, error) {
		return gptprio.CancelUpgrade(t, a)
	}},
	"rollback-to-inactive": {needsActive: true, writes: true, edit: func(t *gptprio.Table, a gptprio.Set, _ *options) (*gptprio.Table, error) {
		return gptprio.RollbackToInactive(t, a)
	}},
}

type options struct {
	disk       string
	active     string
	json       bool
	dryRun     bool
	tries      int
	sectorSize int
	lockWait   time.Duration
	host       gptprio.HostInfo // the real host, or a fake /sys in tests
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdout, stderr, "/", func() (uint32, uint32, error) { return blockdev.DeviceOf("/") })
}

// runWith is run with the host injected: sysRoot is where sys/ and dev/ are
// looked up, rootDevice says which device holds the root filesystem.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, sysRoot string,
	rootDevice func() (uint32, uint32, error)) int {
	o := &options{host: gptprio.HostInfo{SysRoot: sysRoot, RootDevice: rootDevice}}
	fs := pflag.NewFlagSet("signpost", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.disk, "disk", "", "whole-disk block device or disk image `PATH` (default: the disk holding /)")
	fs.StringVar(&o.active, "active", "", "the running set, `a|b` (on a host it is found through /sys, and a contrary --active is refused)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object")
	fs.BoolVar(&o.dryRun, "dry-run", false, "compute and print the change, write nothing")
	fs.IntVar(&o.tries, "tries", 1, "tries for mark-inactive-valid (1-15)")
	fs.IntVar(&o.sectorSize, "sector-size", 0, "logical sector size of an image file, 512 or 4096 (default: detected)")
	fs.DurationVar(&o.lockWait, "lock-wait", flock.DefaultWait, "wait at most `D` for another process's lock on the disk (0: do not wait)")
	help := fs.BoolP("help", "h", false, "show this help")
	printUsage := func(w io.Writer) {
		fmt.Fprint(w, usage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fmt.Fprint(w, exitHelp)
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "signpost: %v\n", err)
		printUsage(stderr)
		return exitUsage
	}
	if *help {
		printUsage(stdout)
		return exitOK
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "signpost: exactly one command is needed")
		printUsage(stderr)
		return exitUsage
	}
	name := fs.Arg(0)
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "signpost: unknown command %q (see signpost --help)\n", name)
		return exitUsage
	}
	err := checkFlags(fs, o)
	if err == nil {
		err = execute(ctx, name, cmd, o, stdout, stderr)
	}
	if errors.Is(err, gptprio.ErrNoBootableSet) {
		err = &cli.ExitError{Code: exitNoBootable, Err: err}
	}
	return cli.Report("signpost", name, err, stderr)
}

// checkFlags refuses bad flag values as usage errors (exit 2), before
// anything is opened.
func checkFlags(fs *pflag.FlagSet, o *options) error {
	if fs.Changed("disk") && o.disk == "" {
		return cli.Usagef("--disk: the path is empty")
	}
	if o.active != "" || fs.Changed("active") {
		if _, err := gptprio.ParseSet(o.active); err != nil {
			return cli.Usagef("--active %q: want a or b", o.active)
		}
	}
	if o.tries < 1 || o.tries > gptprio.MaxTries {
		return cli.Usagef("--tries %d is not between 1 and %d", o.tries, gptprio.MaxTries)
	}
	if o.sectorSize != 0 && o.sectorSize != 512 && o.sectorSize != 4096 {
		return cli.Usagef("--sector-size %d: want 512 or 4096", o.sectorSize)
	}
	if o.lockWait < 0 {
		return cli.Usagef("--lock-wait %v: must not be negative", o.lockWait)
	}
	return nil
}

func execute(ctx context.Context, name string, cmd command, o *options, stdout, stderr io.Writer) error {
	writes := cmd.writes && !o.dryRun
	wait := o.lockWait
	if wait == 0 {
		wait = -1 // gptprio: one try, no waiting
	}
	d, err := gptprio.OpenDisk(ctx, o.disk, gptprio.OpenOptions{
		ReadOnly: !writes, SectorSize: o.sectorSize, LockWait: wait, Active: o.active, Host: o.host,
	})
	switch {
	case errors.Is(err, gptprio.ErrActiveMismatch):
		return cli.Usagef("--active %s: %v", o.active, err)
	case errors.Is(err, gptprio.ErrNoHostDisk):
		return fmt.Errorf("%w (name the disk with --disk)", err)
	case err != nil:
		return err
	}
	defer d.Close()
	if cmd.needsActive && d.Active == nil {
		return cli.Usagef("%s on %s needs --active a|b: there is no running system on this disk to tell which set is active", name, d.Path)
	}
	// checkActive refuses an --active that names a set the disk lacks.
	checkActive := func(l gptprio.Layout) error {
		if d.Active != nil && !d.OnHost && int(*d.Active) >= len(l.Sets) {
			return cli.Usagef("--active %v: %s has a single partition set", *d.Active, d.Path)
		}
		return nil
	}

	switch name {
	case "status", "has-boot-ever-succeeded":
		t, l, err := d.Read(ctx)
		if err != nil {
			return err
		}
		warnCopies(stderr, d.Path, t, false)
		if err := checkActive(l); err != nil {
			return err
		}
		if name == "status" {
			return printJSONOrText(stdout, o.json, statusOf(d, t, l), formatStatus)
		}
		ok, err := gptprio.HasBootEverSucceeded(t)
		if err != nil {
			return fmt.Errorf("%s: %w", d.Path, err)
		}
		if o.json {
			return cli.WriteJSON(stdout, map[string]any{"disk": d.Path, "boot_ever_succeeded": ok})
		}
		fmt.Fprintln(stdout, ok)
		return nil
	}

	// The writing commands: one locked read-modify-write (or a dry run of
	// it, under a shared lock).
	var (
		chosen, chosenPart = gptprio.Set(0), 0
		tryUsed            bool
		layout             gptprio.Layout
	)
	edit := func(t *gptprio.Table, l gptprio.Layout) (*gptprio.Table, error) {
		layout = l
		if err := checkActive(l); err != nil {
			return nil, err
		}
		if name == "next" {
			// The boot selector's step (cmd/bootsel), exactly.
			c, nt, err := gptprio.BootNext(t)
			chosen, chosenPart, tryUsed = c.Set, c.Partition, c.TryUsed
			return nt, err // nil: nothing to write
		}
		active := gptprio.SetA
		if d.Active != nil {
			active = *d.Active
		}
		return cmd.edit(t, active, o)
	}
	var before, after *gptprio.Table
	if writes {
		before, after, err = d.Update(ctx, edit)
	} else {
		before, after, err = d.DryRun(ctx, edit)
	}
	if err != nil {
		return err
	}
	warnCopies(stderr, d.Path, before, writes && after != before)
	if name == "next" {
		if o.json {
			return cli.WriteJSON(stdout, map[string]any{"disk": d.Path, "next": chosen.String(), "partition": chosenPart,
				"try_used": tryUsed, "dry_run": o.dryRun, "changes": changes(before, after)})
		}
		fmt.Fprintln(stdout, chosen)
		return nil
	}
	res := editResult{Command: name, Disk: d.Path, DryRun: o.dryRun, Changes: changes(before, after),
		Status: statusOf(d, after, layout)}
	return printJSONOrText(stdout, o.json, res, formatEdit)
}

func warnCopies(w io.Writer, path string, t *gptprio.Table, writes bool) {
	fix := "run signpost rewrite-table to repair it"
	if writes {
		fix = "this write repairs it"
	}
	switch {
	case t.RecoveredFromBackup:
		fmt.Fprintf(w, "signpost: warning: %s: the primary GPT is damaged (%v); using the backup copy; %s\n", path, t.PrimaryProblem, fix)
	case t.BackupProblem != nil:
		fmt.Fprintf(w, "signpost: warning: %s: the backup GPT is damaged (%v); %s\n", path, t.BackupProblem, fix)
	case t.BackupStale:
		fmt.Fprintf(w, "signpost: warning: %s: the backup GPT differs from the primary (an interrupted write?); %s\n", path, fix)
	}
}

type setJSON struct {
	Priority   int  `json:"priority"`
	Tries      int  `json:"tries"`
	Successful bool `json:"successful"`
	Boot       int  `json:"boot"`
	Root       int  `json:"root"`
	Hash       int  `json:"hash"`
}

type gptJSON struct {
	ReadFrom       string  `json:"read_from"`
	PrimaryProblem *string `json:"primary_problem"`
	BackupProblem  *string `json:"backup_problem"`
	BackupStale    bool    `json:"backup_stale"`
	ProtectiveMBR  bool    `json:"protective_mbr"`
	SectorSize     int     `json:"sector_size"`
}

type statusJSON struct {
	Disk              string             `json:"disk"`
	OnHost            bool               `json:"on_host"`
	Active            *string            `json:"active"`
	Next              *string            `json:"next"`
	BootEverSucceeded bool               `json:"boot_ever_succeeded"`
	Private           int                `json:"private"`
	SetNames          []string           `json:"set_names"`
	Sets              map[string]setJSON `json:"sets"`
	GPT               gptJSON            `json:"gpt"`
}

func strPtr(s string) *string { return &s }

func errPtr(err error) *string {
	if err == nil {
		return nil
	}
	return strPtr(err.Error())
}

func statusOf(d *gptprio.Disk, t *gptprio.Table, l gptprio.Layout) statusJSON {
	st := statusJSON{Disk: d.Path, OnHost: d.OnHost, Private: l.Private, SetNames: l.Names(), Sets: map[string]setJSON{}}
	if d.Active != nil {
		st.Active = strPtr(d.Active.String())
	}
	if s, err := gptprio.Next(t); err == nil {
		st.Next = strPtr(s.String())
	}
	st.BootEverSucceeded, _ = gptprio.HasBootEverSucceeded(t)
	for i, sp := range l.Sets {
		a := gptprio.Attrs(t, l, gptprio.Set(i))
		st.Sets[gptprio.Set(i).String()] = setJSON{a.Priority(), a.Tries(), a.Successful(), sp.Boot, sp.Root, sp.Hash}
	}
	st.GPT = gptJSON{ReadFrom: "primary", PrimaryProblem: errPtr(t.PrimaryProblem), BackupProblem: errPtr(t.BackupProblem),
		BackupStale: t.BackupStale, ProtectiveMBR: t.ProtectiveMBR, SectorSize: t.SectorSize}
	if t.RecoveredFromBackup {
		st.GPT.ReadFrom = "backup"
	}
	return st
}

func formatStatus(w io.Writer, v any) {
	st := v.(statusJSON)
	fmt.Fprintf(w, "OS disk: %s (GPT read from the %s copy)\n", st.Disk, st.GPT.ReadFrom)
	upper := make([]string, len(st.SetNames))
	for i, k := range st.SetNames {
		upper[i] = strings.ToUpper(k)
	}
	switch n := len(st.SetNames); {
	case n == 1:
		fmt.Fprintln(w, "Sets:    A only (single-set disk: cannot be updated in place)")
	case n > 2:
		fmt.Fprintf(w, "Sets:    %d (%s): more than two sets; the A/B commands refuse this disk\n", n, strings.Join(upper, ", "))
	}
	for _, k := range st.SetNames {
		s := st.Sets[k]
		fmt.Fprintf(w, "Set %s:   boot=%d root=%d hash=%d  priority=%d tries_left=%d successful=%t\n",
			strings.ToUpper(k), s.Boot, s.Root, s.Hash, s.Priority, s.Tries, s.Successful)
	}
	show := func(p *string) string {
		if p == nil {
			return "unknown"
		}
		return "Set " + strings.ToUpper(*p)
	}
	active := show(st.Active)
	if st.OnHost {
		active += " (the running system)"
	}
	fmt.Fprintf(w, "Active:  %s\n", active)
	if st.Next == nil {
		fmt.Fprintln(w, "Next:    none: no set is bootable")
	} else {
		fmt.Fprintf(w, "Next:    %s\n", show(st.Next))
	}
	fmt.Fprintf(w, "Boot ever succeeded: %t\n", st.BootEverSucceeded)
}

type change struct {
	Partition int    `json:"partition"`
	Name      string `json:"name"`
	Before    string `json:"before"`
	After     string `json:"after"`
	BeforeHex string `json:"before_hex"`
	AfterHex  string `json:"after_hex"`
}

// changes lists the partitions whose attributes differ, each shown with the
// bits that mean something for its type (gptprio fields on BOOT, bit 57 on
// PRIVATE) and the raw value.
func changes(old, nt *gptprio.Table) []change {
	out := []change{}
	if old == nil || nt == nil {
		return out
	}
	for i := range old.Partitions {
		p := old.Partitions[i]
		a, b := p.Attributes, nt.Partitions[i].Attributes
		if a != b {
			out = append(out, change{i + 1, p.Name(), a.Describe(p.Type), b.Describe(p.Type),
				fmt.Sprintf("%016x", uint64(a)), fmt.Sprintf("%016x", uint64(b))})
		}
	}
	return out
}

type editResult struct {
	Command string     `json:"command"`
	Disk    string     `json:"disk"`
	DryRun  bool       `json:"dry_run"`
	Changes []change   `json:"changes"`
	Status  statusJSON `json:"status"`
}

func formatEdit(w io.Writer, v any) {
	r := v.(editResult)
	verb := "changed"
	if r.DryRun {
		verb = "would change (dry run: nothing written)"
	}
	if len(r.Changes) == 0 {
		fmt.Fprintf(w, "%s: %s: no attribute changes", r.Command, r.Disk)
		if r.Command == "rewrite-table" && !r.DryRun {
			fmt.Fprint(w, "; table rewritten")
		}
		fmt.Fprintln(w)
		return
	}
	fmt.Fprintf(w, "%s: %s %s:\n", r.Command, r.Disk, verb)
	for _, c := range r.Changes {
		fmt.Fprintf(w, "  partition %d (%s): %s -> %s\n", c.Partition, c.Name, c.Before, c.After)
	}
}

func printJSONOrText(w io.Writer, asJSON bool, v any, text func(io.Writer, any)) error {
	if asJSON {
		return cli.WriteJSON(w, v)
	}
	text(w, v)
	return nil
}
