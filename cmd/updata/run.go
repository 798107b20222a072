package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/internal/flock"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/waves"
)

const (
	exitOK    = cli.ExitOK
	exitError = cli.ExitFailure
	exitUsage = cli.ExitUsage
)

const usage = `Usage: updata COMMAND MANIFEST [options]

Commands:
  init             create an empty manifest
  add-update       add a release
  remove-update    remove a release
  set-waves        schedule a release's rollout from a wave policy
  set-max-version  set max_version (lowering it pulls releases back)
  pause            pause a release's rollout
  resume           resume it; the rest of the schedule shifts by the pause
  validate         check a manifest
  waves            show a release's waves: seeds, windows, shares

Every edit holds an exclusive lock on .MANIFEST.lock beside the manifest
(waiting at most --lock-wait for another updata), re-reads the manifest
under it, validates the result and replaces the file atomically, keeping
its owner and mode; a MANIFEST that is a symlink is followed.

Run updata COMMAND --help for the options of each.
Exit status: 0 success, 1 error, 2 usage error.
`

var usagef = cli.Usagef

type env struct {
	ctx            context.Context
	stdout, stderr io.Writer
	now            func() time.Time
	lockWait       time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, now func() time.Time) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr, now: now, lockWait: flock.DefaultWait}
	cmds := map[string]func(*env, []string) error{
		"init": cmdInit, "add-update": cmdAdd, "remove-update": cmdRemove, "set-waves": cmdSetWaves,
		"set-max-version": cmdSetMax, "pause": cmdPause, "resume": cmdResume, "validate": cmdValidate, "waves": cmdWaves,
	}
	return cli.Dispatch("updata", usage, args, stdout, stderr, e, cmds)
}

// flags builds a command's flag set; parse handles --help and checks that
// exactly one MANIFEST was given.
func flags(name, synopsis string, e *env) (*pflag.FlagSet, func([]string) (string, error)) {
	fs, parse := cli.Flags("updata", name, synopsis, e.stdout)
	return fs, func(args []string) (string, error) {
		if err := parse(args, 1); err != nil {
			return "", err
		}
		return fs.Arg(0), nil
	}
}

// release holds the flags that name one release.
type release struct{ variant, arch, version string }

func (r *release) register(fs *pflag.FlagSet) {
	fs.StringVar(&r.variant, "variant", "", "variant (required)")
	fs.StringVar(&r.arch, "arch", "", "architecture, e.g. x86_64 (required)")
	fs.StringVar(&r.version, "version", "", "release version (required)")
}

func (r *release) parse(cmd string) (manifest.Version, error) {
	if r.variant == "" || r.arch == "" || r.version == "" {
		return manifest.Version{}, usagef("%s: --variant, --arch and --version are required", cmd)
	}
	if err := checkIdents(cmd, r.variant, r.arch); err != nil {
		return manifest.Version{}, err
	}
	v, err := manifest.ParseVersionLock(r.version)
	if err != nil {
		return v, usagef("%s: --version: %v", cmd, err)
	}
	return v, nil
}

// checkIdents checks --variant and --arch (each may be empty: not given).
func checkIdents(cmd, variant, arch string) error {
	if variant != "" {
		if err := manifest.CheckVariant(variant); err != nil {
			return usagef("%s: --variant: %v", cmd, err)
		}
	}
	if arch != "" {
		if err := manifest.CheckArch(arch); err != nil {
			return usagef("%s: --arch: %v", cmd, err)
		}
	}
	return nil
}

// lockFlag registers --lock-wait on an editing command.
func lockFlag(fs *pflag.FlagSet, e *env) {
	fs.DurationVar(&e.lockWait, "lock-wait", flock.DefaultWait, "how long to wait for another updata editing the same manifest")
}

