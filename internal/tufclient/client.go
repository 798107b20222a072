// Package tufclient is the one client side of TUF that both `tuftool
// download` and `updog` use: go-tuf for the metadata (root rotation,
// timestamp, snapshot, targets, with every signature, version, hash, length
// and expiry checked), and our own streaming reader for targets, which are
// checked against their signed length and hashes as they arrive and never
// held in memory.
//
// What it keeps: with a cache directory, the trusted metadata (root.json,
// timestamp.json, snapshot.json, targets.json) persists between runs, so
// rollback and freeze protection hold across runs: a repository that
// serves an older timestamp or snapshot than one seen before is refused.
// go-tuf writes those files by rename; Refresh then fsyncs them and the
// directory, so a power cut cannot lose them.
//
// What it works around in go-tuf v2.4.2: updater.New overwrites the cached
// root with the root it is given, so New passes the newest trusted root it
// has (the cached one, unless the bootstrap root is newer); DownloadTarget
// holds the whole file in memory, so targets are streamed here; Refresh
// runs once per updater, so a Client is good for one refresh.
//
// It never writes outside the cache directory and the output directory of
// Download, and never trusts a target byte before its verdict (Finish, or
// io.EOF from the stream).
package tufclient

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/fetch"
)

// Sentinel errors: go-tuf's typed errors, translated, so callers need not
// know go-tuf. The go-tuf error stays in the chain (errors.As finds it).
var (
	// ErrExpired means trusted metadata has expired (a frozen repository, or
	// a clock far ahead).
	ErrExpired = errors.New("tufclient: metadata has expired")
	// ErrRollback means the repository offered metadata older than what this
	// client already trusts.
	ErrRollback = errors.New("tufclient: metadata version rolled back")
	// ErrSignature means metadata is not signed by the threshold of trusted
	// keys.
	ErrSignature = errors.New("tufclient: metadata is not signed by enough trusted keys")
	// ErrMetadata means metadata failed another check (hash, length, type,
	// malformed JSON).
	ErrMetadata = errors.New("tufclient: bad metadata")
	// ErrNoTarget means the signed targets do not list the name.
	ErrNoTarget = errors.New("tufclient: no such target")
	// ErrTargetName means a target name could escape the output directory.
	ErrTargetName = errors.New("tufclient: bad target name")
	// ErrUnreachable means the repository could not be reached.
	ErrUnreachable = errors.New("tufclient: repository unreachable")
)

// Error pairs one of the sentinels above with the error it classifies.
type Error struct {
	Kind error
	Err  error
}

func (e *Error) Error() string   { return e.Err.Error() }
func (e *Error) Unwrap() []error { return []error{e.Kind, e.Err} }

// classify wraps err with the sentinel that fits it.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var (
		exp  *metadata.ErrExpiredMetadata
		ver  *metadata.ErrBadVersionNumber
		sig  *metadata.ErrUnsignedMetadata
		dl   *metadata.ErrDownload
		dlh  *metadata.ErrDownloadHTTP
		repo *metadata.ErrRepository
	)
	switch {
	case errors.As(err, &exp):
		return &Error{ErrExpired, err}
	case errors.As(err, &ver):
		return &Error{ErrRollback, err}
	case errors.As(err, &sig):
		return &Error{ErrSignature, err}
	case errors.As(err, &dlh), errors.As(err, &dl), errors.Is(err, fetch.ErrStalled):
		return &Error{ErrUnreachable, err}
	case errors.As(err, &repo):
		return &Error{ErrMetadata, err}
	}
	return err
}

// Limits.
const (
	// MaxRootRotations bounds the root versions walked in one refresh.
	MaxRootRotations = 256
	// MaxSmallTarget bounds targets read into memory with ReadTarget (the
	// manifest).
	MaxSmallTarget = 16 << 20
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
	// Now is the reference time for expiry (default time.Now).
	Now     func() time.Time
	Fetcher *fetch.Fetcher
	Logger  *slog.Logger
}

// Client is one refresh of a repository and the targets read through it.
type Client struct {
	o          Options
	up         *updater.Updater
	consistent bool
	f          *fetch.Fetcher
}

