// signpost reads and changes the boot state of an A/B disk.
//
// Synopsis:
//
//	signpost [--disk PATH] [--active a|b] [--json] [--dry-run] [--tries N] [--lock-wait D] COMMAND
//
// Description:
//
//	The boot state is the ChromeOS/Bottlerocket "gptprio" attribute bits of
//	the BOOT partitions (priority 48-51, tries left 52-55, successful 56)
//	and bit 57 of the PRIVATE partition (a boot has ever succeeded). Set A
//	is the first BOOT/ROOT/HASH partition of each type in table order, set B
//	the second (a disk with more, C and on, is shown by status and followed
//	by next, but the A/B state changes refuse it). The bootloader boots, of
//	all BOOT partitions with tries left or marked successful, the one with
//	the highest priority, and uses up a try when it has some.
//
//	Every command holds a lock on the disk (a BSD flock on the whole-disk
//	device node or image file: shared to read, exclusive to change the
//	table, which is re-read under the lock), so that two signposts, updog
//	and udev never interleave. A command that cannot get the lock within
//	--lock-wait fails. SIGINT and SIGTERM stop a command that is waiting.
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
//	--active a|b      the running set; on the running host's disk it is found
//	                  through /sys and a contrary --active is refused (exit 2);
//	                  on an image file it must be given for commands that need it
//	--json            print one JSON object
//	--dry-run         compute and print the change, write nothing
//	--tries N         tries for mark-inactive-valid (1-15, default 1)
//	--sector-size N   logical sector size of an image file, 512 or 4096
//	                  (default: detected)
//	--lock-wait D     how long to wait for another process's lock on the disk
//	                  (default 10s; 0: do not wait)
//
// Exit status: 0 success, 1 error (the disk locked by another process past
// --lock-wait included), 2 usage error (a bad flag value, or --active
// contradicting the running system), 3 no bootable set.
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
