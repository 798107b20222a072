package updater

// Hostile-user and reviewer cases (the review of updater): special files,
// tampered state, two updogs, crafted tables, lying servers, health checks
// that misbehave. Tests that fail name the defect in their comment.

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
)

// hostileUpdater is f.updater with another configuration (and its own
// lock), for a second updog.
func (f *fixture) updaterWith(cfg *Config, active string) *Updater {
	f.t.Helper()
	u, err := New(Options{Config: cfg, Disk: f.disk, Active: active, Now: func() time.Time { return f.now },
		Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }, Retries: 3}})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(u.Unlock)
	return u
}

// script writes an executable shell script.
func script(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHostileHealthCheckFloodBounded: a health check that prints without
// end is kept to maxCheckOutput bytes.
//
// DEFECT (fails now): limitedBuffer embeds bytes.Buffer, so it has
// Buffer's ReadFrom; os/exec copies the check's output with io.Copy, which
// prefers ReadFrom, and the 64 KiB bound in Write is never used: 1 GB of
// output costs updog 2 GB of memory, and all of it lands in the report
// (and in mark-good --json).
func TestHostileHealthCheckFloodBounded(t *testing.T) {
	t.Parallel()
	p := script(t, t.TempDir(), "flood", "head -c 8388608 /dev/zero; exit 0")
	r := runCheck(context.Background(), p, 30*time.Second)
	if !r.OK {
		// Draining 8 MiB into an unbounded buffer can outlast WaitDelay
		// (2 s) on a loaded machine: then even this check fails.
		t.Logf("the check failed: %s", r.Error)
	}
	if max := maxCheckOutput + 64; len(r.Output) > max { // the output and a short note of what was cut
		t.Fatalf("kept %d bytes of a check's output, the bound is %d", len(r.Output), max)
	}
}

// TestHostileHealthCheckLeavesChild: a check that starts something in the
// background and exits 0 leaves a process holding its output open.
//
// DEFECT (fails now): the check's verdict is "exec: WaitDelay expired
// before I/O complete" (a check that passed fails mark-good, so a good
// release is rolled back at the next boot), and the background process is
// left running: nothing kills the check's process group once it exits.
func TestHostileHealthCheckLeavesChild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	p := script(t, dir, "bg", fmt.Sprintf("echo $$ > %s\nsleep 60 &\necho started\nexit 0", pidFile))
	r := runCheck(context.Background(), p, 30*time.Second)
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	var pgid int
	fmt.Sscan(strings.TrimSpace(string(b)), &pgid)
	t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
	if groupAlive(pgid) {
		t.Errorf("the check's process group %d still has processes after the check ended", pgid)
	}
	if !r.OK {
		t.Errorf("a check that exited 0 failed: %q", r.Error)
	}
}

// TestHostileHealthCheckIgnoresSIGTERM: a check that ignores SIGTERM and
// SIGINT is killed with its whole group when updog is interrupted, and
// mark-good fails (the set stays unmarked).
func TestHostileHealthCheckIgnoresSIGTERM(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	p := script(t, dir, "stubborn", fmt.Sprintf("trap '' TERM INT\necho $$ > %s\nsleep 60 &\nsleep 60\nwait", pidFile))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan CheckResult, 1)
	go func() { done <- runCheck(ctx, p, time.Hour) }()
	for i := 0; ; i++ {
		if _, err := os.Stat(pidFile); err == nil {
			break
		}
		if i > 2000 {
			t.Fatal("the check never started")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	var r CheckResult
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("runCheck did not return after its context was cancelled")
	}
	if r.OK {
		t.Fatal("an interrupted check passed")
	}
	b, _ := os.ReadFile(pidFile)
	var pgid int
	fmt.Sscan(strings.TrimSpace(string(b)), &pgid)
	if groupAlive(pgid) {
		syscall.Kill(-pgid, syscall.SIGKILL)
		t.Fatal("processes of the interrupted check are still running")
	}
}

// fakeHostFor makes a sysfs tree whose root filesystem (dm-0) is over
// partition rootPart of disk "sdx", a symbolic link to disk: OpenDisk then
// treats the image file as the running system's disk, and the active set
// comes from "/sys", as on a host.
func fakeHostFor(t *testing.T, disk string, rootPart int) gptprio.HostInfo {
	t.Helper()
	root := t.TempDir()
	rel := "devices/pci0000:00/ata1/block/sdx"
	part := fmt.Sprintf("sdx%d", rootPart)
	for _, dir := range []string{"dev", "sys/" + rel + "/" + part, "sys/devices/virtual/block/dm-0/dm",
		"sys/devices/virtual/block/dm-0/slaves/" + part, "sys/class/block", "sys/dev/block"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(root, "sys", rel, part, "partition"), []byte(fmt.Sprintf("%d\n", rootPart)), 0o644)
	os.Symlink("../../"+rel+"/"+part, filepath.Join(root, "sys/class/block", part))
	os.Symlink("../../devices/virtual/block/dm-0", filepath.Join(root, "sys/dev/block/253:0"))
	if err := os.Symlink(disk, filepath.Join(root, "dev", "sdx")); err != nil {
		t.Fatal(err)
	}
	return gptprio.HostInfo{SysRoot: root, RootDevice: func() (uint32, uint32, error) { return 253, 0, nil }}
}

