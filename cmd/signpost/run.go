package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/cli"
)

// Exit codes.
const (
	exitOK         = cli.ExitOK
	exitError      = cli.ExitFailure
	exitUsage      = cli.ExitUsage
	exitNoBootable = 3
)

const usage = `Usage: signpost [--disk PATH] [--active a|b] [--json] [--dry-run] [--tries N] COMMAND

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
Exit status: 0 success, 1 error, 2 usage error, 3 no bootable set.
`

// command describes one subcommand.
type command struct {
	needsActive bool
	writes      bool
	edit        func(t *gptprio.Table, active gptprio.Set, o *options) (*gptprio.Table, error)
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
	sysRoot    string // "/" on a host; tests point it at a fake tree
	// rootDevice returns the device numbers of the root filesystem.
	rootDevice func() (major, minor uint32, err error)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, stdout, stderr, "/", func() (uint32, uint32, error) { return blockdev.DeviceOf("/") })
}

// runWith is run with the host injected: sysRoot is where sys/ and dev/ are
// looked up, rootDevice says which device holds the root filesystem.
func runWith(_ context.Context, args []string, stdout, stderr io.Writer, sysRoot string,
	rootDevice func() (uint32, uint32, error)) int {
	o := &options{sysRoot: sysRoot, rootDevice: rootDevice}
	fs := pflag.NewFlagSet("signpost", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.disk, "disk", "", "whole-disk block device or disk image `PATH` (default: the disk holding /)")
	fs.StringVar(&o.active, "active", "", "the running set, `a|b` (default: found through /sys on a host)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object")
	fs.BoolVar(&o.dryRun, "dry-run", false, "compute and print the change, write nothing")
	fs.IntVar(&o.tries, "tries", 1, "tries for mark-inactive-valid (1-15)")
	fs.IntVar(&o.sectorSize, "sector-size", 0, "logical sector size of an image file, 512 or 4096 (default: detected)")
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
	if o.tries < 1 || o.tries > gptprio.MaxTries {
		fmt.Fprintf(stderr, "signpost: --tries %d is not between 1 and %d\n", o.tries, gptprio.MaxTries)
		return exitUsage
	}
	err := execute(name, cmd, o, stdout, stderr)
	if errors.Is(err, gptprio.ErrNoBootableSet) {
		err = &cli.ExitError{Code: exitNoBootable, Err: err}
	}
	return cli.Report("signpost", name, err, stderr)
}

// target is the disk to work on and what is known about the running set.
type target struct {
	path      string
	active    *gptprio.Set
	activePar int // partition number under the root, when found on a host
}

// findTarget resolves --disk and --active, looking at the running host
// where they are not given.
func findTarget(o *options) (target, error) {
	var tg target
	if o.active != "" {
		s, err := gptprio.ParseSet(o.active)
		if err != nil {
			return tg, cli.Usagef("--active %q: want a or b", o.active)
		}
		tg.active = &s
	}
	if o.disk != "" {
		tg.path = o.disk
	}
	// On a host, the disk and the active partition come from the root.
	major, minor, err := o.rootDevice()
	var host blockdev.Backing
	if err == nil {
		host, err = blockdev.ResolveBacking(o.sysRoot, major, minor)
	}
	if err != nil {
		if tg.path == "" {
			return tg, fmt.Errorf("no --disk given, and the disk holding / could not be found: %w", err)
		}
		return tg, nil
	}
	if tg.path == "" {
		tg.path = host.Disk
	}
	if same(tg.path, host.Disk) {
		tg.activePar = host.Number
	}
	return tg, nil
}

func same(a, b string) bool {
	ra, err1 := filepath.EvalSymlinks(a)
	rb, err2 := filepath.EvalSymlinks(b)
	return err1 == nil && err2 == nil && ra == rb
}

