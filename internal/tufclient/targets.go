package tufclient

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/safefile"
)

// CheckTargetPath refuses a target path that cannot name a file under a
// directory (or a URL path under a base): empty, absolute, with a NUL, or
// climbing out of it with "..". Inner ".." parts that stay inside are
// resolved, as tough does ("foo/bar/../x" is "foo/x"). It returns the
// cleaned path.
func CheckTargetPath(name string) (string, error) {
	clean := path.Clean(name)
	switch {
	case name == "", strings.ContainsRune(name, 0):
		return "", &Error{ErrTargetName, fmt.Errorf("target name %q is empty or holds a NUL", name)}
	case strings.HasPrefix(name, "/"), !filepath.IsLocal(filepath.FromSlash(clean)), clean == ".":
		return "", &Error{ErrTargetName, fmt.Errorf("target name %q would name a file outside the targets directory", name)}
	}
	return clean, nil
}

// TargetFile is where a target is stored under the targets location,
// slash-separated: its cleaned name, with the base name prefixed by its
// sha256 (or its first hash) under consistent snapshots, as go-tuf and
// tough store them.
func (c *Client) TargetFile(tf *metadata.TargetFiles) (string, error) {
	clean, err := CheckTargetPath(tf.Path)
	if err != nil {
		return "", err
	}
	if !c.ConsistentSnapshot() {
		return clean, nil
	}
	h := hex.EncodeToString(tf.Hashes["sha256"])
	if h == "" {
		for _, alg := range []string{"sha512"} {
			if v, ok := tf.Hashes[alg]; ok {
				h = hex.EncodeToString(v)
			}
		}
	}
	if h == "" {
		return "", &Error{ErrMetadata, fmt.Errorf("target %s has no sha256 or sha512 hash", tf.Path)}
	}
	dir, base := path.Split(clean)
	return dir + h + "." + base, nil
}

// URL is where a target's bytes are (see TargetFile); "" for a name that
// cannot be a path under the targets location.
func (c *Client) URL(tf *metadata.TargetFiles) string {
	file, err := c.TargetFile(tf)
	if err != nil {
		return ""
	}
	return targetLocation(c.o.TargetsURL, file)
}

// targetLocation joins a target's file to a base location: each part
// percent-encoded for a URL, as it is for a directory.
func targetLocation(base, file string) string {
	if fetch.IsLocal(base) {
		return fetch.Join(base, file)
	}
	parts := strings.Split(file, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return fetch.Join(base, strings.Join(parts, "/"))
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
	tf, err := c.TargetContext(ctx, name)
	if err != nil {
		return nil, err
	}
	return c.OpenTarget(ctx, tf)
}

// OpenTarget starts streaming a target already looked up.
func (c *Client) OpenTarget(ctx context.Context, tf *metadata.TargetFiles) (*Stream, error) {
	file, err := c.TargetFile(tf)
	if err != nil {
		return nil, err
	}
	hashes := hashesOf(tf)
	body, err := c.f.OpenResumable(ctx, targetLocation(c.o.TargetsURL, file), tf.Length)
	if err != nil {
		return nil, classify(fmt.Errorf("target %s: %w", tf.Path, err))
	}
	v, err := fetch.NewVerifier(body, tf.Length, hashes)
	if err != nil {
		body.Close()
		return nil, &Error{ErrMetadata, fmt.Errorf("target %s: %w", tf.Path, err)}
	}
	return &Stream{Verifier: v, body: body, Target: tf}, nil
}

// ReadTarget reads a small target (at most max bytes, at most
// MaxSmallTarget) into memory after checking it.
func (c *Client) ReadTarget(ctx context.Context, name string, max int64) ([]byte, error) {
	if max <= 0 || max > MaxSmallTarget {
		max = MaxSmallTarget
	}
	tf, err := c.TargetContext(ctx, name)
	if err != nil {
		return nil, err
	}
	if tf.Length > max {
		return nil, &Error{ErrMetadata, fmt.Errorf("target %s is %d bytes, more than the %d accepted", name, tf.Length, max)}
	}
	s, err := c.OpenTarget(ctx, tf)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	b, err := io.ReadAll(ctxReader{ctx, s})
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

// Download streams the named targets (every target, delegations included,
// when names is empty) into outdir, at outdir/NAME, each checked while it is written,
// into a temporary file renamed into place only after its verdict. A
// target that fails is removed, never left in place; the first failure
// ends the download.
func (c *Client) Download(ctx context.Context, names []string, outdir string, prog Progress) ([]Downloaded, error) {
	if len(names) == 0 {
		all, err := c.AllTargets(ctx)
		if err != nil {
			return nil, err
		}
		for _, f := range all {
			names = append(names, f.Target.Path)
		}
	}
	if err := os.MkdirAll(outdir, 0o755); err != nil {
		return nil, err
	}
	var got []Downloaded
	for _, name := range names {
		clean, err := CheckTargetPath(name)
		if err != nil {
			return got, fmt.Errorf("%w: %q would be written outside %s", ErrTargetName, name, outdir)
		}
		tf, err := c.TargetContext(ctx, name)
		if err != nil {
			return got, err
		}
		dst := filepath.Join(outdir, filepath.FromSlash(clean))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return got, err
		}
		if err := c.SaveTarget(ctx, tf, dst, prog); err != nil {
			return got, fmt.Errorf("target %s: %w", name, err)
		}
		got = append(got, Downloaded{Name: name, Length: tf.Length, SHA256: hex.EncodeToString(tf.Hashes["sha256"])})
	}
	return got, nil
}

// SaveTarget streams a target into the file dst (whose directory must
// exist), checked while it is written into a temporary file beside it that
// is renamed over dst only after the verdict. On failure dst is left as it
// was.
func (c *Client) SaveTarget(ctx context.Context, tf *metadata.TargetFiles, dst string, prog Progress) error {
	s, err := c.OpenTarget(ctx, tf)
	if err != nil {
		return err
	}
	defer s.Close()
	if prog != nil {
		prog.Start(tf.Path, tf.Length)
		defer prog.Finish()
	}
	return atomicfile.Write(dst, 0o644, func(w io.Writer) error {
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
}

// HasTarget reports whether the regular file at p holds exactly the
// target (its signed length and every known hash): a cached copy that need
// not be downloaded again. It never blocks on a FIFO and reads at most the
// signed length plus one byte.
func HasTarget(tf *metadata.TargetFiles, p string) bool {
	f, err := safefile.Open(p, os.O_RDONLY, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != tf.Length {
		return false
	}
	v, err := fetch.NewVerifier(f, tf.Length, hashesOf(tf))
	if err != nil {
		return false
	}
	_, err = v.Finish()
	return err == nil
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

// hashesOf copies a target's hashes for a Verifier.
func hashesOf(tf *metadata.TargetFiles) map[string][]byte {
	h := make(map[string][]byte, len(tf.Hashes))
	for alg, sum := range tf.Hashes {
		h[alg] = sum
	}
	return h
}
