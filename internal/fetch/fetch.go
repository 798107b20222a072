// Package fetch gets TUF metadata and targets from an HTTP(S) server or a
// local directory, with bounded reads, stall timeouts and bounded retries.
//
// go-tuf's default fetcher has no timeout and its retrying fetchers retry a
// 404 for minutes; this one bounds each metadata request (Options.Timeout),
// ends every network read that sees no byte for Options.StallTimeout with
// ErrStalled, retries only transient failures (connection errors, stalls,
// 408, 429 and 5xx; never 404, 403, 410 or another 4xx) a bounded number of
// times with backoff, reports 404 as go-tuf's *metadata.ErrDownloadHTTP
// (which ends root rotation), and never reads more than it was asked to
// accept. Targets are streamed (Open, or OpenResumable, which resumes a
// dropped download with Range requests) and checked on the fly against
// their signed length and hashes (NewVerifier), never held in memory.
//
// The proxy comes from Options (updog.toml's https_proxy and no_proxy),
// never from the environment; it is used for http and https URLs alike.
// Requests to localhost and loopback addresses never go through it, as with
// curl and Go's own proxy rules.
package fetch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/fetcher"
	"golang.org/x/net/http/httpproxy"

	"github.com/updog/updog/internal/safefile"
)

// Defaults of Options.
const (
	// DefaultTimeout bounds one metadata request (DownloadFile).
	DefaultTimeout = 30 * time.Second
	// DefaultStallTimeout ends a read that sees no byte for this long.
	DefaultStallTimeout = 30 * time.Second
	// DefaultRetries is how many times a transient failure is retried.
	DefaultRetries = 4
	// firstBackoff and maxBackoff bound the default backoff.
	firstBackoff = time.Second
	maxBackoff   = 30 * time.Second
	// maxRetryAfter caps how long a server's Retry-After can make us wait.
	maxRetryAfter = 2 * time.Minute
)

// Sentinel errors (the Verifier's are in verify.go).
var (
	// ErrStalled means no byte arrived for the stall timeout. The error is a
	// *StallError naming the URL and the timeout.
	ErrStalled = errors.New("fetch: stalled")
	// ErrChanged means the object changed on the server during a resumed
	// download (its ETag or Last-Modified is not the first answer's).
	ErrChanged = errors.New("fetch: the object changed on the server during the download")
)

// StallError says which read stalled and for how long.
type StallError struct {
	URL   string
	After time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("fetch: no data from %s for %s: stalled", e.URL, e.After)
}

// Unwrap makes a StallError match ErrStalled.
func (e *StallError) Unwrap() error { return ErrStalled }

// DownloadError is a failure of the connection (refused, reset, cut
// short, timed out) while fetching URL. It unwraps to the cause, and
// errors.As also finds it as go-tuf's *metadata.ErrDownload.
type DownloadError struct {
	URL string
	Err error
}

func (e *DownloadError) Error() string { return fmt.Sprintf("fetch: %s: %v", e.URL, e.Err) }
func (e *DownloadError) Unwrap() error { return e.Err }

// As lets errors.As find a DownloadError as a *metadata.ErrDownload.
func (e *DownloadError) As(target any) bool {
	if t, ok := target.(**metadata.ErrDownload); ok {
		*t = &metadata.ErrDownload{Msg: e.Error()}
		return true
	}
	return false
}

// Options configure a Fetcher. Zero values mean the defaults.
type Options struct {
	// Timeout bounds one metadata request (DownloadFile, Fetch): default
	// 30 s; negative means none (the stall timeout still applies).
	Timeout time.Duration
	// StallTimeout ends a read (of headers or body) that sees no byte for
	// this long with a *StallError (ErrStalled): default 30 s; negative
	// disables it.
	StallTimeout time.Duration
	// Retries is how many times a transient failure (connection errors and
	// resets, stalls, 408, 429 and 5xx answers) is retried: default 4;
	// negative means never. 404, 403, 410 and other 4xx are never retried.
	Retries int
	// Backoff is the wait before retry number attempt (1, 2, ...). nil means
	// exponential from 1 s with jitter, capped at 30 s. A server's
	// Retry-After (on 429 or 503) lengthens the wait, up to 2 minutes.
	Backoff func(attempt int) time.Duration
	// UserAgent is sent with every HTTP request when set.
	UserAgent string
	// Query is set on every http(s) request URL (Bottlerocket's updog adds
	// seed and version); a key already in the URL is replaced.
	Query url.Values
	// HTTPSProxy is the proxy for http and https URLs (updog.toml's
	// https_proxy); "" means none. The environment is never consulted.
	HTTPSProxy string
	// NoProxy lists hosts, domains and CIDRs reached directly (updog.toml's
	// no_proxy), as Go's httpproxy and curl understand them.
	NoProxy []string
	// Logger receives retries and resumes; nil discards.
	Logger *slog.Logger
}

