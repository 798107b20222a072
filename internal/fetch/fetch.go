// Package fetch gets TUF metadata and targets from an HTTP(S) server or a
// local directory, with bounded reads and no retry storms.
//
// go-tuf's default fetcher has no timeout and its retrying fetchers retry a
// 404 for minutes; this one makes one request with a timeout, reports 404
// as go-tuf's *metadata.ErrDownloadHTTP (which ends root rotation), and
// never reads more than it was asked to accept. Targets are streamed
// (Open) and checked on the fly against their signed length and hashes
// (NewVerifier), never held in memory.
package fetch

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// DefaultTimeout bounds one metadata request.
const DefaultTimeout = 30 * time.Second

// Fetcher implements go-tuf's fetcher.Fetcher for http(s) URLs and local
// directories (plain paths or file:// URLs).
type Fetcher struct {
	Client  *http.Client
	Timeout time.Duration
	// UserAgent is sent with HTTP requests when set.
	UserAgent string
}

// New returns a Fetcher with its own HTTP client (the default client and
// transport are never modified).
func New() *Fetcher {
	return &Fetcher{Client: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}, Timeout: DefaultTimeout}
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

// Open starts reading loc. A missing file or a 404 is a
// *metadata.ErrDownloadHTTP with status 404. size is the length the
// server announced, or -1. The caller bounds what it reads.
func (f *Fetcher) Open(ctx context.Context, loc string) (rc io.ReadCloser, size int64, err error) {
	if IsLocal(loc) {
		p := localPath(loc)
		fh, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			return nil, 0, &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: loc}
		}
		if err != nil {
			return nil, 0, err
		}
		fi, err := fh.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			fh.Close()
			return nil, 0, fmt.Errorf("fetch: %s is not a regular file", p)
		}
		return fh, fi.Size(), nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
	if err != nil {
		return nil, 0, err
	}
	if f.UserAgent != "" {
		req.Header.Set("User-Agent", f.UserAgent)
	}
	res, err := f.Client.Do(req)
	if err != nil {
		return nil, 0, &metadata.ErrDownload{Msg: err.Error()}
	}
	if res.StatusCode != http.StatusOK {
		res.Body.Close()
		return nil, 0, &metadata.ErrDownloadHTTP{StatusCode: res.StatusCode, URL: loc}
	}
	return res.Body, res.ContentLength, nil
}

// DownloadFile implements go-tuf's fetcher.Fetcher: one request, with a
// timeout, reading at most maxLength bytes.
func (f *Fetcher) DownloadFile(loc string, maxLength int64, _ time.Duration) ([]byte, error) {
	ctx := context.Background()
	if f.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.Timeout)
		defer cancel()
	}
	rc, size, err := f.Open(ctx, loc)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is %d bytes, more than the %d allowed", loc, size, maxLength)}
	}
	data, err := io.ReadAll(io.LimitReader(rc, maxLength+1))
	if err != nil {
		return nil, &metadata.ErrDownload{Msg: fmt.Sprintf("reading %s: %v", loc, err)}
	}
	if int64(len(data)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is more than the %d bytes allowed", loc, maxLength)}
	}
	return data, nil
}

// Errors of a Verifier.
var (
	// ErrTooLong means more bytes arrived than the signed length.
	ErrTooLong = errors.New("fetch: more data than the signed length")
	// ErrTooShort means the data ended before the signed length.
	ErrTooShort = errors.New("fetch: data shorter than the signed length")
	// ErrHash means the data does not match its signed hash.
	ErrHash = errors.New("fetch: hash mismatch")
)

// Verifier passes data through while checking it against a signed length
// and hashes. It returns ErrTooLong as soon as a byte past the length
// arrives, and at EOF ErrTooShort or ErrHash instead of io.EOF when the data
// is not exactly what was signed: treat everything read as tentative until
// io.EOF.
type Verifier struct {
	r       io.Reader
	want    int64
	n       int64
	hashers map[string]hash.Hash
	hashes  map[string][]byte
	err     error
}

// NewVerifier checks r against length and hashes (algorithm name to digest;
// sha256 and sha512 are understood, at least one is required).
func NewVerifier(r io.Reader, length int64, hashes map[string][]byte) (*Verifier, error) {
	v := &Verifier{r: r, want: length, hashers: map[string]hash.Hash{}, hashes: map[string][]byte{}}
	for alg, sum := range hashes {
		switch alg {
		case "sha256":
			v.hashers[alg] = sha256.New()
		case "sha512":
			v.hashers[alg] = sha512.New()
		default:
			continue
		}
		v.hashes[alg] = sum
	}
	if len(v.hashers) == 0 {
		return nil, fmt.Errorf("%w: no sha256 or sha512 hash to check against", ErrHash)
	}
	return v, nil
}

// Read implements io.Reader.
func (v *Verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	// Read one byte past the signed length, to notice a longer stream.
	if room := v.want + 1 - v.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := v.r.Read(p)
	if v.n+int64(n) > v.want {
		v.err = fmt.Errorf("%w: %d bytes signed", ErrTooLong, v.want)
		n = int(v.want - v.n)
	}
	for _, h := range v.hashers {
		h.Write(p[:n])
	}
	v.n += int64(n)
	if v.err != nil {
		return n, v.err
	}
	if errors.Is(err, io.EOF) {
		if v.n < v.want {
			v.err = fmt.Errorf("%w: got %d of %d bytes", ErrTooShort, v.n, v.want)
			return n, v.err
		}
		for alg, h := range v.hashers {
			if got := h.Sum(nil); subtle.ConstantTimeCompare(got, v.hashes[alg]) != 1 {
				v.err = fmt.Errorf("%w: %s is %s, signed %s", ErrHash, alg, hex.EncodeToString(got), hex.EncodeToString(v.hashes[alg]))
				return n, v.err
			}
		}
		v.err = io.EOF
	}
	return n, err
}
