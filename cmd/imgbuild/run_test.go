package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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

// TestDiskRefusesBadGeometryAndGUID: a size that is not a whole number of
// sectors and the all-zero disk GUID are usage errors, and no file is made.
func TestDiskRefusesBadGeometryAndGUID(t *testing.T) {
	dir := t.TempDir()
	for i, args := range [][]string{
		{"--size", "1073742336", "--sector-size", "4096"}, // 1 GiB + 512: whole 512-byte sectors only
		{"--size", "1073741825"},
		{"--disk-guid", "00000000-0000-0000-0000-000000000000"},
	} {
		out := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
		_, errs, code := ib(append(append([]string{"disk"}, args...), out)...)
		if code != exitUsage {
			t.Errorf("imgbuild disk %v: exit %d (%s), want %d", args, code, errs, exitUsage)
		}
		if _, err := os.Lstat(out); err == nil {
			t.Errorf("imgbuild disk %v left %s behind", args, out)
		}
	}
	ok := filepath.Join(dir, "ok.img")
	if _, errs, code := ib("disk", "--size", "1073745920", "--sector-size", "4096", ok); code != 0 {
		t.Errorf("1 GiB + 4096 with 4096-byte sectors: exit %d, %s", code, errs)
	}
	if fi, err := os.Stat(ok); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("a new image: %v, %v; want mode 0644", fi, err)
	}
}

// TestHostileDiskOutputNotAFile: a FIFO, a directory or a character device
// as OUT fails at once with a clear error, with or without --force (a FIFO
// used to hang --force for ever).
func TestHostileDiskOutputNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for _, c := range []struct{ path, what string }{{fifo, "FIFO"}, {sub, "directory"}, {"/dev/zero", "character device"}} {
		for _, force := range []bool{false, true} {
			args := []string{"disk", "--size", "1GiB"}
			if force {
				args = append(args, "--force")
			}
			type res struct {
				errs string
				code int
			}
			done := make(chan res, 1)
			go func() {
				_, errs, code := ib(append(args, c.path)...)
				done <- res{errs, code}
			}()
			select {
			case r := <-done:
				if r.code != exitError || !strings.Contains(r.errs, c.what) {
					t.Errorf("%v %s: exit %d, %q; want exit 1 naming a %s", args, c.path, r.code, r.errs, c.what)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("imgbuild %v %s hangs", args, c.path)
			}
		}
	}
	if ents, _ := os.ReadDir(sub); len(ents) != 0 {
		t.Errorf("files left in %s: %v", sub, ents)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("files left in %s: %v", dir, ents)
	}
}

// TestDiskForceReplaces: --force replaces an existing image (through a
// symlink, the file it names, keeping its permissions), and the new table
// is clean.
func TestDiskForceReplaces(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real.img")
	if err := os.WriteFile(real, []byte("old contents"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "disk.img")
	os.Symlink("real.img", link)
	if _, errs, code := ib("disk", "--size", "1GiB", link); code != exitError || !strings.Contains(errs, "exists") {
		t.Fatalf("without --force: %d %s", code, errs)
	}
	if _, errs, code := ib("disk", "--size", "1GiB", "--force", "--disk-guid", "11111111-2222-4333-8444-555555555555", link); code != 0 {
		t.Fatalf("--force: %d %s", code, errs)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("the symlink was replaced")
	}
	if fi, err := os.Stat(real); err != nil || fi.Size() != 1<<30 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the image: %v %v", fi, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("temporary files left: %v", ents)
	}
	if sgdisk := testutil.Tool(t, "sgdisk"); sgdisk != "" {
		if v := testutil.Run(t, sgdisk, "-v", real); !strings.Contains(v, "No problems found") {
			t.Errorf("sgdisk -v: %s", v)
		}
	}
}

// TestHostileDiskCancelled: a command whose context is cancelled (SIGINT,
// SIGTERM) stops before writing and leaves nothing at OUT.
func TestHostileDiskCancelled(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "disk.img")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"disk", "--size", "1GiB", out}, &stdout, &stderr); code != exitError {
		t.Fatalf("cancelled: exit %d, %s", code, stderr.String())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a cancelled build left files: %v", ents)
	}
	// With --force, the old image stays as it was.
	if err := os.WriteFile(out, []byte("old image"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := run(ctx, []string{"disk", "--size", "1GiB", "--force", out}, &stdout, &stderr); code != exitError {
		t.Fatalf("cancelled --force: exit %d, %s", code, stderr.String())
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "old image" {
		t.Fatalf("a cancelled --force build changed the old image: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("a cancelled build left files: %v", ents)
	}
}
