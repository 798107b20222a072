package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildUEFICommand: --uefi with a GRUB image given prints the ESP's
// size and what it holds; the UEFI flags' mistakes are usage errors.
func TestBuildUEFICommand(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	dir := t.TempDir()
	args := buildInputs(t, dir)
	initrd, grub := filepath.Join(dir, "initrd.img"), filepath.Join(dir, "grub.efi")
	os.WriteFile(initrd, []byte("bootsel's initramfs"), 0o644)
	os.WriteFile(grub, []byte("MZ not really GRUB"), 0o644)
	args = append(args, "--initrd", initrd, "--size", "400MiB", "--uefi")
	stdout, errs, code := ib(append(args, "--grub-efi", grub, "--out", filepath.Join(dir, "out"))...)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"EFI-SYSTEM                  65.0 MiB", "UEFI: EFI-SYSTEM is 65.0 MiB and holds GRUB (/EFI/BOOT/BOOTX64.EFI), its /EFI/BOOT/grub.cfg and stage one (/EFI/updog/vmlinuz, /EFI/updog/initrd.img)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the output does not say %q:\n%s", want, stdout)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--esp-size", "lots"}, "--esp-size"},
		{[]string{"--esp-size", "3MiB"}, "EFI system partition"},
		{[]string{"--size", "256MiB"}, "too small for a 64 MiB EFI system partition"},
		{[]string{"--cmdline", `a="b c"`}, "GRUB"},
	} {
		_, errs, code := ib(append(append(append([]string{}, args...), c.args...), "--out", filepath.Join(dir, "bad"))...)
		if code != exitUsage || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want a usage error naming %q", c.args, code, errs, c.want)
		}
	}
	if _, errs, code := ib(append(buildInputs(t, dir), "--grub-efi", grub, "--out", filepath.Join(dir, "bad"))...); code != exitUsage || !strings.Contains(errs, "--uefi") {
		t.Errorf("--grub-efi without --uefi: exit %d, %q", code, errs)
	}
}