func execute(name string, cmd command, o *options, stdout, stderr io.Writer) error {
	tg, err := findTarget(o)
	if err != nil {
		return err
	}
	writes := cmd.writes && !o.dryRun
	bo := blockdev.Options{ReadOnly: !writes}
	if o.sectorSize != 0 {
		bo.SectorSize = o.sectorSize
	}
	d, err := blockdev.Open(tg.path, bo)
	if err != nil {
		return fmt.Errorf("opening disk: %w", err)
	}
	defer d.Close()
	if !d.IsBlockDevice() && o.sectorSize == 0 {
		if ss := gptprio.ProbeSectorSize(d); ss != 0 && ss != d.SectorSize() {
			d.Close()
			bo.SectorSize = ss
			if d, err = blockdev.Open(tg.path, bo); err != nil {
				return fmt.Errorf("opening disk: %w", err)
			}
		}
	}
	t, err := gptprio.Read(d)
	if err != nil {
		return fmt.Errorf("%s: %w", tg.path, err)
	}
	warnCopies(stderr, tg.path, t, writes)
	l, err := gptprio.FindLayout(t)
	if err != nil {
		return fmt.Errorf("%s: %w", tg.path, err)
	}
	if tg.active == nil && tg.activePar != 0 {
		if s, ok := l.SetOf(tg.activePar); ok {
			tg.active = &s
		} else {
			return fmt.Errorf("%s: the root filesystem is on partition %d, which is in neither partition set", tg.path, tg.activePar)
		}
	}
	if cmd.needsActive && tg.active == nil {
		return cli.Usagef("%s on %s needs --active a|b: there is no running system on this disk to tell which set is active", name, tg.path)
	}
	if tg.active != nil && int(*tg.active) >= len(l.Sets) {
		return cli.Usagef("--active %v: %s has a single partition set", *tg.active, tg.path)
	}

	switch name {
	case "status":
		return printJSONOrText(stdout, o.json, statusOf(tg.path, t, l, tg.active), formatStatus)
	case "has-boot-ever-succeeded":
		ok, err := gptprio.HasBootEverSucceeded(t)
		if err != nil {
			return fmt.Errorf("%s: %w", tg.path, err)
		}
		if o.json {
			return cli.WriteJSON(stdout, map[string]any{"disk": tg.path, "boot_ever_succeeded": ok})
		}
		fmt.Fprintln(stdout, ok)
		return nil
	case "next":
		s, nt, used, err := gptprio.Boot(t)
		if err != nil {
			return fmt.Errorf("%s: %w", tg.path, err)
		}
		if used && writes {
			if err := gptprio.Write(d, nt); err != nil {
				return fmt.Errorf("%s: %w", tg.path, err)
			}
		}
		if o.json {
			return cli.WriteJSON(stdout, map[string]any{"disk": tg.path, "next": s.String(), "try_used": used,
				"dry_run": o.dryRun, "changes": changes(t, nt)})
		}
		fmt.Fprintln(stdout, s)
		return nil
	}

	active := gptprio.SetA
	if tg.active != nil {
		active = *tg.active
	}
	nt, err := cmd.edit(t, active, o)
	if err != nil {
		return fmt.Errorf("%s: %w", tg.path, err)
	}
	if writes {
		if err := gptprio.Write(d, nt); err != nil {
			return fmt.Errorf("%s: %w", tg.path, err)
		}
	}
	res := editResult{Command: name, Disk: tg.path, DryRun: o.dryRun, Changes: changes(t, nt),
		Status: statusOf(tg.path, nt, l, tg.active)}
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
	Active            *string            `json:"active"`
	Next              *string            `json:"next"`
	BootEverSucceeded bool               `json:"boot_ever_succeeded"`
	Private           int                `json:"private"`
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

func statusOf(path string, t *gptprio.Table, l gptprio.Layout, active *gptprio.Set) statusJSON {
	st := statusJSON{Disk: path, Private: l.Private, Sets: map[string]setJSON{}}
	if active != nil {
		st.Active = strPtr(active.String())
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
	for _, k := range []string{"a", "b"} {
		s, ok := st.Sets[k]
		if !ok {
			fmt.Fprintf(w, "Set %s:   none (single-set disk: cannot be updated in place)\n", strings.ToUpper(k))
			continue
		}
		fmt.Fprintf(w, "Set %s:   boot=%d root=%d hash=%d  priority=%d tries_left=%d successful=%t\n",
			strings.ToUpper(k), s.Boot, s.Root, s.Hash, s.Priority, s.Tries, s.Successful)
	}
	show := func(p *string) string {
		if p == nil {
			return "unknown"
		}
		return "Set " + strings.ToUpper(*p)
	}
	fmt.Fprintf(w, "Active:  %s\n", show(st.Active))
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
}

func changes(old, nt *gptprio.Table) []change {
	out := []change{}
	if nt == nil {
		return out
	}
	for i := range old.Partitions {
		a, b := old.Partitions[i].Attributes, nt.Partitions[i].Attributes
		if a != b {
			out = append(out, change{i + 1, old.Partitions[i].Name(), a.String(), b.String()})
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