// TestHostileActiveLieOnHost: on the running system's disk, --active
// naming the other set is refused (the set /sys says runs is never taken
// for the inactive one), and nothing is written; without --active the
// update goes to the set that does not run.
func TestHostileActiveLieOnHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	_, l := f.table()
	host := fakeHostFor(t, f.disk, l.Sets[gptprio.SetA].Root) // running A
	before := f.snapshotActive()
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "b", Host: host, Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = u.Update(context.Background(), UpdateOptions{Apply: true})
	u.Unlock()
	var me *gptprio.ActiveMismatchError
	if !errors.Is(err, gptprio.ErrActiveMismatch) || !errors.As(err, &me) || me.Running != gptprio.SetA {
		t.Fatalf("--active b on a host running A: %v", err)
	}
	f.assertSafe(before)
	// No --active, no disk: both from the fake /sys.
	u, err = New(Options{Config: f.cfg, Host: host, Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	u.Lock(context.Background())
	defer u.Unlock()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update on the fake host: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, r)
	if after := f.snapshotActive(); after.sums[l.Sets[gptprio.SetA].Root] != before.sums[l.Sets[gptprio.SetA].Root] {
		t.Fatal("the running set was written")
	}
}

// threeSetDisk replaces the fixture's disk with a table of three
// BOOT/ROOT/HASH sets (A, B, C), each partition 1 MiB.
func threeSetDisk(t *testing.T, f *fixture) {
	t.Helper()
	const size = 64 << 20
	fh, err := os.Create(f.disk)
	if err != nil {
		t.Fatal(err)
	}
	fh.Truncate(size)
	fh.Close()
	tb, err := gptprio.New(size, 512, gptprio.MustParseGUID("11111111-2222-4333-8444-555555555555"))
	if err != nil {
		t.Fatal(err)
	}
	lba := uint64(2048)
	for i, typ := range []gptprio.GUID{gptprio.TypeBoot, gptprio.TypeRoot, gptprio.TypeHash, gptprio.TypeBoot, gptprio.TypeRoot,
		gptprio.TypeHash, gptprio.TypeBoot, gptprio.TypeRoot, gptprio.TypeHash} {
		p := &tb.Partitions[i]
		p.Type = typ
		p.ID = gptprio.MustParseGUID(fmt.Sprintf("22222222-2222-4333-8444-%012d", i+1))
		p.FirstLBA, p.LastLBA = lba, lba+2047
		lba += 2048
	}
	tb.Partitions[0].Attributes = gptprio.Attr(0).WithPriority(1).WithSuccessful(true)
	tb.Partitions[6].Attributes = gptprio.Attr(0).WithPriority(2).WithSuccessful(true)
	d, err := gptprio.OpenDisk(context.Background(), f.disk, gptprio.OpenOptions{SectorSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Format(context.Background(), tb); err != nil {
		t.Fatal(err)
	}
}

// TestHostileThreeSetsRootInC: a disk with three sets whose running root
// is in the third (C). The A/B commands must refuse it with an error.
//
// DEFECT (fails now): session.dual accepts any disk with two sets or more;
// the active set is C (Set(2)), its "other" set is Set(-1), and indexing
// the layout with it panics (update, rollback).
func TestHostileThreeSetsRootInC(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	threeSetDisk(t, f)
	host := fakeHostFor(t, f.disk, 8) // ROOT-C
	for _, cmd := range []string{"update", "rollback", "update-revert", "status"} {
		t.Run(cmd, func(t *testing.T) {
			u, err := New(Options{Config: f.cfg, Disk: f.disk, Host: host, Now: func() time.Time { return f.now }})
			if err != nil {
				t.Fatal(err)
			}
			if err := u.Lock(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer u.Unlock()
			var cerr error
			func() {
				defer func() {
					if p := recover(); p != nil {
						cerr = fmt.Errorf("panic: %v", p)
					}
				}()
				switch cmd {
				case "update":
					_, cerr = u.Update(context.Background(), UpdateOptions{Apply: true})
				case "rollback":
					cerr = u.Rollback(context.Background(), false)
				case "update-revert":
					cerr = u.Revert(context.Background())
				case "status":
					_, cerr = u.Status(context.Background())
				}
			}()
			switch {
			case cmd == "status" && cerr != nil:
				t.Fatalf("status of a three-set disk: %v", cerr)
			case cmd != "status" && (cerr == nil || strings.HasPrefix(cerr.Error(), "panic")):
				t.Fatalf("%s with the running root in set C: %v", cmd, cerr)
			}
		})
	}
}

// TestHostileTwoStateDirsOneDisk: two updogs with different state
// directories on one disk at the same time (two configurations, a
// container and the host, ...). The state lock does not see the other;
// only the disk is shared.
//
// DEFECT (fails now): nothing keeps them apart between table writes. The
// first is stopped in the middle of the root image; the second writes,
// verifies and switches to its release; the first goes on writing into
// the set the second just switched to. The host then boots a set that
// holds neither release (its boot and hash images are the second's, part
// of the root the first's).
func TestHostileTwoStateDirsOneDisk(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r1 := f.addRelease("1.1.0", nil)
	r2 := f.addRelease("1.2.0", nil)
	f.publish(repo.Options{})
	atRoot := make(chan struct{})
	resume := make(chan struct{})
	var once sync.Once
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, r1.names.Root) {
			once.Do(func() {
				close(atRoot)
				<-resume
			})
		}
		f.fileServer().ServeHTTP(w, req)
	}))
	cfg1, cfg2 := *f.cfg, *f.cfg
	cfg1.StallTimeout.Duration = time.Minute
	cfg2.StateDir = filepath.Join(f.dir, "state2")
	u1, u2 := f.updaterWith(&cfg1, "a"), f.updaterWith(&cfg2, "a")
	first := make(chan error, 1)
	go func() {
		_, err := u1.Update(context.Background(), UpdateOptions{CheckOptions: CheckOptions{Image: "1.1.0"}, Apply: true})
		first <- err
	}()
	select {
	case <-atRoot:
	case err := <-first:
		t.Fatalf("the first updog ended before its root image: %v", err)
	}
	_, err2 := u2.Update(context.Background(), UpdateOptions{Apply: true})
	close(resume)
	err1 := <-first
	t.Logf("first (1.1.0): %v; second (1.2.0): %v", err1, err2)
	tb, _ := f.table()
	next, err := gptprio.Next(tb)
	if err != nil {
		t.Fatal(err)
	}
	switch next {
	case gptprio.SetA:
	case gptprio.SetB:
		// Whoever switched, the set that boots must hold that release.
		f.assertSetHolds(gptprio.SetB, map[bool]*testRelease{true: r1, false: r2}[err1 == nil])
	}
}

