package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Stats is implemented by the readers OpenResumable returns, for progress
// and status reports. Its methods may be called from any goroutine.
type Stats interface {
	// Delivered is how many bytes Read has returned.
	Delivered() int64
	// Resumes is how many times the download went on after an
	// interruption, with a new request that got a usable answer.
	Resumes() int
}

// errBadRange is a 206 answer that cannot be used as asked (no, several
// or the wrong Content-Range): the next request asks for the whole object.
var errBadRange = errors.New("fetch: unusable partial answer")

// OpenResumable streams exactly length bytes (length >= 0 is the signed
// length) of loc.
//
// When the connection drops or stalls mid-body, it asks again with
// `Range: bytes=N-` and If-Range (the strong ETag, else the Last-Modified,
// of the first answer), after a backoff, up to Options.Retries times per
// interruption (attempts are counted per failure streak, which ends when
// bytes flow again). A 200 answer (the server ignores ranges, or the object
// changed) restarts from byte 0, so its first N bytes are skipped; the
// object must be the same: an ETag or Last-Modified that differs from the
// first answer's is ErrChanged. A 206 whose Content-Range does not start at
// or before N, or that is multipart, is not used: the next request asks
// for the whole object. Only single ranges are ever asked for.
//
// Reads never return more than length bytes in total; a longer object is
// ErrTooLong after the length, a shorter one ErrTooShort. A 404 (and every
// other 4xx but 408 and 429) is a *metadata.ErrDownloadHTTP, never
// retried. Local files (paths and file:// URLs) are streamed directly,
// with the same length checks.
//
// The reader implements Stats.
func (f *Fetcher) OpenResumable(ctx context.Context, loc string, length int64) (io.ReadCloser, error) {
	return f.OpenResumableAt(ctx, loc, 0, length)
}

// OpenResumableAt is OpenResumable starting at byte offset (a download
// interrupted earlier, in another process, going on from a checkpoint):
// the first request asks for `Range: bytes=offset-` (a 200 answer is
// skipped to offset), and reads return the bytes from offset to length.
func (f *Fetcher) OpenResumableAt(ctx context.Context, loc string, offset, length int64) (io.ReadCloser, error) {
	if length < 0 || offset < 0 || offset > length {
		return nil, fmt.Errorf("fetch: %s: bad range %d of %d", loc, offset, length)
	}
	if offset == length {
		// Everything was read before (a resumed download that had
		// reached its end): nothing to ask for.
		return io.NopCloser(eofReader{}), nil
	}
	if IsLocal(loc) {
		fh, _, err := openLocal(loc)
		if err != nil {
			return nil, err
		}
		if offset > 0 {
			if _, err := fh.Seek(offset, io.SeekStart); err != nil {
				fh.Close()
				return nil, fmt.Errorf("fetch: %s: %w", loc, err)
			}
		}
		e := &exactReader{r: fh, loc: loc, length: length}
		e.pos.Store(offset)
		return e, nil
	}
	r := &resumable{f: f, ctx: ctx, loc: loc, length: length, total: -1}
	r.pos.Store(offset)
	if err := r.reconnect(true); err != nil {
		return nil, err
	}
	return r, nil
}

// exactReader returns exactly length bytes of a local file.
type exactReader struct {
	r      io.ReadCloser
	loc    string
	length int64
	pos    atomic.Int64
	err    error
}

func (e *exactReader) Delivered() int64 { return e.pos.Load() }
func (e *exactReader) Resumes() int     { return 0 }
func (e *exactReader) Close() error     { return e.r.Close() }

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	pos := e.pos.Load()
	if pos == e.length {
		var b [1]byte
		if n, _ := io.ReadFull(e.r, b[:]); n > 0 {
			e.err = fmt.Errorf("%w: %s is longer than the %d bytes signed", ErrTooLong, e.loc, e.length)
		} else {
			e.err = io.EOF
		}
		return 0, e.err
	}
	if rem := e.length - pos; int64(len(p)) > rem {
		p = p[:rem]
	}
	n, err := e.r.Read(p)
	e.pos.Add(int64(n))
	switch {
	case errors.Is(err, io.EOF):
		e.err = fmt.Errorf("%w: %s ended after %d of %d bytes", ErrTooShort, e.loc, pos+int64(n), e.length)
	case err != nil:
		e.err = fmt.Errorf("fetch: reading %s: %w", e.loc, err)
	}
	if n > 0 {
		return n, nil
	}
	return 0, e.err
}

