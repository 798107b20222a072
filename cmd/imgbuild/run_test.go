package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/updog/updog/internal/testutil"
)

func ib(args ...string) (string, string, int) {
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestDisk(t *testing.T) {
	out := filepath.Join(t.TempDir(), "disk.img")
	stdout, errs, code := ib("disk", "--size", "1GiB", "--json", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var res struct {
		Bytes      int64 `json:"bytes"`
		Partitions []struct {
			Name string `json:"name"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.Bytes != 1<<30 || len(res.Partitions) != 13 || res.Partitions[2].Name != "BOTTLEROCKET-BOOT-A" {
		t.Fatalf("result %+v", res)
	}
	if _, errs, code := ib("disk", out); code != exitError || !strings.Contains(errs, "exists") {
		t.Errorf("overwrote an existing file without --force: %d %s", code, errs)
	}
	if sgdisk := testutil.Tool(t, "sgdisk"); sgdisk != "" {
		if v := testutil.Run(t, sgdisk, "-v", out); !strings.Contains(v, "No problems found") {
			t.Errorf("sgdisk -v: %s", v)
		}
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"nope"}, exitUsage},
		{[]string{"disk"}, exitUsage},
		{[]string{"disk", "--size", "12Q", filepath.Join(dir, "a")}, exitUsage},
		{[]string{"disk", "--sector-size", "1024", filepath.Join(dir, "b")}, exitUsage},
		{[]string{"disk", "--size", "100MiB", filepath.Join(dir, "c")}, exitError},
		{[]string{"disk", "--help"}, exitOK},
	} {
		if _, errs, code := ib(c.args...); code != c.code {
			t.Errorf("imgbuild %v: exit %d (%s), want %d", c.args, code, errs, c.code)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"2GiB": 2 << 30, "512MiB": 512 << 20, "4096": 4096, "1G": 1 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-1G", "GiB", "1.5G"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
