// guestinit is the init (PID 1) of the root file system the VM test boots:
// a stand-in for a container host's init that does what its units would
// and then what the test's plan says.
//
// Synopsis:
//
//	/sbin/init                     (PID 1, started by bootsel's switch_root)
//	/etc/updog/health.d/10-vmtest  (any other PID: the image's health check)
//
// Description:
//
//	On every boot it mounts /proc, /sys, /dev (unless switch_root moved
//	them in), tmpfs on /run and /tmp, the disk's PRIVATE partition (ext4,
//	formatted by the test) on /var for updog's state, and the second disk
//	(the "USB stick" holding the signed repository and the plan) read-only
//	on /mnt/usb. It counts the boot (/var/lib/vmtest/<phase>/boots), says
//	what booted (`updog status --json`: the active set updog found through
//	/sys, the running version; the device-mapper table and status of the
//	root device), runs `updog mark-good` as a host's mark-good unit would
//	(when it fails, the release is unhealthy: it restarts, as a watchdog
//	would), then runs the plan's steps for this boot and powers off.
//
//	Everything the test reads is written as one line per event,
//	"UPDOGTEST {json}", to the second serial port (/dev/ttyS1; the first
//	is the console, where the kernel's messages go) and echoed to the
//	console.
//
//	As the health check, it exits 0 when /etc/vmtest/health says "ok" and
//	1 otherwise.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/dm"
	"github.com/updog/updog/internal/initramfs"
	"github.com/updog/updog/internal/sysutil"
	"github.com/updog/updog/vmtest/plan"
)

func main() {
	if os.Getpid() != 1 {
		os.Exit(healthCheck())
	}
	// The kernel starts init with an empty environment; exec.Command
	// looks programs up in this process's PATH.
	os.Setenv("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
	g := &guest{console: os.Stdout}
	g.run()
}

// healthCheck is the image's health check.
func healthCheck() int {
	b, err := os.ReadFile("/etc/vmtest/health")
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmtest health check: %v\n", err)
		return 1
	}
	if s := strings.TrimSpace(string(b)); s != "ok" {
		fmt.Fprintf(os.Stderr, "vmtest health check: this release is unhealthy on purpose (%s)\n", s)
		return 1
	}
	fmt.Println("vmtest health check: ok")
	return 0
}

type guest struct {
	console io.Writer
	proto   io.Writer
	disk    string // the disk holding the root, e.g. /dev/vda
}

// emit writes one protocol line.
func (g *guest) emit(ev plan.Event) {
	ev.Uptime = uptime()
	b, _ := json.Marshal(ev)
	line := plan.Prefix + string(b) + "\n"
	if g.proto != nil {
		io.WriteString(g.proto, line)
	}
	summary := fmt.Sprintf("guestinit: [%.2fs] %s %s", ev.Uptime, ev.Event, ev.Name)
	if ev.Event == plan.EventStep {
		summary += fmt.Sprintf(" exit=%d", ev.Exit)
	}
	if ev.Error != "" {
		summary += " error=" + ev.Error
	}
	fmt.Fprintln(g.console, summary)
}