// load reads and parses a manifest. It refuses anything but a regular file
// (a FIFO would block, /dev/zero would never end) and files larger than
// safefile.MaxMetadata.
func load(path string) (*manifest.Manifest, error) {
	b, err := safefile.ReadFile(path, safefile.MaxMetadata)
	if err != nil {
		return nil, err
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// lockPath is the lock file of the manifest at path: hidden, beside the
// real manifest (symlinks followed, so every name of one manifest shares
// one lock).
func lockPath(path string) (string, error) {
	real, err := atomicfile.Resolve(path)
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(real), "."+filepath.Base(real)+".lock"), nil
}

// lock takes the manifest's lock, waiting at most e.lockWait, and stopping
// when e.ctx ends (SIGINT, SIGTERM). Before that it refuses a MANIFEST that
// exists but is not a regular file, so that no lock file is made beside a
// FIFO or in /dev.
func (e *env) lock(path string) (*flock.Held, error) {
	if e.lockWait < 0 {
		return nil, usagef("--lock-wait %v is negative", e.lockWait)
	}
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, &safefile.KindError{Path: path, Mode: fi.Mode(), Want: "a regular file"}
	}
	lp, err := lockPath(path)
	if err != nil {
		return nil, err
	}
	held, err := flock.LockFile(e.ctx, lp, e.lockWait)
	switch {
	case errors.Is(err, flock.ErrLocked):
		return nil, fmt.Errorf("another updata is editing %s: %w", path, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("interrupted while waiting for the lock on %s: %w", path, err)
	case err != nil:
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	// A lock file root creates beside a user's manifest is given to the
	// manifest's owner, or that user could not lock it again.
	if fi, err := os.Stat(path); err == nil {
		_ = atomicfile.MatchOwner(lp, fi) // best effort: the lock works either way
	}
	return held, nil
}

// edit takes the manifest's lock, reads the manifest under it, applies f,
// validates the result and replaces the file atomically. Nothing is
// written when any step fails.
func (e *env) edit(path string, f func(*manifest.Manifest) error) error {
	held, err := e.lock(path)
	if err != nil {
		return err
	}
	defer held.Release()
	m, err := load(path)
	if err != nil {
		return err
	}
	if err := f(m); err != nil {
		return err
	}
	return save(path, m)
}

// save validates m and replaces the file path names (following symlinks,
// keeping owner and mode; 0644 for a new file). It checks the bytes it is
// about to write as validate will read them, so it never writes a manifest
// that validate refuses.
func save(path string, m *manifest.Manifest) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("the edited manifest would be invalid, so %s is unchanged: %w", path, err)
	}
	out, err := m.Encode()
	if err != nil {
		return fmt.Errorf("%s is unchanged: %w", path, err)
	}
	back, err := manifest.Parse(out)
	if err == nil {
		err = back.Validate()
	}
	if err != nil {
		return fmt.Errorf("the edited manifest would not read back as valid, so %s is unchanged: %w", path, err)
	}
	return atomicfile.ReplaceFile(path, out, 0o644)
}

func parseTime(flag, s string, now func() time.Time) (time.Time, error) {
	if s == "" || s == "now" {
		return now().UTC().Truncate(time.Second), nil
	}
	t, err := manifest.ParseTime(s)
	if err != nil {
		return t, usagef("%s %q: want an RFC 3339 time such as 2024-01-01T00:00:00Z, or now", flag, s)
	}
	return t, nil
}

func cmdInit(e *env, args []string) error {
	fs, parse := flags("init", "MANIFEST", e)
	force := fs.Bool("force", false, "replace an existing manifest")
	lockFlag(fs, e)
	path, err := parse(args)
	if err != nil {
		return err
	}
	held, err := e.lock(path)
	if err != nil {
		return err
	}
	defer held.Release()
	if _, err := os.Lstat(path); err == nil && !*force {
		return fmt.Errorf("%s already exists (use --force to replace it)", path)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := save(path, manifest.New()); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "created %s\n", path)
	return nil
}

