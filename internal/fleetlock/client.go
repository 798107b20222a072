package fleetlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Protocol constants.
const (
	// Header is the header every request carries, with the value "true".
	Header = "fleet-lock-protocol"
	// PathPreReboot and PathSteadyState are the endpoints, relative to
	// the base URL.
	PathPreReboot   = "/v1/pre-reboot"
	PathSteadyState = "/v1/steady-state"
	// DefaultGroup is the group used when none is configured (Zincati's
	// default too).
	DefaultGroup = "default"
)

// Limits and defaults.
const (
	// MaxResponseBody bounds how much of a response is read.
	MaxResponseBody = 64 << 10
	// MaxID is the longest ID the client sends.
	MaxID = 256
	// MaxGroup is the longest group name.
	MaxGroup = 253
	// DefaultAttempts is how many times one call tries before giving up,
	// unless MaxWait bounds it instead.
	DefaultAttempts = 5
	// DefaultRequestTimeout bounds one request, body included.
	DefaultRequestTimeout = 30 * time.Second
	// maxShownBody bounds the part of a non-JSON error body kept in a
	// RefusedError.
	maxShownBody = 512
)

// Sentinel errors.
var (
	// ErrRefused: the server answered, with a status other than 200.
	// The error is a *RefusedError.
	ErrRefused = errors.New("fleetlock: refused")
	// ErrUnavailable: no answer from the server after every attempt
	// (connection refused or dropped, timeouts).
	ErrUnavailable = errors.New("fleetlock: server unavailable")
	// ErrInvalid: the client is misconfigured (base URL, group or ID).
	ErrInvalid = errors.New("fleetlock: invalid client configuration")
)

