// Package demotest runs make demo's script, scripts/demo.sh, as a test: the
// whole story from a root file system to a host that updated, booted the
// new release, marked it good and rolled back, with every step's result
// checked. It has no code of its own.
package demotest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/testutil"
)

// demoGoal is how long the demo may take (the issue asks for under two
// minutes); it takes well under one on two cores. Under CI a slower demo
// fails; elsewhere the time is only reported. demoLimit bounds a demo that
// hangs.
const (
	demoGoal  = 2 * time.Minute
	demoLimit = 5 * time.Minute
)

// TestDemo runs scripts/demo.sh in a temporary directory with freshly
// built binaries, then checks what each step printed, that the steps ran
// in order, and the state the demo leaves: the disk's partition table and
// contents, updog's status, the published repository, and that the
// repository server it started is gone.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo builds every binary and two releases")
	}
	for _, tool := range []string{"bash", "mke2fs", "debugfs", "sfdisk", "zstd", "python3"} {
		testutil.Tool(t, tool)
	}
	root := testutil.ProjectRoot()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/...")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build: bootsel is an initramfs's /init
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "demo")
	ctx, cancel := context.WithTimeout(context.Background(), demoLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "demo.sh"))
	cmd.Env = append(os.Environ(), "BIN="+bin, "DEMO_DIR="+dir, "DEMO_SKIP_DEPS=1", "PATH="+os.Getenv("PATH")+":/usr/sbin:/sbin")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so a timeout kills the server too
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	log := out.String()
	if err != nil {
		t.Fatalf("demo.sh: %v (after %v)\n%s", err, took.Round(time.Second), log)
	}
	t.Logf("the demo took %v (the goal: under %v)", took.Round(100*time.Millisecond), demoGoal)
	if took > demoGoal {
		if testutil.InCI() {
			t.Errorf("the demo took %v, more than %v", took.Round(100*time.Millisecond), demoGoal)
		} else {
			t.Logf("the demo took more than %v: under CI this is a failure", demoGoal)
		}
	}

	// Every command a user types, in order, each followed by its result.
	arch := runtime.GOARCH
	if arch == "amd64" {
		arch = "x86_64"
	} else if arch == "arm64" {
		arch = "aarch64"
	}
	steps := []struct{ cmd, result string }{
		{"$ imgbuild build --kernel inputs/vmlinuz --rootfs inputs/rootfs-1.0.0 --variant demo", "set A holds 1.0.0"},
		{"$ imgbuild build --kernel inputs/vmlinuz --rootfs inputs/rootfs-1.1.0", "no disk image (--no-disk)"},
		{"$ debugfs -R 'cat /boot.conf' boot-1.0.0.ext4", "cmdline=root=/dev/dm-0"},
		{"$ tuftool gen-key --type ed25519 --out keys/timestamp.pem", ""},
		{"$ tuftool root sign root.json -k keys/root.pem", ""},
		{"$ updata init manifest.json", "created manifest.json"},
		{"$ updata add-update manifest.json --from-release build-1.0.0/release.json", "added demo " + arch + " 1.0.0"},
		{"$ updata add-update manifest.json --from-release build-1.1.0/release.json", "added demo " + arch + " 1.1.0"},
		{"$ updata set-waves manifest.json --variant demo", "set 3 waves"},
		{"$ updata validate manifest.json", "is valid: 2 release(s)"},
		{"$ tuftool create --root root.json", "11 target(s)"},
		{"$ python3 -m http.server --bind 127.0.0.1", "serving on http://127.0.0.1:"},
		{"$ updog --config updog.toml --disk disk.img --active a check-update", "demo 1.1.0"},
		{"$ updog --config updog.toml --disk disk.img --active a update", "wrote and verified demo " + arch + " 1.1.0 in set B"},
		{"$ signpost --disk disk.img next", "\nb\n"},
		{"$ updog --config updog.toml --disk disk.img --active b mark-good", "set B marked good"},
		{"$ updog --config updog.toml --disk disk.img --active b status", "Running:  demo " + arch + " 1.1.0"},
		{"$ updog --config updog.toml --disk disk.img --active b rollback", "rolled back"},
		{"$ updog --config updog.toml --disk disk.img --active b status", "Next:     set A"},
		{"$ signpost --disk disk.img --active b status", "Next:    Set A"},
		{"Everything is in " + dir, "To boot the disk image with QEMU"},
	}
	rest := log
	for _, s := range steps {
		i := strings.Index(rest, s.cmd)
		if i < 0 {
			t.Fatalf("step %q is missing or out of order; the demo printed:\n%s", s.cmd, log)
		}
		rest = rest[i+len(s.cmd):]
		next := strings.Index(rest, "\n$ ")
		if next < 0 {
			next = len(rest)
		}
		if !strings.Contains(rest[:next], s.result) {
			t.Errorf("step %q: its output lacks %q:\n%s", s.cmd, s.result, rest[:next])
		}
	}
	checkBootAdvice(t, log, dir, arch)
	if strings.Contains(log, "is not set") {
		t.Error("the demo builds are not reproducible: SOURCE_DATE_EPOCH was not set")
	}

	// The disk: set A boots next (the rollback), B holds 1.1.0 and is good.
	disk := filepath.Join(dir, "disk.img")
	d, err := gptprio.OpenDisk(context.Background(), disk, gptprio.OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, l, err := d.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a, b := gptprio.Attrs(tb, l, gptprio.SetA), gptprio.Attrs(tb, l, gptprio.SetB)
	if next, err := gptprio.Next(tb); err != nil || next != gptprio.SetA || !a.Successful() || !b.Successful() || a.Priority() <= b.Priority() {
		t.Errorf("final table: next %v %v, A %v, B %v", next, err, a, b)
	}
	// Set B's partitions hold 1.1.0's images, byte for byte; set A 1.0.0's.
	rel11 := readRelease(t, filepath.Join(dir, "build-1.1.0", image.ReleaseFileName))
	rel10 := readRelease(t, filepath.Join(dir, "build-1.0.0", image.ReleaseFileName))
	for _, c := range []struct {
		set  gptprio.Set
		rel  *image.Release
		from string
	}{{gptprio.SetB, rel11, "build-1.1.0"}, {gptprio.SetA, rel10, "build-1.0.0"}} {
		parts := l.Sets[c.set]
		for n, a := range map[int]image.Artifact{parts.Boot: c.rel.Images.Boot, parts.Root: c.rel.Images.Root, parts.Hash: c.rel.Images.Hash} {
			want := artifactSum(t, filepath.Join(dir, c.from, a.Target))
			p := tb.Partition(n)
			got := sha256.New()
			io.Copy(got, io.NewSectionReader(d.Device(), int64(p.FirstLBA)*int64(tb.SectorSize), a.Size))
			if !bytes.Equal(got.Sum(nil), want) {
				t.Errorf("set %v partition %d does not hold %s", c.set, n, a.Target)
			}
		}
	}

	// updog's own account agrees.
	st := exec.Command(filepath.Join(bin, "updog"), "--config", "updog.toml", "--disk", "disk.img", "--active", "b", "--json", "status")
	st.Dir = dir
	sj, err := st.Output()
	if err != nil {
		t.Fatalf("updog status: %v", err)
	}
	var status struct {
		Active, Next string
		Running      struct{ Version string }
		Sets         map[string]struct {
			Holds *struct {
				Version  string
				Verified bool
			}
		}
		LastAttempt struct{ Action, Outcome string } `json:"last_attempt"`
	}
	if err := json.Unmarshal(sj, &status); err != nil {
		t.Fatal(err)
	}
	if status.Active != "b" || status.Next != "a" || status.Running.Version != "1.1.0" || status.Sets["b"].Holds == nil ||
		status.Sets["b"].Holds.Version != "1.1.0" || !status.Sets["b"].Holds.Verified || status.LastAttempt.Action != "rollback" ||
		status.LastAttempt.Outcome != "success" {
		t.Errorf("updog status: %s", sj)
	}
	// The published repository and the built files are where the demo says.
	for _, p := range []string{"repo/metadata/timestamp.json", "repo/targets", "root.json", "manifest.json", "keys/root.pem",
		"build-1.0.0/updog-demo-" + arch + "-1.0.0.img"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
	// The repository server was stopped.
	if procs := processesNaming(dir); len(procs) > 0 {
		t.Errorf("still running after the demo: %v", procs)
	}
}

// checkBootAdvice checks how the demo ends: the QEMU command line that
// boots the disk image through the boot chain (Debian's kernel and
// bootsel's initramfs, the image as a virtio disk) and, when the machine
// has no Debian kernel with its modules, what is missing; when it has,
// the initramfs was built and both releases' BOOT file systems carry it.
func checkBootAdvice(t *testing.T, log, dir, arch string) {
	t.Helper()
	i := strings.LastIndex(log, "Everything is in "+dir)
	if i < 0 {
		t.Fatal("the demo did not say where everything is")
	}
	end := log[i:]
	cmdline := ""
	if j := strings.Index(end, "\n  qemu-system-"+arch+" "); j >= 0 {
		cmdline = end[j+3:]
		if k := strings.Index(cmdline, "\n("); k >= 0 {
			cmdline = cmdline[:k]
		}
		cmdline = strings.Join(strings.Fields(strings.ReplaceAll(cmdline, "\\\n", " ")), " ")
	}
	for _, want := range []string{
		"-kernel " + filepath.Join(dir, "inputs", "vmlinuz") + " ",
		"-initrd " + filepath.Join(dir, "inputs", "initrd.img") + " ",
		"-append console=ttyS0 ",
		"-drive file=" + filepath.Join(dir, "build-1.0.0", "updog-demo-"+arch+"-1.0.0.img") + ",format=raw,if=virtio",
	} {
		if !strings.Contains(cmdline+" ", want) {
			t.Errorf("the QEMU command the demo ends with (%q) lacks %q; the demo ended:\n%s", cmdline, want, end)
		}
	}
	if strings.Contains(log, "(kernel: Debian's ") && !strings.Contains(log, "no initramfs:") {
		if !strings.Contains(end, "Boot it:") {
			t.Errorf("with Debian's kernel, the demo does not say the image boots:\n%s", end)
		}
		if _, err := os.Stat(filepath.Join(dir, "inputs", "initrd.img")); err != nil {
			t.Errorf("the initramfs the QEMU command names: %v", err)
		}
		for _, v := range []string{"1.0.0", "1.1.0"} {
			if !strings.Contains(log, "$ imgbuild build --kernel inputs/vmlinuz --initrd inputs/initrd.img --rootfs inputs/rootfs-"+v) {
				t.Errorf("release %s was not built with the initramfs", v)
			}
		}
	} else if !strings.Contains(end, "This machine lacks what booting needs: ") {
		t.Errorf("without Debian's kernel and its modules, the demo does not say what booting needs:\n%s", end)
	}
}

func readRelease(t *testing.T, p string) *image.Release {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	r, err := image.ParseRelease(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// artifactSum is the sha256 of a zstd artifact's decompressed bytes.
func artifactSum(t *testing.T, p string) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	h := sha256.New()
	if _, err := io.Copy(h, zr); err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil)
}

// processesNaming lists the command lines of processes that mention s.
func processesNaming(s string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(s)) {
			out = append(out, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}
