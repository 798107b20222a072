package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/updog/updog/bootconf"
	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/dm"
	"github.com/updog/updog/internal/safefile"
)

// system is what bootsel asks of the kernel; the tests fake it.
type system interface {
	// mountRO mounts a boot file system read-only (and nodev, nosuid,
	// noexec) on target.
	mountRO(source, target, fstype string) error
	unmount(target string) error
	// kexecLoad loads the next kernel (initrd may be nil).
	kexecLoad(kernel, initrd *os.File, cmdline string) error
	// kexecExec starts the loaded kernel; it returns only on failure.
	kexecExec() error
	// createDM makes a device-mapper device and makes its table live.
	createDM(d dm.Device) (major, minor uint32, err error)
	// mountRoot mounts the real root on target.
	mountRoot(source, target, fstype string, readOnly bool, data string) error
}

// booter holds what both stages need.
type booter struct {
	root    string // "/" at boot; a fake tree in tests
	sys     system
	out     io.Writer // the console
	timeout time.Duration
	poll    time.Duration
	now     func() time.Time
	// host tells gptprio how to find the running system: at boot there is
	// none (the initramfs is no disk's partition).
	host gptprio.HostInfo
}

func newBooter(root string, sys system, out io.Writer, timeout time.Duration) *booter {
	return &booter{root: root, sys: sys, out: out, timeout: timeout, poll: 50 * time.Millisecond, now: time.Now,
		host: gptprio.HostInfo{SysRoot: root, RootDevice: func() (uint32, uint32, error) {
			return 0, 0, errors.New("the boot selector runs from an initramfs: no disk holds its root")
		}}}
}

// logf writes one line to the console, with the time since the kernel
// started (from /proc/uptime) when it is known.
func (b *booter) logf(format string, a ...any) {
	up := ""
	if raw, err := os.ReadFile(filepath.Join(b.root, "proc", "uptime")); err == nil {
		if f := strings.Fields(string(raw)); len(f) > 0 {
			up = "[" + f[0] + "s] "
		}
	}
	fmt.Fprintf(b.out, "bootsel: %s%s\n", up, fmt.Sprintf(format, a...))
}

// choice is the outcome of the selection.
type choice struct {
	disk      string
	set       gptprio.Set
	part      int    // the BOOT partition's number
	partUUID  string // its unique GUID
	triesUsed bool   // a try was used up (the set was not marked successful)
	attrs     gptprio.Attr
}

// choose applies the boot selection rule to the disk with the code `signpost
// next` runs: under the disk's exclusive flock it re-reads the table,
// picks the set and, when that set has tries left, uses one up
// (gptprio.BootNext) and writes the table crash-safely
// (gptprio.Write's order: backup, then primary, each synced). Sets in skip
// (those that failed in this boot) are passed over. No bootable set is
// gptprio.ErrNoBootableSet.
func (b *booter) choose(ctx context.Context, disk string, skip ...gptprio.Set) (choice, error) {
	c := choice{disk: disk}
	d, err := gptprio.OpenDisk(ctx, disk, gptprio.OpenOptions{Host: b.host})
	if err != nil {
		return c, err
	}
	defer d.Close()
	_, after, err := d.Update(ctx, func(t *gptprio.Table, l gptprio.Layout) (*gptprio.Table, error) {
		ch, nt, err := gptprio.BootNext(t, skip...) // signpost next's step, exactly
		c.set, c.part, c.triesUsed, c.attrs = ch.Set, ch.Partition, ch.TryUsed, ch.Before
		return nt, err
	})
	if err != nil {
		return c, err
	}
	p := after.Partition(c.part)
	if p == nil {
		return c, fmt.Errorf("bootsel: %s: BOOT partition %d vanished", disk, c.part)
	}
	c.partUUID = p.ID.String()
	return c, nil
}

