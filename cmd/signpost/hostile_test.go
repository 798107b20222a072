package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/flock"
	"github.com/updog/updog/internal/testutil"
)

// buildSignpost builds this command into a temporary directory, so that
// tests can run it as separate processes.
func buildSignpost(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		if out, gerr := exec.Command("go", "env", "GOROOT").Output(); gerr == nil {
			goTool = filepath.Join(strings.TrimSpace(string(out)), "bin", "go")
		} else {
			t.Skipf("no go tool to build signpost: %v", err)
		}
	}
	bin := filepath.Join(t.TempDir(), "signpost")
	cmd := exec.Command(goTool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// sgdiskClean runs sgdisk -v and fails unless it reports no problems. It
// reads the text, because sgdisk -v exits 0 even when it finds problems.
func sgdiskClean(t *testing.T, path string) {
	t.Helper()
	sgdisk := testutil.Tool(t, "sgdisk")
	out := testutil.Run(t, sgdisk, "-v", path)
	low := strings.ToLower(out)
	if !strings.Contains(out, "No problems found") || strings.Contains(low, "warning") ||
		strings.Contains(low, "caution") || strings.Contains(low, "error") {
		t.Fatalf("sgdisk -v reports problems:\n%s", out)
	}
}

// readClean reads the table of an image and fails unless both copies are
// valid and agree.
func readClean(t *testing.T, path string) *gptprio.Table {
	t.Helper()
	d, err := blockdev.Open(path, blockdev.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tb, err := gptprio.Read(d)
	if err != nil {
		t.Fatalf("the table is unreadable: %v", err)
	}
	if tb.RecoveredFromBackup || tb.BackupStale || tb.PrimaryProblem != nil || tb.BackupProblem != nil {
		t.Fatalf("the table has a damaged or stale copy: primary %v, backup %v, stale %v",
			tb.PrimaryProblem, tb.BackupProblem, tb.BackupStale)
	}
	return tb
}

// TestHostileTwoWriters runs two signpost processes that change the same
// image over and over (the loops of issue 8, which left both GPT copies
// damaged for good in 5 of 5 trials), while a third process keeps reading
// it. Every command must succeed, every read must see a sound table with no
// warning, and the disk must end with both copies valid and sgdisk happy.
func TestHostileTwoWriters(t *testing.T) {
	testutil.Tool(t, "sgdisk")
	bin := buildSignpost(t)
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	rounds := 200
	if testing.Short() {
		rounds = 50
	}
	writer := func(args ...string) func() error {
		return func() error {
			for i := 0; i < rounds; i++ {
				var errb bytes.Buffer
				cmd := exec.Command(bin, append([]string{"--disk", disk, "--active", "a"}, args...)...)
				cmd.Stderr = &errb
				if err := cmd.Run(); err != nil {
					return fmt.Errorf("%v, round %d: %v: %s", args, i, err, errb.String())
				}
				if errb.Len() != 0 {
					return fmt.Errorf("%v, round %d: warned: %s", args, i, errb.String())
				}
			}
			return nil
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	stop := make(chan struct{})
	for _, w := range []func() error{writer("mark-inactive-valid", "--tries", "15"), writer("clear-inactive")} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w(); err != nil {
				errs <- err
			}
		}()
	}
	reads := 0
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var out, errb bytes.Buffer
			cmd := exec.Command(bin, "--disk", disk, "--json", "status")
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			var st statusJSON
			switch {
			case err != nil:
				errs <- fmt.Errorf("status, read %d: %v: %s", reads, err, errb.String())
				return
			case errb.Len() != 0:
				errs <- fmt.Errorf("status, read %d: warned: %s", reads, errb.String())
				return
			case json.Unmarshal(out.Bytes(), &st) != nil || st.GPT.ReadFrom != "primary" || st.GPT.BackupStale:
				errs <- fmt.Errorf("status, read %d: not a clean table: %s", reads, out.String())
				return
			}
			reads++
		}
	}()
	wg.Wait()
	close(stop)
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d rounds per writer, %d reads in between", rounds, reads)
	sgdiskClean(t, disk)
	tb := readClean(t, disk)
	if a := tb.Partitions[2].Attributes; a != gptprio.Attr(0).WithPriority(1).WithSuccessful(true) {
		t.Errorf("set A's bits changed: %v", a)
	}
	if _, errs, code := sp(t, "--disk", disk, "status"); code != 0 || errs != "" {
		t.Errorf("status afterwards: exit %d, %s", code, errs)
	}
}

