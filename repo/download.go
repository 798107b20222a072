package repo

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"

	"github.com/updog/updog/internal/fetch"
)

// DownloadOptions control Download.
type DownloadOptions struct {
	// Now, when set, is the reference time for expiry checks (tests of
	// repositories whose metadata has a fixed expiry use it).
	Now     func() time.Time
	Fetcher *fetch.Fetcher
	Logger  *slog.Logger
	// Progress, when set, is told about targets as they stream in.
	Progress Progress
}

// Download refreshes the metadata at metaURL from the trusted root rootRaw
// as a TUF client does (root rotation, timestamp, snapshot, targets, with
// every signature, version, hash, length and expiry checked) and streams
// the named targets (all of them when names is empty) from targetsURL into
// outdir, each checked against its signed length and hashes while it is
// written. A target that fails its check is removed, never left in place.
func Download(ctx context.Context, rootRaw []byte, metaURL, targetsURL string, names []string, outdir string, o DownloadOptions) ([]Target, error) {
	if _, err := ParseRoot(rootRaw); err != nil {
		return nil, err
	}
	f := o.Fetcher
	if f == nil {
		f = fetch.New()
	}
	cfg, err := config.New(metaURL, rootRaw)
	if err != nil {
		return nil, err
	}
	cfg.Fetcher = f
	cfg.RemoteTargetsURL = targetsURL
	cfg.DisableLocalCache = true
	up, err := updater.New(cfg)
	if err != nil {
		return nil, err
	}
	if o.Now != nil {
		up.UnsafeSetRefTime(o.Now())
	}
	if err := up.Refresh(); err != nil {
		return nil, fmt.Errorf("refreshing metadata from %s: %w", metaURL, err)
	}
	trusted := up.GetTrustedMetadataSet()
	consistent := trusted.Root.Signed.ConsistentSnapshot
	if len(names) == 0 {
		for name := range up.GetTopLevelTargets() {
			names = append(names, name)
		}
		sort.Strings(names)
	}
	if err := os.MkdirAll(outdir, 0o755); err != nil {
		return nil, err
	}
	var got []Target
	for _, name := range names {
		if !filepath.IsLocal(filepath.FromSlash(name)) {
			return got, fmt.Errorf("%w: %q would be written outside %s", ErrTargetName, name, outdir)
		}
		tf, err := up.GetTargetInfo(name)
		if err != nil {
			return got, fmt.Errorf("target %s: %w", name, err)
		}
		t, err := streamTarget(ctx, f, targetsURL, name, tf, consistent, outdir, progressOr(o.Progress))
		if err != nil {
			return got, fmt.Errorf("target %s: %w", name, err)
		}
		got = append(got, t)
	}
	return got, nil
}

func streamTarget(ctx context.Context, f *fetch.Fetcher, targetsURL, name string, tf *metadata.TargetFiles, consistent bool, outdir string, prog Progress) (Target, error) {
	remote := name
	hashes := map[string][]byte{}
	for alg, sum := range tf.Hashes {
		hashes[alg] = sum
	}
	sum := hex.EncodeToString(hashes["sha256"])
	if consistent {
		dir, base := path.Split(name)
		h := sum
		if h == "" {
			for _, v := range hashes {
				h = hex.EncodeToString(v)
				break
			}
		}
		remote = dir + h + "." + base
	}
	rc, _, err := f.Open(ctx, fetch.Join(targetsURL, remote))
	if err != nil {
		return Target{}, err
	}
	defer rc.Close()
	v, err := fetch.NewVerifier(rc, tf.Length, hashes)
	if err != nil {
		return Target{}, err
	}
	dst := filepath.Join(outdir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return Target{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-")
	if err != nil {
		return Target{}, err
	}
	defer os.Remove(tmp.Name())
	prog.Start(name, tf.Length)
	_, err = io.Copy(tmp, io.TeeReader(v, progressWriter{prog}))
	prog.Finish()
	if err != nil {
		tmp.Close()
		return Target{}, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return Target{}, err
	}
	if err := tmp.Close(); err != nil {
		return Target{}, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return Target{}, err
	}
	return Target{Name: name, Length: tf.Length, SHA256: sum}, nil
}

type progressWriter struct{ p Progress }

func (w progressWriter) Write(b []byte) (int, error) {
	w.p.Add(len(b))
	return len(b), nil
}

// Expiry is one role's expiry.
type Expiry struct {
	Role    string    `json:"role"`
	Version int64     `json:"version"`
	Expires time.Time `json:"expires"`
	// Soon is set when the role expires within the window asked about.
	Soon    bool `json:"expires_soon"`
	Expired bool `json:"expired"`
}

// CheckExpiry reports when each top-level role of the repository at
// metaURL expires, flagging those that expire before now+within.
func CheckExpiry(ctx context.Context, metaURL string, within time.Duration, now time.Time, f *fetch.Fetcher) ([]Expiry, error) {
	if f == nil {
		f = fetch.New()
	}
	ex, err := loadExisting(ctx, f, metaURL)
	if err != nil {
		return nil, err
	}
	out := []Expiry{
		{Role: metadata.ROOT, Version: ex.latest.Signed.Version, Expires: ex.latest.Signed.Expires},
		{Role: metadata.TARGETS, Version: ex.targets.Signed.Version, Expires: ex.targets.Signed.Expires},
		{Role: metadata.SNAPSHOT, Version: ex.snapshot.Signed.Version, Expires: ex.snapshot.Signed.Expires},
		{Role: metadata.TIMESTAMP, Version: ex.timestamp.Signed.Version, Expires: ex.timestamp.Signed.Expires},
	}
	for i := range out {
		out[i].Expired = !out[i].Expires.After(now)
		out[i].Soon = !out[i].Expires.After(now.Add(within))
	}
	return out, nil
}

// IsExpired reports whether err says metadata has expired (go-tuf's error).
func IsExpired(err error) bool {
	var e *metadata.ErrExpiredMetadata
	return errors.As(err, &e) || errors.Is(err, ErrExpired)
}
