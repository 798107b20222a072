package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// Range answers that cannot be used as asked.
var (
	// ErrIgnoresRange means the server answered a Range request with the
	// whole object (200): RangeBody.Whole is set and the body is the
	// object from its first byte.
	ErrIgnoresRange = errors.New("fetch: the server ignores Range requests")
	// ErrWrongRange means a 206 answer is not the range asked for (another
	// range, a multipart answer, another object's length).
	ErrWrongRange = errors.New("fetch: the server answered with another range")
)

// RangeBody is the answer to one single-range request.
type RangeBody struct {
	io.ReadCloser
	// Whole is set when the server sent the whole object (a 200) instead
	// of the range: the body starts at byte 0 and is Length bytes long
	// (-1: not said).
	Whole  bool
	Length int64
}

// OpenRange asks for bytes [off, off+n) of loc, an object of total bytes,
// with one single-range GET (never a multipart range: several CDNs and
// object stores refuse or mangle them), retrying transient failures until
// the answer starts. A 206 must name exactly that range of an object of
// total bytes (else ErrWrongRange); its body is then exactly n bytes (a
// shorter one ends with io.ErrUnexpectedEOF, a longer one is cut). A 200
// is returned as is, with Whole set: the caller decides whether to read
// the whole object. Reads stall out after Options.StallTimeout with
// ErrStalled. A local file is read as a section of itself.
func (f *Fetcher) OpenRange(ctx context.Context, loc string, off, n, total int64) (*RangeBody, error) {
	if off < 0 || n <= 0 || off+n > total {
		return nil, fmt.Errorf("fetch: %s: range %d+%d is outside its %d bytes", loc, off, n, total)
	}
	if IsLocal(loc) {
		fh, size, err := openLocal(loc)
		if err != nil {
			return nil, err
		}
		if size != total {
			fh.Close()
			return nil, fmt.Errorf("%w: %s is %d bytes, %d signed", ErrWrongRange, loc, size, total)
		}
		r := io.NewSectionReader(fh, off, n)
		return &RangeBody{ReadCloser: readCloser{ctxReader{ctx, r}, fh}, Length: n}, nil
	}
	var out *RangeBody
	err := f.retry(ctx, loc, func() error {
		hdr := http.Header{}
		hdr.Set("Accept-Encoding", "identity")
		hdr.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(off+n-1, 10))
		res, err := f.do(ctx, loc, hdr)
		if err != nil {
			return err
		}
		switch res.StatusCode {
		case http.StatusOK:
			out = &RangeBody{ReadCloser: res.Body, Whole: true, Length: res.ContentLength}
			return nil
		case http.StatusPartialContent:
		default:
			res.Body.Close()
			return newStatusError(res, loc)
		}
		start, end, tot, cerr := contentRange(res)
		if cerr == nil && (start != off || end != off+n-1 || (tot >= 0 && tot != total)) {
			cerr = fmt.Errorf("bytes %d-%d/%d, not %d-%d/%d", start, end, tot, off, off+n-1, total)
		}
		if cerr != nil {
			res.Body.Close()
			return permanent(fmt.Errorf("%w: %s: %w", ErrWrongRange, loc, cerr))
		}
		out = &RangeBody{ReadCloser: readCloser{&exactN{r: res.Body, left: n}, res.Body}, Length: n}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// exactN reads exactly n bytes: an early end is io.ErrUnexpectedEOF, and
// nothing past n is read.
type exactN struct {
	r    io.Reader
	left int64
}

func (e *exactN) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	k, err := e.r.Read(p)
	e.left -= int64(k)
	if errors.Is(err, io.EOF) {
		if e.left > 0 {
			return k, io.ErrUnexpectedEOF
		}
		err = nil
	}
	if e.left == 0 && err == nil {
		return k, nil
	}
	return k, err
}

type readCloser struct {
	io.Reader
	io.Closer
}

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