// stagedTargets is the signed length and sha256 of the staged targets of a
// release, as the checkpoint records them.
func (f *fixture) targetProgress(name string) *imageProgress {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.staging, name))
	if err != nil {
		f.t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return &imageProgress{Target: name, Length: int64(len(b)), SHA256: hex.EncodeToString(sum[:])}
}

// TestHostileCheckpointClaimsDone: a checkpoint.json, edited with its
// checksum recomputed (a plain sha256, not a secret), says the boot image
// is done with 0 bytes written and the sha256 of nothing.
//
// DEFECT (fails now): a done image is taken from the checkpoint without
// any check against what was signed: the read-back compares the first
// Out (0) bytes of the boot partition with the checkpoint's own hash, so
// the set is switched to with a boot partition never written (here: all
// zeros). The manifest's signed size (images.sizes.boot) is not checked
// either on this path.
func TestHostileCheckpointClaimsDone(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	tb, l := f.table()
	refs := map[string]partRef{}
	sp := l.Sets[gptprio.SetB]
	for kind, n := range map[string]int{KindBoot: sp.Boot, KindRoot: sp.Root, KindHash: sp.Hash} {
		p := tb.Partition(n)
		refs[kind] = partRef{Number: n, FirstLBA: p.FirstLBA, LastLBA: p.LastLBA, GUID: p.ID.String()}
	}
	empty := sha256.Sum256(nil)
	boot := f.targetProgress(r.names.Boot)
	boot.Done, boot.OutSHA256 = true, hex.EncodeToString(empty[:])
	cp := &checkpoint{Release: Release{Variant: testVariant, Arch: testArch, Version: "1.1.0"}, Set: "b", Partitions: refs,
		Images: map[string]*imageProgress{KindBoot: boot, KindHash: f.targetProgress(r.names.Hash), KindRoot: f.targetProgress(r.names.Root)}}
	if err := u.store.saveCheckpoint(cp); err != nil {
		t.Fatal(err)
	}
	// Either refused, or the checkpoint discarded and the set written in
	// full: never switched to a boot partition that was not written.
	_, err := u.Update(context.Background(), UpdateOptions{Apply: true})
	tb, l = f.table()
	if a := gptprio.Attrs(tb, l, gptprio.SetB); err != nil && a.WillBoot() {
		t.Fatalf("switched to set B (%v) although the update failed: %v", a, err)
	}
	if err == nil {
		f.assertSetHolds(gptprio.SetB, r)
	}
	if st, _ := u.store.load(); err == nil && (st.LastAttempt == nil || !strings.Contains(st.LastAttempt.Note, "discarded")) {
		t.Errorf("the bad checkpoint was not reported as discarded: %+v", st.LastAttempt)
	}
}

// TestHostileStateClaimsStaged: state.json (no checksum at all) says set
// B holds 1.1.0, written and verified; set B holds nothing.
//
// DEFECT (fails now, low: it takes a tampered or restored state
// directory, or another updog writing the set, see
// TestHostileTwoStateDirsOneDisk): update-apply switches on the state's
// word alone; nothing about the set is checked again before the commit
// point (not even the cheap part: the boot and hash images' sha256, the
// hash tree against the root hash).
func TestHostileStateClaimsStaged(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	rel := Release{Variant: testVariant, Arch: testArch, Version: "1.1.0"}
	st, err := u.store.load()
	if err != nil {
		t.Fatal(err)
	}
	st.Pending = &Pending{Release: rel, Set: "b", Stage: StageWritten, StartedAt: f.now}
	st.Sets["b"] = &SetRecord{Release: rel, WrittenAt: f.now, Verified: true}
	if err := u.store.save(st); err != nil {
		t.Fatal(err)
	}
	err = u.Apply(context.Background(), false)
	tb, l := f.table()
	if a := gptprio.Attrs(tb, l, gptprio.SetB); err == nil || a.WillBoot() {
		t.Fatalf("update-apply switched to an empty set B on the state's word (%v, err %v)", a, err)
	}
}

