package updater

import (
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/updog/updog/internal/fleetlock"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/window"
	"github.com/updog/updog/waves"
)

// DefaultConfigPath is where updog looks for its configuration.
const DefaultConfigPath = "/etc/updog.toml"

// Config is /etc/updog.toml: Bottlerocket's keys (metadata_base_url,
// targets_base_url, seed, version_lock, ignore_waves, https_proxy,
// no_proxy) and ours.
type Config struct {
	MetadataBaseURL string   `toml:"metadata_base_url"`
	TargetsBaseURL  string   `toml:"targets_base_url"`
	Seed            *int64   `toml:"seed"`
	VersionLock     string   `toml:"version_lock"`
	IgnoreWaves     bool     `toml:"ignore_waves"`
	HTTPSProxy      string   `toml:"https_proxy"`
	NoProxy         []string `toml:"no_proxy"`

	TrustedRoot   string   `toml:"trusted_root"`
	StateDir      string   `toml:"state_dir"`
	BootTries     int      `toml:"boot_tries"`
	OSRelease     string   `toml:"os_release"`
	HealthDir     string   `toml:"health_dir"`
	HealthTimeout Duration `toml:"health_timeout"`
	StallTimeout  Duration `toml:"stall_timeout"`
	// MachineID is where the host's identity is read when seed is not set
	// (default /etc/machine-id).
	MachineID string `toml:"machine_id"`

	// CheckpointEvery is how much compressed input an install reads
	// between two checkpoints (bytes; default 2 MiB, at most 8 MiB): what
	// an interrupted install downloads again, at most, besides its
	// read-ahead.
	CheckpointEvery int64 `toml:"checkpoint_every"`

	// DirectIO writes the inactive partitions around the page cache
	// (O_DIRECT) and reads them back the same way (default false): about
	// a fifth less CPU for an install and none of the host's page cache
	// evicted for the image, at some wall time on disks that need many
	// writes in flight (see blockdev.Options.DirectWrite).
	DirectIO bool `toml:"direct_io"`

	// HugePages, when not false, has updog ask the kernel for its heap in
	// transparent huge pages (internal/hugeheap): on the benchmark's
	// two-vCPU guest, 13,000 page faults per install become 2,000 and a
	// 1 GiB install takes a quarter less time. false turns it off, for
	// hosts where the kernel's compaction on fault is to be avoided.
	HugePages *bool `toml:"huge_pages"`

	// Delta is "auto" (default), "off" or "required": how the root image
	// is installed when the release publishes a delta index (delta.go).
	Delta string `toml:"delta"`

	// Reboot is the [reboot] table: when the new set may be switched to
	// and rebooted into.
	Reboot RebootConfig `toml:"reboot"`

	// Path is the file the configuration was read from.
	Path string `toml:"-"`
	// Warnings are legal but suspicious things found while reading it
	// (unknown keys).
	Warnings []string `toml:"-"`
}

// Reboot strategies.
const (
	// StrategyImmediate switches (and, with --reboot, reboots) as soon as
	// the update is written and verified, within the windows if any.
	StrategyImmediate = "immediate"
	// StrategyFleetLock first takes a slot from a FleetLock server; the
	// slot is given back after mark-good on the next boot.
	StrategyFleetLock = "fleet_lock"
	// StrategyPeriodic switches only inside a maintenance window (at
	// least one is required).
	StrategyPeriodic = "periodic"
	// StrategyOff never switches on its own: update stages the release,
	// and an operator (or kured) runs update-apply.
	StrategyOff = "off"
)

// RebootConfig is [reboot].
type RebootConfig struct {
	Strategy     string        `toml:"strategy"`
	FleetLockURL string        `toml:"fleet_lock_url"`
	Group        string        `toml:"group"`
	Windows      []window.Spec `toml:"windows"`
	// FleetLockWait bounds how long one run asks the FleetLock server
	// for a slot: every answer but a grant (and every failure to reach
	// it) is asked again with backoff until then, and only then does the
	// run give up (exit 6). Unset means DefaultFleetLockWait; 0 asks once.
	FleetLockWait *Duration `toml:"fleet_lock_wait"`

	windows window.Set
}

// DefaultFleetLockWait is how long one run asks for a fleet lock slot
// unless [reboot] fleet_lock_wait says otherwise. It stays below
// mark-good's wait for updog's own lock (5 minutes), which a run waiting
// for a slot holds.
const DefaultFleetLockWait = 3 * time.Minute