// resumable is OpenResumable's reader for http(s).
type resumable struct {
	f      *Fetcher
	ctx    context.Context
	loc    string
	length int64

	body io.ReadCloser // the current answer's body; nil between answers
	// total is the object's size as the last answer announced it (-1
	// unknown).
	total int64
	// endsObject: a clean end of the current body is the end of the object.
	endsObject bool
	skip       int64 // bytes of the current body before the position
	got        int64 // bytes the current body delivered

	started       bool
	etag, lastMod string // validators of the first answer
	ifRange       string
	noRange       bool // ask for the whole object (after an unusable 206)

	pos     atomic.Int64
	resumes atomic.Int32
	streak  int   // failures since bytes last flowed
	lastErr error // the last of them
	err     error
	// closed is set by Close, which may run in another goroutine while a
	// Read is blocked in the network: mu guards the body pointer, so Close
	// can close the body under a Read (which then fails) and a reconnect
	// after it closes its new body at once.
	closed atomic.Bool
	mu     sync.Mutex
}

func (r *resumable) Delivered() int64 { return r.pos.Load() }
func (r *resumable) Resumes() int     { return int(r.resumes.Load()) }

// errClosed is what Read returns after Close.
var errClosed = errors.New("fetch: read after close")

// Close closes the connection. It may be called while a Read is blocked
// in another goroutine: that Read then fails.
func (r *resumable) Close() error {
	r.closed.Store(true)
	r.mu.Lock()
	b := r.body
	r.mu.Unlock()
	if b != nil {
		b.Close()
	}
	return nil
}

func (r *resumable) dropBody() {
	r.mu.Lock()
	b := r.body
	r.body = nil
	r.mu.Unlock()
	if b != nil {
		b.Close()
	}
}

// Read implements io.Reader.
func (r *resumable) Read(p []byte) (int, error) {
	if r.closed.Load() {
		return 0, errClosed
	}
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		pos := r.pos.Load()
		if pos == r.length {
			r.err = r.atEnd()
			return 0, r.err
		}
		if r.body == nil {
			if err := r.reconnect(false); err != nil {
				r.err = err
				return 0, err
			}
		}
		if r.skip > 0 {
			n, err := io.CopyN(io.Discard, r.body, r.skip)
			r.skip -= n
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = fmt.Errorf("%w: %s now ends before byte %d, which was already read", ErrTooShort, r.loc, r.pos.Load())
				}
				if ferr := r.interrupted(r.netErr(err)); ferr != nil {
					r.err = ferr
					return 0, ferr
				}
				continue
			}
		}
		q := p
		if rem := r.length - pos; int64(len(q)) > rem {
			q = q[:rem]
		}
		n, err := r.body.Read(q)
		if n > 0 {
			r.pos.Add(int64(n))
			r.got += int64(n)
			r.streak = 0
		}
		if err != nil {
			if ferr := r.ended(err); ferr != nil {
				r.err = ferr
				if n == 0 {
					return 0, ferr
				}
			}
		}
		if n > 0 {
			return n, nil
		}
	}
}

// atEnd decides, once length bytes were delivered, whether the object is
// longer.
func (r *resumable) atEnd() error {
	defer r.dropBody()
	tooLong := fmt.Errorf("%w: %s is longer than the %d bytes signed", ErrTooLong, r.loc, r.length)
	if r.total > r.length {
		return tooLong
	}
	if r.body != nil && r.total < 0 {
		var b [1]byte
		if n, _ := io.ReadFull(r.body, b[:]); n > 0 {
			return tooLong
		}
	}
	// The body ended, or broke exactly at the signed length: every signed
	// byte is here, and the caller's hash check has the last word.
	return io.EOF
}

// ended handles the end of a body before the signed length. A broken
// connection is an interruption (see interrupted). A clean end is
// ErrTooShort when the answer said the object ends there, or when it
// brought no byte at all; after a partial answer (a 206 that stops short of
// the object's end, a body delimited by the connection's close), the
// download goes on with a new request (nil).
func (r *resumable) ended(err error) error {
	r.dropBody()
	if !errors.Is(err, io.EOF) {
		return r.interrupted(r.netErr(err))
	}
	pos := r.pos.Load()
	if pos == r.length {
		return nil
	}
	short := fmt.Errorf("%w: %s ended after %d of %d bytes", ErrTooShort, r.loc, pos, r.length)
	if r.endsObject {
		return short
	}
	if r.got > 0 {
		return nil // a partial answer: ask for the rest
	}
	return r.interrupted(short)
}

// netErr wraps an error of the connection as a *DownloadError (a stall
// and a cancellation stay as they are).
func (r *resumable) netErr(err error) error {
	var se *StallError
	if errors.As(err, &se) || r.ctx.Err() != nil {
		return err
	}
	return &DownloadError{URL: r.loc, Err: err}
}

// interrupted counts a failure of the current answer and says whether to
// go on (nil) or give up (the error).
func (r *resumable) interrupted(err error) error {
	r.dropBody()
	if r.closed.Load() {
		return errClosed
	}
	if !retryable(r.ctx, err) {
		if ctxErr := r.ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
			return errors.Join(ctxErr, err)
		}
		return err
	}
	r.streak++
	r.lastErr = err
	if r.streak > r.f.o.Retries {
		return fmt.Errorf("fetch: %s: giving up after %d failed attempts in a row at byte %d: %w", r.loc, r.streak, r.pos.Load(), err)
	}
	r.f.o.Logger.Warn("download interrupted; resuming", "url", r.loc, "at", r.pos.Load(), "attempt", r.streak, "error", err)
	return nil
}

