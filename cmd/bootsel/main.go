// bootsel is the boot selector: the init of the boot chain's initramfs. It
// picks the partition set to boot with the GPT priority bits, as
// Bottlerocket's patched GRUB does, and starts that set's kernel; started
// again by that kernel, it sets up the set's dm-verity root and switches
// to it.
//
// Synopsis:
//
//	bootsel                       (as PID 1, the init of an initramfs)
//	bootsel mkinitramfs --modules DIR [--module NAME ...] [--file DEST=SRC ...] [--init FILE] [--mtime N] --out FILE
//
// Description:
//
//	As PID 1, bootsel mounts /proc, /sys and devtmpfs on /dev, loads the
//	kernel modules its initramfs carries (lib/modules/load.list, in
//	order), and reads /proc/cmdline. Then:
//
//	Stage one (a command line without dm-mod.create=): it finds the disk
//	through /sys (bootsel.disk=NAME, or the first disk in name order whose
//	GPT has BOOT partitions; it waits for it up to bootsel.timeout=,
//	default 30s) and applies the selection rule, exactly as `signpost
//	next`: under the disk's exclusive flock, of all BOOT partitions with
//	tries left or marked successful the one with the highest priority
//	wins, and one of its tries is used up, written crash-safely (gptprio).
//	It mounts that BOOT partition read-only (ext4), reads boot.conf,
//	replaces $boot_uuid in its command line with the partition's GUID,
//	loads its kernel and initrd with kexec_file_load and starts it
//	(reboot with LINUX_REBOOT_CMD_KEXEC). With no bootable set it says so
//	and powers the machine off.
//
//	Stage two (a command line with dm-mod.create=, which the chosen set's
//	kernel has and cannot act on itself: Debian's kernel lacks dm-init and
//	builds device-mapper as modules): it resolves the table's device
//	references (PARTUUID=<guid>/PARTNROFF=<n>) through the GPTs and /sys,
//	makes the devices with the device-mapper ioctls, mounts root= (the
//	dm-verity device) read-only as rootfstype=, and switches to it,
//	executing init= (default /sbin/init).
//
//	A failure after a try was used up restarts the machine after 5 s: the
//	next selection counts that try, so the set falls back. A set marked
//	successful uses no try: when it fails to start in stage one (its BOOT
//	partition, boot.conf or kernel unreadable), bootsel chooses again in
//	the same boot with that set passed over, and starts the other set if
//	it can boot. A failure that would repeat (no disk, no bootable set, no
//	set left to try, a proven set whose root fails in stage two) powers
//	the machine off instead: bootsel never loops.
//
//	bootsel mkinitramfs builds such an initramfs: an uncompressed newc
//	cpio with this program (or --init) as /init, the modules named and
//	everything they depend on (from their .modinfo, as depmod reads it),
//	and their load order.
//
// Options (mkinitramfs):
//
//	--modules DIR    the kernel's modules tree, lib/modules/<version>
//	--module NAME    a module to carry (repeatable; default: virtio_pci,
//	                 virtio_blk, ext4, dm_mod, dm_bufio, dm_verity)
//	--file DEST=SRC  carry file SRC as DEST (repeatable)
//	--init FILE      the program to run as /init (default: this program)
//	--mtime N        the time of every entry, seconds since the epoch
//	                 (default: SOURCE_DATE_EPOCH, else 0)
//	--out FILE       where to write the archive
//
// Exit status (mkinitramfs): 0 success, 1 error, 2 usage error.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/internal/initramfs"
)

