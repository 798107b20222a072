package lockd

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/updog/updog/internal/fleetlock"
)

// downKV is an etcd that never answers: Get fails (and is counted), and
// the server must never get as far as a transaction. The embedded nil KV
// panics on any other method, which the server must not use either.
type downKV struct {
	clientv3.KV
	calls atomic.Int64
}

var errDown = errors.New("etcd is down (test)")

func (k *downKV) Get(context.Context, string, ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	k.calls.Add(1)
	return nil, errDown
}

func (k *downKV) Txn(context.Context) clientv3.Txn { panic("Txn after a failed Get") }

type result struct {
	Status int
	Allow  string
	Body   answer
	Raw    string
}

func post(t *testing.T, h http.Handler, method, path string, header bool, body string) result {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if header {
		req.Header.Set(fleetlock.Header, "true")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	raw, _ := io.ReadAll(rec.Body)
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return result{rec.Code, rec.Header().Get("Allow"), a, string(raw)}
}

const goodBody = `{"client_params":{"group":"default","id":"6723ba60567d41a797607edd5b28e0fd"}}`

// TestHTTPRefusesBadRequests: nothing but a well-formed protocol request
// reaches etcd.
func TestHTTPRefusesBadRequests(t *testing.T) {
	kv := &downKV{}
	s, err := New(Config{KV: kv, Slots: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		method, path string
		header       bool
		body         string
		status       int
		kind         string
	}{
		{"get", http.MethodGet, fleetlock.PathPreReboot, true, "", 405, KindMethod},
		{"put", http.MethodPut, fleetlock.PathSteadyState, true, goodBody, 405, KindMethod},
		{"delete", http.MethodDelete, fleetlock.PathPreReboot, true, goodBody, 405, KindMethod},
		{"other-path", http.MethodPost, "/v1/status", true, goodBody, 404, KindNotFound},
		{"trailing-slash", http.MethodPost, fleetlock.PathPreReboot + "/", true, goodBody, 404, KindNotFound},
		{"root", http.MethodPost, "/", true, goodBody, 404, KindNotFound},
		{"no-header", http.MethodPost, fleetlock.PathPreReboot, false, goodBody, 400, KindBadRequest},
		{"empty", http.MethodPost, fleetlock.PathPreReboot, true, "", 400, KindBadRequest},
		{"not-json", http.MethodPost, fleetlock.PathPreReboot, true, "group=default", 400, KindBadRequest},
		{"trailing-data", http.MethodPost, fleetlock.PathPreReboot, true, goodBody + `{}`, 400, KindBadRequest},
		{"no-params", http.MethodPost, fleetlock.PathPreReboot, true, `{}`, 400, KindBadRequest},
		{"no-id", http.MethodPost, fleetlock.PathPreReboot, true, `{"client_params":{"group":"default"}}`, 400, KindBadRequest},
		{"no-group", http.MethodPost, fleetlock.PathSteadyState, true, `{"client_params":{"id":"x"}}`, 400, KindBadRequest},
		{"id-number", http.MethodPost, fleetlock.PathPreReboot, true, `{"client_params":{"group":"default","id":7}}`, 400, KindBadRequest},
		{"empty-id", http.MethodPost, fleetlock.PathPreReboot, true, `{"client_params":{"group":"default","id":""}}`, 400, KindBadRequest},
		{"id-space", http.MethodPost, fleetlock.PathPreReboot, true, `{"client_params":{"group":"default","id":"a b"}}`, 400, KindBadRequest},
		{"id-long", http.MethodPost, fleetlock.PathPreReboot, true, `{"client_params":{"group":"default","id":"` + strings.Repeat("x", fleetlock.MaxID+1) + `"}}`, 400, KindBadRequest},
		{"group-slash", http.MethodPost, fleetlock.PathPreReboot, true, `{"client_params":{"group":"../x","id":"a"}}`, 400, KindBadRequest},
		{"group-empty", http.MethodPost, fleetlock.PathPreReboot, true, `{"client_params":{"group":"","id":"a"}}`, 400, KindBadRequest},
		{"huge-body", http.MethodPost, fleetlock.PathPreReboot, true, `{"client_params":{"group":"default","id":"a"},"pad":"` + strings.Repeat("x", MaxRequestBody) + `"}`, 400, KindBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := post(t, s, tc.method, tc.path, tc.header, tc.body)
			if r.Status != tc.status || r.Body.Kind != tc.kind {
				t.Errorf("got %d %s, want %d %s: %s", r.Status, r.Body.Kind, tc.status, tc.kind, r.Raw)
			}
			if tc.status == 405 && r.Allow != http.MethodPost {
				t.Errorf("Allow: %q", r.Allow)
			}
		})
	}
	if n := kv.calls.Load(); n != 0 {
		t.Errorf("bad requests reached etcd %d times", n)
	}
}

// TestHostileEtcdDownNeverGrants: an etcd that fails gives 503 with a
// clear kind, for both operations.
func TestHostileEtcdDownNeverGrants(t *testing.T) {
	kv := &downKV{}
	s, err := New(Config{KV: kv, Slots: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fleetlock.PathPreReboot, fleetlock.PathSteadyState} {
		r := post(t, s, http.MethodPost, path, true, goodBody)
		if r.Status != http.StatusServiceUnavailable || r.Body.Kind != KindUnavailable || !strings.Contains(r.Body.Value, "etcd is down") {
			t.Errorf("%s: got %d %s", path, r.Status, r.Raw)
		}
	}
	if _, err := s.Lock(context.Background(), "default", "a"); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Lock: %v, want ErrUnavailable", err)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, cfg := range []Config{
		{Slots: 1},
		{KV: &downKV{}},
		{KV: &downKV{}, Slots: MaxSlots + 1},
		{KV: &downKV{}, Slots: -1},
		{KV: &downKV{}, Slots: 1, GroupSlots: map[string]int{"a/b": 1}},
		{KV: &downKV{}, Slots: 1, GroupSlots: map[string]int{"ok": 0}},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("New(%+v) = %v, want ErrInvalid", cfg, err)
		}
	}
}

