// Package lockd is a FleetLock server (see package internal/fleetlock for
// the protocol) whose state lives in etcd, so that any number of
// updog-lockd processes can serve one fleet and any of them can die at any
// moment without losing or doubling a slot.
//
// # State
//
// Each group is one etcd key, Prefix + "groups/" + group, holding JSON:
//
//	{"slots": 2, "holders": [{"id": "6723ba60...", "since": "2024-06-01T02:00:00Z"}]}
//
// The key is changed only by a compare-and-swap transaction: read it,
// compute the new value, and write it only if its ModRevision is still
// the one read (or, for a key that did not exist, its CreateRevision is
// still 0); a transaction that loses a race is retried on fresh state.
// So two servers (or two requests in one) can never both hand out the last
// slot.
//
// # Semantics
//
//   - Locks are owned and recursive: a holder asking again is granted
//     again without taking a second slot; steady-state from a host that
//     holds nothing succeeds and changes nothing.
//   - The configured slot count (per group, Config.Slots or
//     Config.GroupSlots) wins over the one stored: the stored count is only
//     a record, rewritten with the next change. Lowering it below the
//     number of holders grants nothing until enough of them release.
//   - etcd unreachable, slow past the request timeout, or a state that does
//     not decode gives an error answer (503 or 500), never a grant.
//
// A grant whose transaction committed in etcd but whose answer was lost
// (etcd or the network failing right after the commit) leaves the slot
// held by a host that was told 503; the host is granted again when it
// asks again, and an operator can release it. This errs on the side of
// fewer reboots, never more.
//
// # HTTP
//
// ServeHTTP answers POST /v1/pre-reboot and POST /v1/steady-state only:
// another method is 405, another path 404, a request without the
// "fleet-lock-protocol: true" header, with a body over MaxRequestBody, or
// with an invalid group or ID is 400. Refusals carry the protocol's error
// object {"kind","value"} (kinds listed at ServeHTTP), plus "slots" and
// "holders" counts when the semaphore is full.
//
// The Server keeps no state of its own and is safe for concurrent use.
package lockd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/updog/updog/internal/fleetlock"
)

// Limits and defaults.
const (
	// DefaultPrefix is where the keys live unless Config.Prefix says.
	DefaultPrefix = "/updog-lockd/"
	// DefaultRequestTimeout bounds the etcd work of one request.
	DefaultRequestTimeout = 5 * time.Second
	// MaxSlots bounds a group's slot count.
	MaxSlots = 10000
	// MaxRequestBody bounds a request body.
	MaxRequestBody = 16 << 10
	// MaxStateSize bounds a stored group value; a larger one is corrupt.
	MaxStateSize = 4 << 20
	// maxTxnAttempts bounds the compare-and-swap retries of one request.
	maxTxnAttempts = 64
)

// Sentinel errors.
var (
	// ErrFull: every slot of the group is held by someone else. The error
	// is a *FullError.
	ErrFull = errors.New("lockd: all slots are held")
	// ErrUnavailable: etcd did not answer in time, or failed.
	ErrUnavailable = errors.New("lockd: etcd unavailable")
	// ErrCorrupt: the stored group value does not decode.
	ErrCorrupt = errors.New("lockd: stored state is corrupt")
	// ErrContention: the transaction lost the race too many times.
	ErrContention = errors.New("lockd: too many concurrent changes")
	// ErrInvalid: a bad group or ID, or a bad Config.
	ErrInvalid = errors.New("lockd: invalid")
)

// FullError says a group's slots are all held. It matches ErrFull.
type FullError struct {
	Group          string
	Slots, Holders int
}

func (e *FullError) Error() string {
	return fmt.Sprintf("lockd: all %d slots of group %s are held (%d holders)", e.Slots, e.Group, e.Holders)
}

// Is makes errors.Is(err, ErrFull) true.
func (e *FullError) Is(target error) bool { return target == ErrFull }

// State is a group's semaphore as stored in etcd.
type State struct {
	Slots   int      `json:"slots"`
	Holders []Holder `json:"holders"`
}

// Holder is one slot's owner.
type Holder struct {
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
}

// Holds reports whether id holds a slot.
func (s *State) Holds(id string) bool {
	return slices.ContainsFunc(s.Holders, func(h Holder) bool { return h.ID == id })
}

// Config configures a Server.
type Config struct {
	// KV is etcd (a *clientv3.Client, or a namespaced KV).
	KV clientv3.KV
	// Prefix is prepended to every key ("/" is added when it does not end
	// in one); "" means DefaultPrefix.
	Prefix string
	// Slots is every group's slot count (1 to MaxSlots).
	Slots int
	// GroupSlots overrides Slots for the groups it names.
	GroupSlots map[string]int
	// RequestTimeout bounds the etcd work of one request
	// (DefaultRequestTimeout if <= 0).
	RequestTimeout time.Duration
	// Logger receives one line per grant, release and failure; nil
	// discards.
	Logger *slog.Logger
	// Now is the clock for Holder.Since; nil means time.Now.
	Now func() time.Time
}