func cmdAdd(e *env, args []string) error {
	fs, parse := flags("add-update", "MANIFEST {--from-release release.json | --variant V --arch A --version X --boot NAME --root NAME --hash NAME} [options]", e)
	fromRelease := fs.String("from-release", "", "take the release from `release.json` (imgbuild build writes it); options given as well override it")
	var r release
	r.register(fs)
	maxV := fs.String("max-version", "", "max_version (default: the greater of --version and the variant's current max_version)")
	var im manifest.Images
	fs.StringVar(&im.Boot, "boot", "", "boot image target name (required)")
	fs.StringVar(&im.Root, "root", "", "root image target name (required)")
	fs.StringVar(&im.Hash, "hash", "", "hash image target name (required)")
	var sizes manifest.ImageSizes
	fs.Int64Var(&sizes.Boot, "boot-size", 0, "uncompressed boot image size in bytes")
	fs.Int64Var(&sizes.Root, "root-size", 0, "uncompressed root image size in bytes")
	fs.Int64Var(&sizes.Hash, "hash-size", 0, "uncompressed hash image size in bytes")
	var ver manifest.Verity
	fs.StringVar(&ver.RootHash, "verity-root-hash", "", "dm-verity root hash of the root image (hex)")
	fs.StringVar(&ver.Salt, "verity-salt", "", "dm-verity salt (hex)")
	fs.StringVar(&ver.Hash, "verity-hash", "sha256", "dm-verity hash algorithm")
	fs.IntVar(&ver.DataBlockSize, "verity-data-block-size", 4096, "dm-verity data block size")
	fs.IntVar(&ver.HashBlockSize, "verity-hash-block-size", 4096, "dm-verity hash block size")
	fs.Uint64Var(&ver.DataBlocks, "verity-data-blocks", 0, "dm-verity data blocks")
	var dl manifest.Delta
	fs.StringVar(&dl.Seekable, "delta-seekable", "", "seekable root image target name, for delta updates (with --delta-index)")
	fs.StringVar(&dl.Index, "delta-index", "", "delta index target name (with --delta-seekable)")
	lockFlag(fs, e)
	path, err := parse(args)
	if err != nil {
		return err
	}
	if *fromRelease != "" {
		if err := fillFromRelease(fs, *fromRelease, &r, &im, &sizes, &ver, &dl); err != nil {
			return err
		}
	}
	v, err := r.parse("add-update")
	if err != nil {
		return err
	}
	if im.Boot == "" || im.Root == "" || im.Hash == "" {
		return usagef("add-update: --boot, --root and --hash are required")
	}
	for _, f := range []struct{ flag, v string }{{"--boot", im.Boot}, {"--root", im.Root}, {"--hash", im.Hash}} {
		if err := manifest.CheckTargetName(f.v); err != nil {
			return usagef("add-update: %s: %v", f.flag, err)
		}
	}
	u := &manifest.Update{Variant: r.variant, Arch: r.arch, Version: v, Images: im}
	if sizes != (manifest.ImageSizes{}) {
		if sizes.Boot <= 0 || sizes.Root <= 0 || sizes.Hash <= 0 {
			return usagef("add-update: give all three of --boot-size, --root-size and --hash-size, positive")
		}
		u.Images.Sizes = &sizes
	}
	if ver.RootHash != "" {
		u.Images.Verity = &ver
	} else if fs.Changed("verity-salt") || fs.Changed("verity-data-blocks") {
		return usagef("add-update: the verity options need --verity-root-hash")
	}
	switch {
	case dl.Seekable != "" && dl.Index != "":
		u.Images.Delta = &dl
	case dl.Seekable != "" || dl.Index != "":
		return usagef("add-update: give both --delta-seekable and --delta-index, or neither")
	}
	// The release on its own (names, sizes, verity) is the command line's
	// business: a usage error. What depends on the manifest comes later.
	if err := u.Validate(); err != nil {
		return usagef("add-update: %v", err)
	}
	var mv *manifest.Version
	if *maxV != "" {
		p, err := manifest.ParseVersionLock(*maxV)
		if err != nil {
			return usagef("add-update: --max-version: %v", err)
		}
		mv = &p
	}
	if err := e.edit(path, func(m *manifest.Manifest) error { return m.AddUpdate(u, mv) }); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "added %s (max_version %s) to %s\n", u, u.MaxVersion, path)
	return nil
}