// TestHostileTableChangedBeforeApply: after update-image, the table is
// changed (set B's ROOT partition now starts 1 MiB later, its boot bits
// untouched); update-apply must not switch to partitions other than the
// ones written and verified.
//
// DEFECT (fails now): the staged record keeps no partition extents or
// GUIDs (the checkpoint does, the SetRecord does not); the switch checks
// only the boot bits.
func TestHostileTableChangedBeforeApply(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d, err := gptprio.OpenDisk(context.Background(), f.disk, gptprio.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = d.Update(context.Background(), func(t *gptprio.Table, l gptprio.Layout) (*gptprio.Table, error) {
		p := t.Partition(l.Sets[gptprio.SetB].Root)
		p.FirstLBA += (1 << 20) / uint64(t.SectorSize)
		return t, nil
	})
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	err = u.Apply(context.Background(), false)
	tb, l := f.table()
	if a := gptprio.Attrs(tb, l, gptprio.SetB); err == nil || a.WillBoot() {
		t.Fatalf("switched to set B whose ROOT partition moved since it was verified (%v, err %v)", a, err)
	}
	if !errors.Is(err, ErrNotStaged) {
		t.Errorf("error %v does not match ErrNotStaged", err)
	}
}

// TestHostileStatusSeedStable: without seed and without a readable
// machine-id, the seed comes from the state's random host ID.
//
// DEFECT (fails now): status is read-only and a new state directory has
// no state.json yet, so every status makes up a new random host ID and
// shows another seed (and not the one check-update will then save and
// use).
func TestHostileStatusSeedStable(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cfg := *f.cfg
	cfg.Seed = nil
	cfg.MachineID = filepath.Join(f.dir, "no-machine-id")
	u, err := New(Options{Config: &cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[uint32]bool{}
	for i := 0; i < 3; i++ {
		st, err := u.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.SeedFrom != "state directory" {
			t.Fatalf("seed from %q", st.SeedFrom)
		}
		seeds[st.Seed] = true
	}
	if len(seeds) != 1 {
		t.Fatalf("three status calls showed %d different seeds", len(seeds))
	}
}

// TestHostileDamagedStateMarkGood: state.json is damaged while the host
// runs a new set not yet marked good. The health checks pass.
//
// DEFECT (fails now): mark-good refuses to run at all ("move it away to
// start afresh"), so the new set is never marked good and the next boot
// falls back to the old release, although the set is healthy: a problem
// of updog's own bookkeeping turns into a rollback. (store.load's comment
// says a damaged file is set aside as state.json.bad and reported; the
// code does not set it aside.)
func TestHostileDamagedStateMarkGood(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatal(err)
	}
	u.Unlock()
	f.holds[gptprio.SetB] = "1.1.0"
	f.reboot()
	if err := os.WriteFile(filepath.Join(f.cfg.StateDir, stateFile), []byte("{\"pending\": {\"set\": "), 0o644); err != nil {
		t.Fatal(err)
	}
	u = f.updater()
	_, err := u.MarkGood(context.Background())
	tb, l := f.table()
	if a := gptprio.Attrs(tb, l, gptprio.SetB); !a.Successful() {
		t.Fatalf("a healthy new set was not marked good because state.json is damaged: %v", err)
	}
	if _, serr := os.Stat(filepath.Join(f.cfg.StateDir, stateFile+".bad")); serr != nil {
		t.Errorf("the damaged state.json was not set aside: %v", serr)
	}
}

// TestHostileCheckpointUnusableState: a checkpoint whose restart point
// carries hash states that cannot be restored (edited, or written by an
// updog whose hash state format differs) passes every check of usable().
//
// DEFECT (fails now): the failure to restore them ("the checkpoint's
// output hash: ...", "fetch: saved sha256 state: ...") is no sentinel that
// resumableError knows, so it counts as an interruption: the checkpoint
// is kept, and every later update fails the same way, for ever (the host
// stays "installing"). The same happens with a raw image whose restart
// point has in != out.
func TestHostileCheckpointUnusableState(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		codec Codec
		edit  func(ip *imageProgress)
	}{
		{"output-state", CodecZstd, func(ip *imageProgress) {
			ip.In, ip.Out, ip.Codec = 100, 4096, CodecZstd
			ip.InState, ip.OutState = map[string][]byte{"sha256": []byte("not a state")}, []byte("not a state")
		}},
		{"input-state", CodecZstd, func(ip *imageProgress) {
			st, _ := sha256.New().(interface{ MarshalBinary() ([]byte, error) }).MarshalBinary()
			ip.In, ip.Out, ip.Codec = 100, 4096, CodecZstd
			ip.InState, ip.OutState = map[string][]byte{"sha256": []byte("not a state")}, st
		}},
		{"raw-in-out", CodecRaw, func(ip *imageProgress) {
			st, _ := sha256.New().(interface{ MarshalBinary() ([]byte, error) }).MarshalBinary()
			ip.In, ip.Out, ip.Codec = 100, 4096, CodecRaw
			ip.InState, ip.OutState = map[string][]byte{"sha256": st}, st
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.codec = c.codec
			r := f.addRelease("1.1.0", nil)
			f.publish(repo.Options{})
			u := f.updater()
			tb, l := f.table()
			refs := map[string]partRef{}
			sp := l.Sets[gptprio.SetB]
			for kind, n := range map[string]int{KindBoot: sp.Boot, KindRoot: sp.Root, KindHash: sp.Hash} {
				p := tb.Partition(n)
				refs[kind] = partRef{Number: n, FirstLBA: p.FirstLBA, LastLBA: p.LastLBA, GUID: p.ID.String()}
			}
			boot := f.targetProgress(r.names.Boot)
			c.edit(boot)
			cp := &checkpoint{Release: Release{Variant: testVariant, Arch: testArch, Version: "1.1.0"}, Set: "b", Partitions: refs,
				Images: map[string]*imageProgress{KindBoot: boot, KindHash: f.targetProgress(r.names.Hash), KindRoot: f.targetProgress(r.names.Root)}}
			if err := u.store.saveCheckpoint(cp); err != nil {
				t.Fatal(err)
			}
			_, err1 := u.Update(context.Background(), UpdateOptions{Apply: true})
			_, err2 := u.Update(context.Background(), UpdateOptions{Apply: true})
			if err2 != nil {
				t.Fatalf("the install is stuck on its checkpoint: first %v; again %v", err1, err2)
			}
			f.assertSetHolds(gptprio.SetB, r)
		})
	}
}

// lyingServer serves the fixture's repository, but answers requests for
// the root image with lie.
func lyingServer(f *fixture, root string, lie func(w http.ResponseWriter, req *http.Request, body []byte)) {
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasSuffix(req.URL.Path, root) {
			f.fileServer().ServeHTTP(w, req)
			return
		}
		f.mu.Lock()
		dir := f.repoDir
		f.mu.Unlock()
		m, _ := filepath.Glob(filepath.Join(dir, "targets", "*."+root))
		if len(m) != 1 {
			http.NotFound(w, req)
			return
		}
		body, _ := os.ReadFile(m[0])
		lie(w, req, body)
	}))
}