// New prepares a client; nothing is fetched until Refresh.
func New(o Options) (*Client, error) {
	if o.Fetcher == nil {
		o.Fetcher = fetch.New()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MetadataURL == "" || o.TargetsURL == "" {
		return nil, errors.New("tufclient: metadata and targets locations are required")
	}
	root, err := trustedRoot(o)
	if err != nil {
		return nil, err
	}
	cfg, err := config.New(o.MetadataURL, root)
	if err != nil {
		return nil, fmt.Errorf("tufclient: %w", err)
	}
	cfg.Fetcher = o.Fetcher
	cfg.RemoteTargetsURL = o.TargetsURL
	cfg.MaxRootRotations = MaxRootRotations
	if o.CacheDir == "" {
		cfg.DisableLocalCache = true
	} else {
		if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
			return nil, err
		}
		cfg.LocalMetadataDir = o.CacheDir
		cfg.LocalTargetsDir = filepath.Join(o.CacheDir, "targets-unused")
	}
	up, err := updater.New(cfg)
	if err != nil {
		return nil, classify(fmt.Errorf("tufclient: loading the trusted root: %w", err))
	}
	if o.Now != nil {
		up.UnsafeSetRefTime(o.Now())
	}
	return &Client{o: o, up: up, f: o.Fetcher}, nil
}

// trustedRoot picks the newest root this host trusts: the cached one (it
// was verified when it was cached) or the bootstrap root, whichever has the
// higher version.
func trustedRoot(o Options) ([]byte, error) {
	boot, err := metadata.Root().FromBytes(o.Root)
	if err != nil {
		return nil, &Error{ErrMetadata, fmt.Errorf("tufclient: the trusted root is not a TUF root: %w", err)}
	}
	if o.CacheDir == "" {
		return o.Root, nil
	}
	cached, err := os.ReadFile(filepath.Join(o.CacheDir, "root.json"))
	if errors.Is(err, os.ErrNotExist) {
		return o.Root, nil
	} else if err != nil {
		return nil, err
	}
	c, err := metadata.Root().FromBytes(cached)
	if err != nil {
		o.Logger.Warn("the cached root is unreadable; starting from the trusted root", "err", err)
		return o.Root, nil
	}
	if c.Signed.Version >= boot.Signed.Version {
		return cached, nil
	}
	return o.Root, nil
}

// Refresh runs the TUF client workflow once. Errors match the sentinels
// above.
func (c *Client) Refresh(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	err := c.up.Refresh()
	if c.o.CacheDir != "" {
		if serr := syncCache(c.o.CacheDir); serr != nil && err == nil {
			err = serr
		}
	}
	if err != nil {
		return classify(fmt.Errorf("refreshing metadata from %s: %w", c.o.MetadataURL, err))
	}
	c.consistent = c.up.GetTrustedMetadataSet().Root.Signed.ConsistentSnapshot
	return nil
}

// syncCache makes the metadata go-tuf wrote (by rename, without fsync)
// durable.
func syncCache(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(dir)
}

// Versions are the trusted versions of the top-level roles after Refresh.
type Versions struct {
	Root, Timestamp, Snapshot, Targets int64
	// Expires is the earliest expiry among them.
	Expires time.Time
}

