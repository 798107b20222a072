package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/safefile"
)

var bg = context.Background()

// fast returns test Options: tiny backoff, short stall timeout.
func fast(o Options) Options {
	o.Backoff = func(int) time.Duration { return time.Millisecond }
	if o.StallTimeout == 0 {
		o.StallTimeout = 5 * time.Second
	}
	return o
}

// hangGuard fails the test when f has not returned after a long while: it
// catches hangs, it does not measure speed.
func hangGuard(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s hung", what)
	}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// object is what a test server serves; it can change between requests.
type object struct {
	mu      sync.Mutex
	data    []byte
	etag    string
	modTime time.Time
}

func (o *object) get() ([]byte, string, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.data, o.etag, o.modTime
}

func (o *object) set(data []byte, etag string, mod time.Time) {
	o.mu.Lock()
	o.data, o.etag, o.modTime = data, etag, mod
	o.mu.Unlock()
}

// hostile is a test server: http.ServeContent (Range, If-Range, ETag,
// Last-Modified as a real server does them) with faults on top.
type hostile struct {
	*httptest.Server
	obj object
	// cuts are absolute offsets at which the connection is cut, each once,
	// in order.
	mu      sync.Mutex
	cuts    []int64
	onCut   func() // called after each cut
	ignore  bool   // ignore Range (always 200)
	queries []url.Values
	ranges  []string
	ifRange []string
}

