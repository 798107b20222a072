// Package tufclient is the one client side of TUF that `tuftool download`,
// `tuftool export`/`mirror`, `tufconf` and `updog` use: the TUF client
// workflow of the specification (5.3 to 5.7), with go-tuf's metadata types
// and its trustedmetadata package checking the top-level roles (root
// rotation, timestamp, snapshot, targets: every signature, version, hash,
// length and expiry), our own walk of the delegations, and our own
// streaming reader for targets, which are checked against their signed
// length and hashes as they arrive and never held in memory.
//
// The walk of delegations (Target) follows 5.6.7 of the specification:
// pre-order, depth first, in the order the delegator lists its roles; a
// role that is not trusted for the path (paths patterns, or hex prefixes of
// the SHA-256 of the path) is not visited; a terminating role ends the
// search of its siblings and of everything after them; a role already
// visited in this search is skipped (cycles end); at most MaxDelegations
// roles are visited. Every delegated role is verified against the
// delegation that leads to it, each time it is reached: its bytes are kept
// (they match the snapshot, whoever delegates), never the verdict, so a
// role first trusted through one delegator is not trusted through another
// whose keys it does not meet (go-tuf's updater reuses it by name; that is
// the conformance suite's "diamond" case, and why the walk is here).
//
// What it keeps: with a cache directory, the trusted metadata persists
// between runs under unversioned names (root.json, timestamp.json,
// snapshot.json, targets.json, and each delegated role as its
// percent-encoded name + ".json"), so rollback and freeze protection hold
// across runs: a repository that serves an older timestamp or snapshot than
// one seen before is refused. Each file is written by atomicfile (temporary
// file, fsync, rename, directory fsync). A cached file that no longer
// verifies (keys rotated, expired, corrupt) is ignored and fetched again,
// as the specification's fast-forward recovery needs.
//
// Offline: Options.OfflineGrace accepts a timestamp and a snapshot that
// expired at most that long ago (never a root or targets role that has
// expired, never a version that goes back); GraceUsed says whether it was
// needed. OpenBundle opens an offline bundle (a directory or a tar file
// made by `tuftool export`) as metadata and targets locations that the same
// client verifies.
//
// It never writes outside the cache directory and the output paths it is
// given, and never trusts a target byte before its verdict (Finish, or
// io.EOF from the stream). A Client is not safe for concurrent use.
package tufclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/safefile"
)

// Sentinel errors: go-tuf's typed errors, translated, so callers need not
// know go-tuf. The go-tuf error stays in the chain (errors.As finds it).
var (
	// ErrExpired means trusted metadata has expired (a frozen repository, or
	// a clock far ahead). The error is an *ExpiredError when the role is
	// known.
	ErrExpired = errors.New("tufclient: metadata has expired")
	// ErrRollback means the repository offered metadata older than what this
	// client already trusts.
	ErrRollback = errors.New("tufclient: metadata version rolled back")
	// ErrSignature means metadata is not signed by the threshold of trusted
	// keys.
	ErrSignature = errors.New("tufclient: metadata is not signed by enough trusted keys")
	// ErrMetadata means metadata failed another check (hash, length, type,
	// malformed JSON, a malformed delegation).
	ErrMetadata = errors.New("tufclient: bad metadata")
	// ErrNoTarget means the signed targets do not list the name (or no role
	// trusted for it does).
	ErrNoTarget = errors.New("tufclient: no such target")
	// ErrTargetName means a target name could escape the output directory
	// or the targets location.
	ErrTargetName = errors.New("tufclient: bad target name")
	// ErrUnreachable means the repository could not be reached.
	ErrUnreachable = errors.New("tufclient: repository unreachable")
	// ErrRefreshed means Refresh was called twice on one Client.
	ErrRefreshed = errors.New("tufclient: a Client refreshes once")
	// ErrNotRefreshed means a target was asked for before Refresh succeeded.
	ErrNotRefreshed = errors.New("tufclient: metadata not refreshed")
)

// Error pairs one of the sentinels above with the error it classifies.
type Error struct {
	Kind error
	Err  error
}

