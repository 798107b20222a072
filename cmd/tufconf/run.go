package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/tufclient"
)

// Exit statuses of the conformance protocol.
const (
	exitOK      = 0
	exitFailure = 1
)

// dateTimeout bounds the run of date(1).
const dateTimeout = 10 * time.Second

// dateClock reads the time from `date +%s`, which faketime's LD_PRELOAD
// fakes (Go's clock does not go through libc); the system clock if date
// cannot be run.
func dateClock() time.Time {
	ctx, cancel := context.WithTimeout(context.Background(), dateTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "date", "+%s").Output()
	if err == nil {
		if s, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
			return time.Unix(s, 0).UTC()
		}
	}
	return time.Now().UTC()
}

type options struct {
	metadataDir, metadataURL string
	targetNames              []string
	targetBaseURL, targetDir string
	verbose                  bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, clock func() time.Time) int {
	fs := pflag.NewFlagSet("tufconf", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var o options
	fs.StringVar(&o.metadataDir, "metadata-dir", "", "directory of the trusted metadata")
	fs.StringVar(&o.metadataURL, "metadata-url", "", "URL of the repository's metadata")
	fs.StringArrayVar(&o.targetNames, "target-name", nil, "target path to download (repeatable)")
	fs.StringVar(&o.targetBaseURL, "target-base-url", "", "URL of the repository's targets")
	fs.StringVar(&o.targetDir, "target-dir", "", "directory for downloaded targets")
	fs.BoolVarP(&o.verbose, "verbose", "v", false, "log the client's steps on stderr")
	help := fs.BoolP("help", "h", false, "show this help")
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "tufconf: "+format+"\n", a...)
		return exitFailure
	}
	if err := fs.Parse(args); err != nil {
		return fail("%v", err)
	}
	if *help {
		fmt.Fprint(stdout, "Usage: tufconf --metadata-dir DIR init TRUSTED_ROOT\n"+
			"       tufconf --metadata-url URL --metadata-dir DIR refresh\n"+
			"       tufconf --metadata-url URL --metadata-dir DIR --target-name NAME... --target-base-url URL --target-dir DIR download\n\nOptions:\n")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return exitOK
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if fs.NArg() == 0 {
		return fail("a command is needed: init, refresh or download")
	}
	if o.metadataDir == "" {
		return fail("--metadata-dir is required")
	}
	var err error
	switch cmd := fs.Arg(0); cmd {
	case "init":
		if fs.NArg() != 2 {
			return fail("init: want TRUSTED_ROOT")
		}
		err = cmdInit(o, fs.Arg(1))
	case "refresh":
		if fs.NArg() != 1 {
			return fail("refresh: unexpected arguments %q", fs.Args()[1:])
		}
		_, err = refresh(ctx, o, clock(), log)
	case "download":
		if fs.NArg() != 1 {
			return fail("download: unexpected arguments %q", fs.Args()[1:])
		}
		if len(o.targetNames) == 0 || o.targetBaseURL == "" || o.targetDir == "" {
			return fail("download: --target-name, --target-base-url and --target-dir are required")
		}
		err = download(ctx, o, clock(), log, stdout)
	default:
		return fail("unknown command %q (init, refresh or download)", cmd)
	}
	if err != nil {
		return fail("%s: %v", fs.Arg(0), err)
	}
	return exitOK
}

// cmdInit trusts the given root: a copy, made atomically.
func cmdInit(o options, trusted string) error {
	b, err := safefile.ReadFile(trusted, tufclient.RootMaxLength)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.metadataDir, 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(o.metadataDir, "root.json"), b, 0o644)
}

// refresh loads DIR's trusted root and refreshes from the repository.
func refresh(ctx context.Context, o options, now time.Time, log *slog.Logger) (*tufclient.Client, error) {
	if o.metadataURL == "" {
		return nil, errors.New("--metadata-url is required")
	}
	root, err := safefile.ReadFile(filepath.Join(o.metadataDir, "root.json"), tufclient.RootMaxLength)
	if err != nil {
		return nil, fmt.Errorf("the trusted root (run init first): %w", err)
	}
	targets := o.targetBaseURL
	if targets == "" {
		targets = o.metadataURL // unused by a refresh
	}
	c, err := tufclient.New(tufclient.Options{
		MetadataURL: o.metadataURL, TargetsURL: targets, Root: root, CacheDir: o.metadataDir,
		Now:     func() time.Time { return now },
		Fetcher: fetch.NewWith(fetch.Options{Retries: -1, Logger: log, UserAgent: "tufconf (updog)"}).WithContext(ctx),
		Logger:  log,
	})
	if err != nil {
		return nil, err
	}
	if err := c.Refresh(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// download refreshes, then fetches each target in turn with the one
// client, stopping at the first failure.
func download(ctx context.Context, o options, now time.Time, log *slog.Logger, stdout io.Writer) error {
	c, err := refresh(ctx, o, now, log)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.targetDir, 0o755); err != nil {
		return err
	}
	for _, name := range o.targetNames {
		tf, err := c.TargetContext(ctx, name)
		if err != nil {
			return err
		}
		dst := filepath.Join(o.targetDir, tufclient.EscapeRole(name))
		if tufclient.HasTarget(tf, dst) {
			fmt.Fprintf(stdout, "%s: already present\n", name)
			continue
		}
		if err := c.SaveTarget(ctx, tf, dst, nil); err != nil {
			return fmt.Errorf("target %s: %w", name, err)
		}
		fmt.Fprintf(stdout, "%s: downloaded\n", name)
	}
	return nil
}