// bootDisk is stage one's work on the boot disk: choose a set, load its
// kernel and start it. It returns only when no kernel started: with the
// error, and retry set when a try was used up (a restart makes the next
// selection differ).
//
// A set marked successful uses no try, so after its failure the same rule
// would choose it again at every restart: a proven set whose BOOT
// partition went bad would keep the host down although the other set can
// boot. So when a proven set fails here, bootsel chooses again in this
// boot with that set passed over (using a try of the other set if it has
// tries rather than the successful mark), and powers off only when no
// other set can boot.
func (b *booter) bootDisk(ctx context.Context, disk string) (retry bool, err error) {
	var failed []gptprio.Set
	for {
		ch, err := b.choose(ctx, disk, failed...)
		if errors.Is(err, gptprio.ErrNoBootableSet) {
			if len(failed) > 0 {
				b.logf("%s: no other partition set can boot", disk)
				return false, fmt.Errorf("%w: set %v failed to start and no other set has a priority and tries left or the successful mark", err, failed)
			}
			b.logf("%s: no bootable partition set: no BOOT partition has a priority and tries left or the successful mark; nothing to boot", disk)
			return false, err
		}
		if err != nil {
			return false, err
		}
		b.logf("booting set=%v partition=%d disk=%s tries_used=%t boot_uuid=%s (attributes before: %v)",
			ch.set, ch.part, disk, ch.triesUsed, ch.partUUID, ch.attrs)
		l, err := b.loadSet(ctx, ch)
		if err == nil {
			b.logf("loaded %s %s %s (kernel %s, initrd %q); starting it with kexec", l.conf.Name, l.conf.Variant, l.conf.Version, l.conf.Kernel, l.conf.Initrd)
			err = b.sys.kexecExec()
		}
		if ch.triesUsed || ctx.Err() != nil {
			return ch.triesUsed, err
		}
		b.logf("set %v is marked successful but failed to start: %v; choosing again without it", ch.set, err)
		failed = append(failed, ch.set)
	}
}

// loaded is what loadSet read from the BOOT partition.
type loaded struct {
	conf    *bootconf.Config
	cmdline string
}

// loadSet mounts the chosen BOOT partition read-only, reads boot.conf,
// and loads its kernel, initrd and command line (with $boot_uuid replaced
// by the BOOT partition's GUID) for kexec. The partition is unmounted
// again before it returns (the kernel holds copies).
func (b *booter) loadSet(ctx context.Context, c choice) (*loaded, error) {
	var node string
	err := b.wait(ctx, fmt.Sprintf("partition %d of %s", c.part, c.disk), func() (bool, error) {
		n, _, err := partitionDevice(b.root, c.disk, c.part)
		node = n
		return err == nil, err
	})
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.root, "run", "bootsel", "boot")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := b.sys.mountRO(node, dir, "ext4"); err != nil {
		return nil, err
	}
	defer b.sys.unmount(dir)
	raw, err := safefile.ReadFile(filepath.Join(dir, bootconf.FileName), bootconf.MaxSize)
	if err != nil {
		return nil, fmt.Errorf("bootsel: reading %s of set %v (%s): %w", bootconf.FileName, c.set, node, err)
	}
	conf, err := bootconf.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("bootsel: %s of set %v (%s): %w", bootconf.FileName, c.set, node, err)
	}
	kernel, err := openInside(dir, conf.Kernel)
	if err != nil {
		return nil, err
	}
	defer kernel.Close()
	var initrd *os.File
	if conf.Initrd != "" {
		if initrd, err = openInside(dir, conf.Initrd); err != nil {
			return nil, err
		}
		defer initrd.Close()
	}
	l := &loaded{conf: conf, cmdline: conf.KernelCmdline(c.partUUID)}
	if err := b.sys.kexecLoad(kernel, initrd, l.cmdline); err != nil {
		return nil, fmt.Errorf("bootsel: loading the kernel of set %v: %w", c.set, err)
	}
	return l, nil
}

// openInside opens a regular file at rel under dir, refusing a path that
// leads out of dir through a symbolic link (boot.conf's paths are checked
// not to climb with "..").
func openInside(dir, rel string) (*os.File, error) {
	p := filepath.Join(dir, rel)
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return nil, fmt.Errorf("bootsel: %w", err)
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("bootsel: %w", err)
	}
	if !strings.HasPrefix(real, realDir+string(filepath.Separator)) {
		return nil, fmt.Errorf("bootsel: %s leads out of the boot file system (to %s)", rel, real)
	}
	f, err := safefile.Open(real, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("bootsel: %w", err)
	}
	return f, nil
}

// rootSetup is what stage two made.
type rootSetup struct {
	devices []string // "name (dm-N)" of the device-mapper devices made
	node    string   // the root device node
	newRoot string
	init    string
	// bootUUID is the partition GUID the device references named (the
	// BOOT partition the selector chose), "" when none did.
	bootUUID string
}