// Versions reports the trusted versions.
func (c *Client) Versions() Versions {
	t := c.up.GetTrustedMetadataSet()
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

// Target returns the signed description of a target (delegations
// included), or an error matching ErrNoTarget.
func (c *Client) Target(name string) (*metadata.TargetFiles, error) {
	tf, err := c.up.GetTargetInfo(name)
	if err != nil {
		var he *metadata.ErrDownloadHTTP
		if errors.As(err, &he) || errors.Is(err, fetch.ErrStalled) {
			return nil, classify(err)
		}
		var rep *metadata.ErrRepository
		if errors.As(err, &rep) {
			return nil, classify(fmt.Errorf("target %s: %w", name, err))
		}
		return nil, &Error{ErrNoTarget, fmt.Errorf("target %s: %w", name, err)}
	}
	return tf, nil
}

// Names lists the top-level targets.
func (c *Client) Names() []string {
	var names []string
	for n := range c.up.GetTopLevelTargets() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// URL is where a target's bytes are: under consistent snapshots its name
// is prefixed with its sha256, as go-tuf and tough store them.
func (c *Client) URL(tf *metadata.TargetFiles) string {
	name := tf.Path
	if c.consistent {
		dir, base := path.Split(name)
		h := hex.EncodeToString(tf.Hashes["sha256"])
		if h == "" {
			for _, v := range tf.Hashes {
				h = hex.EncodeToString(v)
				break
			}
		}
		name = dir + h + "." + base
	}
	return fetch.Join(c.o.TargetsURL, name)
}

// Stream is one target being read: Read returns its bytes as they arrive,
// checked against the signed length (never more, never less) and, at the
// end, the signed hashes. Nothing read is trustworthy until Finish returns
// nil (or Read returns io.EOF).
type Stream struct {
	*fetch.Verifier
	body io.ReadCloser
	// Target is the signed description of the target.
	Target *metadata.TargetFiles
}

// Close releases the connection.
func (s *Stream) Close() error { return s.body.Close() }

// Resumes is how many times the download resumed after an interruption.
func (s *Stream) Resumes() int {
	if r, ok := s.body.(interface{ Resumes() int }); ok {
		return r.Resumes()
	}
	return 0
}

// Open starts streaming a target.
func (c *Client) Open(ctx context.Context, name string) (*Stream, error) {
	tf, err := c.Target(name)
	if err != nil {
		return nil, err
	}
	return c.OpenTarget(ctx, tf)
}

// OpenTarget starts streaming a target already looked up.
func (c *Client) OpenTarget(ctx context.Context, tf *metadata.TargetFiles) (*Stream, error) {
	hashes := map[string][]byte{}
	for alg, sum := range tf.Hashes {
		hashes[alg] = sum
	}
	body, err := c.f.OpenResumable(ctx, c.URL(tf), tf.Length)
	if err != nil {
		return nil, classify(fmt.Errorf("target %s: %w", tf.Path, err))
	}
	v, err := fetch.NewVerifier(body, tf.Length, hashes)
	if err != nil {
		body.Close()
		return nil, fmt.Errorf("target %s: %w", tf.Path, err)
	}
	return &Stream{Verifier: v, body: body, Target: tf}, nil
}

// ReadTarget reads a small target (at most max bytes, at most
// MaxSmallTarget) into memory after checking it.
func (c *Client) ReadTarget(ctx context.Context, name string, max int64) ([]byte, error) {
	if max <= 0 || max > MaxSmallTarget {
		max = MaxSmallTarget
	}
	tf, err := c.Target(name)
	if err != nil {
		return nil, err
	}
	if tf.Length > max {
		return nil, fmt.Errorf("%w: target %s is %d bytes, more than the %d accepted", ErrMetadata, name, tf.Length, max)
	}
	s, err := c.OpenTarget(ctx, tf)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b, err := io.ReadAll(s)
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", name, err)
	}
	return b, nil
}

// Progress receives byte counts while targets download.
type Progress interface {
	Start(name string, total int64)
	Add(n int)
	Finish()
}

// Downloaded describes one downloaded target.
type Downloaded struct {
	Name   string `json:"name"`
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// Download streams the named targets (all top-level targets when names is
// empty) into outdir, each checked while it is written, into a temporary
// file renamed into place only after its verdict. A target that fails is
// removed, never left in place.
func (c *Client) Download(ctx context.Context, names []string, outdir string, prog Progress) ([]Downloaded, error) {
	if len(names) == 0 {
		names = c.Names()
	}
	if err := os.MkdirAll(outdir, 0o755); err != nil {
		return nil, err
	}
	var got []Downloaded
	for _, name := range names {
		if !filepath.IsLocal(filepath.FromSlash(name)) {
			return got, fmt.Errorf("%w: %q would be written outside %s", ErrTargetName, name, outdir)
		}
		d, err := c.downloadOne(ctx, name, outdir, prog)
		if err != nil {
			return got, fmt.Errorf("target %s: %w", name, err)
		}
		got = append(got, d)
	}
	return got, nil
}

func (c *Client) downloadOne(ctx context.Context, name, outdir string, prog Progress) (Downloaded, error) {
	s, err := c.Open(ctx, name)
	if err != nil {
		return Downloaded{}, err
	}
	defer s.Close()
	dst := filepath.Join(outdir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Downloaded{}, err
	}
	if prog != nil {
		prog.Start(name, s.Target.Length)
		defer prog.Finish()
	}
	err = atomicfile.Write(dst, 0o644, func(w io.Writer) error {
		var r io.Reader = s
		if prog != nil {
			r = io.TeeReader(s, progressWriter{prog})
		}
		if _, err := io.Copy(w, ctxReader{ctx, r}); err != nil {
			return err
		}
		_, err := s.Finish()
		return err
	})
	if err != nil {
		return Downloaded{}, err
	}
	return Downloaded{Name: name, Length: s.Target.Length, SHA256: hex.EncodeToString(s.Target.Hashes["sha256"])}, nil
}

type progressWriter struct{ p Progress }

func (w progressWriter) Write(b []byte) (int, error) {
	w.p.Add(len(b))
	return len(b), nil
}

// ctxReader stops a copy loop when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// IsNotFound reports whether err is a 404 (or a missing local file).
func IsNotFound(err error) bool {
	var he *metadata.ErrDownloadHTTP
	return errors.As(err, &he) && he.StatusCode == http.StatusNotFound
}
