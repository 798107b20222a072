package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/updog/updog/internal/testutil"
)

// The systemd units in dist/systemd: systemd-analyze verify accepts them
// (with ExecStart pointed at a stand-in binary), the update service counts
// exactly updog's "nothing to do now" exits as success, and mark-good runs
// after the workloads' target.
func TestSystemdUnits(t *testing.T) {
	sa := testutil.Tool(t, "systemd-analyze")
	src := filepath.Join(testutil.ProjectRoot(), "dist", "systemd")
	dir := t.TempDir()
	stub := filepath.Join(dir, "updog")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	units := map[string]string{}
	for _, name := range []string{"updog-mark-good.service", "updog-update.service", "updog-update.timer"} {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		units[name] = string(b)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.ReplaceAll(string(b), "/usr/bin/updog", stub)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(sa, "verify", filepath.Join(dir, "updog-mark-good.service"), filepath.Join(dir, "updog-update.service"),
		filepath.Join(dir, "updog-update.timer"))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	m := regexp.MustCompile(`(?m)^SuccessExitStatus=(.*)$`).FindStringSubmatch(units["updog-update.service"])
	if m == nil {
		t.Fatal("updog-update.service has no SuccessExitStatus")
	}
	got := map[int]bool{}
	for _, f := range strings.Fields(m[1]) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("SuccessExitStatus %q", m[1])
		}
		got[n] = true
	}
	want := map[int]bool{exitNoUpdate: true, exitNotYet: true, exitWaiting: true}
	if len(got) != len(want) {
		t.Errorf("SuccessExitStatus=%s, want exactly %d %d %d", m[1], exitNoUpdate, exitNotYet, exitWaiting)
	}
	for n := range want {
		if !got[n] {
			t.Errorf("SuccessExitStatus=%s lacks %d", m[1], n)
		}
	}
	if !strings.Contains(units["updog-update.service"], "ExecStart=/usr/bin/updog update --reboot\n") {
		t.Error("updog-update.service does not run updog update --reboot")
	}
	mg := units["updog-mark-good.service"]
	if !strings.Contains(mg, "ExecStart=/usr/bin/updog mark-good\n") || !strings.Contains(mg, "After=multi-user.target\n") {
		t.Error("updog-mark-good.service must run updog mark-good after multi-user.target")
	}
	if !strings.Contains(units["updog-update.timer"], "OnUnitInactiveSec=") {
		t.Error("the timer does not repeat")
	}
}