// TestHostileServerLies: servers that lie about lengths and ranges,
// change the object, encode it, or redirect in a loop. Each update ends
// (no hang), and when it fails it fails safe with a clear cause; a lie
// that still delivers the signed bytes is survived.
func TestHostileServerLies(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		lie  func(w http.ResponseWriter, req *http.Request, body []byte)
		// want: nil means the update succeeds.
		want []error
	}{
		{"206-without-range", func(w http.ResponseWriter, req *http.Request, body []byte) {
			// Partial content, the whole object, to a request without Range.
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)))
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body)
		}, nil},
		{"206-wrong-start", func(w http.ResponseWriter, req *http.Request, body []byte) {
			// Always the second half, whatever was asked.
			h := len(body) / 2
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", h, len(body)-1, len(body)))
			w.Header().Set("Content-Length", fmt.Sprint(len(body)-h))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body[h:])
		}, []error{}},
		{"content-length-longer", func(w http.ResponseWriter, req *http.Request, body []byte) {
			// Claims 100 bytes more than it sends (and than was signed).
			w.Header().Set("Content-Length", fmt.Sprint(len(body)+100))
			w.Write(body)
		}, []error{ErrUntrusted}},
		{"content-length-shorter", func(w http.ResponseWriter, req *http.Request, body []byte) {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)-100))
			w.Write(body[:len(body)-100])
		}, []error{ErrUntrusted}},
		{"gzip-encoding", func(w http.ResponseWriter, req *http.Request, body []byte) {
			// The signed bytes, gzip-encoded in transit (against the
			// request's Accept-Encoding: identity).
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gzipped(body))
		}, []error{ErrUntrusted}},
		{"redirect-loop", func(w http.ResponseWriter, req *http.Request, body []byte) {
			http.Redirect(w, req, req.URL.String(), http.StatusFound)
		}, []error{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			r := f.addRelease("1.1.0", nil)
			f.publish(repo.Options{})
			gzipped(mustRead(t, f.storedTarget(r.names.Root)))
			lyingServer(f, r.names.Root, c.lie)
			before := f.snapshotActive()
			u := f.updater()
			done := make(chan error, 1)
			go func() { _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); done <- err }()
			var err error
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("the update hangs")
			}
			t.Logf("%s: %v", c.name, err)
			if c.want == nil {
				if err != nil {
					t.Fatalf("update: %v", err)
				}
				f.assertSetHolds(gptprio.SetB, r)
				return
			}
			if err == nil {
				t.Fatal("the update succeeded")
			}
			for _, w := range c.want {
				if !errors.Is(err, w) {
					t.Errorf("error does not match %v", w)
				}
			}
			f.assertSafe(before)
		})
	}
}

var gzCache sync.Map

// gzipped is b gzip-encoded, made once per input (the handler must answer
// within the stall timeout, under the race detector too).
func gzipped(b []byte) []byte {
	k := sha256.Sum256(b)
	if v, ok := gzCache.Load(k); ok {
		return v.([]byte)
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(b)
	zw.Close()
	gzCache.Store(k, buf.Bytes())
	return buf.Bytes()
}

// TestHostileObjectChangesMidDownload: the root image is cut mid-body and
// the resumed request finds another object (another ETag): the update
// fails safe, and the next run (the object back) starts over and works.
func TestHostileObjectChangesMidDownload(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.codec = CodecRaw
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	var mu sync.Mutex
	calls := 0
	lyingServer(f, r.names.Root, func(w http.ResponseWriter, req *http.Request, body []byte) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		w.Header().Set("ETag", fmt.Sprintf("\"v%d\"", n))
		w.Header().Set("Accept-Ranges", "bytes")
		if n == 1 {
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(body)
	})
	before := f.snapshotActive()
	u := f.updater()
	_, err := u.Update(context.Background(), UpdateOptions{Apply: true})
	if !errors.Is(err, fetch.ErrChanged) {
		t.Fatalf("object changed mid-download: %v", err)
	}
	f.assertSafe(before)
	f.setHandler(nil)
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("rerun: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, r)
}

// TestHostileRedirectElsewhere: the targets redirect to another host
// serving the same files: TUF checks them, so the update works.
func TestHostileRedirectElsewhere(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	other := httptestServer(t, f.fileServer())
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/targets/") {
			http.Redirect(w, req, other+req.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		f.fileServer().ServeHTTP(w, req)
	}))
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("redirected update: %v", err)
	}
	f.assertSetHolds(gptprio.SetB, r)
}

