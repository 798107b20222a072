// imgbuild builds the disk images and update artifacts that updog installs.
//
// Synopsis:
//
//	imgbuild disk [--size SIZE] [--sector-size N] [--disk-guid GUID] [--json] OUT
//	imgbuild verity format|verify|dump ...
//
// Description:
//
//	disk writes an empty Bottlerocket A/B OS disk image: a GPT with
//	BIOS-BOOT, EFI-SYSTEM, BOOT/ROOT/HASH/RESERVED for sets A and B,
//	EFI-BACKUP, PRIVATE and the marker partition, set A marked as a fresh
//	build (priority 1, successful). OUT is created as a sparse file.
//
// Options: see imgbuild COMMAND --help.
//
// Exit status: 0 success, 1 error, 2 usage error.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
