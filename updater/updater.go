package updater

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/waves"
)

// ManifestTarget is the TUF target holding the releases.
const ManifestTarget = "manifest.json"

// Options configure an Updater. Only Config is required.
type Options struct {
	Config *Config
	// Disk is the whole-disk device or image file; "" means the disk
	// holding the running root.
	Disk string
	// Active is the operator's --active ("", "a" or "b"). On a running
	// host it must agree with /sys; on an image file it says which set
	// runs.
	Active string
	// SectorSize of an image file (0: detected).
	SectorSize int
	// Host says how to find the running system (tests fake /sys).
	Host gptprio.HostInfo
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// Progress is told about downloads and verification.
	Progress Progress
	// Reboot restarts the machine (default: systemctl reboot, or the
	// reboot system call).
	Reboot func(ctx context.Context) error
	// Arch overrides the architecture (default: the running binary's).
	Arch string
	// Fetch overrides fetcher settings (tests set a short backoff). The
	// proxy, query and stall timeout always come from Config.
	Fetch fetch.Options
	// Concurrency bounds decoder threads (default GOMAXPROCS).
	Concurrency int
	// From is an offline bundle (a tar file or a directory written by
	// tuftool export) to read the repository from instead of
	// metadata_base_url and targets_base_url: the same verification runs,
	// with no network.
	From string
	// OfflineGrace accepts timestamp and snapshot metadata expired by at
	// most this long (never a rollback, never an expired root or targets),
	// for hosts updated from bundles; when it is used, status says so.
	OfflineGrace time.Duration
	// RunDir holds the disk locks (default /run/lock).
	RunDir string
	// LockWait is how long Lock and the disk lock wait for another updog
	// to finish before failing with ErrLocked (0: fail at once).
	// mark-good waits, so a check-update timer never costs a healthy
	// boot its mark.
	LockWait time.Duration
	// LockBackoff overrides the fleet lock client's backoff (tests).
	LockBackoff func(attempt int) time.Duration
	// CheckpointEvery is the most compressed input between two install
	// checkpoints (default: the configuration's, else
	// DefaultCheckpointEvery); negative: no checkpoints (an interruption
	// starts the install over; for measurements).
	CheckpointEvery int64
	// WrapPartition, when set, wraps each inactive partition before it is
	// written (tests simulate power cuts with it).
	WrapPartition func(kind string, d blockdev.Device) blockdev.Device
}

// Updater runs updog's commands.
type Updater struct {
	o     Options
	cfg   *Config
	store *store
	log   *slog.Logger
	now   func() time.Time
	// fetcher is the last client's (targets are read through it).
	fetcher *fetch.Fetcher
	// bundle is the opened --from bundle, closed by Close.
	bundle *tufclient.Bundle
	// graceUsed is how far expired metadata was accepted (0: not at all).
	graceUsed time.Duration
	// warnedMachineID: the unreadable machine_id was reported.
	warnedMachineID bool
}

// Close releases what the Updater opened (an unpacked bundle).
func (u *Updater) Close() error {
	if u.bundle == nil {
		return nil
	}
	err := u.bundle.Close()
	u.bundle = nil
	return err
}

// New checks the options and opens the state directory.
func New(o Options) (*Updater, error) {
	if o.Config == nil {
		return nil, fmt.Errorf("%w: no configuration", ErrConfig)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = noProgress{}
	}
	if o.Arch == "" {
		o.Arch = HostArch()
	}
	if o.Concurrency <= 0 {
		o.Concurrency = runtime.GOMAXPROCS(0)
	}
	if o.Reboot == nil {
		o.Reboot = systemReboot
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = o.Config.CheckpointEvery
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = DefaultCheckpointEvery
	}
	st, err := openStore(o.Config.StateDir)
	if err != nil {
		return nil, err
	}
	st.log = o.Logger
	return &Updater{o: o, cfg: o.Config, store: st, log: o.Logger, now: o.Now}, nil
}

// Lock takes the state directory's lock for a command that changes
// anything; when another updog runs it waits up to Options.LockWait, then
// fails with a *LockedError (ErrLocked) naming the holder. Release with
// Unlock.
func (u *Updater) Lock(ctx context.Context) error { return u.store.lock(ctx, u.o.LockWait) }

// Unlock releases the lock.
func (u *Updater) Unlock() { u.store.unlock() }

// running reads the running release.
func (u *Updater) running() (Running, error) {
	return ReadOSRelease(u.cfg.OSRelease, u.o.Arch)
}