// holdLock holds an exclusive flock on path in another process (flock(1),
// as an operator's script would) until the test ends, and returns once the
// lock is really held.
func holdLock(t *testing.T, path string) {
	t.Helper()
	flockTool := testutil.Tool(t, "flock")
	cmd := exec.Command(flockTool, "--exclusive", path, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := flock.Lock(context.Background(), f, flock.Shared, 0)
		if errors.Is(err, flock.ErrLocked) {
			return
		}
		if err == nil {
			flock.Unlock(f)
		}
		if time.Now().After(deadline) {
			t.Fatal("flock(1) never took the lock")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHostileLockHeldByAnotherProcess: while another process holds the
// disk's lock, a writer (and a reader) gives up after the bounded wait with
// a clear message, and the disk is unchanged.
func TestHostileLockHeldByAnotherProcess(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	before := gptRegions(t, disk)
	holdLock(t, disk)
	for _, args := range [][]string{
		{"--active", "a", "clear-inactive"},
		{"--active", "a", "mark-inactive-valid"},
		{"next"},
		{"status"},
	} {
		_, errs, code := sp(t, append([]string{"--disk", disk, "--lock-wait", "200ms"}, args...)...)
		if code != exitError || !strings.Contains(errs, "locked by another process") || !strings.Contains(errs, "200ms") {
			t.Errorf("%v with the lock held elsewhere: exit %d, %q", args, code, errs)
		}
	}
	_, errs, code := sp(t, "--disk", disk, "--lock-wait", "0", "--active", "a", "clear-inactive")
	if code != exitError || !strings.Contains(errs, "locked by another process") {
		t.Errorf("--lock-wait 0: exit %d, %q", code, errs)
	}
	if !bytes.Equal(before, gptRegions(t, disk)) {
		t.Fatal("the disk changed while another process held its lock")
	}
}

// TestHostileSignalWhileWaitingForLock: SIGTERM (and SIGINT) stop a signpost
// that waits for a lock, at once and cleanly: it exits 1 saying why, and
// writes nothing.
func TestHostileSignalWhileWaitingForLock(t *testing.T) {
	bin := buildSignpost(t)
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	before := gptRegions(t, disk)
	holdLock(t, disk)
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		var errb bytes.Buffer
		cmd := exec.Command(bin, "--disk", disk, "--lock-wait", "10m", "--active", "a", "clear-inactive")
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Once the process has the disk open it is past signal setup and
		// waiting for the lock.
		waitForOpen(t, cmd.Process.Pid, disk)
		cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitError || !strings.Contains(errb.String(), "stopped while waiting for the lock") {
				t.Errorf("%v: %v, stderr %q; want exit 1 saying it stopped while waiting", sig, err, errb.String())
			}
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("%v: signpost ignored the signal", sig)
		}
	}
	if !bytes.Equal(before, gptRegions(t, disk)) {
		t.Fatal("the disk changed")
	}
}

// waitForOpen waits until process pid has path open.
func waitForOpen(t *testing.T, pid int, path string) {
	t.Helper()
	want, _ := filepath.EvalSymlinks(path)
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && target == want {
				return
			}
		}
	}
	t.Fatalf("process %d never opened %s", pid, path)
}

