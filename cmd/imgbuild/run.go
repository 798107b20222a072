package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/internal/safefile"
)

const (
	exitOK    = cli.ExitOK
	exitError = cli.ExitFailure
	exitUsage = cli.ExitUsage
)

const topUsage = `Usage: imgbuild COMMAND [options]

Commands:
  build     build a release: a bootable A/B disk image and its update artifacts
  disk      write an empty Bottlerocket A/B OS disk image
  verity    build, verify and describe dm-verity hash trees

Run imgbuild COMMAND --help for the options of each.
`

var (
	usagef  = cli.Usagef
	errHelp = cli.ErrHelp
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmds := map[string]func(context.Context, []string) error{
		"build":  func(ctx context.Context, a []string) error { return runBuild(ctx, a, stdout, stderr) },
		"disk":   func(ctx context.Context, a []string) error { return runDisk(ctx, a, stdout) },
		"verity": func(ctx context.Context, a []string) error { return runVerity(ctx, a, stdout) },
	}
	return cli.Dispatch("imgbuild", topUsage, args, stdout, stderr, ctx, cmds)
}

// newFlags returns a subcommand's flag set and a parser that handles --help.
func newFlags(name, synopsis string, stdout io.Writer) (*pflag.FlagSet, func([]string) error) {
	fs, parse := cli.Flags("imgbuild", name, synopsis, stdout)
	return fs, func(args []string) error { return parse(args, -1) }
}

// parseSize reads sizes such as 2GiB, 512MiB, 4096 or 1G (binary units).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}}
	mult := int64(1)
	num := s
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			num, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want a positive number with an optional KiB, MiB, GiB or TiB)", s)
	}
	return n * mult, nil
}

func runDisk(ctx context.Context, args []string, stdout io.Writer) error {
	fs, parse := newFlags("disk", "[--size SIZE] [--partition-plan split|unified] [--sector-size N] [--disk-guid GUID] [--force] [--json] OUT", stdout)
	size := fs.String("size", "2GiB", "disk `SIZE` (KiB, MiB, GiB, TiB): a whole number of sectors")
	planName := fs.String("partition-plan", string(image.PlanSplit), "Bottlerocket partition `PLAN`: split (the OS disk, DATA on another disk) or unified (DATA at the end, as imgbuild build makes)")
	ss := fs.Int("sector-size", 512, "logical sector size, 512 or 4096")
	guid := fs.String("disk-guid", "", "disk `GUID`, not all zeros (default: random)")
	asJSON := fs.Bool("json", false, "print the layout as JSON")
	force := fs.Bool("force", false, "replace OUT if it exists (a regular file only)")
	if err := parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("disk: exactly one output file is needed")
	}
	bytes, err := parseSize(*size)
	if err != nil {
		return usagef("disk: --size: %v", err)
	}
	if *ss != 512 && *ss != 4096 {
		return usagef("disk: --sector-size %d: want 512 or 4096", *ss)
	}
	pp, err := image.ParsePartitionPlan(*planName)
	if err != nil {
		return usagef("disk: --partition-plan: %v", err)
	}
	if bytes%int64(*ss) != 0 {
		return usagef("disk: --size %s is %d bytes, not a whole number of %d-byte sectors", *size, bytes, *ss)
	}
	var g gptprio.GUID
	if *guid != "" {
		if g, err = gptprio.ParseGUID(*guid); err != nil {
			return usagef("disk: --disk-guid: %v", err)
		}
		if g.IsZero() {
			return usagef("disk: --disk-guid %s: the all-zero GUID is not a valid disk GUID (a GPT needs a unique one)", *guid)
		}
	} else {
		rand.Read(g[:])
		g[7] = g[7]&0x0f | 0x40 // version 4: the high nibble of field 3, little-endian on disk
		g[8] = g[8]&0x3f | 0x80
	}
	plan, err := image.BottlerocketPlanFor(bytes, pp)
	if err != nil {
		return err
	}
	t, err := image.NewTable(bytes, *ss, plan, g)
	if err != nil {
		return err
	}
	out := fs.Arg(0)
	if err := writeDiskImage(ctx, out, *force, bytes, *ss, t); err != nil {
		return err
	}
	type partJSON struct {
		Number   int    `json:"number"`
		Name     string `json:"name"`
		Type     string `json:"type_guid"`
		FirstLBA uint64 `json:"first_lba"`
		LastLBA  uint64 `json:"last_lba"`
	}
	var parts []partJSON
	for _, p := range t.Used() {
		parts = append(parts, partJSON{p.Number, p.Name(), p.Type.String(), p.FirstLBA, p.LastLBA})
	}
	if *asJSON {
		return cli.WriteJSON(stdout, map[string]any{"path": out, "bytes": bytes, "sector_size": *ss, "disk_guid": g.String(), "partitions": parts})
	}
	fmt.Fprintf(stdout, "%s: %d bytes, %d-byte sectors, disk GUID %v\n", out, bytes, *ss, g)
	for _, p := range parts {
		fmt.Fprintf(stdout, "  %2d  %-24s LBA %d-%d\n", p.Number, p.Name, p.FirstLBA, p.LastLBA)
	}
	return nil
}

// writeDiskImage makes out a sparse image file of size bytes holding the
// partition table t. The image is built in a temporary file beside out
// (beside the file a symlink names), its table written through the locked
// gptprio.Disk.Format, then moved into place: without force with a hard
// link, which fails if out appeared meanwhile; with force with a rename
// over the old file, whose permission bits the new one keeps. An error or
// a signal before that leaves no partial image at out. A FIFO, a directory or a device at out is refused at once
// (imgbuild writes image files only), and so is an existing file without
// force.
func writeDiskImage(ctx context.Context, out string, force bool, size int64, sectorSize int, t *gptprio.Table) (err error) {
	perm := os.FileMode(0o644)
	if fi, err := os.Stat(out); err == nil {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%w (imgbuild disk writes image files only)",
				&safefile.KindError{Path: out, Mode: fi.Mode(), Want: "a regular file"})
		}
		if !force {
			return fmt.Errorf("%s already exists (use --force to replace it)", out)
		}
		perm = fi.Mode().Perm()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	target := out
	if force {
		if target, err = atomicfile.Resolve(out); err != nil {
			return err
		}
	}
	dir, base := filepath.Split(target)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	err = f.Chmod(perm)
	if err == nil {
		err = f.Truncate(size)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	d, err := gptprio.OpenDisk(ctx, tmp, gptprio.OpenOptions{SectorSize: sectorSize})
	if err != nil {
		return err
	}
	err = d.Format(ctx, t)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if force {
		err = os.Rename(tmp, target)
	} else {
		err = placeNew(tmp, target)
	}
	if err != nil {
		return err
	}
	return atomicfile.SyncDir(dir)
}

// placeNew moves tmp to target unless something is at target: a hard link
// (which never replaces), or a rename where the file system has no hard
// links.
func placeNew(tmp, target string) error {
	err := os.Link(tmp, target)
	switch {
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s already exists (use --force to replace it)", target)
	case err == nil:
		return os.Remove(tmp)
	}
	if _, lerr := os.Lstat(target); !errors.Is(lerr, fs.ErrNotExist) {
		return fmt.Errorf("%s already exists (use --force to replace it)", target)
	}
	return os.Rename(tmp, target)
}