// MaxFleetLockWait is the longest fleet_lock_wait: a run that waits
// longer holds updog's lock for too long; a timer that runs updog again
// is the way to wait longer.
const MaxFleetLockWait = time.Hour

// LockWait is how long one run asks the FleetLock server for a slot.
func (r *RebootConfig) LockWait() time.Duration {
	if r.FleetLockWait == nil {
		return DefaultFleetLockWait
	}
	return r.FleetLockWait.Duration
}

// Duration reads a TOML integer (seconds) or a string ("90s", "2m",
// "2 minutes").
type Duration struct{ time.Duration }

// maxDuration bounds every duration key: a year.
const maxDuration = 365 * 24 * time.Hour

// UnmarshalTOML implements toml.Unmarshaler. Whatever the form, a
// duration is at most a year: "1000000h" is a mistake, not a policy.
func (d *Duration) UnmarshalTOML(v any) error {
	var dd time.Duration
	switch x := v.(type) {
	case int64:
		if x < 0 || x > int64(maxDuration/time.Second) {
			return fmt.Errorf("%d seconds is out of range (0 to %d)", x, int64(maxDuration/time.Second))
		}
		dd = time.Duration(x) * time.Second
	case string:
		var err error
		if dd, err = time.ParseDuration(x); err != nil || dd < 0 {
			if dd, err = waves.ParseOffset(x); err != nil {
				return fmt.Errorf("%q is not a duration such as \"90s\" or \"2 minutes\"", x)
			}
		}
		if dd < 0 || dd > maxDuration {
			return fmt.Errorf("%q is out of range (0 to 365 days)", x)
		}
	default:
		return fmt.Errorf("want seconds or a duration string, got %T", v)
	}
	d.Duration = dd
	return nil
}

// Defaults of our keys.
const (
	DefaultTrustedRoot   = "/usr/share/updog/root.json"
	DefaultStateDir      = "/var/lib/updog"
	DefaultOSRelease     = "/etc/os-release"
	DefaultHealthDir     = "/etc/updog/health.d"
	DefaultHealthTimeout = 2 * time.Minute
	DefaultStallTimeout  = 60 * time.Second
	DefaultBootTries     = 1
	DefaultMachineID     = "/etc/machine-id"
)

// LoadConfig reads and checks a configuration file. A missing or invalid
// key is an error naming the key and the file (matching ErrConfig); an
// unknown key is a warning in Config.Warnings.
func LoadConfig(path string) (*Config, error) {
	b, err := safefile.ReadFile(path, safefile.MaxConfig)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return ParseConfig(path, b)
}

// ParseConfig is LoadConfig on bytes already read; path names them in
// messages.
func ParseConfig(path string, b []byte) (*Config, error) {
	c := &Config{Path: path}
	md, err := toml.Decode(string(b), c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			key := ""
			if pe.LastKey != "" {
				key = pe.LastKey + ": "
			}
			return nil, fmt.Errorf("%w: %s: line %d: %s%s", ErrConfig, path, pe.Position.Line, key, pe.Message)
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	reported := map[string]bool{}
	for _, k := range md.Undecoded() {
		if len(k) > 1 && reported[k[:len(k)-1].String()] {
			reported[k.String()] = true
			continue // a key inside a table already reported
		}
		reported[k.String()] = true
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s: unknown key %q is ignored", path, k.String()))
	}
	if err := c.fill(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrConfig, path, err)
	}
	return c, nil
}

// WantsHugePages says whether huge_pages is on (the default).
func (c *Config) WantsHugePages() bool { return c.HugePages == nil || *c.HugePages }