func (e *Error) Error() string   { return e.Err.Error() }
func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// ExpiredError says which role expired, when, and the reference time it
// was checked against. It matches ErrExpired and go-tuf's
// *metadata.ErrExpiredMetadata.
type ExpiredError struct {
	Role    string
	Version int64
	Expires time.Time
	Now     time.Time
	// Grace is the offline grace that was allowed (timestamp and snapshot
	// only).
	Grace time.Duration
}

func (e *ExpiredError) Error() string {
	s := fmt.Sprintf("%s version %d expired at %s (reference time %s, %s ago)", e.Role, e.Version,
		e.Expires.UTC().Format(time.RFC3339), e.Now.UTC().Format(time.RFC3339), e.Now.Sub(e.Expires).Round(time.Second))
	if e.Grace > 0 {
		s += fmt.Sprintf(", more than the offline grace of %s", e.Grace)
	}
	return s
}

// Unwrap makes an ExpiredError match ErrExpired and go-tuf's type.
func (e *ExpiredError) Unwrap() []error {
	return []error{ErrExpired, &metadata.ErrExpiredMetadata{Msg: e.Role + " is expired"}}
}

// classify wraps err with the sentinel that fits it.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var (
		ours *Error
		exp  *metadata.ErrExpiredMetadata
		ver  *metadata.ErrBadVersionNumber
		sig  *metadata.ErrUnsignedMetadata
		dl   *metadata.ErrDownload
		dlh  *metadata.ErrDownloadHTTP
		dll  *metadata.ErrDownloadLengthMismatch
		repo *metadata.ErrRepository
		val  *metadata.ErrValue
		typ  *metadata.ErrType
	)
	switch {
	case errors.As(err, &ours), errors.Is(err, ErrExpired), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.As(err, &exp):
		return &Error{ErrExpired, err}
	case errors.As(err, &ver):
		return &Error{ErrRollback, err}
	case errors.As(err, &sig):
		return &Error{ErrSignature, err}
	case errors.As(err, &dll):
		return &Error{ErrMetadata, err}
	case errors.As(err, &dlh), errors.As(err, &dl), errors.Is(err, fetch.ErrStalled):
		return &Error{ErrUnreachable, err}
	case errors.As(err, &repo), errors.As(err, &val), errors.As(err, &typ):
		return &Error{ErrMetadata, err}
	}
	return err
}

// Limits.
const (
	// MaxRootRotations bounds the root versions walked in one refresh.
	MaxRootRotations = 256
	// MaxDelegations bounds the roles visited in one search for a target
	// (python-tuf's and go-tuf's default).
	MaxDelegations = 32
	// MaxSmallTarget bounds targets read into memory with ReadTarget (the
	// manifest).
	MaxSmallTarget = 16 << 20
	// Metadata sizes accepted when the listing metadata gives no length
	// (go-tuf's and python-tuf's defaults).
	RootMaxLength      = 512000
	TimestampMaxLength = 16384
	SnapshotMaxLength  = 2000000
	TargetsMaxLength   = 5000000
)

// Options configure a Client.
type Options struct {
	// MetadataURL and TargetsURL are http(s) URLs, file:// URLs or local
	// directories.
	MetadataURL, TargetsURL string
	// Root is the bootstrap trusted root (shipped with the OS). With a
	// CacheDir holding a newer trusted root, that one is used.
	Root []byte
	// CacheDir keeps the trusted metadata between runs; "" keeps nothing
	// (every run starts from Root).
	CacheDir string
	// Now is the reference time for expiry (default time.Now), read once,
	// in New: the specification's fixed update start time.
	Now func() time.Time
	// OfflineGrace accepts timestamp and snapshot metadata expired by at
	// most this long (for hosts that update from an offline bundle). Root
	// and targets metadata get none, and no version may go back.
	OfflineGrace time.Duration
	// MaxDelegations bounds the roles visited in one search (default
	// MaxDelegations).
	MaxDelegations int
	Fetcher        *fetch.Fetcher
	Logger         *slog.Logger
}