func httptestServer(t *testing.T, h http.Handler) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileOneTargetForAllImages: a signed release whose boot, root and
// hash images are the same target: it cannot verify as both a hash tree
// and the data it covers, so the update fails safe.
func TestHostileOneTargetForAllImages(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", func(u *manifest.Update, _ map[string][]byte) {
		u.Images.Boot, u.Images.Hash = u.Images.Root, u.Images.Root
		u.Images.Sizes = nil
	})
	f.publish(repo.Options{})
	f.attempt(ErrCorrupt)
}

// TestHostileEmptyBootImage: a signed release whose boot image is empty
// (0 bytes, no sizes in the manifest).
//
// DEFECT (fails now, low: the repository signed it): nothing refuses an
// image that decompresses to nothing; the boot partition keeps whatever
// it held (here zeros; on a used host the kernel of an older release),
// the set is recorded as written and verified, and it is switched to.
func TestHostileEmptyBootImage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", func(u *manifest.Update, files map[string][]byte) {
		files[u.Images.Boot] = compress(t, CodecZstd, nil)
		u.Images.Sizes = nil
	})
	f.publish(repo.Options{})
	f.attempt(ErrCorrupt)
}

// TestHostileOtherArchAndVariant: releases for another arch or variant
// are never chosen, even by name.
func TestHostileOtherArchAndVariant(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", func(u *manifest.Update, _ map[string][]byte) { u.Arch = "aarch64" })
	f.addRelease("1.2.0", func(u *manifest.Update, _ map[string][]byte) { u.Variant = "other-variant" })
	f.publish(repo.Options{})
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); !errors.Is(err, ErrNoUpdate) {
		t.Fatalf("only other arches and variants: %v", err)
	}
	for _, v := range []string{"1.1.0", "1.2.0"} {
		if _, err := u.Update(context.Background(), UpdateOptions{CheckOptions: CheckOptions{Image: v}, Apply: true}); !errors.Is(err, manifest.ErrVersionNotFound) {
			t.Fatalf("--image %s of another arch or variant: %v", v, err)
		}
	}
	tb, l := f.table()
	if a := gptprio.Attrs(tb, l, gptprio.SetB); a.WillBoot() {
		t.Fatalf("set B: %v", a)
	}
}

// TestHostileConfigNumbers: numbers out of range or overflowing are
// refused naming the key (ErrConfig), never wrapped around.
//
// DEFECT (fails now, low): health_timeout and stall_timeout given as
// strings are not bounded like the same durations given as integers
// (seconds, at most 365 days): "1000000h" (114 years) is accepted, so a
// hung health check holds mark-good (and the state lock) for ever.
func TestHostileConfigNumbers(t *testing.T) {
	t.Parallel()
	base := "metadata_base_url = \"https://u/m\"\ntargets_base_url = \"https://u/t\"\n"
	for _, bad := range []string{
		"seed = 2048", "seed = -1", "seed = 99999999999999999999", "seed = 9223372036854775807",
		"boot_tries = 16", "boot_tries = -1", "boot_tries = 9223372036854775807",
		"health_timeout = -5", "health_timeout = 9223372036854775807", "health_timeout = \"-5s\"",
		"stall_timeout = 31536001", "stall_timeout = \"2562048h\"",
		"checkpoint_every = 1", "checkpoint_every = -1", "checkpoint_every = 9223372036854775807",
		"health_timeout = \"1000000h\"", "stall_timeout = \"1000000h\"", "health_timeout = \"100000 days\"",
	} {
		_, err := ParseConfig("u.toml", []byte(base+bad+"\n"))
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%s: accepted (%v)", bad, err)
		}
	}
	for _, good := range []string{"seed = 0", "seed = 2047", "boot_tries = 15", "health_timeout = 31536000", "checkpoint_every = 65536"} {
		if _, err := ParseConfig("u.toml", []byte(base+good+"\n")); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
}

// TestHostileStateDirSpecialFiles: FIFOs, directories and devices where
// the state directory's files belong: every command ends with an error
// naming the file (never blocks on a FIFO), and the disk is untouched.
func TestHostileStateDirSpecialFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	state := f.cfg.StateDir
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := func(p string) {
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := f.snapshotActive()
	run := func(what string, locks bool, call func(u *Updater) error) {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now }})
			if err == nil && locks {
				if err = u.Lock(context.Background()); err == nil {
					defer u.Unlock()
				}
			}
			if err == nil {
				err = call(u)
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil {
				t.Errorf("%s: no error", what)
			}
			t.Logf("%s: %v", what, err)
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: blocked", what)
		}
	}
	update := func(u *Updater) error {
		_, err := u.Update(context.Background(), UpdateOptions{Apply: true})
		return err
	}
	status := func(u *Updater) error { _, err := u.Status(context.Background()); return err }

	p := filepath.Join(state, stateFile)
	fifo(p)
	run("state.json a FIFO: status", false, status)
	run("state.json a FIFO: update", true, update)
	os.Remove(p)
	os.Mkdir(p, 0o755)
	run("state.json a directory: update", true, update)
	os.Remove(p)

	l := filepath.Join(state, lockFile)
	os.Remove(l)
	fifo(l)
	run("lock a FIFO", true, update)
	os.Remove(l)

	tuf := filepath.Join(state, tufDir)
	os.RemoveAll(tuf)
	os.WriteFile(tuf, []byte("x"), 0o644)
	run("tuf a file", true, update)
	os.Remove(tuf)
	f.assertSafe(before)
}