func uptime() float64 {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func (g *guest) logf(format string, a ...any) {
	fmt.Fprintf(g.console, "guestinit: "+format+"\n", a...)
}

// fail reports a broken test setup and powers off (the test sees the
// event and the power-off).
func (g *guest) fail(err error) {
	g.emit(plan.Event{Event: plan.EventError, Error: err.Error()})
	g.end(plan.ActionPowerOff)
}

// end flushes and unmounts what it can, then powers off or restarts.
func (g *guest) end(action string) {
	sysutil.Sync()
	for _, m := range []string{"/mnt/usb", "/var"} {
		initramfs.Unmount(m)
	}
	var err error
	if action == plan.ActionReboot {
		err = initramfs.Restart()
	} else {
		err = initramfs.PowerOff()
	}
	g.logf("%v", err)
	select {}
}

func (g *guest) run() {
	if err := initramfs.MountEarly("/"); err != nil {
		g.logf("%v", err)
	}
	for _, d := range []string{"/run", "/tmp"} {
		initramfs.MountTmpfs(d)
	}
	if f, err := os.OpenFile("/dev/ttyS1", os.O_WRONLY, 0); err == nil {
		g.proto = f
	} else {
		g.logf("no protocol port /dev/ttyS1 (%v): writing to the console only", err)
		g.proto = nil
	}
	if err := g.mountState(); err != nil {
		g.fail(err)
	}
	p, err := g.loadPlan()
	if err != nil {
		g.fail(err)
	}
	n, err := countBoot(p.Phase)
	if err != nil {
		g.fail(err)
	}
	ev := plan.Event{Event: plan.EventBoot, Name: p.Phase, Boot: n, Cmdline: readTrim("/proc/cmdline")}
	g.describe(&ev)
	g.emit(ev)

	if !p.SkipMarkGood {
		r := g.step(plan.Step{Name: "mark-good", Cmd: []string{"updog", "mark-good"}})
		if r != 0 {
			// An unhealthy release: never marked good. The watchdog's
			// part: restart, so the boot selector falls back.
			g.logf("mark-good failed: restarting as a watchdog would")
			g.emit(plan.Event{Event: plan.EventEnd, Name: plan.ActionReboot})
			g.end(plan.ActionReboot)
		}
	}
	action := plan.ActionPowerOff
	if n-1 < len(p.Boots) {
		for _, s := range p.Boots[n-1].Steps {
			if s.Flip != nil {
				err := g.flip(*s.Flip)
				ev := plan.Event{Event: plan.EventStep, Name: s.Name}
				if err != nil {
					ev.Exit, ev.Error = 1, err.Error()
				}
				g.emit(ev)
				continue
			}
			g.step(s)
		}
		if a := p.Boots[n-1].Then; a != "" {
			action = a
		}
	} else {
		g.emit(plan.Event{Event: plan.EventError, Error: fmt.Sprintf("boot %d of phase %s has no plan", n, p.Phase)})
	}
	g.emit(plan.Event{Event: plan.EventEnd, Name: action})
	g.end(action)
}

// describe fills in what booted: updog's view (status --json) and the
// device-mapper table of the root device.
func (g *guest) describe(ev *plan.Event) {
	out, _, code := runCmd([]string{"updog", "--json", "status"})
	if code == 0 {
		var st struct {
			Active  string `json:"active"`
			Running *struct {
				Version string `json:"version"`
			} `json:"running"`
		}
		if err := json.Unmarshal([]byte(out), &st); err == nil {
			ev.Set = st.Active
			if st.Running != nil {
				ev.Version = st.Running.Version
			}
		}
	}
	ev.Stdout = out
	ev.Firmware = "bios"
	if _, err := os.Stat("/sys/firmware/efi"); err == nil {
		ev.Firmware = "uefi"
	}
	c, err := dm.Open("")
	if err != nil {
		ev.Error = err.Error()
		return
	}
	defer c.Close()
	if t, err := c.Table("root"); err == nil {
		for _, s := range t {
			ev.DMTable = append(ev.DMTable, fmt.Sprintf("%d %d %s %s", s.Start, s.Length, s.Type, s.Info))
		}
	} else {
		ev.Error = err.Error()
	}
	if st, err := c.Status("root"); err == nil {
		for _, s := range st {
			ev.DMStatus = append(ev.DMStatus, s.Type+" "+s.Info)
		}
	}
	if major, minor, err := blockdev.DeviceOf("/"); err == nil {
		ev.RootDevice = fmt.Sprintf("%d:%d", major, minor)
		if b, err := blockdev.ResolveBacking("/", major, minor); err == nil {
			ev.RootBacking = fmt.Sprintf("%s partition %d under %s", b.Disk, b.Number, b.Mapper)
		}
	}
}

// step runs a command and reports it; it returns the exit code.
func (g *guest) step(s plan.Step) int {
	if len(s.Cmd) == 0 {
		g.emit(plan.Event{Event: plan.EventStep, Name: s.Name, Exit: -1, Error: "empty command"})
		return -1
	}
	out, errOut, code := runCmd(s.Cmd)
	g.emit(plan.Event{Event: plan.EventStep, Name: s.Name, Cmd: s.Cmd, Exit: code, Stdout: out, Stderr: errOut})
	return code
}

func runCmd(argv []string) (stdout, stderr string, code int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/"}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		code = 0
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		code = -1
		e.WriteString(err.Error())
	}
	return o.String(), e.String(), code
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

// mountState finds the disk under the root (through the dm-verity device,
// as updog does), mounts its PRIVATE partition on /var and the other disk
// on /mnt/usb.
func (g *guest) mountState() error {
	major, minor, err := blockdev.DeviceOf("/")
	if err != nil {
		return err
	}
	b, err := blockdev.ResolveBacking("/", major, minor)
	if err != nil {
		return fmt.Errorf("the disk under /: %w", err)
	}
	g.disk = b.Disk
	_, l, err := g.layout()
	if err != nil {
		return err
	}
	if l.Private == 0 {
		return fmt.Errorf("%s has no PRIVATE partition", g.disk)
	}
	node, err := blockdev.PartitionNode("/", g.disk, l.Private)
	if err != nil {
		return err
	}
	if err := initramfs.Mount(node, "/var", "ext4", initramfs.MountOptions{}); err != nil {
		return err
	}
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := e.Name()
		if "/dev/"+name == g.disk || !strings.HasPrefix(name, "vd") {
			continue
		}
		if err := initramfs.Mount("/dev/"+name, "/mnt/usb", "ext4", initramfs.MountOptions{ReadOnly: true, Inert: true}); err != nil {
			return fmt.Errorf("the USB disk: %w", err)
		}
		return nil
	}
	return errors.New("no second disk (the USB stick with the repository and the plan)")
}