func (c *Config) fill() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...))
	}
	for _, k := range []struct {
		key string
		v   *string
	}{{"metadata_base_url", &c.MetadataBaseURL}, {"targets_base_url", &c.TargetsBaseURL}} {
		*k.v = strings.TrimSpace(*k.v)
		if *k.v == "" {
			return bad(k.key, "is missing: it names the repository (an https:// or http:// URL, a file:// URL or a local directory)")
		}
		if err := checkLocation(*k.v); err != nil {
			return bad(k.key, "%v", err)
		}
	}
	if c.Seed != nil && (*c.Seed < 0 || *c.Seed >= waves.MaxSeed) {
		return bad("seed", "%d is not between 0 and %d", *c.Seed, waves.MaxSeed-1)
	}
	if c.HTTPSProxy != "" {
		u, err := url.Parse(c.HTTPSProxy)
		if err != nil || u.Host == "" {
			// Bottlerocket accepts host:port without a scheme.
			if u2, err2 := url.Parse("http://" + c.HTTPSProxy); err2 != nil || u2.Host == "" {
				return bad("https_proxy", "%q is not a proxy URL", c.HTTPSProxy)
			}
		}
	}
	switch {
	case c.BootTries == 0:
		c.BootTries = DefaultBootTries
	case c.BootTries < 1 || c.BootTries > 15:
		return bad("boot_tries", "%d is not between 1 and 15", c.BootTries)
	}
	def := func(v *string, d string) {
		if strings.TrimSpace(*v) == "" {
			*v = d
		}
	}
	def(&c.TrustedRoot, DefaultTrustedRoot)
	def(&c.StateDir, DefaultStateDir)
	def(&c.OSRelease, DefaultOSRelease)
	def(&c.HealthDir, DefaultHealthDir)
	def(&c.MachineID, DefaultMachineID)
	if c.HealthTimeout.Duration == 0 {
		c.HealthTimeout.Duration = DefaultHealthTimeout
	}
	if c.StallTimeout.Duration == 0 {
		c.StallTimeout.Duration = DefaultStallTimeout
	}
	for key, p := range map[string]string{"trusted_root": c.TrustedRoot, "state_dir": c.StateDir, "os_release": c.OSRelease,
		"health_dir": c.HealthDir, "machine_id": c.MachineID} {
		if !filepath.IsAbs(p) {
			return bad(key, "%q is not an absolute path", p)
		}
	}
	if lock := strings.TrimSpace(c.VersionLock); lock == "" {
		c.VersionLock = "latest"
	}
	switch {
	case c.CheckpointEvery == 0:
		c.CheckpointEvery = DefaultCheckpointEvery
	case c.CheckpointEvery < 64<<10 || c.CheckpointEvery > MaxCheckpointEvery:
		return bad("checkpoint_every", "%d bytes is not between 64 KiB and %d MiB (an interruption costs at most this plus the read-ahead)",
			c.CheckpointEvery, MaxCheckpointEvery>>20)
	}
	if err := c.fillDelta(); err != nil {
		return err
	}
	return c.Reboot.fill()
}

func (r *RebootConfig) fill() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("reboot.%s: %s", key, fmt.Sprintf(format, a...))
	}
	switch r.Strategy {
	case "":
		r.Strategy = StrategyImmediate
		if r.FleetLockURL != "" {
			r.Strategy = StrategyFleetLock
		}
	case StrategyImmediate, StrategyFleetLock, StrategyPeriodic, StrategyOff:
	default:
		return bad("strategy", "%q is not immediate, fleet_lock, periodic or off", r.Strategy)
	}
	if r.FleetLockWait != nil && r.FleetLockWait.Duration > MaxFleetLockWait {
		return bad("fleet_lock_wait", "%v is longer than %v", r.FleetLockWait.Duration, MaxFleetLockWait)
	}
	if r.Group == "" {
		r.Group = fleetlock.DefaultGroup
	}
	if !fleetlock.ValidGroup(r.Group) {
		return bad("group", "%q is not a valid group name", r.Group)
	}
	if r.Strategy == StrategyFleetLock {
		if r.FleetLockURL == "" {
			return bad("fleet_lock_url", "is missing: the fleet_lock strategy needs the FleetLock server's URL")
		}
		u, err := url.Parse(r.FleetLockURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("fleet_lock_url", "%q is not an http(s) URL", r.FleetLockURL)
		}
	}
	ws, err := window.ParseSet(r.Windows)
	if err != nil {
		return bad("windows", "%v", err)
	}
	if r.Strategy == StrategyPeriodic && len(ws) == 0 {
		return bad("windows", "the periodic strategy needs at least one maintenance window")
	}
	r.windows = ws
	return nil
}

// WindowSet is the parsed maintenance windows (empty: any time).
func (r *RebootConfig) WindowSet() window.Set { return r.windows }

// checkLocation accepts http(s) URLs, file:// URLs and absolute paths.
func checkLocation(s string) error {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return fmt.Errorf("%q is not a URL: %w", s, err)
		}
		switch u.Scheme {
		case "http", "https":
			if u.Host == "" {
				return fmt.Errorf("%q has no host", s)
			}
		case "file":
			if u.Path == "" || !filepath.IsAbs(u.Path) {
				return fmt.Errorf("%q does not name an absolute directory", s)
			}
		default:
			return fmt.Errorf("%q: scheme %q is not http, https or file", s, u.Scheme)
		}
		return nil
	}
	if !filepath.IsAbs(s) {
		return fmt.Errorf("%q is neither a URL nor an absolute directory", s)
	}
	return nil
}
