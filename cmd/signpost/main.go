// signpost reads and changes the boot state of an A/B disk.
//
// Synopsis:
//
//	signpost [--disk PATH] [--active a|b] [--json] [--dry-run] [--tries N] COMMAND
//
// Description:
//
//	The boot state is the ChromeOS/Bottlerocket "gptprio" attribute bits of
//	the BOOT partitions (priority 48-51, tries left 52-55, successful 56)
//	and bit 57 of the PRIVATE partition (a boot has ever succeeded). Set A
//	is the first BOOT/ROOT/HASH partition of each type in table order, set B
//	the second. The bootloader boots, of the BOOT partitions with tries left
//	or marked successful, the one with the highest priority, and uses up a
//	try when it has some.
//
//	Commands:
//	  status                   show the sets, their bits, the active and the next set
//	  mark-successful-boot     mark the active set as booted successfully
//	  clear-inactive           zero the inactive set's bits before writing images
//	  mark-inactive-valid      give the inactive set tries (1, or --tries N)
//	  upgrade-to-inactive      boot the inactive set next (it must be marked valid)
//	  cancel-upgrade           undo upgrade-to-inactive
//	  rollback-to-inactive     boot the inactive set next (it must be bootable)
//	  has-boot-ever-succeeded  print true or false
//	  rewrite-table            rewrite the table unchanged (repairs a damaged copy)
//	  next                     boot as the bootloader would: print the chosen set
//	                           and use up one of its tries
//
// Options:
//
//	--disk PATH       whole-disk block device or disk image file; on a running
//	                  host, the disk holding the mounted root
//	--active a|b      the running set; on a host it is found through /sys, on
//	                  an image file it must be given for commands that need it
//	--json            print one JSON object
//	--dry-run         compute and print the change, write nothing
//	--tries N         tries for mark-inactive-valid (1-15, default 1)
//	--sector-size N   logical sector size of an image file (default: detected)
//
// Exit status: 0 success, 1 error, 2 usage error, 3 no bootable set.
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