// fillFromRelease fills every add-update option not given on the command
// line from a release.json that imgbuild build wrote. The release is
// checked as imgbuild writes it (image.ParseRelease); what it gives then
// goes through the same checks as options typed by hand.
func fillFromRelease(fs *pflag.FlagSet, path string, r *release, im *manifest.Images, sizes *manifest.ImageSizes, ver *manifest.Verity, dl *manifest.Delta) error {
	b, err := safefile.ReadFile(path, image.MaxReleaseFile)
	if err != nil {
		return fmt.Errorf("--from-release: %w", err)
	}
	rel, err := image.ParseRelease(b)
	if err != nil {
		return fmt.Errorf("--from-release %s: %w", path, err)
	}
	ri := rel.ManifestImages()
	set := func(flag string, dst *string, v string) {
		if !fs.Changed(flag) {
			*dst = v
		}
	}
	set("variant", &r.variant, rel.Variant)
	set("arch", &r.arch, rel.Arch)
	set("version", &r.version, rel.Version)
	set("boot", &im.Boot, ri.Boot)
	set("root", &im.Root, ri.Root)
	set("hash", &im.Hash, ri.Hash)
	set("verity-root-hash", &ver.RootHash, ri.Verity.RootHash)
	set("verity-salt", &ver.Salt, ri.Verity.Salt)
	set("verity-hash", &ver.Hash, ri.Verity.Hash)
	if ri.Delta != nil {
		set("delta-seekable", &dl.Seekable, ri.Delta.Seekable)
		set("delta-index", &dl.Index, ri.Delta.Index)
	}
	for _, n := range []struct {
		flag string
		dst  *int64
		v    int64
	}{{"boot-size", &sizes.Boot, ri.Sizes.Boot}, {"root-size", &sizes.Root, ri.Sizes.Root}, {"hash-size", &sizes.Hash, ri.Sizes.Hash}} {
		if !fs.Changed(n.flag) {
			*n.dst = n.v
		}
	}
	if !fs.Changed("verity-data-block-size") {
		ver.DataBlockSize = ri.Verity.DataBlockSize
	}
	if !fs.Changed("verity-hash-block-size") {
		ver.HashBlockSize = ri.Verity.HashBlockSize
	}
	if !fs.Changed("verity-data-blocks") {
		ver.DataBlocks = ri.Verity.DataBlocks
	}
	return nil
}

func cmdRemove(e *env, args []string) error {
	fs, parse := flags("remove-update", "MANIFEST --variant V --arch A --version X", e)
	var r release
	r.register(fs)
	lockFlag(fs, e)
	path, err := parse(args)
	if err != nil {
		return err
	}
	v, err := r.parse("remove-update")
	if err != nil {
		return err
	}
	if err := e.edit(path, func(m *manifest.Manifest) error { return m.RemoveUpdate(r.variant, r.arch, v) }); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "removed %s %s %s from %s\n", r.variant, r.arch, v, path)
	return nil
}

