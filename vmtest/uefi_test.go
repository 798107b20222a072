package vmtest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/vmtest/plan"
)

// grubConfig is the configuration built into the GRUB image on the EFI
// system partition. GRUB only starts stage one: the boot selector's
// kernel and initramfs, which every BOOT partition carries (the first that
// holds a boot.conf serves; the Bottlerocket plan's 5 MiB ESP is too small
// for Debian's kernel), with a command line without dm-mod.create=. The
// selector then chooses the set with the gptprio bits, as on any boot.
const grubConfig = `set timeout=0
echo "updog: UEFI: GRUB starts the boot selector"
search --no-floppy --file --set=root /boot.conf
linux /vmlinuz console=ttyS0 quiet
initrd /initrd.img
boot
`

// TestVMUEFI boots the test image as a UEFI machine would: OVMF (Debian's
// ovmf package) starts GRUB from the EFI system partition (an image made
// with grub-mkstandalone from Debian's grub-efi-amd64-bin), GRUB starts
// the boot selector, the selector chooses set A and starts its kernel with
// kexec, and the guest comes up on 1.0.0 with dm-verity, as under
// `-kernel`.
func TestVMUEFI(t *testing.T) {
	if os.Getenv("UPDOG_VM") == "" {
		t.Skip("the VM tests boot QEMU for minutes: make test-vm runs them (UPDOG_VM=1)")
	}
	start := time.Now()
	ovmf := "/usr/share/ovmf/OVMF.fd"
	if _, err := os.Stat(ovmf); err != nil {
		testutil.Missing(t, "%s (Debian package ovmf): %v", ovmf, err)
	}
	mkstandalone := testutil.Tool(t, "grub-mkstandalone")
	if _, err := os.Stat("/usr/lib/grub/x86_64-efi"); err != nil {
		testutil.Missing(t, "GRUB's x86_64-efi modules (Debian package grub-efi-amd64-bin): %v", err)
	}
	mmd, mcopy := testutil.Tool(t, "mmd"), testutil.Tool(t, "mcopy")
	l := newLab(t)
	r100 := l.buildRelease("1.0.0", "1.0.0", true, true)
	disk := l.hostDisk(r100, "uefi.img")

	cfg := filepath.Join(l.dir, "grub.cfg")
	write(t, cfg, grubConfig)
	efi := filepath.Join(l.dir, "BOOTX64.EFI")
	mods := "part_gpt ext2 search search_fs_file linux echo test normal"
	l.run(mkstandalone, "-O", "x86_64-efi", "--modules="+mods, "--install-modules="+mods, "--locales=", "--themes=", "--fonts=",
		"-o", efi, "boot/grub/grub.cfg="+cfg)
	esp := l.espOffset(disk)
	img := fmt.Sprintf("%s@@%d", disk, esp)
	l.run(mmd, "-i", img, "::/EFI", "::/EFI/BOOT")
	l.run(mcopy, "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI")
	fi, _ := os.Stat(efi)
	t.Logf("GRUB image %d bytes on the EFI system partition (offset %d) as EFI/BOOT/BOOTX64.EFI", fi.Size(), esp)

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
	if !r.hasLine("updog: UEFI: GRUB starts the boot selector") {
		c.errorf("the console does not show GRUB starting the boot selector")
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