func newHostile(t *testing.T, data []byte) *hostile {
	h := &hostile{}
	h.obj.set(data, `"v1"`, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

func (h *hostile) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.queries = append(h.queries, r.URL.Query())
	h.ranges = append(h.ranges, r.Header.Get("Range"))
	h.ifRange = append(h.ifRange, r.Header.Get("If-Range"))
	ignore := h.ignore
	h.mu.Unlock()
	data, etag, mod := h.obj.get()
	if ignore {
		r.Header.Del("Range")
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	cw := &cutWriter{ResponseWriter: w, h: h}
	http.ServeContent(cw, r, "", mod, bytes.NewReader(data))
}

// cutWriter cuts the connection when the body reaches the next cut offset.
type cutWriter struct {
	http.ResponseWriter
	h     *hostile
	start int64
	n     int64
}

func (c *cutWriter) WriteHeader(code int) {
	if code == http.StatusPartialContent {
		var a, b, tot int64
		fmt.Sscanf(c.Header().Get("Content-Range"), "bytes %d-%d/%d", &a, &b, &tot)
		c.start = a
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *cutWriter) Write(p []byte) (int, error) {
	at := c.start + c.n
	c.h.mu.Lock()
	cut := int64(-1)
	for len(c.h.cuts) > 0 && c.h.cuts[0] < at {
		c.h.cuts = c.h.cuts[1:] // passed without being reached (a skipped prefix)
	}
	if len(c.h.cuts) > 0 && c.h.cuts[0] < at+int64(len(p)) {
		cut = c.h.cuts[0]
		c.h.cuts = c.h.cuts[1:]
	}
	onCut := c.h.onCut
	c.h.mu.Unlock()
	if cut < 0 {
		n, err := c.ResponseWriter.Write(p)
		c.n += int64(n)
		return n, err
	}
	c.ResponseWriter.Write(p[:cut-at])
	http.NewResponseController(c.ResponseWriter).Flush()
	if onCut != nil {
		onCut()
	}
	panic(http.ErrAbortHandler) // the server drops the connection
}

func readAllFrom(t *testing.T, f *Fetcher, loc string, length int64) ([]byte, Stats, error) {
	t.Helper()
	var got []byte
	var st Stats
	var err error
	hangGuard(t, "download of "+loc, func() {
		var rc io.ReadCloser
		rc, err = f.OpenResumable(bg, loc, length)
		if err != nil {
			return
		}
		defer rc.Close()
		st = rc.(Stats)
		got, err = io.ReadAll(rc)
	})
	return got, st, err
}

func seed(t *testing.T) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("UPDOG_TEST_SEED"); v != "" {
		s, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (UPDOG_TEST_SEED=%d reproduces this run)", s, s)
	return s
}

func randomCuts(r *rand.Rand, n int, size int64) []int64 {
	set := map[int64]bool{}
	for len(set) < n {
		set[1+r.Int64N(size-1)] = true
	}
	cuts := make([]int64, 0, n)
	for c := range set {
		cuts = append(cuts, c)
	}
	slices.Sort(cuts)
	return cuts
}

// TestHostileCutAt100Offsets: the server drops the connection at 100
// random offsets; Range requests resume each time and the exact bytes
// arrive.
func TestHostileCutAt100Offsets(t *testing.T) {
	s := seed(t)
	data := randomBytes(s, 1<<20)
	h := newHostile(t, data)
	h.cuts = randomCuts(rand.New(rand.NewPCG(s, 1)), 100, int64(len(data)))
	t.Logf("cuts: %v", h.cuts)
	f := NewWith(fast(Options{Query: url.Values{"seed": {"1487"}, "version": {"1.2.0"}}}))
	got, st, err := readAllFrom(t, f, h.URL+"/root.img", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, not the object", len(got))
	}
	if st.Resumes() != 100 || st.Delivered() != int64(len(data)) {
		t.Errorf("stats: %d resumes, %d bytes delivered", st.Resumes(), st.Delivered())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.queries) != 101 {
		t.Errorf("%d requests, want 101", len(h.queries))
	}
	for i, q := range h.queries {
		if q.Get("seed") != "1487" || q.Get("version") != "1.2.0" {
			t.Errorf("request %d: query %v", i, q)
		}
		if i > 0 && (!strings.HasPrefix(h.ranges[i], "bytes=") || h.ifRange[i] != `"v1"`) {
			t.Errorf("request %d: Range %q If-Range %q", i, h.ranges[i], h.ifRange[i])
		}
	}
}

// TestHostileIgnoresRange: the server always answers 200 with the whole
// object; the client skips what it already has.
func TestHostileIgnoresRange(t *testing.T) {
	s := seed(t)
	data := randomBytes(s, 256<<10)
	h := newHostile(t, data)
	h.ignore = true
	h.cuts = randomCuts(rand.New(rand.NewPCG(s, 2)), 10, int64(len(data)))
	f := NewWith(fast(Options{}))
	got, st, err := readAllFrom(t, f, h.URL+"/x", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
	if st.Resumes() != 10 {
		t.Errorf("%d resumes", st.Resumes())
	}
}

// TestHostileBadContentRange: the server answers a Range request with a
// 206 that starts elsewhere; the client does not use it and asks for the
// whole object instead.
func TestHostileBadContentRange(t *testing.T) {
	data := randomBytes(7, 100000)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case n.Add(1) == 1: // half, then cut
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data[:len(data)/2])
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		case r.Header.Get("Range") != "":
			from := len(data)/2 + 10
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(data)-1, len(data)))
			w.Header().Set("Content-Length", strconv.Itoa(len(data)-from))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(data[from:])
		default:
			w.Write(data)
		}
	}))
	defer srv.Close()
	got, _, err := readAllFrom(t, NewWith(fast(Options{})), srv.URL+"/x", int64(len(data)))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
	if n.Load() != 3 {
		t.Errorf("%d requests, want 3 (whole, bad range, whole again)", n.Load())
	}
}

// TestHostileObjectChanges: the object is replaced after the first cut;
// the resumed download must not splice two objects.
func TestHostileObjectChanges(t *testing.T) {
	for _, withETag := range []bool{true, false} {
		t.Run(fmt.Sprintf("etag=%v", withETag), func(t *testing.T) {
			data := randomBytes(1, 64<<10)
			h := newHostile(t, data)
			if !withETag {
				h.obj.set(data, "", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC))
			}
			h.cuts = []int64{int64(len(data) / 2)}
			other := randomBytes(2, len(data))
			h.onCut = func() {
				etag := ""
				if withETag {
					etag = `"v2"`
				}
				h.obj.set(other, etag, time.Date(2024, 2, 1, 0, 0, 0, 0, time.UTC))
			}
			_, _, err := readAllFrom(t, NewWith(fast(Options{})), h.URL+"/x", int64(len(data)))
			if !errors.Is(err, ErrChanged) {
				t.Fatalf("%v, want ErrChanged", err)
			}
		})
	}
}