// Client is one refresh of a repository and the targets read through it.
type Client struct {
	o          Options
	f          *fetch.Fetcher
	log        *slog.Logger
	tm         *trustedmetadata.TrustedMetadata
	now        time.Time
	refreshed  bool
	refreshErr bool
	ctx        context.Context // of Refresh, for Target (which has none)
	// roles holds the bytes of delegated roles: checked against the
	// snapshot, to be verified against each delegation that reaches them.
	roles map[string]*roleBytes
	// files are the verified metadata files by their name in the
	// repository (N.root.json, timestamp.json, ...), for Metadata.
	files map[string][]byte
}

// roleBytes is a delegated role's metadata as the snapshot lists it.
type roleBytes struct {
	raw []byte
	// remote is set when raw came from the repository in this run (not
	// from the cache): no second fetch can do better.
	remote bool
}

// New prepares a client; nothing is fetched until Refresh.
func New(o Options) (*Client, error) {
	if o.Fetcher == nil {
		o.Fetcher = fetch.New()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxDelegations <= 0 {
		o.MaxDelegations = MaxDelegations
	}
	if o.OfflineGrace < 0 {
		return nil, fmt.Errorf("tufclient: negative offline grace %s", o.OfflineGrace)
	}
	if o.MetadataURL == "" || o.TargetsURL == "" {
		return nil, errors.New("tufclient: metadata and targets locations are required")
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	c := &Client{o: o, f: o.Fetcher, log: o.Logger, now: now.UTC(),
		roles: map[string]*roleBytes{}, files: map[string][]byte{}}
	if o.CacheDir != "" {
		if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
			return nil, err
		}
	}
	tm, raw, err := c.trustedRoot()
	if err != nil {
		return nil, err
	}
	c.tm = tm
	c.files[rootFile(tm.Root.Signed.Version)] = raw
	// The cache holds the root trusted now (the bootstrap root, when it is
	// newer than the cached one or nothing is cached).
	if c.o.CacheDir != "" {
		if cached, err := safefile.ReadFile(c.cachePath(metadata.ROOT), RootMaxLength); err != nil || !bytes.Equal(cached, raw) {
			if err := c.persist(metadata.ROOT, raw); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

func rootFile(v int64) string { return strconv.FormatInt(v, 10) + ".root.json" }

// trustedRoot loads the newest root this host trusts: the cached one (it
// was verified when it was cached) or the bootstrap root, whichever has the
// higher version and verifies (signed by its own threshold).
func (c *Client) trustedRoot() (*trustedmetadata.TrustedMetadata, []byte, error) {
	boot, err := metadata.Root().FromBytes(c.o.Root)
	if err != nil {
		return nil, nil, &Error{ErrMetadata, fmt.Errorf("tufclient: the trusted root is not a TUF root: %w", err)}
	}
	candidates := [][]byte{c.o.Root}
	if c.o.CacheDir != "" {
		cached, err := safefile.ReadFile(c.cachePath(metadata.ROOT), RootMaxLength)
		switch {
		case err == nil:
			if r, err := metadata.Root().FromBytes(cached); err != nil {
				c.log.Warn("the cached root is unreadable; starting from the trusted root", "err", err)
			} else if r.Signed.Version >= boot.Signed.Version {
				candidates = [][]byte{cached, c.o.Root}
			}
		case !errors.Is(err, os.ErrNotExist):
			c.log.Warn("the cached root is unusable; starting from the trusted root", "err", err)
		}
	}
	var first error
	for _, raw := range candidates {
		tm, err := trustedmetadata.New(raw)
		if err == nil {
			return tm, raw, nil
		}
		if first == nil {
			first = err
		}
		c.log.Warn("a trusted root does not verify", "err", err)
	}
	return nil, nil, classify(fmt.Errorf("tufclient: loading the trusted root: %w", first))
}

// cachePath is where role's trusted metadata is kept.
func (c *Client) cachePath(role string) string {
	return filepath.Join(c.o.CacheDir, EscapeRole(role)+".json")
}

// readCache returns the cached metadata of role, or nil.
func (c *Client) readCache(role string, max int64) []byte {
	if c.o.CacheDir == "" {
		return nil
	}
	b, err := safefile.ReadFile(c.cachePath(role), max)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			c.log.Warn("ignoring unreadable cached metadata", "role", role, "err", err)
		}
		return nil
	}
	return b
}

// persist caches trusted metadata (atomically and durably).
func (c *Client) persist(role string, data []byte) error {
	if c.o.CacheDir == "" {
		return nil
	}
	if err := atomicfile.WriteFile(c.cachePath(role), data, 0o644); err != nil {
		return fmt.Errorf("caching %s metadata: %w", role, err)
	}
	return nil
}

// fetchMeta reads one metadata file of the repository.
func (c *Client) fetchMeta(ctx context.Context, file string, max int64) ([]byte, error) {
	b, err := c.f.Fetch(ctx, fetch.Join(c.o.MetadataURL, file), max)
	if err != nil {
		return nil, fmt.Errorf("fetching %s: %w", file, err)
	}
	return b, nil
}

// roleFile is the name of a role's metadata in the repository: versioned
// under consistent snapshots.
func (c *Client) roleFile(role string, version int64) string {
	name := EscapeRole(role) + ".json"
	if c.tm.Root.Signed.ConsistentSnapshot {
		return strconv.FormatInt(version, 10) + "." + name
	}
	return name
}

// Refresh runs the top-level part of the TUF client workflow once: root
// rotation, timestamp, snapshot, targets. Delegated roles are loaded when a
// target is looked up. Errors match the sentinels above.
func (c *Client) Refresh(ctx context.Context) error {
	if c.refreshed || c.refreshErr {
		return ErrRefreshed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.ctx = ctx
	if err := c.refresh(ctx); err != nil {
		c.refreshErr = true
		return classify(fmt.Errorf("refreshing metadata from %s: %w", c.o.MetadataURL, err))
	}
	c.refreshed = true
	return nil
}

func (c *Client) refresh(ctx context.Context) error {
	if err := c.loadRoot(ctx); err != nil {
		return err
	}
	// 5.3.10: the final root must not have expired (no grace for it). The
	// trusted set checks again with its own reference time.
	if r := c.tm.Root.Signed; r.IsExpired(c.now) {
		return &ExpiredError{Role: metadata.ROOT, Version: r.Version, Expires: r.Expires, Now: c.now}
	}
	c.tm.RefTime = c.now.Add(-c.o.OfflineGrace)
	if err := c.loadTimestamp(ctx); err != nil {
		return err
	}
	if err := c.loadSnapshot(ctx); err != nil {
		return err
	}
	return c.loadTopTargets(ctx)
}

// loadRoot walks root versions up from the trusted one (5.3): each must be
// signed by the previous root's threshold and its own, with the next
// version. A 404 (or 403, as S3 answers for a missing object) ends it.
func (c *Client) loadRoot(ctx context.Context) error {
	lower := c.tm.Root.Signed.Version + 1
	for v := lower; v < lower+MaxRootRotations; v++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		data, err := c.fetchMeta(ctx, rootFile(v), RootMaxLength)
		if err != nil {
			var he *metadata.ErrDownloadHTTP
			if errors.As(err, &he) && (he.StatusCode == http.StatusNotFound || he.StatusCode == http.StatusForbidden) {
				return nil
			}
			return err
		}
		if _, err := c.tm.UpdateRoot(data); err != nil {
			return fmt.Errorf("root version %d: %w", v, err)
		}
		if err := c.persist(metadata.ROOT, data); err != nil {
			return err
		}
		c.files[rootFile(v)] = data
		c.log.Debug("trusted a new root", "version", v)
	}
	return nil
}

// loadTimestamp (5.4): the cached timestamp, when it still verifies, is
// the reference for rollback checks; the repository's is then fetched and
// replaces it unless it has the same version.
func (c *Client) loadTimestamp(ctx context.Context) error {
	if local := c.readCache(metadata.TIMESTAMP, TimestampMaxLength); local != nil {
		if _, err := c.tm.UpdateTimestamp(local); err != nil {
			// Expired, or no longer signed by the trusted keys (rotated):
			// an expired one still serves the rollback check.
			c.log.Debug("the cached timestamp is not final", "err", err)
		}
	}
	data, err := c.fetchMeta(ctx, "timestamp.json", TimestampMaxLength)
	if err != nil {
		return err
	}
	if _, err := c.tm.UpdateTimestamp(data); err != nil {
		if errors.Is(err, &metadata.ErrEqualVersionNumber{}) {
			// The repository has nothing newer: keep what we trust (its
			// expiry is checked before the snapshot is loaded).
			c.files["timestamp.json"] = c.readCache(metadata.TIMESTAMP, TimestampMaxLength)
			return c.timestampFinal()
		}
		return c.expired(err, metadata.TIMESTAMP)
	}
	c.files["timestamp.json"] = data
	return c.persist(metadata.TIMESTAMP, data)
}

// timestampFinal reports an expired trusted timestamp.
func (c *Client) timestampFinal() error {
	ts := c.tm.Timestamp
	if ts != nil && ts.Signed.IsExpired(c.tm.RefTime) {
		return &ExpiredError{Role: metadata.TIMESTAMP, Version: ts.Signed.Version, Expires: ts.Signed.Expires, Now: c.now, Grace: c.o.OfflineGrace}
	}
	return nil
}

// expired turns go-tuf's expiry of a timestamp or snapshot into an
// *ExpiredError naming the version and dates.
func (c *Client) expired(err error, role string) error {
	var exp *metadata.ErrExpiredMetadata
	if !errors.As(err, &exp) {
		return err
	}
	switch {
	case role == metadata.TIMESTAMP && c.tm.Timestamp != nil:
		s := c.tm.Timestamp.Signed
		return &ExpiredError{Role: role, Version: s.Version, Expires: s.Expires, Now: c.now, Grace: c.o.OfflineGrace}
	case role == metadata.SNAPSHOT && c.tm.Snapshot != nil:
		s := c.tm.Snapshot.Signed
		return &ExpiredError{Role: role, Version: s.Version, Expires: s.Expires, Now: c.now, Grace: c.o.OfflineGrace}
	}
	return err
}

// loadSnapshot (5.5): the cached snapshot is used as it is when it is the
// one the timestamp names; otherwise it serves the rollback check and the
// repository's is fetched.
func (c *Client) loadSnapshot(ctx context.Context) error {
	if local := c.readCache(metadata.SNAPSHOT, SnapshotMaxLength); local != nil {
		if _, err := c.tm.UpdateSnapshot(local, true); err == nil {
			c.log.Debug("the cached snapshot is current")
			c.files[c.roleFile(metadata.SNAPSHOT, c.tm.Snapshot.Signed.Version)] = local
			return nil
		} else {
			c.log.Debug("the cached snapshot is not final", "err", err)
		}
	}
	// An expired timestamp stops here (the trusted set would say so too).
	if err := c.timestampFinal(); err != nil {
		return err
	}
	meta := c.tm.Timestamp.Signed.Meta["snapshot.json"]
	if meta == nil {
		return &metadata.ErrRepository{Msg: "the timestamp lists no snapshot.json"}
	}
	file := c.roleFile(metadata.SNAPSHOT, meta.Version)
	data, err := c.fetchMeta(ctx, file, lengthOr(meta.Length, SnapshotMaxLength))
	if err != nil {
		return err
	}
	if _, err := c.tm.UpdateSnapshot(data, false); err != nil {
		return c.expired(err, metadata.SNAPSHOT)
	}
	c.files[file] = data
	return c.persist(metadata.SNAPSHOT, data)
}

func lengthOr(n, max int64) int64 {
	if n > 0 {
		return n
	}
	return max
}

// loadTopTargets (5.6): the cached targets when the snapshot names its
// version (and hashes), else the repository's.
func (c *Client) loadTopTargets(ctx context.Context) error {
	if local := c.readCache(metadata.TARGETS, TargetsMaxLength); local != nil {
		if err := c.updateTopTargets(local); err == nil {
			c.files[c.roleFile(metadata.TARGETS, c.tm.Targets[metadata.TARGETS].Signed.Version)] = local
			return nil
		} else {
			c.log.Debug("the cached targets are not current", "err", err)
		}
	}
	meta := c.tm.Snapshot.Signed.Meta["targets.json"]
	if meta == nil {
		return &metadata.ErrRepository{Msg: "the snapshot lists no targets.json"}
	}
	// The snapshot must not have expired (the trusted set checks it too).
	if s := c.tm.Snapshot.Signed; s.IsExpired(c.tm.RefTime) {
		return &ExpiredError{Role: metadata.SNAPSHOT, Version: s.Version, Expires: s.Expires, Now: c.now, Grace: c.o.OfflineGrace}
	}
	file := c.roleFile(metadata.TARGETS, meta.Version)
	data, err := c.fetchMeta(ctx, file, lengthOr(meta.Length, TargetsMaxLength))
	if err != nil {
		return err
	}
	if err := c.updateTopTargets(data); err != nil {
		return err
	}
	c.files[file] = data
	return c.persist(metadata.TARGETS, data)
}

// updateTopTargets verifies targets metadata with the trusted set, then
// checks what the set cannot: its expiry without grace, and its
// delegations' form.
func (c *Client) updateTopTargets(data []byte) error {
	md, err := c.tm.UpdateTargets(data)
	if err != nil {
		return err
	}
	if md.Signed.IsExpired(c.now) {
		delete(c.tm.Targets, metadata.TARGETS)
		return &ExpiredError{Role: metadata.TARGETS, Version: md.Signed.Version, Expires: md.Signed.Expires, Now: c.now}
	}
	if err := checkDelegations(metadata.TARGETS, md.Signed.Delegations); err != nil {
		delete(c.tm.Targets, metadata.TARGETS)
		return err
	}
	return nil
}

// Versions are the trusted versions of the top-level roles after Refresh.
type Versions struct {
	Root, Timestamp, Snapshot, Targets int64
	// Expires is the earliest expiry among them.
	Expires time.Time
}

// Versions reports the trusted versions.
func (c *Client) Versions() Versions {
	t := c.tm
	v := Versions{}
	if t.Root != nil {
		v.Root, v.Expires = t.Root.Signed.Version, t.Root.Signed.Expires
	}
	earlier := func(e time.Time) {
		if v.Expires.IsZero() || e.Before(v.Expires) {
			v.Expires = e
		}
	}
	if t.Timestamp != nil {
		v.Timestamp = t.Timestamp.Signed.Version
		earlier(t.Timestamp.Signed.Expires)
	}
	if t.Snapshot != nil {
		v.Snapshot = t.Snapshot.Signed.Version
		earlier(t.Snapshot.Signed.Expires)
	}
	if tg := t.Targets[metadata.TARGETS]; tg != nil {
		v.Targets = tg.Signed.Version
		earlier(tg.Signed.Expires)
	}
	return v
}

// GraceUsed reports whether Refresh accepted an expired timestamp or
// snapshot under Options.OfflineGrace, and by how long the earlier of them
// had expired at the reference time.
func (c *Client) GraceUsed() (bool, time.Duration) {
	if !c.refreshed {
		return false, 0
	}
	var by time.Duration
	for _, e := range []time.Time{c.tm.Timestamp.Signed.Expires, c.tm.Snapshot.Signed.Expires} {
		if c.now.After(e) && c.now.Sub(e) > by {
			by = c.now.Sub(e)
		}
	}
	return by > 0, by
}

// Now is the reference time the client checks expiry against.
func (c *Client) Now() time.Time { return c.now }

// ConsistentSnapshot reports whether the trusted root uses consistent
// snapshots (versioned metadata names, hash-prefixed target names).
func (c *Client) ConsistentSnapshot() bool { return c.tm.Root.Signed.ConsistentSnapshot }

// Names lists the targets of the top-level targets role.
func (c *Client) Names() []string {
	var names []string
	if tg := c.tm.Targets[metadata.TARGETS]; tg != nil {
		for n := range tg.Signed.Targets {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// File is one metadata file as the repository names it.
type File struct {
	Name string
	Data []byte
}

// Metadata returns the metadata files this client has verified, by their
// names in the repository (N.root.json from the trusted root's version up,
// timestamp.json, the snapshot, targets, and the delegated roles the
// searches so far have verified), sorted by name: what another client
// needs to verify the same targets offline.
func (c *Client) Metadata() []File {
	out := make([]File, 0, len(c.files))
	for n, b := range c.files {
		if b != nil {
			out = append(out, File{Name: n, Data: b})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// IsNotFound reports whether err is a 404 (or a missing local file).
func IsNotFound(err error) bool {
	var he *metadata.ErrDownloadHTTP
	return errors.As(err, &he) && he.StatusCode == http.StatusNotFound
}
