package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/internal/fleetlock"
	"github.com/updog/updog/internal/fleettest"
)

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},                          // no --etcd-endpoints
		{"--etcd-endpoints", " , "}, // empty list
		{"--etcd-endpoints", "x", "--slots", "0"},
		{"--etcd-endpoints", "x", "--slots", "10001"},
		{"--etcd-endpoints", "x", "--slots", "two"},
		{"--etcd-endpoints", "x", "--request-timeout", "0s"},
		{"--etcd-endpoints", "x", "--listen", "nocolon"},
		{"--etcd-endpoints", "x", "--group-slots", "a/b=1"},
		{"--etcd-endpoints", "x", "--group-slots", "canary=0"},
		{"--etcd-endpoints", "x", "--bogus"},
		{"--etcd-endpoints", "x", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("run %q = %d, want 2 (stderr %q)", args, code, stderr.String())
		}
		if !strings.HasPrefix(stderr.String(), "updog-lockd: ") {
			t.Errorf("run %q: stderr %q", args, stderr.String())
		}
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help = %d", code)
	}
	for _, flag := range []string{"--etcd-endpoints", "--listen", "--slots", "--group-slots", "--etcd-prefix", "--request-timeout"} {
		if !strings.Contains(stdout.String(), flag) {
			t.Errorf("--help lacks %s", flag)
		}
	}
}

func TestListenFailure(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--etcd-endpoints", "http://127.0.0.1:1", "--listen", l.Addr().String()}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "listening on") {
		t.Errorf("run on a taken address = %d, %q", code, stderr.String())
	}
}

// TestHostileSignalStopsCleanly: with etcd unreachable the server still
// serves (503, never a grant), and the signal context ending stops it
// with exit status 0.
func TestHostileSignalStopsCleanly(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", fleettest.FreePort(t))
	dead := fmt.Sprintf("http://127.0.0.1:%d", fleettest.FreePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"--etcd-endpoints", dead, "--listen", addr, "--request-timeout", "200ms"}, &stdout, &stderr)
	}()
	var resp *http.Response
	body := `{"client_params":{"group":"default","id":"abc"}}`
	for deadline := time.Now().Add(30 * time.Second); ; {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+fleetlock.PathPreReboot, strings.NewReader(body))
		req.Header.Set(fleetlock.Header, "true")
		var err error
		if resp, err = http.DefaultClient.Do(req); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var a struct{ Kind string }
	json.NewDecoder(resp.Body).Decode(&a)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || a.Kind != "etcd_unavailable" {
		t.Errorf("pre-reboot with etcd unreachable: %d %s", resp.StatusCode, a.Kind)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d after the signal, want 0; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("did not stop after the signal")
	}
}