func TestSlotsFor(t *testing.T) {
	s, err := New(Config{KV: &downKV{}, Slots: 2, GroupSlots: map[string]int{"canary": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if s.SlotsFor("canary") != 1 || s.SlotsFor("default") != 2 {
		t.Errorf("SlotsFor: canary %d default %d", s.SlotsFor("canary"), s.SlotsFor("default"))
	}
	if k := s.Key("default"); k != DefaultPrefix+"groups/default" {
		t.Errorf("Key = %q", k)
	}
	s2, _ := New(Config{KV: &downKV{}, Slots: 1, Prefix: "/fleet"})
	if k := s2.Key("g"); k != "/fleet/groups/g" {
		t.Errorf("Key with a prefix lacking its slash = %q", k)
	}
}

// FuzzRequest: any request body is answered with JSON, never panics, and
// reaches etcd only when it is a valid protocol request.
func FuzzRequest(f *testing.F) {
	f.Add(goodBody)
	f.Add(`{"client_params":{"group":"a.b-c","id":"~!"}}`)
	f.Add(`{"client_params":null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, body string) {
		kv := &downKV{}
		s, err := New(Config{KV: kv, Slots: 1})
		if err != nil {
			t.Fatal(err)
		}
		r := post(t, s, http.MethodPost, fleetlock.PathPreReboot, true, body)
		switch r.Status {
		case http.StatusBadRequest:
			if kv.calls.Load() != 0 {
				t.Fatalf("a bad request reached etcd: %q", body)
			}
		case http.StatusServiceUnavailable:
			if kv.calls.Load() == 0 {
				t.Fatalf("503 without asking etcd")
			}
		default:
			t.Fatalf("status %d for %q", r.Status, body)
		}
	})
}
