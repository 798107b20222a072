package lockd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/updog/updog/internal/fleetlock"
	"github.com/updog/updog/internal/fleettest"
	"github.com/updog/updog/internal/testutil"
)

// These tests run against a real etcd (Debian's etcd-server), started on
// 127.0.0.1 with a temporary data directory and stopped by its PID. They
// skip when etcd is not installed, and fail under CI.

func startEtcd(t *testing.T) *fleettest.Etcd {
	t.Helper()
	return fleettest.StartEtcd(t, testutil.Tool(t, "etcd"))
}

func etcdClient(t *testing.T, e *fleettest.Etcd) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newServer(t *testing.T, kv clientv3.KV, slots int, edit ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{KV: kv, Slots: slots, Prefix: "/test/" + t.Name() + "/"}
	for _, e := range edit {
		e(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func holders(st *State) []string {
	var ids []string
	for _, h := range st.Holders {
		ids = append(ids, h.ID)
	}
	return ids
}

// stored reads the raw key.
func stored(t *testing.T, c *clientv3.Client, s *Server, group string) (State, int64) {
	t.Helper()
	resp, err := c.Get(context.Background(), s.Key(group))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return State{}, 0
	}
	var st State
	if err := json.Unmarshal(resp.Kvs[0].Value, &st); err != nil {
		t.Fatalf("stored value %q: %v", resp.Kvs[0].Value, err)
	}
	return st, resp.Kvs[0].ModRevision
}

func TestEtcd(t *testing.T) {
	e := startEtcd(t)
	c := etcdClient(t, e)
	ctx := context.Background()

	t.Run("OwnedRecursiveSemaphore", func(t *testing.T) {
		now := time.Date(2024, 6, 1, 2, 0, 0, 0, time.UTC)
		s := newServer(t, c, 2, func(cfg *Config) { cfg.Now = func() time.Time { return now } })
		mustLock := func(id string, want ...string) {
			t.Helper()
			st, err := s.Lock(ctx, "default", id)
			if err != nil {
				t.Fatalf("Lock(%s): %v", id, err)
			}
			if got := holders(st); !slices.Equal(got, want) {
				t.Fatalf("Lock(%s): holders %v, want %v", id, got, want)
			}
		}
		mustLock("a", "a")
		_, rev := stored(t, c, s, "default")
		mustLock("a", "a") // recursive: granted, nothing written
		if _, rev2 := stored(t, c, s, "default"); rev2 != rev {
			t.Errorf("a recursive grant wrote the key (revision %d -> %d)", rev, rev2)
		}
		mustLock("b", "a", "b")
		_, err := s.Lock(ctx, "default", "c")
		var full *FullError
		if !errors.As(err, &full) || !errors.Is(err, ErrFull) || full.Slots != 2 || full.Holders != 2 {
			t.Fatalf("Lock(c) = %v, want a FullError 2/2", err)
		}
		// Releasing what one does not hold: success, nothing written.
		_, rev = stored(t, c, s, "default")
		if st, err := s.Unlock(ctx, "default", "c"); err != nil || !slices.Equal(holders(st), []string{"a", "b"}) {
			t.Fatalf("Unlock(c) = %v, %v", st, err)
		}
		if _, rev2 := stored(t, c, s, "default"); rev2 != rev {
			t.Errorf("a no-op release wrote the key")
		}
		if _, err := s.Unlock(ctx, "default", "a"); err != nil {
			t.Fatal(err)
		}
		mustLock("c", "b", "c")
		st, _ := stored(t, c, s, "default")
		if st.Slots != 2 || !st.Holds("b") || !st.Holds("c") || !st.Holders[0].Since.Equal(now) {
			t.Errorf("stored %+v", st)
		}
		// Groups are independent.
		if _, err := s.Lock(ctx, "other", "z"); err != nil {
			t.Errorf("another group: %v", err)
		}
	})

	t.Run("ConfiguredSlotsWin", func(t *testing.T) {
		s := newServer(t, c, 2)
		stale, _ := json.Marshal(State{Slots: 5, Holders: []Holder{{ID: "a"}, {ID: "b"}, {ID: "c"}}})
		if _, err := c.Put(ctx, s.Key("default"), string(stale)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lock(ctx, "default", "d"); !errors.Is(err, ErrFull) {
			t.Fatalf("Lock(d) with 3 holders of 2 configured slots = %v, want ErrFull", err)
		}
		if _, err := s.Lock(ctx, "default", "a"); err != nil {
			t.Fatalf("a holder asking again: %v", err)
		}
		if _, err := s.Unlock(ctx, "default", "a"); err != nil {
			t.Fatal(err)
		}
		if st, _ := stored(t, c, s, "default"); st.Slots != 2 {
			t.Errorf("stored slots %d after a write, want the configured 2", st.Slots)
		}
		if _, err := s.Lock(ctx, "default", "d"); !errors.Is(err, ErrFull) {
			t.Fatalf("Lock(d) with 2 holders of 2 = %v", err)
		}
		if _, err := s.Unlock(ctx, "default", "b"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lock(ctx, "default", "d"); err != nil {
			t.Fatalf("Lock(d) with a free slot: %v", err)
		}
		// A stored count lower than the configured one does not hold
		// anyone back either.
		low, _ := json.Marshal(State{Slots: 1, Holders: []Holder{{ID: "a"}}})
		if _, err := c.Put(ctx, s.Key("g2"), string(low)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lock(ctx, "g2", "b"); err != nil {
			t.Fatalf("Lock(b) with stored slots 1, configured 2: %v", err)
		}
	})

	t.Run("GroupSlots", func(t *testing.T) {
		s := newServer(t, c, 3, func(cfg *Config) { cfg.GroupSlots = map[string]int{"canary": 1} })
		if _, err := s.Lock(ctx, "canary", "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Lock(ctx, "canary", "b"); !errors.Is(err, ErrFull) {
			t.Fatalf("canary has one slot: %v", err)
		}
		for _, id := range []string{"a", "b", "c"} {
			if _, err := s.Lock(ctx, "default", id); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("CorruptStateNeverGrants", func(t *testing.T) {
		s := newServer(t, c, 2)
		for i, bad := range []string{"not json", `{"slots":2,"holders":[{"id":"a"},{"id":"a"}]}`, `{"holders":[{"id":""}]}`, `{"holders":"x"}`} {
			group := fmt.Sprintf("g%d", i)
			if _, err := c.Put(ctx, s.Key(group), bad); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Lock(ctx, group, "b"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Lock on %q = %v, want ErrCorrupt", bad, err)
			}
			if _, err := s.Unlock(ctx, group, "a"); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Unlock on %q = %v, want ErrCorrupt", bad, err)
			}
			resp, _ := c.Get(ctx, s.Key(group))
			if string(resp.Kvs[0].Value) != bad {
				t.Errorf("corrupt value overwritten: %q", resp.Kvs[0].Value)
			}
			body := fmt.Sprintf(`{"client_params":{"group":%q,"id":"b"}}`, group)
			if r := post(t, s, http.MethodPost, fleetlock.PathPreReboot, true, body); r.Status != 500 || r.Body.Kind != KindCorrupt {
				t.Errorf("HTTP: %d %s", r.Status, r.Raw)
			}
		}
	})

	t.Run("HTTPWithFleetlockClient", func(t *testing.T) {
		s := newServer(t, c, 1)
		hs := httptest.NewServer(s)
		defer hs.Close()
		a := &fleetlock.Client{Base: hs.URL + "/", ID: "aaaa", Attempts: 1}
		b := &fleetlock.Client{Base: hs.URL, ID: "bbbb", Attempts: 1}
		if err := a.PreReboot(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.PreReboot(ctx); err != nil {
			t.Fatalf("recursive: %v", err)
		}
		err := b.PreReboot(ctx)
		var re *fleetlock.RefusedError
		if !errors.As(err, &re) || re.Status != http.StatusLocked || re.Kind != KindFull || re.Slots != 1 || re.Holders != 1 {
			t.Fatalf("b: %v (%+v)", err, re)
		}
		if err := b.SteadyState(ctx); err != nil {
			t.Fatalf("release by a non-holder: %v", err)
		}
		if err := a.SteadyState(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.PreReboot(ctx); err != nil {
			t.Fatalf("b after a released: %v", err)
		}
	})
}

// TestHostileEtcdPaused: etcd stopped with SIGSTOP answers nothing; the
// server answers 503 within its request timeout and grants nothing, and
// works again once etcd continues.
func TestHostileEtcdPaused(t *testing.T) {
	e := startEtcd(t)
	c := etcdClient(t, e)
	s := newServer(t, c, 1, func(cfg *Config) { cfg.RequestTimeout = 300 * time.Millisecond })
	ctx := context.Background()
	if _, err := s.Lock(ctx, "default", "a"); err != nil {
		t.Fatal(err)
	}
	if err := e.Pause(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fleetlock.PathPreReboot, fleetlock.PathSteadyState} {
		body := `{"client_params":{"group":"default","id":"b"}}`
		if r := post(t, s, http.MethodPost, path, true, body); r.Status != http.StatusServiceUnavailable || r.Body.Kind != KindUnavailable {
			t.Errorf("%s with etcd paused: %d %s", path, r.Status, r.Raw)
		}
	}
	if err := e.Resume(); err != nil {
		t.Fatal(err)
	}
	// b never got in while etcd was paused.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := s.Get(ctx, "default")
		if err == nil {
			if got := holders(st); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("holders after the pause: %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd did not come back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHostileEtcdStopped: with etcd gone, 503; after it restarts on its
// data directory, the holders are still there.
func TestHostileEtcdStopped(t *testing.T) {
	e := startEtcd(t)
	c := etcdClient(t, e)
	s := newServer(t, c, 1, func(cfg *Config) { cfg.RequestTimeout = 300 * time.Millisecond })
	ctx := context.Background()
	if _, err := s.Lock(ctx, "default", "a"); err != nil {
		t.Fatal(err)
	}
	e.Stop(10 * time.Second)
	if _, err := s.Lock(ctx, "default", "b"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Lock with etcd stopped: %v, want ErrUnavailable", err)
	}
	e.Restart(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := s.Lock(ctx, "default", "b")
		if errors.Is(err, ErrFull) {
			break
		}
		if err == nil {
			t.Fatal("b granted: a's slot was lost across the restart")
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd did not come back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHostileConcurrentServers: several servers (as several updog-lockd
// processes would be) hammer one group; the compare-and-swap lets exactly
// the slot count through each round.
func TestHostileConcurrentServers(t *testing.T) {
	e := startEtcd(t)
	ctx := context.Background()
	const slots, hosts, rounds = 3, 24, 4
	prefix := "/test/concurrent/"
	var servers []*Server
	for range 3 {
		servers = append(servers, newServer(t, etcdClient(t, e), slots, func(cfg *Config) { cfg.Prefix = prefix }))
	}
	for round := range rounds {
		var mu sync.Mutex
		var granted []string
		var wg sync.WaitGroup
		for h := range hosts {
			wg.Go(func() {
				id := fmt.Sprintf("r%d-h%d", round, h)
				_, err := servers[h%len(servers)].Lock(ctx, "default", id)
				switch {
				case err == nil:
					mu.Lock()
					granted = append(granted, id)
					mu.Unlock()
				case !errors.Is(err, ErrFull):
					t.Errorf("Lock(%s): %v", id, err)
				}
			})
		}
		wg.Wait()
		st, err := servers[0].Get(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(granted)
		got := holders(st)
		slices.Sort(got)
		if len(granted) != slots || !slices.Equal(got, granted) {
			t.Fatalf("round %d: granted %v, stored holders %v, want %d of them and the same", round, granted, got, slots)
		}
		for _, id := range granted {
			if _, err := servers[round%len(servers)].Unlock(ctx, "default", id); err != nil {
				t.Fatal(err)
			}
		}
	}
}