// stallServer sends half of the body and then nothing.
func stallServer(t *testing.T, data []byte) (*httptest.Server, *atomic.Int32) {
	var n atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		w.Write(data[:len(data)/2])
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return srv, &n
}

// TestHostileStalledResumable: every answer stalls; the download ends in
// ErrStalled after the retries.
func TestHostileStalledResumable(t *testing.T) {
	data := randomBytes(3, 10000)
	srv, n := stallServer(t, data)
	f := NewWith(fast(Options{StallTimeout: 500 * time.Millisecond, Retries: 2}))
	got, _, err := readAllFrom(t, f, srv.URL+"/x", int64(len(data)))
	var se *StallError
	if !errors.Is(err, ErrStalled) || !errors.As(err, &se) || se.URL != srv.URL+"/x" || se.After != 500*time.Millisecond {
		t.Fatalf("%v, want a stall", err)
	}
	if !bytes.Equal(got, data[:len(data)/2]) {
		t.Errorf("got %d bytes before the stall", len(got))
	}
	if n.Load() != 3 {
		t.Errorf("%d requests, want 3 (1 + 2 retries)", n.Load())
	}
}

// TestHostileStalledBody is issue 8 item 3: a target body that stops
// mid-way ends with ErrStalled instead of hanging, through Open and
// DownloadFile alike.
func TestHostileStalledBody(t *testing.T) {
	data := randomBytes(4, 10000)
	srv, _ := stallServer(t, data)
	f := NewWith(Options{StallTimeout: time.Second, Timeout: time.Hour, Retries: -1})
	hangGuard(t, "Open", func() {
		rc, _, err := f.Open(bg, srv.URL+"/x")
		if err != nil {
			t.Error(err)
			return
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if !errors.Is(err, ErrStalled) || len(got) != len(data)/2 {
			t.Errorf("Open: %d bytes, %v", len(got), err)
		}
	})
	hangGuard(t, "DownloadFile", func() {
		if _, err := f.DownloadFile(srv.URL+"/x", 1<<20, 0); !errors.Is(err, ErrStalled) {
			t.Errorf("DownloadFile: %v", err)
		}
	})
}

// TestHostileNoRetryOn4xx: 404, 403 and 410 are answers, not failures:
// one request each, reported as go-tuf's ErrDownloadHTTP.
func TestHostileNoRetryOn4xx(t *testing.T) {
	for _, code := range []int{404, 403, 410, 400} {
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			w.WriteHeader(code)
		}))
		f := NewWith(fast(Options{}))
		check := func(what string, err error) {
			t.Helper()
			var he *metadata.ErrDownloadHTTP
			if !errors.As(err, &he) || he.StatusCode != code {
				t.Errorf("%d %s: %v", code, what, err)
			}
			if n.Swap(0) != 1 {
				t.Errorf("%d %s: retried", code, what)
			}
		}
		_, err := f.OpenResumable(bg, srv.URL+"/x", 10)
		check("OpenResumable", err)
		_, _, err = f.Open(bg, srv.URL+"/x")
		check("Open", err)
		_, err = f.DownloadFile(srv.URL+"/x", 10, 0)
		check("DownloadFile", err)
		srv.Close()
	}
}