// TestHostileSpecialFilesAsDisk gives a FIFO, a directory and a character
// device as --disk: each fails at once with a clear error (a FIFO used to
// hang signpost for ever, deaf to SIGINT).
func TestHostileSpecialFilesAsDisk(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	for _, c := range []struct{ path, what string }{
		{fifo, "FIFO"}, {dir, "directory"}, {"/dev/zero", "character device"},
	} {
		for _, args := range [][]string{{"status"}, {"--active", "a", "clear-inactive"}, {"next"}} {
			type res struct {
				errs string
				code int
			}
			done := make(chan res, 1)
			go func() {
				_, errs, code := sp(t, append([]string{"--disk", c.path}, args...)...)
				done <- res{errs, code}
			}()
			select {
			case r := <-done:
				if r.code != exitError || !strings.Contains(r.errs, c.what) {
					t.Errorf("%s %v: exit %d, %q; want exit 1 naming a %s", c.path, args, r.code, r.errs, c.what)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("signpost --disk %s %v hangs", c.path, args)
			}
		}
	}
}

// fakeHostOnB fakes a running host whose root (dm-0, dm-verity) is over
// partition 9 (ROOT-B) of nvme0n1, whose device node is our image.
func fakeHostOnB(t *testing.T) (root, disk string, host func() (uint32, uint32, error)) {
	t.Helper()
	root = t.TempDir()
	rel := "devices/pci0000:00/nvme0/nvme0n1"
	for _, dir := range []string{"dev", "sys/" + rel + "/nvme0n1p9", "sys/devices/virtual/block/dm-0/dm",
		"sys/devices/virtual/block/dm-0/slaves/nvme0n1p9", "sys/class/block", "sys/dev/block"} {
		os.MkdirAll(filepath.Join(root, dir), 0o755)
	}
	os.WriteFile(filepath.Join(root, "sys", rel, "nvme0n1p9", "partition"), []byte("9\n"), 0o644)
	os.Symlink("../../"+rel+"/nvme0n1p9", filepath.Join(root, "sys/class/block/nvme0n1p9"))
	os.Symlink("../../devices/virtual/block/dm-0", filepath.Join(root, "sys/dev/block/253:0"))
	disk = newImage(t, filepath.Join(root, "dev", "nvme0n1"), 512)
	return root, disk, func() (uint32, uint32, error) { return 253, 0, nil }
}

// TestHostileActiveContradictsHost: on a host booted from B, an operator's
// --active a would make signpost treat the running set B as inactive (and
// clear-inactive would zero its bits). It is refused as a usage error, and
// nothing is written; the true --active b is accepted.
func TestHostileActiveContradictsHost(t *testing.T) {
	root, disk, host := fakeHostOnB(t)
	before := gptRegions(t, disk)
	for _, args := range [][]string{
		{"--active", "a", "clear-inactive"},
		{"--disk", disk, "--active", "a", "clear-inactive"},
		{"--active", "a", "mark-successful-boot"},
		{"--active", "a", "status"},
	} {
		var out, errb bytes.Buffer
		code := runWith(context.Background(), args, &out, &errb, root, host)
		if code != exitUsage || !strings.Contains(errb.String(), "partition 9, in set b") {
			t.Errorf("%v on a host booted from b: exit %d, %q", args, code, errb.String())
		}
	}
	if !bytes.Equal(before, gptRegions(t, disk)) {
		t.Fatal("a refused command changed the disk")
	}
	var out, errb bytes.Buffer
	if code := runWith(context.Background(), []string{"--active", "b", "--json", "clear-inactive"}, &out, &errb, root, host); code != 0 {
		t.Fatalf("--active b on a host booted from b: exit %d, %s", code, errb.String())
	}
	var res editResult
	json.Unmarshal(out.Bytes(), &res)
	if len(res.Changes) != 1 || res.Changes[0].Partition != 3 || !res.Status.OnHost {
		t.Fatalf("clear-inactive from b changes partition 3 only: %+v", res)
	}
}

// bootloaderPick is the rule of GRUB's gptprio.next, written out on its
// own for the tests: over every partition of the BOOT type, in table
// order, the highest priority among those with tries left or marked
// successful; 0 when none qualifies.
func bootloaderPick(tb *gptprio.Table) int {
	best, bestPrio := 0, 0
	for _, p := range tb.Partitions {
		if p.Type != gptprio.TypeBoot {
			continue
		}
		a := uint64(p.Attributes)
		prio, tries, ok := int(a>>48&0xf), int(a>>52&0xf), a>>56&1 == 1
		if (tries > 0 || ok) && prio > bestPrio {
			best, bestPrio = p.Number, prio
		}
	}
	return best
}

// threeSetImage is a Bottlerocket disk with a third BOOT/ROOT/HASH set
// after the usual partitions, BOOT-C at priority 15 and successful.
func threeSetImage(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	const size = 512 << 20
	os.WriteFile(path, nil, 0o644)
	os.Truncate(path, size)
	d, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	plan, err := image.BottlerocketPlan(400 << 20)
	if err != nil {
		t.Fatal(err)
	}
	plan = append(plan,
		image.PartSpec{Name: "BOTTLEROCKET-BOOT-C", Type: gptprio.TypeBoot, Bytes: 20 << 20,
			Attr: gptprio.Attr(0).WithPriority(15).WithSuccessful(true)},
		image.PartSpec{Name: "BOTTLEROCKET-ROOT-C", Type: gptprio.TypeRoot, Bytes: 40 << 20},
		image.PartSpec{Name: "BOTTLEROCKET-HASH-C", Type: gptprio.TypeHash, Bytes: 10 << 20})
	if _, err := image.CreateDisk(d, plan, gptprio.GUID{3}); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestHostileThirdSet: a disk with a third set is not silently treated as
// an A/B disk. `signpost next` picks what the bootloader picks (BOOT-C),
// status names the three sets, and the A/B state changes are refused.
func TestHostileThirdSet(t *testing.T) {
	disk := threeSetImage(t)
	tb := readClean(t, disk)
	want := bootloaderPick(tb)
	if want != 14 {
		t.Fatalf("test setup: the bootloader rule picks partition %d, want 14 (BOOT-C)", want)
	}
	st := status(t, disk)
	if strings.Join(st.SetNames, ",") != "a,b,c" || st.Sets["c"].Boot != 14 || st.Next == nil || *st.Next != "c" {
		t.Errorf("status of a three-set disk: sets %v %+v, next %v", st.SetNames, st.Sets, st.Next)
	}
	out, _, code := sp(t, "--disk", disk, "status")
	if code != 0 || !strings.Contains(out, "Sets:    3 (A, B, C)") || !strings.Contains(out, "Set C:") {
		t.Errorf("status text does not name the three sets: %s", out)
	}
	for _, args := range [][]string{
		{"--active", "a", "clear-inactive"},
		{"--active", "a", "mark-inactive-valid"},
		{"--active", "a", "upgrade-to-inactive"},
		{"--active", "b", "cancel-upgrade"},
		{"--active", "a", "rollback-to-inactive"},
		{"--active", "a", "mark-successful-boot"},
	} {
		_, errs, code := sp(t, append([]string{"--disk", disk}, args...)...)
		if code != exitError || !strings.Contains(errs, "more than two partition sets") {
			t.Errorf("%v on a three-set disk: exit %d, %q", args, code, errs)
		}
	}
	if got := readClean(t, disk); !bytes.Equal(attrsOf(got), attrsOf(tb)) {
		t.Fatal("a refused command changed the disk")
	}
	// next plays the bootloader: it agrees with the rule at every step, as
	// tries are used up and sets fall back.
	d, _ := blockdev.Open(disk, blockdev.Options{})
	cur, _ := gptprio.Read(d)
	cur.Partitions[13].Attributes = gptprio.Attr(0).WithPriority(15).WithTries(2) // C: two tries, not successful
	cur.Partitions[7].Attributes = gptprio.Attr(0).WithPriority(3).WithTries(1)   // B: one try
	if err := gptprio.Write(d, cur); err != nil {
		t.Fatal(err)
	}
	d.Close()
	for i := 0; i < 5; i++ {
		tb := readClean(t, disk)
		want := bootloaderPick(tb)
		out, errs, code := sp(t, "--disk", disk, "--json", "next")
		if code != 0 {
			t.Fatalf("next %d: exit %d, %s", i, code, errs)
		}
		var res struct {
			Next      string `json:"next"`
			Partition int    `json:"partition"`
		}
		json.Unmarshal([]byte(out), &res)
		if res.Partition != want {
			t.Fatalf("next %d: signpost boots partition %d (set %s), the bootloader rule partition %d", i, res.Partition, res.Next, want)
		}
	}
}

func attrsOf(tb *gptprio.Table) []byte {
	var b []byte
	for _, p := range tb.Partitions {
		b = fmt.Appendf(b, "%016x", uint64(p.Attributes))
	}
	return b
}