// host is the host's place in rollouts: the configured seed, or one
// derived from machine-id; the ID from machine-id, or the state's random
// one.
func (u *Updater) host(st *State) (waves.Host, string) {
	var h waves.Host
	src := "state directory"
	mid, err := safefile.ReadFile(u.cfg.MachineID, 4096)
	if err == nil {
		var mh waves.Host
		if mh, err = hostFromMachineID(mid); err == nil {
			h, src = mh, "machine-id"
		}
	}
	if err != nil && u.cfg.Seed == nil && !u.warnedMachineID {
		// The seed places the host in a rollout wave: say when it does
		// not come from where the operator expects.
		u.warnedMachineID = true
		u.log.Warn("machine_id could not be read: the rollout seed comes from the state directory's random host ID instead (set seed in updog.toml to choose it)",
			"machine_id", u.cfg.MachineID, "err", err)
	}
	if src != "machine-id" {
		hx, _ := decodeHex16(st.HostID)
		h.ID = hx
		h.Seed = uint32(h.ID[0])<<8 | uint32(h.ID[1])
		h.Seed %= waves.MaxSeed
	}
	if u.cfg.Seed != nil {
		h.Seed = uint32(*u.cfg.Seed)
		src = "updog.toml"
	}
	return h, src
}

// client prepares a TUF client with the query parameters Bottlerocket
// sends (seed and running version).
func (u *Updater) client(ctx context.Context, seed uint32, running Running) (*tufclient.Client, error) {
	root, err := safefile.ReadFile(u.cfg.TrustedRoot, safefile.MaxMetadata)
	if err != nil {
		return nil, fmt.Errorf("trusted root (trusted_root in %s): %w", u.cfg.Path, err)
	}
	fo := u.o.Fetch
	fo.HTTPSProxy, fo.NoProxy = u.cfg.HTTPSProxy, u.cfg.NoProxy
	fo.StallTimeout = u.cfg.StallTimeout.Duration
	fo.Query = url.Values{"seed": {strconv.FormatUint(uint64(seed), 10)}, "version": {running.Version.String()}}
	fo.UserAgent = "updog"
	if fo.Logger == nil {
		fo.Logger = u.log
	}
	u.fetcher = fetch.NewWith(fo)
	meta, targets := u.cfg.MetadataBaseURL, u.cfg.TargetsBaseURL
	if u.o.From != "" {
		if u.bundle == nil {
			tmp := filepath.Join(u.cfg.StateDir, "tmp")
			if err := os.MkdirAll(tmp, 0o700); err != nil {
				return nil, err
			}
			b, err := tufclient.OpenBundle(ctx, u.o.From, tufclient.BundleOptions{TempDir: tmp})
			if err != nil {
				return nil, fmt.Errorf("--from %s: %w", u.o.From, err)
			}
			u.bundle = b
		}
		meta, targets = u.bundle.MetadataURL, u.bundle.TargetsURL
	}
	return tufclient.New(tufclient.Options{
		MetadataURL: meta, TargetsURL: targets, Root: root, OfflineGrace: u.o.OfflineGrace,
		CacheDir: filepath.Join(u.cfg.StateDir, tufDir), Now: u.now, Fetcher: u.fetcher, Logger: u.log,
	})
}

// refresh runs the TUF workflow and reads the manifest.
func (u *Updater) refresh(ctx context.Context, host waves.Host, running Running) (*tufclient.Client, *manifest.Manifest, error) {
	c, err := u.client(ctx, host.Seed, running)
	if err != nil {
		return nil, nil, translate(err)
	}
	if err := c.Refresh(ctx); err != nil {
		var ee *tufclient.ExpiredError
		if u.o.From != "" && errors.As(err, &ee) {
			return nil, nil, fmt.Errorf("%w: the bundle %s is too old: %w; get a fresh one (tuftool export) or accept metadata expired by up to a given time with --offline-grace",
				ErrMetadataExpired, u.o.From, err)
		}
		return nil, nil, translate(err)
	}
	if used, by := c.GraceUsed(); used {
		u.graceUsed = by
		u.log.Warn("accepted expired repository metadata within --offline-grace", "expired_by", by)
	}
	b, err := c.ReadTarget(ctx, ManifestTarget, tufclient.MaxSmallTarget)
	if err != nil {
		return nil, nil, translate(fmt.Errorf("reading %s: %w", ManifestTarget, err))
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUntrusted, ManifestTarget, err)
	}
	if err := m.Validate(); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUntrusted, ManifestTarget, err)
	}
	return c, m, nil
}

// translate maps the TUF client's sentinels to the updater's.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, tufclient.ErrExpired):
		return fmt.Errorf("%w: %w", ErrMetadataExpired, err)
	case errors.Is(err, tufclient.ErrRollback):
		return fmt.Errorf("%w: %w", ErrRollback, err)
	case errors.Is(err, tufclient.ErrSignature), errors.Is(err, tufclient.ErrMetadata),
		errors.Is(err, fetch.ErrHash), errors.Is(err, fetch.ErrTooLong), errors.Is(err, fetch.ErrTooShort):
		return fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	return err
}

func decodeHex16(s string) ([16]byte, error) {
	var out [16]byte
	if len(s) != 32 {
		return out, fmt.Errorf("not 32 hex digits")
	}
	for i := 0; i < 16; i++ {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			return out, err
		}
		out[i] = byte(v)
	}
	return out, nil
}

// systemReboot asks systemd to reboot when it runs, else calls reboot(2)
// after syncing.
func systemReboot(ctx context.Context) error {
	if fi, err := os.Stat("/run/systemd/system"); err == nil && fi.IsDir() {
		return runCommand(ctx, "systemctl", "reboot")
	}
	return rebootNow()
}