func cmdSetWaves(e *env, args []string) error {
	fs, parse := flags("set-waves", "MANIFEST --variant V --arch A --version X --wave-policy FILE --start-at TIME [--json]", e)
	var r release
	r.register(fs)
	policy := fs.String("wave-policy", "", "wave policy TOML file (required)")
	startAt := fs.String("start-at", "", "when the rollout starts: RFC 3339 time or now (required)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	lockFlag(fs, e)
	path, err := parse(args)
	if err != nil {
		return err
	}
	v, err := r.parse("set-waves")
	if err != nil {
		return err
	}
	if *policy == "" || *startAt == "" {
		return usagef("set-waves: --wave-policy and --start-at are required")
	}
	start, err := parseTime("--start-at", *startAt, e.now)
	if err != nil {
		return err
	}
	text, err := safefile.ReadFile(*policy, safefile.MaxConfig)
	if err != nil {
		return err
	}
	p, err := waves.ParsePolicy(text)
	if err != nil {
		return fmt.Errorf("%s: %w", *policy, err)
	}
	var u *manifest.Update
	err = e.edit(path, func(m *manifest.Manifest) error {
		if u, err = m.Find(r.variant, r.arch, v); err != nil {
			return err
		}
		return u.SetWaves(p, start)
	})
	if err != nil {
		return err
	}
	// A start in the past is allowed (a rollout planned late, or made
	// again), but the waves whose time has passed open at once: say so.
	var warnings []string
	now := e.now().UTC().Truncate(time.Second)
	past := start.Before(now)
	if past {
		w := fmt.Sprintf("the start %s is in the past (%s ago): %s already open: their hosts may all update at once",
			start.Format(time.RFC3339), ago(now.Sub(start)), openWaves(u, now))
		warnings = append(warnings, w)
		fmt.Fprintf(e.stderr, "updata: set-waves: warning: %s\n", w)
	}
	if *asJSON {
		s := u.Schedule()
		return cli.WriteJSON(e.stdout, map[string]any{"release": u.String(), "start_at": start.Format(time.RFC3339),
			"start_in_past": past, "warnings": nonNil(warnings), "waves": s.Describe(), "pauses": append([]waves.Pause{}, s.Pauses...)})
	}
	fmt.Fprintf(e.stdout, "set %d waves on %s, starting %s\n", len(u.Waves), u, start.Format(time.RFC3339))
	for _, w := range warnings {
		fmt.Fprintf(e.stdout, "warning: %s\n", w)
	}
	return printWaves(e.stdout, u, false)
}

// ago writes a past span for people: minutes up to two days, then days.
func ago(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int64(d/(24*time.Hour)))
}