// groupAlive reports whether a process of group pgid is still running
// (zombies waiting to be reaped do not count), waiting up to a few
// seconds for killed processes to die.
func groupAlive(pgid int) bool {
	for i := 0; i < 250; i++ {
		if !groupRunning(pgid) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func groupRunning(pgid int) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if f[2] == fmt.Sprint(pgid) {
			return true
		}
	}
	return false
}

// TestHostileSwitchClearedByHand: after update switched to set B, an
// operator clears set B's boot bits by hand (`signpost clear-inactive`,
// a documented signpost command) instead of running update-revert. B
// never booted.
//
// DEFECT (fails now): reconcile takes any tries == 0 for a failed boot
// and records the release as failed here ("tried at boot and never
// marked good"), so it is skipped from then on. A failed boot leaves the
// bootloader's mark (priority kept, tries used up); a cleared set has
// priority 0 too, like a switch undone.
func TestHostileSwitchClearedByHand(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatal(err)
	}
	d, err := gptprio.OpenDisk(context.Background(), f.disk, gptprio.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = d.Update(context.Background(), func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		return gptprio.ClearInactive(t, gptprio.SetA)
	})
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	st, err := u.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Failed) != 0 {
		t.Fatalf("a switch cleared by hand (never booted) is recorded as a failed boot: %+v", st.Failed)
	}
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
		t.Fatalf("update after the switch was cleared by hand: %v", err)
	}
}

// TestHostileRebootFails: update --reboot, and the reboot itself fails
// (systemctl refuses, a SIGTERM arrives first).
//
// DEFECT (fails now, low): Rebooting stays recorded, so status says
// "rebooting" until the host happens to boot, although nothing is
// rebooting; an agent reading status waits for a reboot that is not
// coming.
func TestHostileRebootFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now },
		Reboot: func(context.Context) error { return errors.New("systemctl: access denied") }})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer u.Unlock()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true, Reboot: true}); err == nil {
		t.Fatal("update --reboot with a failing reboot succeeded")
	}
	st, err := u.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.State == "rebooting" || st.Reboot.Rebooting != nil {
		t.Fatalf("status says %q (rebooting since %v) after the reboot failed", st.State, st.Reboot.Rebooting)
	}
}