func main() {
	if os.Getpid() == 1 {
		runInit(os.Stdout)
		return // not reached: runInit ends the machine's life or execs
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: bootsel mkinitramfs --modules DIR [--module NAME ...] [--file DEST=SRC ...] [--init FILE] [--mtime N] --out FILE

bootsel is the init of the boot chain's initramfs (it acts as one only as
PID 1). mkinitramfs builds that initramfs.
`

// DefaultModules are the modules the boot chain needs on a virtual
// machine with Debian's kernel: the disk (virtio), the BOOT and root file
// systems (ext4; crc32c comes as its soft dependency) and dm-verity.
var DefaultModules = []string{"virtio_pci", "virtio_blk", "ext4", "dm_mod", "dm_bufio", "dm_verity"}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Dispatch("bootsel", usage, args, stdout, stderr, ctx, map[string]func(context.Context, []string) error{
		"mkinitramfs": func(ctx context.Context, args []string) error { return mkinitramfs(ctx, args, stdout, stderr) },
	})
}

func mkinitramfs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, parse := cli.Flags("bootsel", "mkinitramfs", "--modules DIR [--module NAME ...] --out FILE", stdout)
	modDir := fs.String("modules", "", "the kernel's modules tree, lib/modules/<version> (\"\": carry no modules)")
	mods := fs.StringArray("module", nil, "a module `NAME` to carry with its dependencies (repeatable)")
	files := fs.StringArray("file", nil, "carry a file, `DEST=SRC` (repeatable)")
	init := fs.String("init", "", "the `FILE` to run as /init (default: this program)")
	mtime := fs.Int64("mtime", -1, "the time of every entry, `SECONDS` since the epoch (default: SOURCE_DATE_EPOCH, else 0)")
	out := fs.String("out", "", "the archive to write")
	if err := parse(args, 0); err != nil {
		return err
	}
	if *out == "" {
		return cli.Usagef("mkinitramfs: --out is required")
	}
	spec := initramfs.Spec{Init: *init, ModulesDir: *modDir, Modules: *mods, Files: map[string]string{}}
	if spec.Init == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("finding this program: %w", err)
		}
		spec.Init = exe
	}
	if len(spec.Modules) == 0 {
		spec.Modules = DefaultModules
	}
	for _, f := range *files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok || dst == "" || src == "" {
			return cli.Usagef("mkinitramfs: --file %q: want DEST=SRC", f)
		}
		spec.Files[dst] = src
	}
	switch {
	case *mtime >= 0 && *mtime <= 1<<32-1:
		spec.Mtime = uint32(*mtime)
	case *mtime != -1:
		return cli.Usagef("mkinitramfs: --mtime %d is not between 0 and %d", *mtime, int64(1<<32-1))
	default:
		if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return cli.Usagef("SOURCE_DATE_EPOCH=%q is not a time in seconds", v)
			}
			spec.Mtime = uint32(n)
		}
	}
	var carried []initramfs.Module
	err := atomicfile.Write(*out, 0o644, func(w io.Writer) error {
		var err error
		carried, err = initramfs.Write(w, spec)
		return err
	})
	if err != nil {
		return err
	}
	names := make([]string, len(carried))
	for i, m := range carried {
		names[i] = m.Name
	}
	fmt.Fprintf(stderr, "bootsel: wrote %s: /init from %s, %d modules (%s)\n", *out, spec.Init, len(carried), strings.Join(names, " "))
	return nil
}

// runInit is bootsel as PID 1. It never returns while it is PID 1: it
// executes the next init, starts the next kernel, restarts or powers off.
func runInit(console io.Writer) {
	ctx := context.Background()
	if err := initramfs.MountEarly("/"); err != nil {
		fmt.Fprintf(console, "bootsel: %v\n", err)
	}
	b := newBooter("/", realSystem{}, console, DefaultTimeout)
	raw, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		b.fatal(false, fmt.Errorf("reading the kernel command line: %w", err))
	}
	c := newCmdline(strings.TrimSpace(string(raw)))
	if b.timeout, err = c.timeout(); err != nil {
		b.logf("%v; using %v", err, DefaultTimeout)
		b.timeout = DefaultTimeout
	}
	n, err := initramfs.LoadModules("/", nil)
	if err != nil {
		b.fatal(false, err)
	}
	b.logf("loaded %d kernel modules", n)
	if _, ok := c.get("dm-mod.create"); ok {
		b.logf("stage two: setting up the root of the chosen set")
		b.stageTwo(ctx, c)
	} else {
		b.logf("stage one: selecting the partition set to boot")
		b.stageOne(ctx, c)
	}
}

// fatal ends the boot: a restart when retry is set (a try was used up, so
// the next selection differs), else a power-off. It never returns.
func (b *booter) fatal(retry bool, err error) {
	if retry {
		b.logf("boot failed: %v; restarting in 5 s (the next selection counts this try)", err)
		time.Sleep(5 * time.Second)
		err = initramfs.Restart()
	} else {
		b.logf("boot failed: %v; powering off", err)
		time.Sleep(time.Second)
		err = initramfs.PowerOff()
	}
	b.logf("%v", err)
	select {} // PID 1 must not exit
}

func (b *booter) stageOne(ctx context.Context, c cmdline) {
	want, _ := c.get(paramDisk)
	disk, err := b.findBootDisk(ctx, want)
	if err != nil {
		b.fatal(false, err)
	}
	b.fatal(b.bootDisk(ctx, disk))
}

func (b *booter) stageTwo(ctx context.Context, c cmdline) {
	rs, err := b.setupRoot(ctx, c, "/newroot")
	if err != nil {
		b.fatal(rs == nil || rs.bootUUID == "" || !b.bootWasProven(rs.bootUUID), err)
	}
	b.logf("root %s mounted read-only on %s (%s); switching to it and starting %s", rs.node, rs.newRoot, strings.Join(rs.devices, ", "), rs.init)
	err = initramfs.SwitchRoot(rs.newRoot, rs.init, []string{rs.init}, os.Environ())
	b.fatal(!b.bootWasProven(rs.bootUUID), err)
}
