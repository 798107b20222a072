package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/bootconf"
	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/dm"
	"github.com/updog/updog/verity"
)

// fakeMachine is a fake root: sysfs entries, device nodes (the disk is an
// image file with Bottlerocket's plan), proc/uptime, and a fake kernel
// that records what bootsel asks of it.
type fakeMachine struct {
	t    *testing.T
	root string
	disk string // root/dev/vda
	// bootFiles are the files each BOOT partition node "holds" when mounted.
	bootFiles map[string]map[string]string

	mounts, unmounts []string
	loadedKernel     string
	loadedInitrd     string
	loadedCmdline    string
	loads            int
	devices          []dm.Device
	rootMount        string
	rootReadOnly     bool
}

const diskGUID = "5b2e0c3a-11d2-4c1e-9a8b-0123456789ab"

func newFakeMachine(t *testing.T) *fakeMachine {
	t.Helper()
	m := &fakeMachine{t: t, root: t.TempDir(), bootFiles: map[string]map[string]string{}}
	for _, d := range []string{"dev", "proc", "sys/block", "sys/class/block", "sys/devices/virtual/block"} {
		if err := os.MkdirAll(filepath.Join(m.root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(m.root, "proc", "uptime"), []byte("3.14 1.00\n"), 0o644)
	m.disk = filepath.Join(m.root, "dev", "vda")
	f, err := os.Create(m.disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(2 << 30)
	f.Close()
	d, err := blockdev.Open(m.disk, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	plan, err := image.BottlerocketPlan(2 << 30)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := image.CreateDisk(d, plan, gptprio.MustParseGUID(diskGUID))
	if err != nil {
		t.Fatal(err)
	}
	m.addDisk("vda", 254, 0, len(tbl.Used()))
	return m
}

// addDisk lists a whole disk and its partitions in the fake sysfs.
func (m *fakeMachine) addDisk(name string, major, minor, parts int) {
	dir := filepath.Join(m.root, "sys/devices/virtual/block", name)
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "dev"), []byte(fmt.Sprintf("%d:%d\n", major, minor)), 0o644)
	for n := 1; n <= parts; n++ {
		p := fmt.Sprintf("%s%d", name, n)
		pd := filepath.Join(dir, p)
		os.MkdirAll(pd, 0o755)
		os.WriteFile(filepath.Join(pd, "partition"), []byte(fmt.Sprintf("%d\n", n)), 0o644)
		os.WriteFile(filepath.Join(pd, "dev"), []byte(fmt.Sprintf("%d:%d\n", major, minor+n)), 0o644)
		os.Symlink(pd, filepath.Join(m.root, "sys/class/block", p))
		os.WriteFile(filepath.Join(m.root, "dev", p), nil, 0o644)
	}
	os.Symlink(dir, filepath.Join(m.root, "sys/class/block", name))
	os.Symlink(dir, filepath.Join(m.root, "sys/block", name))
}

func (m *fakeMachine) table() *gptprio.Table {
	m.t.Helper()
	d, err := blockdev.Open(m.disk, blockdev.Options{ReadOnly: true})
	if err != nil {
		m.t.Fatal(err)
	}
	defer d.Close()
	t, err := gptprio.Read(d)
	if err != nil {
		m.t.Fatal(err)
	}
	return t
}

func (m *fakeMachine) edit(f func(*gptprio.Table) (*gptprio.Table, error)) {
	m.t.Helper()
	d, err := blockdev.Open(m.disk, blockdev.Options{})
	if err != nil {
		m.t.Fatal(err)
	}
	defer d.Close()
	t, err := gptprio.Read(d)
	if err != nil {
		m.t.Fatal(err)
	}
	nt, err := f(t)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := gptprio.Write(d, nt); err != nil {
		m.t.Fatal(err)
	}
}

func (m *fakeMachine) mountRO(source, target, fstype string) error {
	files, ok := m.bootFiles[source]
	if !ok || fstype != "ext4" {
		return fmt.Errorf("fake mount: nothing to mount at %s (%s)", source, fstype)
	}
	for name, data := range files {
		p := filepath.Join(target, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if strings.HasPrefix(data, "->") {
			os.Symlink(strings.TrimPrefix(data, "->"), p)
			continue
		}
		os.WriteFile(p, []byte(data), 0o644)
	}
	m.mounts = append(m.mounts, source)
	return nil
}

func (m *fakeMachine) unmount(target string) error {
	m.unmounts = append(m.unmounts, target)
	ents, _ := os.ReadDir(target)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(target, e.Name()))
	}
	return nil
}

func (m *fakeMachine) kexecLoad(kernel, initrd *os.File, cmdline string) error {
	k, _ := os.ReadFile(kernel.Name())
	m.loadedKernel, m.loadedInitrd, m.loadedCmdline = string(k), "", cmdline
	if initrd != nil {
		i, _ := os.ReadFile(initrd.Name())
		m.loadedInitrd = string(i)
	}
	m.loads++
	return nil
}

func (m *fakeMachine) kexecExec() error { return errors.New("fake: no kexec") }

func (m *fakeMachine) createDM(d dm.Device) (uint32, uint32, error) {
	minor := uint32(len(m.devices))
	m.devices = append(m.devices, d)
	os.WriteFile(filepath.Join(m.root, "dev", fmt.Sprintf("dm-%d", minor)), nil, 0o644)
	return 253, minor, nil
}

func (m *fakeMachine) mountRoot(source, target, fstype string, readOnly bool, data string) error {
	m.rootMount, m.rootReadOnly = source+" "+target+" "+fstype, readOnly
	return nil
}

func (m *fakeMachine) booter() (*booter, *bytes.Buffer) {
	var out bytes.Buffer
	b := newBooter(m.root, m, &out, 5*time.Second)
	b.poll = time.Millisecond
	return b, &out
}

// bootConf returns the boot.conf of a release as image.Build writes it.
func bootConf(t *testing.T, version string) string {
	t.Helper()
	info := verity.Info{Params: verity.Params{DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 1024, Hash: "sha256", Salt: []byte{1, 2}},
		HashStart: 1, RootHash: bytes.Repeat([]byte{0xab}, 32)}
	c := bootconf.Config{Format: 1, Name: "updog", Variant: "test", Arch: "x86_64", Version: version, Kernel: "vmlinuz",
		Initrd: "initrd.img", RootFS: "ext4", RootHash: strings.Repeat("ab", 32), Salt: "0102",
		Cmdline: "root=/dev/dm-0 rootwait ro rootfstype=ext4 dm-mod.waitfor=" + bootconf.PartRef(1) + "," + bootconf.PartRef(2) +
			` dm-mod.create="root,,,ro,` + info.Table(bootconf.PartRef(1), bootconf.PartRef(2), verity.BottlerocketOptions...) + `"` +
			" console=ttyS0"}
	b, err := c.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func (m *fakeMachine) setBoot(set gptprio.Set, version string) {
	tbl := m.table()
	l, err := gptprio.FindLayout(tbl)
	if err != nil {
		m.t.Fatal(err)
	}
	node := filepath.Join(m.root, "dev", fmt.Sprintf("vda%d", l.Sets[set].Boot))
	m.bootFiles[node] = map[string]string{"boot.conf": bootConf(m.t, version), "vmlinuz": "kernel " + version, "initrd.img": "initrd " + version}
}

func TestStageOneBootsTheChosenSet(t *testing.T) {
	m := newFakeMachine(t)
	m.setBoot(gptprio.SetA, "1.0.0")
	m.setBoot(gptprio.SetB, "1.1.0")
	b, out := m.booter()
	ctx := context.Background()

	boot := func() (choice, *loaded) {
		t.Helper()
		disk, err := b.findBootDisk(ctx, "")
		if err != nil || disk != m.disk {
			t.Fatalf("findBootDisk: %q, %v", disk, err)
		}
		c, err := b.choose(ctx, disk)
		if err != nil {
			t.Fatal(err)
		}
		l, err := b.loadSet(ctx, c)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return c, l
	}

	// A fresh image: set A, priority 1, successful. No try to use.
	before := m.table()
	c, l := boot()
	tblA := m.table()
	if c.set != gptprio.SetA || c.triesUsed || l.conf.Version != "1.0.0" || m.loadedKernel != "kernel 1.0.0" || m.loadedInitrd != "initrd 1.0.0" {
		t.Fatalf("booted %+v, %+v, kernel %q initrd %q", c, l.conf, m.loadedKernel, m.loadedInitrd)
	}
	if tblA.Partitions[c.part-1].Attributes != before.Partitions[c.part-1].Attributes {
		t.Error("booting a successful set changed its bits")
	}
	wantUUID := image.PartitionID(gptprio.MustParseGUID(diskGUID), c.part).String()
	if c.partUUID != wantUUID || !strings.Contains(m.loadedCmdline, "PARTUUID="+wantUUID+"/PARTNROFF=1") ||
		strings.Contains(m.loadedCmdline, bootconf.BootUUIDVar) {
		t.Errorf("command line %q does not name BOOT-A %s", m.loadedCmdline, wantUUID)
	}
	if len(m.unmounts) != len(m.mounts) {
		t.Errorf("mounted %v, unmounted %v", m.mounts, m.unmounts)
	}

	// updog switched to set B (one try): B boots, and its try is used up
	// on the disk before the kernel starts.
	m.edit(func(t *gptprio.Table) (*gptprio.Table, error) {
		nt, err := gptprio.MarkInactiveValid(t, gptprio.SetA, 1)
		if err != nil {
			return nil, err
		}
		return gptprio.UpgradeToInactive(nt, gptprio.SetA)
	})
	c, l = boot()
	if c.set != gptprio.SetB || !c.triesUsed || l.conf.Version != "1.1.0" || m.loadedKernel != "kernel 1.1.0" {
		t.Fatalf("after the switch: %+v, %s", c, m.loadedKernel)
	}
	l2, _ := gptprio.FindLayout(m.table())
	if a := gptprio.Attrs(m.table(), l2, gptprio.SetB); a.Tries() != 0 || a.Priority() != 2 || a.Successful() {
		t.Fatalf("set B after its boot: %v (want priority 2, no tries left, not successful)", a)
	}
	wantUUID = image.PartitionID(gptprio.MustParseGUID(diskGUID), c.part).String()
	if !strings.Contains(m.loadedCmdline, "PARTUUID="+wantUUID+"/PARTNROFF=2") {
		t.Errorf("set B's command line %q does not name BOOT-B", m.loadedCmdline)
	}

	// Set B was never marked good: the next boot falls back to A.
	c, l = boot()
	if c.set != gptprio.SetA || l.conf.Version != "1.0.0" {
		t.Fatalf("fallback: %+v %+v", c, l.conf)
	}
	b.logf("x=%d", 1)
	if !strings.HasSuffix(out.String(), "bootsel: [3.14s] x=1\n") {
		t.Errorf("console lines carry no uptime: %q", out)
	}
}

func TestStageOneNoBootableSet(t *testing.T) {
	m := newFakeMachine(t)
	m.edit(func(t *gptprio.Table) (*gptprio.Table, error) {
		for i := range t.Partitions {
			if t.Partitions[i].Type == gptprio.TypeBoot {
				t.Partitions[i].Attributes = t.Partitions[i].Attributes.WithPriority(1).WithSuccessful(false).WithTries(0)
			}
		}
		return t, nil
	})
	b, _ := m.booter()
	before := m.table()
	if _, err := b.choose(context.Background(), m.disk); !errors.Is(err, gptprio.ErrNoBootableSet) {
		t.Fatalf("choose: %v", err)
	}
	after := m.table()
	for i := range before.Partitions {
		if before.Partitions[i].Attributes != after.Partitions[i].Attributes {
			t.Fatal("a refused selection changed the table")
		}
	}
	if m.loads != 0 {
		t.Error("something was loaded")
	}
}

// TestStageOneFallsBackFromABrokenProvenSet: a set marked successful uses
// no try, so when it fails to start, restarting would choose it again for
// ever. bootDisk passes over it in the same boot and starts the other set
// when that one can boot; it powers off only when none can.
func TestStageOneFallsBackFromABrokenProvenSet(t *testing.T) {
	for _, c := range []struct {
		name      string
		a, b      gptprio.Attr
		retry     bool
		loaded    string // the kernel the fake kexec saw last ("" none)
		noSet     bool   // the error says no set can boot
		bTriesNow int
	}{
		// B proven too: it is started (the fake's kexec fails, and B is
		// passed over in turn): nothing left, power off.
		{"other set proven", prio(2, 0, true), prio(1, 0, true), false, "kernel 1.1.0", true, 0},
		// B has tries: one is used up for it and the boot restarts when
		// it fails, so the next selection counts it.
		{"other set has tries", prio(2, 0, true), prio(1, 2, false), true, "kernel 1.1.0", false, 1},
		// B cannot boot: power off, and nothing was loaded.
		{"other set not bootable", prio(2, 0, true), prio(1, 0, false), false, "", true, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newFakeMachine(t)
			m.setBoot(gptprio.SetB, "1.1.0")
			// Set A's BOOT file system holds no boot.conf (a bad block,
			// a half-written partition).
			l, _ := gptprio.FindLayout(m.table())
			m.bootFiles[filepath.Join(m.root, "dev", fmt.Sprintf("vda%d", l.Sets[gptprio.SetA].Boot))] = map[string]string{"vmlinuz": "kernel 1.0.0"}
			m.edit(func(t *gptprio.Table) (*gptprio.Table, error) {
				t.Partitions[l.Sets[gptprio.SetA].Boot-1].Attributes = c.a
				t.Partitions[l.Sets[gptprio.SetB].Boot-1].Attributes = c.b
				return t, nil
			})
			b, out := m.booter()
			retry, err := b.bootDisk(context.Background(), m.disk)
			if err == nil || retry != c.retry || errors.Is(err, gptprio.ErrNoBootableSet) != c.noSet || m.loadedKernel != c.loaded {
				t.Fatalf("bootDisk = retry %v, %v; loaded %q; want retry %v, no set %v, loaded %q\n%s", retry, err, m.loadedKernel, c.retry, c.noSet, c.loaded, out)
			}
			if !strings.Contains(out.String(), "set a is marked successful but failed to start") {
				t.Errorf("the console does not say why set A was passed over:\n%s", out)
			}
			tb := m.table()
			if a := gptprio.Attrs(tb, l, gptprio.SetA); a != c.a {
				t.Errorf("set A's bits changed: %v, was %v", a, c.a)
			}
			if bb := gptprio.Attrs(tb, l, gptprio.SetB); bb.Tries() != c.bTriesNow || bb.Priority() != c.b.Priority() || bb.Successful() != c.b.Successful() {
				t.Errorf("set B after the boot: %v, want %d tries left (was %v)", bb, c.bTriesNow, c.b)
			}
		})
	}
}

func prio(p, tries int, ok bool) gptprio.Attr {
	return gptprio.Attr(0).WithPriority(p).WithTries(tries).WithSuccessful(ok)
}

func TestFindBootDiskWaits(t *testing.T) {
	m := newFakeMachine(t)
	// Hide the disk; a disk without a GPT (a USB stick) is there already.
	os.Remove(filepath.Join(m.root, "sys/block/vda"))
	os.WriteFile(filepath.Join(m.root, "dev", "vdb"), make([]byte, 1<<20), 0o644)
	m.addDisk("vdb", 254, 16, 0)
	b, _ := m.booter()
	b.timeout = 50 * time.Millisecond
	if _, err := b.findBootDisk(context.Background(), ""); !errors.Is(err, errNoDisk) || !strings.Contains(err.Error(), "vdb") {
		t.Fatalf("no boot disk: %v", err)
	}
	// The disk appears while bootsel waits for it.
	b.timeout = time.Minute
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(20 * time.Millisecond)
		os.Symlink(filepath.Join(m.root, "sys/devices/virtual/block/vda"), filepath.Join(m.root, "sys/block/vda"))
	}()
	disk, err := b.findBootDisk(context.Background(), "")
	<-done
	if err != nil || disk != m.disk {
		t.Fatalf("late disk: %q, %v", disk, err)
	}
	// bootsel.disk= names another disk: that one or none.
	b.timeout = 50 * time.Millisecond
	if _, err := b.findBootDisk(context.Background(), "vdb"); !errors.Is(err, errNoDisk) {
		t.Errorf("bootsel.disk=vdb: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b.timeout = time.Hour
	if _, err := b.findBootDisk(ctx, "vdc"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestLoadSetRefusesBadBootPartitions(t *testing.T) {
	for name, files := range map[string]map[string]string{
		"no boot.conf":      {"vmlinuz": "k"},
		"bad boot.conf":     {"boot.conf": "format=2\n", "vmlinuz": "k"},
		"no kernel":         {"boot.conf": bootConf(t, "1.0.0"), "initrd.img": "i"},
		"kernel escapes":    {"boot.conf": bootConf(t, "1.0.0"), "vmlinuz": "->/etc/hostname", "initrd.img": "i"},
		"initrd is a dir":   {"boot.conf": bootConf(t, "1.0.0"), "vmlinuz": "k", "initrd.img/x": "i"},
		"boot.conf escapes": {"boot.conf": "->/etc/passwd", "vmlinuz": "k"},
	} {
		t.Run(name, func(t *testing.T) {
			m := newFakeMachine(t)
			m.setBoot(gptprio.SetA, "1.0.0")
			for node := range m.bootFiles {
				m.bootFiles[node] = files
			}
			b, _ := m.booter()
			c, err := b.choose(context.Background(), m.disk)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.loadSet(context.Background(), c); err == nil {
				t.Fatal("loaded")
			}
			if m.loads != 0 {
				t.Error("the kernel was loaded")
			}
			if len(m.mounts) != len(m.unmounts) {
				t.Errorf("mounted %v, unmounted %v", m.mounts, m.unmounts)
			}
		})
	}
}

func TestStageTwoMakesTheVerityRoot(t *testing.T) {
	m := newFakeMachine(t)
	tbl := m.table()
	l, _ := gptprio.FindLayout(tbl)
	for _, set := range []gptprio.Set{gptprio.SetA, gptprio.SetB} {
		m.devices, m.rootMount = nil, ""
		bootID := tbl.Partitions[l.Sets[set].Boot-1].ID.String()
		conf, err := bootconf.Parse([]byte(bootConf(t, "1.0.0")))
		if err != nil {
			t.Fatal(err)
		}
		b, out := m.booter()
		c := newCmdline(conf.KernelCmdline(bootID))
		rs, err := b.setupRoot(context.Background(), c, "/newroot")
		if err != nil {
			t.Fatalf("set %v: %v\n%s", set, err, out)
		}
		if len(m.devices) != 1 {
			t.Fatalf("devices %+v", m.devices)
		}
		d := m.devices[0]
		want := fmt.Sprintf("1 254:%d 254:%d 4096 4096 1024 1 sha256 %s 0102 2 restart_on_corruption ignore_zero_blocks",
			l.Sets[set].Root, l.Sets[set].Hash, strings.Repeat("ab", 32))
		if d.Name != "root" || !d.ReadOnly || len(d.Targets) != 1 || d.Targets[0].Type != "verity" ||
			d.Targets[0].Length != 1024*8 || d.Targets[0].Params != want {
			t.Fatalf("set %v: device %+v\nwant params %q", set, d, want)
		}
		if m.rootMount != filepath.Join(m.root, "dev/dm-0")+" /newroot ext4" || !m.rootReadOnly || rs.init != "/sbin/init" || rs.bootUUID != bootID {
			t.Errorf("set %v: root %q read-only %t init %q boot %q", set, m.rootMount, m.rootReadOnly, rs.init, rs.bootUUID)
		}
	}
}

func TestStageTwoRefuses(t *testing.T) {
	m := newFakeMachine(t)
	tbl := m.table()
	l, _ := gptprio.FindLayout(tbl)
	bootID := tbl.Partitions[l.Sets[0].Boot-1].ID.String()
	conf, _ := bootconf.Parse([]byte(bootConf(t, "1.0.0")))
	good := conf.KernelCmdline(bootID)
	b, _ := m.booter()
	b.timeout = 20 * time.Millisecond
	for name, tc := range map[string]struct {
		cmdline string
		is      error
	}{
		// The kernel cuts an unquoted dm-mod.create= at its first space.
		"unquoted table":          {strings.Replace(strings.Replace(good, `create="`, "create=", 1), `" console`, " console", 1), dm.ErrCreateParam},
		"unknown GUID":            {strings.ReplaceAll(good, bootID, "00000000-0000-4000-8000-000000000000"), errNoDevice},
		"no root=":                {strings.Replace(good, "root=/dev/dm-0", "", 1), nil},
		"root not made":           {strings.Replace(good, "root=/dev/dm-0", "root=/dev/dm-7", 1), errNoDevice},
		"PARTNROFF past the disk": {strings.ReplaceAll(good, "PARTNROFF=2", "PARTNROFF=100"), nil},
	} {
		m.devices = nil
		_, err := b.setupRoot(context.Background(), newCmdline(tc.cmdline), "/newroot")
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestBootWasProven(t *testing.T) {
	m := newFakeMachine(t)
	tbl := m.table()
	l, _ := gptprio.FindLayout(tbl)
	b, _ := m.booter()
	if !b.bootWasProven(tbl.Partitions[l.Sets[0].Boot-1].ID.String()) {
		t.Error("set A of a fresh image is marked successful")
	}
	if b.bootWasProven(tbl.Partitions[l.Sets[1].Boot-1].ID.String()) || b.bootWasProven("nonsense") {
		t.Error("set B is not")
	}
}
