package repo

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/tufclient"
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
// as a TUF client does and streams the named targets (all of them when
// names is empty) from targetsURL into outdir, each checked against its
// signed length and hashes while it is written. A target that fails its
// check is removed, never left in place. It is the client that updog uses
// (internal/tufclient), without a cache: every call starts from rootRaw.
func Download(ctx context.Context, rootRaw []byte, metaURL, targetsURL string, names []string, outdir string, o DownloadOptions) ([]Target, error) {
	if _, err := ParseRoot(rootRaw); err != nil {
		return nil, err
	}
	c, err := tufclient.New(tufclient.Options{MetadataURL: metaURL, TargetsURL: targetsURL, Root: rootRaw,
		Now: o.Now, Fetcher: o.Fetcher, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	if err := c.Refresh(ctx); err != nil {
		return nil, err
	}
	var prog tufclient.Progress
	if o.Progress != nil {
		prog = o.Progress
	}
	got, err := c.Download(ctx, names, outdir, prog)
	out := make([]Target, 0, len(got))
	for _, d := range got {
		out = append(out, Target{Name: d.Name, Length: d.Length, SHA256: d.SHA256})
	}
	if errors.Is(err, tufclient.ErrTargetName) {
		err = errors.Join(ErrTargetName, err)
	}
	return out, err
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
	return errors.As(err, &e) || errors.Is(err, ErrExpired) || errors.Is(err, tufclient.ErrExpired)
}