// TestHostileWrongActiveBlockDeviceNoHost: updog runs where the running
// root cannot be found through /sys (a container whose / is an overlay,
// given the host's disk), so --active is taken as said, and it is wrong:
// set B runs (its ROOT is held, as dm-verity holds it), both sets are
// marked good (the steady state after one update), and the operator says
// --active a. O_EXCL on the inactive partitions is then the only thing
// between updog and the running set, and it does refuse B's ROOT.
//
// DEFECT (fails now, medium): install clears the "inactive" set's boot
// bits before it opens the partitions exclusively, so by the time EBUSY
// stops it, the running set B's bits are already zeroed: the next boot
// silently goes to set A, the older release. Opening (O_EXCL) every
// partition before the first table write would leave the disk as it was.
func TestHostileWrongActiveBlockDeviceNoHost(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	dev := loopDisk(t, f)
	_, l := f.table()
	d, err := gptprio.OpenDisk(context.Background(), dev, gptprio.OpenOptions{Active: "a"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = d.Update(context.Background(), func(t *gptprio.Table, _ gptprio.Layout) (*gptprio.Table, error) {
		nt, err := gptprio.MarkInactiveValid(t, gptprio.SetA, 1)
		if err != nil {
			return nil, err
		}
		if nt, err = gptprio.UpgradeToInactive(nt, gptprio.SetA); err != nil {
			return nil, err
		}
		return gptprio.MarkSuccessfulBoot(nt, gptprio.SetB)
	})
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	node, err := blockdev.PartitionNode("/", dev, l.Sets[gptprio.SetB].Root)
	if err != nil {
		t.Fatal(err)
	}
	held, err := blockdev.Open(node, blockdev.Options{Exclusive: true, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	tb, _ := f.table()
	runningBefore := gptprio.Attrs(tb, l, gptprio.SetB)
	container := gptprio.HostInfo{SysRoot: "/", RootDevice: func() (uint32, uint32, error) {
		return 0, 0, errors.New("/ is an overlay")
	}}
	u, err := New(Options{Config: f.cfg, Disk: dev, Active: "a", Host: container, Now: func() time.Time { return f.now },
		Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }}})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Lock(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer u.Unlock()
	_, err = u.Update(context.Background(), UpdateOptions{Apply: true})
	if !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("update over a held ROOT partition: %v", err)
	}
	tb, _ = f.table()
	if after := gptprio.Attrs(tb, l, gptprio.SetB); after != runningBefore {
		t.Fatalf("the running set B's boot bits changed before updog found its partitions busy: %v -> %v (next boot: set A)", runningBefore, after)
	}
}

// TestHostileActiveLieOnImageFile: on an image file nothing can tell the
// running set, but a --active naming the set that is not marked good,
// while the other one is the known-good one, is refused (ErrUnproven)
// before anything is written.
func TestHostileActiveLieOnImageFile(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	before := f.snapshotActive()
	u := f.updaterWith(f.cfg, "b")
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); !errors.Is(err, ErrUnproven) {
		t.Fatalf("--active b on an image whose only good set is A: %v", err)
	}
	f.assertSafe(before)
}

// cancelAt is a Progress that cancels the context at one event: the
// signal arrives in that phase.
type cancelAt struct {
	image, phase, event string
	cancel              context.CancelFunc
	mu                  sync.Mutex
	cur                 map[string]string
}

func (c *cancelAt) hit(image, event string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if image == c.image && c.cur[image] == c.phase && event == c.event {
		c.cancel()
	}
}
func (c *cancelAt) Start(image, phase string, _ int64) {
	c.mu.Lock()
	c.cur[image] = phase
	c.mu.Unlock()
	c.hit(image, "start")
}
func (c *cancelAt) Add(image string, _ int64)  { c.hit(image, "add") }
func (c *cancelAt) Done(image string, _ error) { c.hit(image, "done") }

// TestHostileSignalEachPhase: SIGTERM (a cancelled context) at each phase
// of an update: the download of each image, the read-back of each, and
// just before the switch. Each run stops with context.Canceled, the
// active set is untouched and the new set does not boot, status calls it
// interrupted, and the next run completes (going on from what was done).
func TestHostileSignalEachPhase(t *testing.T) {
	t.Parallel()
	for _, at := range []struct{ image, phase, event string }{
		{KindBoot, "download", "start"}, {KindRoot, "download", "add"}, {KindRoot, "verify", "add"},
		// Just before the switch. DEFECT (fails now, low): switchTo
		// records the cancelled switch as "failed", not "interrupted".
		{KindRoot, "verify", "done"},
	} {
		t.Run(at.image+"-"+at.phase+"-"+at.event, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			r := f.addRelease("1.1.0", nil)
			f.publish(repo.Options{})
			before := f.snapshotActive()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			prog := &cancelAt{image: at.image, phase: at.phase, event: at.event, cancel: cancel, cur: map[string]string{}}
			u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now }, Progress: prog,
				Fetch: fetch.Options{Backoff: func(int) time.Duration { return time.Millisecond }, Retries: 3}})
			if err != nil {
				t.Fatal(err)
			}
			if err := u.Lock(context.Background()); err != nil {
				t.Fatal(err)
			}
			defer u.Unlock()
			_, err = u.Update(ctx, UpdateOptions{Apply: true})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted update: %v", err)
			}
			f.assertSafe(before)
			st, err := u.Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.LastAttempt == nil || st.LastAttempt.Outcome != "interrupted" {
				t.Errorf("last attempt after the interruption: %+v", st.LastAttempt)
			}
			if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); err != nil {
				t.Fatalf("rerun: %v", err)
			}
			f.assertSetHolds(gptprio.SetB, r)
		})
	}
}

// TestHostileOverlappingPartitions: a crafted table (CRCs right) in which
// set B's ROOT partition is the same range as set A's: the table is
// refused when read, so every command fails and the disk is not written.
func TestHostileOverlappingPartitions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	tb, l := f.table()
	a, b := tb.Partition(l.Sets[gptprio.SetA].Root), l.Sets[gptprio.SetB].Root
	fh, err := os.OpenFile(f.disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	ss := int64(tb.SectorSize)
	for _, hdrLBA := range []int64{1, int64(tb.BackupLBA)} {
		hdr := make([]byte, ss)
		fh.ReadAt(hdr, hdrLBA*ss)
		entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:]))
		n, size := binary.LittleEndian.Uint32(hdr[80:]), binary.LittleEndian.Uint32(hdr[84:])
		entries := make([]byte, int(n)*int(size))
		fh.ReadAt(entries, entriesLBA*ss)
		e := entries[(b-1)*int(size):]
		binary.LittleEndian.PutUint64(e[32:], a.FirstLBA)
		binary.LittleEndian.PutUint64(e[40:], a.LastLBA)
		fh.WriteAt(entries, entriesLBA*ss)
		binary.LittleEndian.PutUint32(hdr[88:], crc32.ChecksumIEEE(entries))
		hs := binary.LittleEndian.Uint32(hdr[12:])
		binary.LittleEndian.PutUint32(hdr[16:], 0)
		binary.LittleEndian.PutUint32(hdr[16:], crc32.ChecksumIEEE(hdr[:hs]))
		fh.WriteAt(hdr, hdrLBA*ss)
	}
	fh.Close()
	sum := func() [32]byte {
		b, err := os.ReadFile(f.disk)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	before := sum()
	u := f.updater()
	_, err = u.Update(context.Background(), UpdateOptions{Apply: true})
	if err == nil {
		t.Fatal("update on a table whose sets overlap succeeded")
	}
	t.Logf("overlapping sets: %v", err)
	if _, err := u.Status(context.Background()); err == nil {
		t.Error("status of a table whose sets overlap succeeded")
	}
	if sum() != before {
		t.Fatal("the disk was written")
	}
}