func (g *guest) layout() (*gptprio.Table, gptprio.Layout, error) {
	d, err := blockdev.Open(g.disk, blockdev.Options{ReadOnly: true})
	if err != nil {
		return nil, gptprio.Layout{}, err
	}
	defer d.Close()
	t, err := gptprio.Read(d)
	if err != nil {
		return nil, gptprio.Layout{}, err
	}
	l, err := gptprio.FindLayout(t)
	return t, l, err
}

func (g *guest) loadPlan() (*plan.Plan, error) {
	b, err := os.ReadFile(filepath.Join("/mnt/usb", plan.FileName))
	if err != nil {
		return nil, err
	}
	var p plan.Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s: %w", plan.FileName, err)
	}
	if p.Phase == "" || strings.ContainsAny(p.Phase, "/.") {
		return nil, fmt.Errorf("%s: bad phase %q", plan.FileName, p.Phase)
	}
	return &p, nil
}

// countBoot counts this boot of the phase, durably.
func countBoot(phase string) (int, error) {
	dir := filepath.Join("/var/lib/vmtest", phase)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	p := filepath.Join(dir, "boots")
	n := 0
	if b, err := os.ReadFile(p); err == nil {
		n, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	n++
	f, err := os.Create(p)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(f, "%d\n", n)
	if err := f.Sync(); err != nil {
		f.Close()
		return 0, err
	}
	return n, f.Close()
}

// flip flips one byte of a partition of a set on the disk: media
// corruption, under the running system.
func (g *guest) flip(f plan.Flip) error {
	_, l, err := g.layout()
	if err != nil {
		return err
	}
	s, err := gptprio.ParseSet(f.Set)
	if err != nil {
		return err
	}
	if int(s) >= len(l.Sets) {
		return fmt.Errorf("no set %s", f.Set)
	}
	n := l.Sets[s].Root
	if f.Part == "hash" {
		n = l.Sets[s].Hash
	}
	node, err := blockdev.PartitionNode("/", g.disk, n)
	if err != nil {
		return err
	}
	d, err := blockdev.Open(node, blockdev.Options{})
	if err != nil {
		return err
	}
	defer d.Close()
	b := make([]byte, 1)
	if _, err := d.ReadAt(b, f.Offset); err != nil {
		return err
	}
	b[0] ^= 0xff
	if _, err := d.WriteAt(b, f.Offset); err != nil {
		return err
	}
	return d.Sync()
}
