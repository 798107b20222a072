// Package vmtest proves the boot chain and the update cycle in a real
// virtual machine: QEMU (software emulation is enough) boots the disk
// image `imgbuild build` makes, with Debian's kernel, the boot selector
// (cmd/bootsel) as the init of its initramfs, dm-verity over the root, and
// updog updating the machine's own disk from a signed repository on a
// second disk, as an air-gapped host would.
//
// The tests run under `make test-vm` (they need UPDOG_VM=1): TestVM
// follows issue 11's four steps and boots a disk with no bootable set (see
// vm_test.go); TestVMUEFI boots the image through OVMF and a GRUB image on
// the EFI system partition (uefi_test.go). The guest's init is
// vmtest/guestinit; what it does on each boot is the plan
// (vmtest/plan) the test writes on the second disk, and what it reports
// comes back as "UPDOGTEST {json}" lines on the second serial port. The
// consoles (the first serial port) are kept as artifacts.
package vmtest