// reconnect asks for the rest of the object, retrying transient failures
// within the streak.
func (r *resumable) reconnect(first bool) error {
	for {
		if r.streak > 0 {
			if err := r.f.wait(r.ctx, r.streak, r.lastErr); err != nil {
				return err
			}
		}
		err := r.connect()
		if err == nil {
			if !first {
				r.resumes.Add(1)
			}
			return nil
		}
		if ferr := r.interrupted(err); ferr != nil {
			return ferr
		}
	}
}

// connect makes one request for the object from the current position.
func (r *resumable) connect() error {
	pos := r.pos.Load()
	hdr := http.Header{}
	hdr.Set("Accept-Encoding", "identity")
	ranged := pos > 0 && !r.noRange
	if ranged {
		hdr.Set("Range", "bytes="+strconv.FormatInt(pos, 10)+"-")
		if r.ifRange != "" {
			hdr.Set("If-Range", r.ifRange)
		}
	}
	res, err := r.f.do(r.ctx, r.loc, hdr)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			res.Body.Close()
		}
	}()
	switch res.StatusCode {
	case http.StatusOK, http.StatusPartialContent:
	case http.StatusRequestedRangeNotSatisfiable:
		if ranged {
			return fmt.Errorf("%w: %s has no byte %d (%d signed)", ErrTooShort, r.loc, pos, r.length)
		}
		return newStatusError(res, r.loc)
	default:
		return newStatusError(res, r.loc)
	}
	if err := r.same(res); err != nil {
		return err
	}
	if res.StatusCode == http.StatusOK {
		r.skip = pos
		r.total = res.ContentLength
		// With a Content-Length, a cut body is an unexpected EOF; chunked
		// bodies end with a terminating chunk. Either way a clean end is the
		// end of the object. A body delimited by the connection's close is
		// not: its cut looks like its end.
		r.endsObject = res.ContentLength >= 0 || (len(res.TransferEncoding) > 0 && res.TransferEncoding[0] == "chunked")
	} else {
		start, end, total, cerr := contentRange(res)
		if cerr != nil || start > pos {
			r.noRange = true
			if cerr == nil {
				cerr = fmt.Errorf("starts at byte %d, not %d", start, pos)
			}
			return fmt.Errorf("%w from %s: %w", errBadRange, r.loc, cerr)
		}
		r.skip = pos - start
		r.total = total
		r.endsObject = total >= 0 && end+1 == total
	}
	if !r.started {
		r.started = true
		r.etag, r.lastMod = res.Header.Get("ETag"), res.Header.Get("Last-Modified")
		switch {
		case r.etag != "" && !strings.HasPrefix(r.etag, "W/"):
			r.ifRange = r.etag // If-Range needs a strong validator
		case r.lastMod != "":
			r.ifRange = r.lastMod
		}
	}
	r.mu.Lock()
	if r.closed.Load() {
		r.mu.Unlock()
		return errClosed
	}
	r.body, r.got = res.Body, 0
	r.mu.Unlock()
	ok = true
	return nil
}

// same refuses an answer about another version of the object.
func (r *resumable) same(res *http.Response) error {
	if !r.started {
		return nil
	}
	if e := res.Header.Get("ETag"); r.etag != "" && e != "" && e != r.etag {
		return fmt.Errorf("%w: %s: ETag %s, first %s", ErrChanged, r.loc, e, r.etag)
	}
	if lm := res.Header.Get("Last-Modified"); r.lastMod != "" && lm != "" && lm != r.lastMod {
		return fmt.Errorf("%w: %s: Last-Modified %s, first %s", ErrChanged, r.loc, lm, r.lastMod)
	}
	return nil
}

// contentRange parses a single-range 206 answer's "bytes first-last/total"
// (total -1 for "*").
func contentRange(res *http.Response) (start, end, total int64, err error) {
	if mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type")); strings.HasPrefix(mt, "multipart/") {
		return 0, 0, 0, errors.New("a multipart answer")
	}
	cr := res.Header.Get("Content-Range")
	spec, ok := strings.CutPrefix(cr, "bytes ")
	rng, tot, ok2 := strings.Cut(spec, "/")
	first, last, ok3 := strings.Cut(rng, "-")
	if !ok || !ok2 || !ok3 {
		return 0, 0, 0, fmt.Errorf("Content-Range %q", cr)
	}
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	total = -1
	var err3 error
	if tot != "*" {
		total, err3 = strconv.ParseInt(tot, 10, 64)
	}
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || (total >= 0 && end >= total) {
		return 0, 0, 0, fmt.Errorf("Content-Range %q", cr)
	}
	if res.ContentLength >= 0 && res.ContentLength != end-start+1 {
		return 0, 0, 0, fmt.Errorf("Content-Range %q with Content-Length %d", cr, res.ContentLength)
	}
	return start, end, total, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