// Fetcher implements go-tuf's fetcher.Fetcher for http(s) URLs and local
// directories (plain paths or file:// URLs), and streams targets.
type Fetcher struct {
	// Client makes the HTTP requests. NewWith gives it its own transport
	// (the default client and transport are never modified).
	Client *http.Client
	o      Options
	ctx    context.Context // for DownloadFile, which go-tuf calls without one
}

var _ fetcher.Fetcher = (*Fetcher)(nil)

// New returns a Fetcher with the default Options.
func New() *Fetcher { return NewWith(Options{}) }

// NewWith returns a Fetcher configured by o.
func NewWith(o Options) *Fetcher {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	if o.Backoff == nil {
		o.Backoff = defaultBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Query = cloneValues(o.Query)
	o.NoProxy = slices.Clone(o.NoProxy)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // never the environment's
	if o.HTTPSProxy != "" {
		pf := (&httpproxy.Config{HTTPProxy: o.HTTPSProxy, HTTPSProxy: o.HTTPSProxy, NoProxy: strings.Join(o.NoProxy, ",")}).ProxyFunc()
		tr.Proxy = func(r *http.Request) (*url.URL, error) { return pf(r.URL) }
	}
	// The bytes must be the signed bytes: no transparent gzip, whose
	// offsets would not match Range requests either.
	tr.DisableCompression = true
	return &Fetcher{Client: &http.Client{Transport: tr}, o: o}
}

// WithContext returns a copy of f whose DownloadFile (called by go-tuf,
// which passes no context) stops when ctx is done.
func (f *Fetcher) WithContext(ctx context.Context) *Fetcher {
	g := *f
	g.ctx = ctx
	return &g
}

func (f *Fetcher) context() context.Context {
	if f.ctx != nil {
		return f.ctx
	}
	return context.Background()
}

func cloneValues(v url.Values) url.Values {
	if v == nil {
		return nil
	}
	c := url.Values{}
	for k, vs := range v {
		c[k] = slices.Clone(vs)
	}
	return c
}

func defaultBackoff(attempt int) time.Duration {
	d := maxBackoff
	if attempt < 6 {
		d = min(firstBackoff<<max(attempt-1, 0), maxBackoff)
	}
	// Jitter: between half and the whole of d.
	return d/2 + rand.N(d/2+1)
}

// IsLocal reports whether a location is a local directory rather than a URL.
func IsLocal(loc string) bool {
	return strings.HasPrefix(loc, "file://") || !strings.Contains(loc, "://")
}

func localPath(loc string) string { return strings.TrimPrefix(loc, "file://") }

// Join appends a file name to a base location (URL or directory).
func Join(base, name string) string {
	if IsLocal(base) {
		return filepath.Join(localPath(base), filepath.FromSlash(name))
	}
	u, err := url.JoinPath(base, name)
	if err != nil {
		return strings.TrimSuffix(base, "/") + "/" + name
	}
	return u
}

// openLocal opens a local file without blocking on a FIFO and refusing
// anything but a regular file. A missing file is a 404.
func openLocal(loc string) (*os.File, int64, error) {
	p := localPath(loc)
	fh, err := safefile.Open(p, os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: loc}
	}
	if err != nil {
		return nil, 0, fmt.Errorf("fetch: %w", err)
	}
	fi, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, 0, err
	}
	return fh, fi.Size(), nil
}

// requestURL checks the scheme and sets Options.Query on loc.
func (f *Fetcher) requestURL(loc string) (string, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("fetch: %q is not a URL: %w", loc, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("fetch: %s: unsupported scheme %q (want http, https, file or a path)", loc, u.Scheme)
	}
	if len(f.o.Query) > 0 {
		q := u.Query()
		for k, vs := range f.o.Query {
			q[k] = vs
		}
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// statusError is an HTTP status answer: go-tuf's *metadata.ErrDownloadHTTP
// (errors.As finds it) with the server's Retry-After.
type statusError struct {
	*metadata.ErrDownloadHTTP
	retryAfter time.Duration
}

func (e *statusError) Unwrap() error { return e.ErrDownloadHTTP }

func newStatusError(res *http.Response, loc string) error {
	e := &statusError{ErrDownloadHTTP: &metadata.ErrDownloadHTTP{StatusCode: res.StatusCode, URL: loc}}
	if s, err := strconv.Atoi(strings.TrimSpace(res.Header.Get("Retry-After"))); err == nil && s > 0 {
		e.retryAfter = min(time.Duration(s)*time.Second, maxRetryAfter)
	}
	return e
}

// do makes one GET request for loc with extra headers. The stall timeout
// covers the wait for the headers and every read of the body; closing the
// body releases the request.
func (f *Fetcher) do(ctx context.Context, loc string, hdr http.Header) (*http.Response, error) {
	u, err := f.requestURL(loc)
	if err != nil {
		return nil, permanent(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		cancel()
		return nil, permanent(fmt.Errorf("fetch: %w", err))
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if f.o.UserAgent != "" {
		req.Header.Set("User-Agent", f.o.UserAgent)
	}
	s := newStallReader(loc, f.o.StallTimeout, cancel)
	s.arm()
	res, err := f.Client.Do(req)
	s.disarm()
	if err != nil {
		cancel()
		s.stop()
		if s.stalled.Load() {
			return nil, &StallError{URL: loc, After: f.o.StallTimeout}
		}
		return nil, &DownloadError{URL: loc, Err: err}
	}
	s.rc = res.Body
	res.Body = s
	return res, nil
}

// permanentError marks an error that retrying cannot mend.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err} }

// retryable reports whether a failed attempt may succeed if repeated: the
// context is live and the failure is a connection error, a stall, a
// timeout of one attempt, or a 408, 429 or 5xx answer.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var pe *permanentError
	var he *metadata.ErrDownloadHTTP
	var lm *metadata.ErrDownloadLengthMismatch
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &he):
		return he.StatusCode == http.StatusRequestTimeout || he.StatusCode == http.StatusTooManyRequests || he.StatusCode >= 500
	case errors.Is(err, ErrStalled):
		return true
	case errors.As(err, &pe), errors.As(err, &lm),
		errors.Is(err, ErrChanged), errors.Is(err, ErrTooLong), errors.Is(err, ErrTooShort), errors.Is(err, ErrHash),
		errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &hn), errors.As(err, &ci):
		return false
	}
	// What is left came from the connection: refused, reset, cut short
	// (unexpected EOF), an attempt's own timeout.
	return true
}