// openWaves says how many of the release's waves have opened by now.
func openWaves(u *manifest.Update, now time.Time) string {
	info := u.Schedule().Describe()
	n := 0
	for _, w := range info {
		if !w.Start.After(now) {
			n++
		}
	}
	switch {
	case n == len(info):
		return fmt.Sprintf("all %d waves are", n)
	case n == 1:
		return fmt.Sprintf("1 of %d waves is", len(info))
	}
	return fmt.Sprintf("%d of %d waves are", n, len(info))
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func cmdSetMax(e *env, args []string) error {
	fs, parse := flags("set-max-version", "MANIFEST --max-version M [--variant V] [--arch A]", e)
	maxV := fs.String("max-version", "", "the new max_version (required)")
	variant := fs.String("variant", "", "only this variant (default: all)")
	arch := fs.String("arch", "", "only this architecture (default: all)")
	lockFlag(fs, e)
	path, err := parse(args)
	if err != nil {
		return err
	}
	if err := checkIdents("set-max-version", *variant, *arch); err != nil {
		return err
	}
	v, err := manifest.ParseVersionLock(*maxV)
	if err != nil {
		return usagef("set-max-version: --max-version: %v", err)
	}
	n := 0
	err = e.edit(path, func(m *manifest.Manifest) error {
		if n = m.SetMaxVersion(v, *variant, *arch); n == 0 {
			return fmt.Errorf("no release matches variant %q arch %q", *variant, *arch)
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "set max_version %s on %d release(s) in %s\n", v, n, path)
	return nil
}

func pauseOrResume(e *env, args []string, name string, f func(*manifest.Update, time.Time) error) error {
	fs, parse := flags(name, "MANIFEST --variant V --arch A --version X [--at TIME]", e)
	var r release
	r.register(fs)
	at := fs.String("at", "now", "when: RFC 3339 time or now")
	lockFlag(fs, e)
	path, err := parse(args)
	if err != nil {
		return err
	}
	v, err := r.parse(name)
	if err != nil {
		return err
	}
	t, err := parseTime("--at", *at, e.now)
	if err != nil {
		return err
	}
	var u *manifest.Update
	err = e.edit(path, func(m *manifest.Manifest) error {
		if u, err = m.Find(r.variant, r.arch, v); err != nil {
			return err
		}
		return f(u, t)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: rollout of %s %sd at %s\n", path, u, name, t.Format(time.RFC3339))
	return nil
}

func cmdPause(e *env, args []string) error {
	return pauseOrResume(e, args, "pause", (*manifest.Update).Pause)
}

func cmdResume(e *env, args []string) error {
	return pauseOrResume(e, args, "resume", (*manifest.Update).Resume)
}

func cmdValidate(e *env, args []string) error {
	fs, parse := flags("validate", "MANIFEST [--json]", e)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	path, err := parse(args)
	if err != nil {
		return err
	}
	m, err := load(path)
	verr := err
	var warnings []string
	if err == nil {
		verr = m.Validate()
		warnings = m.Warnings()
	}
	if *asJSON {
		res := map[string]any{"manifest": path, "valid": verr == nil, "warnings": warnings, "problems": []string{}}
		if verr != nil {
			var ps manifest.Problems
			if errors.As(verr, &ps) {
				var list []string
				for _, p := range ps {
					list = append(list, p.Error())
				}
				res["problems"] = list
			} else {
				res["problems"] = []string{verr.Error()}
			}
		}
		if err := cli.WriteJSON(e.stdout, res); err != nil {
			return err
		}
	} else {
		for _, w := range warnings {
			fmt.Fprintf(e.stdout, "warning: %s\n", w)
		}
		if verr == nil {
			fmt.Fprintf(e.stdout, "%s is valid: %d release(s)\n", path, len(m.Updates))
		}
	}
	return verr
}

func cmdWaves(e *env, args []string) error {
	fs, parse := flags("waves", "MANIFEST --variant V --arch A --version X [--json]", e)
	var r release
	r.register(fs)
	asJSON := fs.Bool("json", false, "print the waves as JSON")
	path, err := parse(args)
	if err != nil {
		return err
	}
	v, err := r.parse("waves")
	if err != nil {
		return err
	}
	m, err := load(path)
	if err != nil {
		return err
	}
	u, err := m.Find(r.variant, r.arch, v)
	if err != nil {
		return err
	}
	return printWaves(e.stdout, u, *asJSON)
}

func printWaves(w io.Writer, u *manifest.Update, asJSON bool) error {
	s := u.Schedule()
	info := s.Describe()
	if asJSON {
		return cli.WriteJSON(w, map[string]any{"release": u.String(), "waves": info, "pauses": s.Pauses})
	}
	if len(info) == 0 {
		fmt.Fprintf(w, "%s has no waves: every host may take it at once\n", u)
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WAVE\tSEEDS\tSHARE\tCUMULATIVE\tOPENS (UTC)\tFULLY OPEN (UTC)")
	for _, i := range info {
		fmt.Fprintf(tw, "%d\t%d-%d\t%.1f%%\t%.1f%%\t%s\t%s\n", i.Wave, i.FirstSeed, i.LastSeed, i.Share, i.Cumulative,
			i.Start.UTC().Format(time.RFC3339), i.End.UTC().Format(time.RFC3339))
	}
	tw.Flush()
	for _, p := range s.Pauses {
		to := "now (paused)"
		if !p.To.IsZero() {
			to = p.To.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "paused from %s to %s\n", p.From.UTC().Format(time.RFC3339), to)
	}
	if len(s.Pauses) > 0 {
		fmt.Fprintln(w, "(windows above are before pauses; each pause shifts what follows it)")
	}
	return nil
}