// TestHostileTransientStatus: 503 and 429 are retried, then the download
// succeeds; a server that keeps failing is given up after the retries.
func TestHostileTransientStatus(t *testing.T) {
	data := []byte("metadata")
	var n atomic.Int32
	var fails atomic.Int32
	fails.Store(2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch k := n.Add(1); {
		case k <= fails.Load() && k%2 == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case k <= fails.Load():
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.Write(data)
		}
	}))
	defer srv.Close()
	f := NewWith(fast(Options{}))
	if b, err := f.DownloadFile(srv.URL+"/x", 100, 0); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("DownloadFile: %q %v", b, err)
	}
	if n.Load() != 3 {
		t.Errorf("%d requests, want 3", n.Load())
	}
	n.Store(0)
	if got, _, err := readAllFrom(t, f, srv.URL+"/x", int64(len(data))); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("OpenResumable: %q %v", got, err)
	}
	n.Store(0)
	fails.Store(100)
	_, err := f.DownloadFile(srv.URL+"/x", 100, 0)
	var he *metadata.ErrDownloadHTTP
	if !errors.As(err, &he) || he.StatusCode < 429 {
		t.Fatalf("a failing server: %v", err)
	}
	if n.Load() != 1+DefaultRetries {
		t.Errorf("%d requests, want %d", n.Load(), 1+DefaultRetries)
	}
}

// TestHostileConnectionRefused: nothing listens; the retries are bounded.
func TestHostileConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var attempts []int
	f := NewWith(fast(Options{Retries: 3}))
	f.o.Backoff = func(a int) time.Duration { attempts = append(attempts, a); return time.Millisecond }
	_, err = f.DownloadFile("http://"+addr+"/x", 10, 0)
	var de *DownloadError
	var tufErr *metadata.ErrDownload
	if !errors.Is(err, syscall.ECONNREFUSED) || !errors.As(err, &de) || !errors.As(err, &tufErr) {
		t.Fatalf("%v, want connection refused, as a DownloadError and go-tuf's ErrDownload", err)
	}
	if !slices.Equal(attempts, []int{1, 2, 3}) {
		t.Errorf("backoff asked for attempts %v", attempts)
	}
}

// TestHostileLengthLies: a server sending more or fewer bytes than signed.
func TestHostileLengthLies(t *testing.T) {
	data := randomBytes(5, 5000)
	for _, chunked := range []bool{false, true} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if chunked {
				w.Write(data[:10])
				http.NewResponseController(w).Flush()
				w.Write(data[10:])
				return
			}
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		}))
		f := NewWith(fast(Options{}))
		got, _, err := readAllFrom(t, f, srv.URL+"/x", int64(len(data)-100))
		if !errors.Is(err, ErrTooLong) || !bytes.Equal(got, data[:len(data)-100]) {
			t.Errorf("chunked=%v longer: %d bytes, %v", chunked, len(got), err)
		}
		got, _, err = readAllFrom(t, f, srv.URL+"/x", int64(len(data)+100))
		if !errors.Is(err, ErrTooShort) || !bytes.Equal(got, data) {
			t.Errorf("chunked=%v shorter: %d bytes, %v", chunked, len(got), err)
		}
		got, _, err = readAllFrom(t, f, srv.URL+"/x", int64(len(data)))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("chunked=%v exact: %d bytes, %v", chunked, len(got), err)
		}
		srv.Close()
	}
}

