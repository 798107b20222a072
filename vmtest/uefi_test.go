package vmtest

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/vmtest/plan"
)

// uefiDiskSize is diskSize with room for the 65 MiB ESP that --uefi
// makes, so the ROOT partitions stay as large as the other tests' are.
const uefiDiskSize = "416MiB"

// TestVMUEFI boots the test image as a UEFI machine would, from nothing
// but what imgbuild build --uefi wrote: OVMF (Debian's ovmf package)
// starts GRUB (made by imgbuild with grub-mkimage from Debian's
// grub-efi-amd64-bin) from the EFI system partition, GRUB starts the boot
// selector's kernel and initramfs from that same partition, the selector
// chooses set A and starts its kernel with kexec, and the guest comes up on
// 1.0.0 with dm-verity, as under -kernel.
func TestVMUEFI(t *testing.T) {
	if os.Getenv("UPDOG_VM") == "" {
		t.Skip("the VM tests boot QEMU for minutes: make test-vm runs them (UPDOG_VM=1)")
	}
	start := time.Now()
	ovmf := "/usr/share/ovmf/OVMF.fd"
	if _, err := os.Stat(ovmf); err != nil {
		testutil.Missing(t, "%s (Debian package ovmf): %v", ovmf, err)
	}
	testutil.Tool(t, "grub-mkimage")
	if _, err := os.Stat("/usr/lib/grub/x86_64-efi"); err != nil {
		testutil.Missing(t, "GRUB's x86_64-efi modules (Debian package grub-efi-amd64-bin): %v", err)
	}
	l := newLab(t)
	l.buildArgs = []string{"--uefi", "--size", uefiDiskSize}
	r100 := l.buildRelease("1.0.0", "1.0.0", true, true)
	disk := l.hostDisk(r100, "uefi.img")
	t.Logf("the EFI system partition, as imgbuild wrote it, starts at byte %d", l.espOffset(disk))

	usb := l.usbDisk("uefi", l.repository("uefi", "", r100), plan.Plan{Phase: "uefi", Boots: []plan.Boot{
		{Steps: []plan.Step{{Name: "status", Cmd: []string{"updog", "--json", "status"}}}},
	}})
	r := l.bootWith("uefi", disk, usb, []string{"-bios", ovmf})
	c := newChecker(t, r)
	c.choices("a")
	c.boots("a 1.0.0")
	if b := c.boot(0); b != nil {
		if b.Firmware != "uefi" {
			c.errorf("the guest's kernel found firmware %q, want uefi (/sys/firmware/efi)", b.Firmware)
		}
		if len(b.DMStatus) != 1 || b.DMStatus[0] != "verity V" {
			c.errorf("the root's verity status is %q, want verified (V)", b.DMStatus)
		}
	}
	if !r.hasLine("updog: UEFI: GRUB starts the boot selector from the EFI system partition") {
		c.errorf("the console does not show GRUB starting the boot selector from the EFI system partition")
	}
	c.done()
	t.Logf("TestVMUEFI took %.1fs", time.Since(start).Seconds())
}

// espOffset is the byte offset of the EFI system partition of a disk
// image.
func (l *lab) espOffset(disk string) int64 {
	t := l.t
	d, err := blockdev.Open(disk, blockdev.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tbl, err := gptprio.Read(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tbl.Used() {
		if p.Type == gptprio.TypeEFI {
			return int64(p.FirstLBA) * int64(tbl.SectorSize)
		}
	}
	t.Fatalf("%s has no EFI system partition", disk)
	return 0
}

// hasLine reports whether the console holds a line containing s.
func (r *runResult) hasLine(s string) bool {
	b, err := os.ReadFile(r.console)
	return err == nil && strings.Contains(string(b), s)
}