// RefusedError is a server's answer other than 200. It matches ErrRefused.
type RefusedError struct {
	Op     string // "pre-reboot" or "steady-state"
	Status int    // HTTP status
	// Kind and Value are the protocol's error object; when the body was
	// not one, Kind is empty and Value holds the start of the body
	// (control characters replaced).
	Kind, Value string
	// Slots and Holders are the semaphore's size and use when the server
	// says (updog-lockd does, in "slots" and "holders"); -1 otherwise.
	Slots, Holders int
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("fleetlock: %s refused: HTTP %d", e.Op, e.Status)
	if e.Kind != "" {
		s += " " + e.Kind
	}
	if e.Value != "" {
		s += ": " + e.Value
	}
	if e.Holders >= 0 && e.Slots >= 0 {
		s += fmt.Sprintf(" (%d of %d slots held)", e.Holders, e.Slots)
	}
	return s
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// Client talks to one FleetLock server for one host. The zero value of
// every optional field means its default. A Client is safe for concurrent
// use; it is not changed by its methods.
type Client struct {
	// Base is the server's base URL (http or https), with or without a
	// trailing "/": "https://lock.example/fleet" and
	// "https://lock.example/fleet/" both send to
	// "https://lock.example/fleet/v1/pre-reboot".
	Base string
	// Group is the reboot group (^[a-zA-Z0-9.-]+$); "" means DefaultGroup.
	Group string
	// ID identifies this host: printable ASCII without spaces, at most
	// MaxID bytes. See DefaultID.
	ID string
	// HTTP sends the requests; nil means a client on
	// http.DefaultTransport. Its redirect policy is replaced: redirects
	// are never followed.
	HTTP *http.Client
	// Attempts bounds the tries of one call. <= 0 means DefaultAttempts,
	// or no bound on the number of tries when MaxWait is set.
	Attempts int
	// MaxWait, when > 0, bounds one call in time: tries go on (every
	// non-200 answer and every transport failure is retried) until
	// MaxWait has passed since the call began; the wait before the last
	// try is cut short to end at the bound. Then the last answer is
	// returned. The per-request timeout comes on top of the bound for
	// the try running at that moment.
	MaxWait time.Duration
	// Backoff returns the wait before try n+1 after n failed tries
	// (n >= 1); nil means DefaultBackoff.
	Backoff func(n int) time.Duration
	// RequestTimeout bounds each request, reading the answer included
	// (DefaultRequestTimeout if <= 0).
	RequestTimeout time.Duration
	// Logger receives one debug line per failed try; nil discards.
	Logger *slog.Logger

	// now and sleep are the clock (tests); nil means the real one.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// DefaultBackoff waits 1s, 2s, 4s ... up to 30s, each with up to 25%
// random jitter so that a fleet does not retry in step.
func DefaultBackoff(n int) time.Duration {
	d := time.Second << min(max(n-1, 0), 5)
	d = min(d, 30*time.Second)
	return d + rand.N(d/4+1)
}

// PreReboot asks for a reboot slot. nil means the slot is held (a host
// that already holds one is granted again). Every other answer is "not
// now" and is asked again with backoff, within Attempts or MaxWait; after
// the last try a *RefusedError (matching ErrRefused) is the server's last
// answer, and an error matching ErrUnavailable means the last try got no
// answer at all. A cancelled ctx ends the call at once, with an error
// that matches ctx's error.
func (c *Client) PreReboot(ctx context.Context) error {
	return c.do(ctx, "pre-reboot", PathPreReboot)
}

// SteadyState gives back this host's slot. It is idempotent: a host that
// holds none gets 200 too. Every non-200 answer and every transport
// failure is retried as for PreReboot; after the last try the error is the
// last *RefusedError or an ErrUnavailable one.
func (c *Client) SteadyState(ctx context.Context) error {
	return c.do(ctx, "steady-state", PathSteadyState)
}

// Validate checks the client's configuration without sending anything.
func (c *Client) Validate() error {
	_, _, err := c.prepare(PathPreReboot)
	return err
}

type clientParams struct {
	Group string `json:"group"`
	ID    string `json:"id"`
}

type requestBody struct {
	ClientParams clientParams `json:"client_params"`
}

// errorBody is the protocol's error object plus updog-lockd's counts.
type errorBody struct {
	Kind    string `json:"kind"`
	Value   string `json:"value"`
	Slots   *int   `json:"slots"`
	Holders *int   `json:"holders"`
}

// ValidGroup reports whether g is a group name the protocol allows.
func ValidGroup(g string) bool {
	if g == "" || len(g) > MaxGroup {
		return false
	}
	for i := 0; i < len(g); i++ {
		b := g[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '-') {
			return false
		}
	}
	return true
}

// ValidID reports whether id is an ID this package sends and updog-lockd
// accepts: 1 to MaxID bytes of printable ASCII, no spaces.
func ValidID(id string) bool {
	if id == "" || len(id) > MaxID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// prepare returns the endpoint URL and request body.
func (c *Client) prepare(path string) (string, []byte, error) {
	u, err := url.Parse(c.Base)
	if err != nil {
		return "", nil, fmt.Errorf("%w: base URL %q: %w", ErrInvalid, c.Base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", nil, fmt.Errorf("%w: base URL %q: want http:// or https:// and a host", ErrInvalid, c.Base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", nil, fmt.Errorf("%w: base URL %q: a query or fragment is not allowed", ErrInvalid, c.Base)
	}
	group := c.Group
	if group == "" {
		group = DefaultGroup
	}
	if !ValidGroup(group) {
		return "", nil, fmt.Errorf("%w: group %q: want 1-%d of a-z A-Z 0-9 . -", ErrInvalid, group, MaxGroup)
	}
	if !ValidID(c.ID) {
		return "", nil, fmt.Errorf("%w: id %q: want 1-%d printable ASCII characters, no spaces", ErrInvalid, c.ID, MaxID)
	}
	u.RawPath = strings.TrimSuffix(u.EscapedPath(), "/") + path
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	body, err := json.Marshal(requestBody{clientParams{Group: group, ID: c.ID}})
	if err != nil {
		return "", nil, fmt.Errorf("fleetlock: encoding request: %w", err)
	}
	return u.String(), body, nil
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Client) httpClient() *http.Client {
	var hc http.Client
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

func (c *Client) clock() (func() time.Time, func(context.Context, time.Duration) error) {
	now, sleep := c.now, c.sleep
	if now == nil {
		now = time.Now
	}
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-t.C:
				return nil
			}
		}
	}
	return now, sleep
}

func (c *Client) do(ctx context.Context, op, path string) error {
	endpoint, body, err := c.prepare(path)
	if err != nil {
		return err
	}
	attempts := c.Attempts
	if attempts <= 0 && c.MaxWait <= 0 {
		attempts = DefaultAttempts
	}
	backoff := c.Backoff
	if backoff == nil {
		backoff = DefaultBackoff
	}
	now, sleep := c.clock()
	var deadline time.Time
	if c.MaxWait > 0 {
		deadline = now().Add(c.MaxWait)
	}
	hc := c.httpClient()
	var last error
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			if last != nil {
				return fmt.Errorf("fleetlock: %s: %w (after: %w)", op, err, last)
			}
			return fmt.Errorf("fleetlock: %s: %w", op, err)
		}
		refused, err := c.once(ctx, hc, op, endpoint, body)
		switch {
		case err == nil && refused == nil:
			return nil
		case err == nil:
			last = refused
		default:
			if ctx.Err() != nil {
				if last != nil {
					return fmt.Errorf("fleetlock: %s: %w (after: %w)", op, ctx.Err(), last)
				}
				return fmt.Errorf("fleetlock: %s: %w", op, ctx.Err())
			}
			last = fmt.Errorf("%w: %s %s: %w", ErrUnavailable, op, endpoint, err)
		}
		c.logger().Debug("fleetlock try failed", "op", op, "try", n, "err", last)
		if attempts > 0 && n >= attempts {
			return last
		}
		d := backoff(n)
		if !deadline.IsZero() {
			left := deadline.Sub(now())
			if left <= 0 {
				return last
			}
			d = min(d, left)
		}
		if err := sleep(ctx, d); err != nil {
			return fmt.Errorf("fleetlock: %s: %w (after: %w)", op, err, last)
		}
	}
}