// setupRoot is stage two: it makes the devices of dm-mod.create= (device
// references PARTUUID=.../PARTNROFF=N resolved to major:minor through the
// GPTs and sysfs, waiting for them), waits for root= and mounts it on
// newRoot, read-only unless the command line says rw, as rootfstype= (ext4
// when absent) with rootflags=.
func (b *booter) setupRoot(ctx context.Context, c cmdline, newRoot string) (*rootSetup, error) {
	rs := &rootSetup{newRoot: newRoot, init: "/sbin/init"}
	if v, ok := c.get("init"); ok && v != "" {
		rs.init = v
	}
	create, _ := c.get("dm-mod.create")
	devs, err := dm.ParseCreate(create)
	if err != nil {
		return rs, err
	}
	if w, ok := c.get("dm-mod.waitfor"); ok {
		for _, ref := range strings.Split(w, ",") {
			if ref = strings.TrimSpace(ref); strings.HasPrefix(ref, "PARTUUID=") {
				if _, err := b.resolveRef(ctx, ref); err != nil {
					return rs, err
				}
			}
		}
	}
	minors := map[string]uint32{}
	for _, d := range devs {
		for i, t := range d.Targets {
			f := strings.Fields(t.Params)
			for j, tok := range f {
				if !strings.HasPrefix(tok, "PARTUUID=") {
					continue
				}
				if uuid, _, err := bootconf.ParsePartRef(tok); err == nil && rs.bootUUID == "" {
					rs.bootUUID = uuid
				}
				if f[j], err = b.resolveRef(ctx, tok); err != nil {
					return rs, err
				}
			}
			d.Targets[i].Params = strings.Join(f, " ")
		}
		major, minor, err := b.sys.createDM(d)
		if err != nil {
			return rs, err
		}
		minors[d.Name] = minor
		rs.devices = append(rs.devices, fmt.Sprintf("%s (dm-%d, %d:%d)", d.Name, minor, major, minor))
		for _, t := range d.Targets {
			b.logf("device-mapper %s: %s", d.Name, t)
		}
	}
	root, ok := c.get("root")
	if !ok || root == "" {
		return rs, errors.New("bootsel: the command line has no root=")
	}
	switch {
	case strings.HasPrefix(root, "/dev/mapper/"):
		m, ok := minors[strings.TrimPrefix(root, "/dev/mapper/")]
		if !ok {
			return rs, fmt.Errorf("bootsel: root=%s names no device of dm-mod.create=", root)
		}
		rs.node = filepath.Join(b.root, "dev", "dm-"+strconv.Itoa(int(m)))
	case strings.HasPrefix(root, "PARTUUID="):
		node, _, err := b.resolveNode(ctx, root)
		if err != nil {
			return rs, err
		}
		rs.node = node
	case strings.HasPrefix(root, "/dev/"):
		rs.node = filepath.Join(b.root, root)
	default:
		return rs, fmt.Errorf("bootsel: root=%s: want a /dev/ path, /dev/mapper/NAME or PARTUUID=<guid>", root)
	}
	err = b.wait(ctx, rs.node, func() (bool, error) {
		_, err := os.Stat(rs.node)
		return err == nil, fmt.Errorf("%w: %w", errRetry, err)
	})
	if err != nil {
		return rs, fmt.Errorf("%w: root=%s: %w", errNoDevice, root, err)
	}
	fstype, _ := c.get("rootfstype")
	if fstype == "" {
		fstype = "ext4"
	}
	flags, _ := c.get("rootflags")
	if err := b.sys.mountRoot(rs.node, newRoot, fstype, !c.has("rw"), flags); err != nil {
		return rs, err
	}
	return rs, nil
}

// resolveRef waits for a PARTUUID= reference and returns its major:minor.
func (b *booter) resolveRef(ctx context.Context, ref string) (string, error) {
	_, mm, err := b.resolveNode(ctx, ref)
	return mm, err
}

func (b *booter) resolveNode(ctx context.Context, ref string) (node, majMin string, err error) {
	err = b.wait(ctx, ref, func() (bool, error) {
		var err error
		node, majMin, err = resolvePartRef(b.root, ref)
		return err == nil, err
	})
	if err != nil {
		return "", "", fmt.Errorf("%w: %s: %w", errNoDevice, ref, err)
	}
	return node, majMin, nil
}

// bootWasProven reports whether the BOOT partition with GUID uuid is
// marked successful: a failure of a proven set's boot cannot be left to
// the next selection (it would choose the same set again), so bootsel
// powers off instead of restarting.
func (b *booter) bootWasProven(uuid string) bool {
	disks, err := wholeDisks(b.root)
	if err != nil {
		return false
	}
	for _, name := range disks {
		t, err := readTable(b.root, name)
		if err != nil {
			continue
		}
		for _, p := range t.Used() {
			if p.ID.String() == uuid {
				return p.Attributes.Successful()
			}
		}
	}
	return false
}