// TestHostileLocalFiles: paths and file:// URLs are streamed with the same
// length checks; a FIFO is refused without blocking.
func TestHostileLocalFiles(t *testing.T) {
	dir := t.TempDir()
	data := randomBytes(6, 3000)
	p := filepath.Join(dir, "img")
	os.WriteFile(p, data, 0o644)
	f := NewWith(Options{})
	for _, loc := range []string{p, "file://" + p} {
		got, st, err := readAllFrom(t, f, loc, int64(len(data)))
		if err != nil || !bytes.Equal(got, data) || st.Delivered() != int64(len(data)) {
			t.Errorf("%s: %d bytes, %v", loc, len(got), err)
		}
		if got, _, err := readAllFrom(t, f, loc, 100); !errors.Is(err, ErrTooLong) || len(got) != 100 {
			t.Errorf("%s longer: %d bytes, %v", loc, len(got), err)
		}
		if _, _, err := readAllFrom(t, f, loc, 4000); !errors.Is(err, ErrTooShort) {
			t.Errorf("%s shorter: %v", loc, err)
		}
	}
	_, _, err := readAllFrom(t, f, filepath.Join(dir, "missing"), 1)
	var he *metadata.ErrDownloadHTTP
	if !errors.As(err, &he) || he.StatusCode != 404 {
		t.Errorf("missing file: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, name := range []string{fifo, dir} {
		if _, _, err := readAllFrom(t, f, name, 1); !errors.Is(err, safefile.ErrNotRegular) {
			t.Errorf("%s: %v", name, err)
		}
		hangGuard(t, "DownloadFile of a FIFO", func() {
			if _, err := f.DownloadFile(name, 10, 0); !errors.Is(err, safefile.ErrNotRegular) {
				t.Errorf("DownloadFile %s: %v", name, err)
			}
		})
	}
}

// TestHostileProxy: HTTPSProxy carries requests (an http:// URL here, so
// a forward proxy sees them), NoProxy bypasses it; the environment is
// never used.
func TestHostileProxy(t *testing.T) {
	var viaProxy atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		viaProxy.Add(1)
		if r.URL.Host != "updates.example.test" || r.URL.Query().Get("seed") != "42" {
			t.Errorf("proxy got %s", r.URL)
		}
		io.WriteString(w, "via proxy")
	}))
	defer proxy.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "direct")
	}))
	defer origin.Close()
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	// A direct connection to updates.example.test goes to origin: no name
	// is looked up and nothing leaves the machine.
	direct := func(f *Fetcher) *Fetcher {
		f.Client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if strings.HasPrefix(addr, "updates.example.test:") {
				addr = origin.Listener.Addr().String()
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		return f
	}
	q := url.Values{"seed": {"42"}}
	loc := "http://updates.example.test/metadata/timestamp.json"

	f := direct(NewWith(fast(Options{HTTPSProxy: proxy.URL, Query: q})))
	if b, err := f.DownloadFile(loc, 100, 0); err != nil || string(b) != "via proxy" {
		t.Fatalf("through the proxy: %q %v", b, err)
	}
	if viaProxy.Load() != 1 {
		t.Fatalf("%d requests reached the proxy", viaProxy.Load())
	}
	f = direct(NewWith(fast(Options{HTTPSProxy: proxy.URL, NoProxy: []string{"10.0.0.0/8", "example.test"}, Query: q})))
	if b, err := f.DownloadFile(loc, 100, 0); err != nil || string(b) != "direct" {
		t.Fatalf("no_proxy: %q %v", b, err)
	}
	f = direct(NewWith(fast(Options{Query: q})))
	if b, err := f.DownloadFile(loc, 100, 0); err != nil || string(b) != "direct" {
		t.Fatalf("no proxy configured (the environment's must not be used): %q %v", b, err)
	}
	if viaProxy.Load() != 1 {
		t.Errorf("%d requests reached the proxy", viaProxy.Load())
	}
}

// TestHostileCancel: a cancelled context ends a stalled resumable
// download at once, without retries.
func TestHostileCancel(t *testing.T) {
	data := randomBytes(8, 10000)
	srv, n := stallServer(t, data)
	f := NewWith(fast(Options{StallTimeout: time.Hour}))
	ctx, cancel := context.WithCancel(bg)
	rc, err := f.OpenResumable(ctx, srv.URL+"/x", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, len(data)/2)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	hangGuard(t, "cancelled read", func() {
		time.AfterFunc(50*time.Millisecond, cancel)
		if _, err := rc.Read(buf); !errors.Is(err, context.Canceled) {
			t.Errorf("%v, want context.Canceled", err)
		}
	})
	if n.Load() != 1 {
		t.Errorf("%d requests after a cancel", n.Load())
	}
}

// A download resumed at its very end (every byte read before the
// interruption) has nothing left to ask for: no request, an empty reader.
func TestResumeAtTheEnd(t *testing.T) {
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
	}))
	defer srv.Close()
	f := NewWith(Options{Retries: -1})
	r, err := f.OpenResumableAt(context.Background(), srv.URL+"/x", 1000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: %d %v", n, err)
	}
	if requests != 0 {
		t.Fatalf("%d requests for nothing", requests)
	}
	if _, err := f.OpenResumableAt(context.Background(), srv.URL+"/x", 1001, 1000); err == nil {
		t.Fatal("an offset past the length was accepted")
	}
}
