package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/testutil"
)

// buildInputs makes a kernel and a small root tree in dir and returns the
// flags naming them.
func buildInputs(t *testing.T, dir string) []string {
	t.Helper()
	testutil.Tool(t, "mke2fs")
	os.WriteFile(filepath.Join(dir, "vmlinuz"), bytes.Repeat([]byte("kernel"), 10000), 0o644)
	os.MkdirAll(filepath.Join(dir, "rootfs", "etc"), 0o755)
	os.WriteFile(filepath.Join(dir, "rootfs", "etc", "os-release"), []byte("VERSION_ID=1.0.0\n"), 0o644)
	return []string{"build", "--kernel", filepath.Join(dir, "vmlinuz"), "--rootfs", filepath.Join(dir, "rootfs"),
		"--variant", "test", "--arch", "x86_64", "--version", "1.0.0", "--size", "256MiB"}
}

func TestBuildCommand(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	dir := t.TempDir()
	args := buildInputs(t, dir)
	out := filepath.Join(dir, "out")
	stdout, errs, code := ib(append(args, "--json", "--out", out)...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var res struct {
		Dir     string        `json:"dir"`
		Files   []string      `json:"files"`
		Release image.Release `json:"release"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	// The disk, three artifacts, the two delta artifacts, release.json.
	if res.Dir != out || len(res.Files) != 7 || res.Release.SourceDateEpoch != 1700000000 || res.Release.Disk == nil {
		t.Fatalf("result %+v", res)
	}
	for _, f := range res.Files {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	// The text output names the partitions, the artifacts and the next step.
	out2 := filepath.Join(dir, "out2")
	stdout, errs, code = ib(append(args, "--no-disk", "--no-delta", "--compress", "lz4", "--out", out2)...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if ents, _ := os.ReadDir(out2); len(ents) != 4 {
		t.Errorf("--no-disk --no-delta made %d files", len(ents))
	}
	for _, want := range []string{"BOTTLEROCKET-ROOT-A", "-root.ext4.lz4", "add-update MANIFEST --from-release " + out2 + "/release.json"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

// TestBuildCommandPartitionPlan: build's disk ends with the unified plan's
// DATA partition, printed with its size like the others (a sixteenth of
// 256 MiB, plus the MiB the ROOT partitions' halving leaves); with
// --partition-plan split, the 1 MiB placeholder of Bottlerocket's OS disk;
// an unknown plan is a usage error.
func TestBuildCommandPartitionPlan(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	dir := t.TempDir()
	args := buildInputs(t, dir)
	stdout, errs, code := ib(append(args, "--no-delta", "--out", filepath.Join(dir, "unified"))...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !regexp.MustCompile(`(?m)^  13  BOTTLEROCKET-DATA +17\.0 MiB$`).MatchString(stdout) ||
		!regexp.MustCompile(`(?m)^   4  BOTTLEROCKET-ROOT-A +16\.0 MiB `).MatchString(stdout) {
		t.Errorf("the unified plan's partitions:\n%s", stdout)
	}
	tb := readTable(t, filepath.Join(dir, "unified", "updog-test-x86_64-1.0.0.img"))
	if p := tb.Partition(13); p == nil || p.Type != image.TypeData || p.ID != image.DataPartitionID || p.Name() != image.DataLabel {
		t.Errorf("partition 13: %+v", p)
	}
	stdout, errs, code = ib(append(args, "--no-delta", "--partition-plan", "split", "--out", filepath.Join(dir, "split"))...)
	if code != exitOK {
		t.Fatalf("split: exit %d: %s", code, errs)
	}
	if !regexp.MustCompile(`(?m)^  13  \(marker\) +1\.0 MiB$`).MatchString(stdout) || strings.Contains(stdout, "BOTTLEROCKET-DATA") {
		t.Errorf("the split plan's partitions:\n%s", stdout)
	}
	if _, errs, code := ib(append(args, "--partition-plan", "mixed", "--out", filepath.Join(dir, "bad"))...); code != exitUsage || !strings.Contains(errs, "mixed") {
		t.Errorf("--partition-plan mixed: exit %d: %s", code, errs)
	}
}

// TestBuildCommandErrors: flag mistakes exit 2, bad files exit 1, and
// neither leaves anything behind.
func TestBuildCommandErrors(t *testing.T) {
	dir := t.TempDir()
	args := buildInputs(t, dir)
	full := filepath.Join(dir, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	out := filepath.Join(dir, "out")
	with := func(extra ...string) []string { return append(append([]string(nil), args...), extra...) }
	for _, c := range []struct {
		name string
		args []string
		env  string
		code int
		text string
	}{
		{"no flags", []string{"build"}, "", exitUsage, "--kernel, --rootfs, --variant, --arch, --version, --out are required"},
		{"no out", with(), "", exitUsage, "--out is required"},
		{"unknown compression", with("--compress", "gzip", "--out", out), "", exitUsage, "gzip"},
		{"bad size", with("--size", "lots", "--out", out), "", exitUsage, "--size"},
		{"size too small", with("--size", "100MiB", "--out", out), "", exitUsage, "too small"},
		{"bad fs", with("--root-fs", "zfs", "--out", out), "", exitUsage, "zfs"},
		{"bad salt", with("--salt", "xyz", "--out", out), "", exitUsage, "--salt"},
		{"bad guid", with("--disk-guid", "nope", "--out", out), "", exitUsage, "--disk-guid"},
		{"bad epoch", with("--out", out), "yesterday", exitUsage, "SOURCE_DATE_EPOCH"},
		{"stray argument", with("--out", out, "extra"), "", exitUsage, "extra"},
		{"missing kernel", with("--kernel", filepath.Join(dir, "nope"), "--out", out), "", exitError, "kernel"},
		{"out not empty", with("--out", full), "", exitError, "not empty"},
		{"help", []string{"build", "--help"}, "", exitOK, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("SOURCE_DATE_EPOCH", c.env)
			if c.env == "" {
				os.Unsetenv("SOURCE_DATE_EPOCH")
			}
			_, errs, code := ib(c.args...)
			if code != c.code || !strings.Contains(errs, c.text) {
				t.Fatalf("exit %d (%s), want %d mentioning %q", code, errs, c.code, c.text)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 3 {
				t.Errorf("files left: %v", ents)
			}
		})
	}
}

// TestHostileBuildSignal runs imgbuild build as a process and sends it
// SIGTERM (then, separately, SIGINT) while mke2fs is filling the root file
// system: it exits 1 saying it was interrupted, mke2fs is gone, and
// nothing is left: no output, no temporary directory.
func TestHostileBuildSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	dir := t.TempDir()
	args := buildInputs(t, dir)
	// Enough files that mke2fs takes a while.
	for i := 0; i < 20000; i++ {
		p := filepath.Join(dir, "rootfs", fmt.Sprintf("d%d", i%50), fmt.Sprintf("f%d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o644)
	}
	bin := filepath.Join(t.TempDir(), "imgbuild")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		out := filepath.Join(dir, "out")
		cmd := exec.Command(bin, append(args, "--size", "2GiB", "-v", "--out", out)...)
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1")
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		var log strings.Builder
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "making the root file system") {
				time.Sleep(200 * time.Millisecond) // mke2fs is running
				cmd.Process.Signal(sig)
				break
			}
		}
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
		}
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitError || !strings.Contains(log.String(), "interrupted") {
			t.Fatalf("%v: %v\n%s", sig, err, log.String())
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 2 {
			t.Errorf("%v: left behind: %v", sig, ents)
		}
		if procs := processesNaming(dir); len(procs) > 0 {
			t.Errorf("%v: still running: %v", sig, procs)
		}
	}
}

// processesNaming lists the command lines of processes that mention s.
func processesNaming(s string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) && !bytes.Contains(b, []byte("go test")) {
			out = append(out, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// readTable reads a disk image's GPT.
func readTable(t *testing.T, disk string) *gptprio.Table {
	t.Helper()
	d, err := blockdev.Open(disk, blockdev.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := gptprio.Read(d)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestDiskPartitionPlan: imgbuild disk writes the split plan unless asked
// for the unified one, whose last partition is DATA; sgdisk finds no
// problem with either.
func TestDiskPartitionPlan(t *testing.T) {
	dir := t.TempDir()
	sgdisk := testutil.Tool(t, "sgdisk")
	for plan, want := range map[string]string{"": "", "split": "", "unified": "BOTTLEROCKET-DATA"} {
		out := filepath.Join(dir, "disk-"+plan+".img")
		args := []string{"disk", "--size", "1GiB", "--json"}
		if plan != "" {
			args = append(args, "--partition-plan", plan)
		}
		stdout, errs, code := ib(append(args, out)...)
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", plan, code, errs)
		}
		var res struct {
			Partitions []struct {
				Name string `json:"name"`
				Type string `json:"type_guid"`
			} `json:"partitions"`
		}
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			t.Fatal(err)
		}
		last := res.Partitions[len(res.Partitions)-1]
		if len(res.Partitions) != 13 || last.Name != want || last.Type != image.TypeData.String() {
			t.Errorf("%q: partitions %+v", plan, res.Partitions)
		}
		if v := testutil.Run(t, sgdisk, "-v", out); !strings.Contains(v, "No problems found") {
			t.Errorf("%q: sgdisk -v: %s", plan, v)
		}
	}
	if _, errs, code := ib("disk", "--partition-plan", "both", filepath.Join(dir, "bad.img")); code != exitUsage || !strings.Contains(errs, "both") {
		t.Errorf("--partition-plan both: exit %d: %s", code, errs)
	}
}