// wait sleeps before retry number attempt, or returns early with the
// context's error.
func (f *Fetcher) wait(ctx context.Context, attempt int, cause error) error {
	d := f.o.Backoff(attempt)
	var se *statusError
	if errors.As(cause, &se) && se.retryAfter > d {
		d = se.retryAfter
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// retry runs try until it succeeds, fails for good, or has failed
// 1+Retries times.
func (f *Fetcher) retry(ctx context.Context, loc string, try func() error) error {
	for attempt := 1; ; attempt++ {
		err := try()
		if err == nil {
			return nil
		}
		if !retryable(ctx, err) {
			return err
		}
		if attempt > f.o.Retries {
			if attempt == 1 {
				return err
			}
			return fmt.Errorf("fetch: %s: giving up after %d attempts: %w", loc, attempt, err)
		}
		f.o.Logger.Warn("retrying", "url", loc, "attempt", attempt, "error", err)
		if werr := f.wait(ctx, attempt, err); werr != nil {
			return errors.Join(werr, err)
		}
	}
}

// Open starts reading loc, retrying transient failures until the answer
// starts (the body is not resumed: see OpenResumable). A missing file or a
// 404 is a *metadata.ErrDownloadHTTP with status 404. size is the length the
// server announced, or -1. Reads of the body stall out after
// Options.StallTimeout with ErrStalled. The caller bounds what it reads.
func (f *Fetcher) Open(ctx context.Context, loc string) (rc io.ReadCloser, size int64, err error) {
	if IsLocal(loc) {
		return openLocal(loc)
	}
	err = f.retry(ctx, loc, func() error {
		res, err := f.do(ctx, loc, nil)
		if err != nil {
			return err
		}
		if res.StatusCode != http.StatusOK {
			res.Body.Close()
			return newStatusError(res, loc)
		}
		rc, size = res.Body, res.ContentLength
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return rc, size, nil
}

// DownloadFile implements go-tuf's fetcher.Fetcher: Fetch with the context
// given to WithContext (or none). go-tuf's timeout argument is ignored:
// Options.Timeout bounds each attempt.
func (f *Fetcher) DownloadFile(loc string, maxLength int64, _ time.Duration) ([]byte, error) {
	return f.Fetch(f.context(), loc, maxLength)
}

// Fetch reads the whole of loc, at most maxLength bytes; each attempt is
// bounded by Options.Timeout and transient failures are retried. A longer
// file is a *metadata.ErrDownloadLengthMismatch, a missing one a
// *metadata.ErrDownloadHTTP with status 404.
func (f *Fetcher) Fetch(ctx context.Context, loc string, maxLength int64) ([]byte, error) {
	if IsLocal(loc) {
		fh, size, err := openLocal(loc)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		return readLimited(fh, size, loc, maxLength)
	}
	var data []byte
	err := f.retry(ctx, loc, func() error {
		actx := ctx
		if f.o.Timeout > 0 {
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, f.o.Timeout)
			defer cancel()
		}
		res, err := f.do(actx, loc, nil)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return newStatusError(res, loc)
		}
		data, err = readLimited(res.Body, res.ContentLength, loc, maxLength)
		return err
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

func readLimited(r io.Reader, size int64, loc string, maxLength int64) ([]byte, error) {
	if size > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is %d bytes, more than the %d allowed", loc, size, maxLength)}
	}
	data, err := io.ReadAll(io.LimitReader(r, maxLength+1))
	if err != nil {
		var se *StallError
		if errors.As(err, &se) {
			return nil, err
		}
		return nil, &DownloadError{URL: loc, Err: err}
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is more than the %d bytes allowed", loc, maxLength)}
	}
	return data, nil
}