// once sends one request. It returns (nil, nil) on 200, a RefusedError
// for another status, or a transport error.
func (c *Client) once(ctx context.Context, hc *http.Client, op, endpoint string, body []byte) (*RefusedError, error) {
	timeout := c.RequestTimeout
	if timeout <= 0 {
		timeout = DefaultRequestTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set(Header, "true")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody))
	if resp.StatusCode == http.StatusOK {
		// The answer is the status; a body cut short changes nothing.
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the HTTP %d answer: %w", resp.StatusCode, err)
	}
	return parseRefusal(op, resp.StatusCode, data), nil
}

func parseRefusal(op string, status int, data []byte) *RefusedError {
	e := &RefusedError{Op: op, Status: status, Slots: -1, Holders: -1}
	var eb errorBody
	if json.Unmarshal(data, &eb) == nil && (eb.Kind != "" || eb.Value != "") {
		e.Kind, e.Value = clean(eb.Kind), clean(eb.Value)
		if eb.Slots != nil && eb.Holders != nil && *eb.Slots >= 0 && *eb.Holders >= 0 {
			e.Slots, e.Holders = *eb.Slots, *eb.Holders
		}
		return e
	}
	e.Value = clean(string(data))
	return e
}

// clean makes a server-supplied string safe to print on one line: bounded,
// valid UTF-8, control characters replaced.
func clean(s string) string {
	s = strings.ToValidUTF8(strings.TrimSpace(s), "?")
	if len(s) > maxShownBody {
		cut := maxShownBody
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
			return '?'
		}
		return r
	}, s)
}