// Server implements the FleetLock protocol on etcd.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.KV == nil {
		return nil, fmt.Errorf("%w: no etcd client", ErrInvalid)
	}
	if cfg.Slots < 1 || cfg.Slots > MaxSlots {
		return nil, fmt.Errorf("%w: slots %d: want 1 to %d", ErrInvalid, cfg.Slots, MaxSlots)
	}
	for g, n := range cfg.GroupSlots {
		if !fleetlock.ValidGroup(g) {
			return nil, fmt.Errorf("%w: group %q: want 1-%d of a-z A-Z 0-9 . -", ErrInvalid, g, fleetlock.MaxGroup)
		}
		if n < 1 || n > MaxSlots {
			return nil, fmt.Errorf("%w: slots %d for group %s: want 1 to %d", ErrInvalid, n, g, MaxSlots)
		}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.GroupSlots = maps.Clone(cfg.GroupSlots)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log}, nil
}

// Key returns the etcd key holding a group.
func (s *Server) Key(group string) string { return s.cfg.Prefix + "groups/" + group }

// SlotsFor returns a group's configured slot count.
func (s *Server) SlotsFor(group string) int {
	if n, ok := s.cfg.GroupSlots[group]; ok {
		return n
	}
	return s.cfg.Slots
}

func checkArgs(group, id string) error {
	if !fleetlock.ValidGroup(group) {
		return fmt.Errorf("%w: group %q: want 1-%d of a-z A-Z 0-9 . -", ErrInvalid, group, fleetlock.MaxGroup)
	}
	if !fleetlock.ValidID(id) {
		return fmt.Errorf("%w: id: want 1-%d printable ASCII characters, no spaces", ErrInvalid, fleetlock.MaxID)
	}
	return nil
}

// Lock takes a slot of group for id (RecursiveLock): granted when id
// already holds one or a slot is free. It returns the state after the
// change, or a *FullError, or an error matching ErrUnavailable,
// ErrCorrupt, ErrContention or ErrInvalid.
func (s *Server) Lock(ctx context.Context, group, id string) (*State, error) {
	if err := checkArgs(group, id); err != nil {
		return nil, err
	}
	return s.update(ctx, group, func(st *State) (bool, error) {
		if st.Holds(id) {
			return false, nil
		}
		if len(st.Holders) >= st.Slots {
			return false, &FullError{Group: group, Slots: st.Slots, Holders: len(st.Holders)}
		}
		st.Holders = append(st.Holders, Holder{ID: id, Since: s.cfg.Now().UTC().Truncate(time.Second)})
		return true, nil
	})
}

// Unlock releases id's slot of group (UnlockIfHeld); releasing a slot
// that is not held succeeds and writes nothing.
func (s *Server) Unlock(ctx context.Context, group, id string) (*State, error) {
	if err := checkArgs(group, id); err != nil {
		return nil, err
	}
	return s.update(ctx, group, func(st *State) (bool, error) {
		n := len(st.Holders)
		st.Holders = slices.DeleteFunc(st.Holders, func(h Holder) bool { return h.ID == id })
		return len(st.Holders) != n, nil
	})
}

// Get returns a group's state (an absent key is a group with no holders).
// Slots is the configured count.
func (s *Server) Get(ctx context.Context, group string) (*State, error) {
	if !fleetlock.ValidGroup(group) {
		return nil, fmt.Errorf("%w: group %q", ErrInvalid, group)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	st, _, err := s.read(ctx, group)
	return st, err
}

// read returns the group's state with the configured slot count, and the
// key's ModRevision (0 when it does not exist).
func (s *Server) read(ctx context.Context, group string) (*State, int64, error) {
	key := s.Key(group)
	resp, err := s.cfg.KV.Get(ctx, key)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: reading %s: %w", ErrUnavailable, key, err)
	}
	st := &State{}
	var rev int64
	if len(resp.Kvs) > 0 {
		kv := resp.Kvs[0]
		rev = kv.ModRevision
		if err := decode(kv.Value, st); err != nil {
			return nil, 0, fmt.Errorf("%w: %s at revision %d: %w", ErrCorrupt, key, rev, err)
		}
	}
	st.Slots = s.SlotsFor(group)
	return st, rev, nil
}

func decode(data []byte, st *State) error {
	if len(data) > MaxStateSize {
		return fmt.Errorf("%d bytes, more than %d", len(data), MaxStateSize)
	}
	if err := json.Unmarshal(data, st); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, h := range st.Holders {
		if !fleetlock.ValidID(h.ID) || seen[h.ID] {
			return fmt.Errorf("holder %q: invalid or repeated", h.ID)
		}
		seen[h.ID] = true
	}
	return nil
}

// update runs change on fresh state until its write wins the
// compare-and-swap, or change declines to write.
func (s *Server) update(ctx context.Context, group string, change func(*State) (bool, error)) (*State, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	key := s.Key(group)
	for attempt := range maxTxnAttempts {
		st, rev, err := s.read(ctx, group)
		if err != nil {
			return nil, err
		}
		write, err := change(st)
		if err != nil || !write {
			return st, err
		}
		val, err := json.Marshal(st)
		if err != nil {
			return nil, fmt.Errorf("lockd: encoding %s: %w", key, err)
		}
		cmp := clientv3.Compare(clientv3.ModRevision(key), "=", rev)
		if rev == 0 {
			cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		}
		resp, err := s.cfg.KV.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return nil, fmt.Errorf("%w: writing %s: %w", ErrUnavailable, key, err)
		}
		if resp.Succeeded {
			return st, nil
		}
		// Lost the race: someone changed the key since it was read.
		// Wait a little, with jitter, and redo the whole step.
		d := time.Duration(1+rand.N(min(attempt+1, 20))) * time.Millisecond
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, key, ctx.Err())
		case <-t.C:
		}
	}
	return nil, fmt.Errorf("%w: %s: %d attempts", ErrContention, key, maxTxnAttempts)
}
