// updog keeps a host on the release its repository offers: it checks for
// the release this host should run, writes it into the inactive partition
// set, verifies it and switches to it; marks a booted set good after
// health checks; rolls back; reports status.
//
// Synopsis:
//
//	updog [--config FILE] [--disk PATH] [--active a|b] [--json] [--log-level LEVEL] COMMAND [options]
//
// Description:
//
//	Commands:
//	  check-update [--all] [--now] [--image VERSION]   the release this host would take
//	  update [--reboot] [--now] [--image VERSION] [--dry-run]
//	                                 write, verify and switch to the release
//	  update-image [--now] [--image VERSION]   write and verify only
//	  update-apply [--reboot]        switch to the set update-image wrote
//	  update-revert                  undo a switch before its reboot
//	  rollback [--reboot]            boot the other set next
//	  mark-good                      run the health checks; mark the running set good
//	  status                         the sets, the running release, pending update, last attempt
//
// Options:
//
//	--config FILE      configuration (default /etc/updog.toml)
//	--disk PATH        whole-disk device or image file (default: the disk holding /)
//	--active a|b       the running set (found through /sys on a host)
//	--json             machine-readable output; progress as JSON lines on stderr
//	--log-level LEVEL  debug, info, warn (default) or error
//
// Exit status: 0 success (check-update: an update is available now), 1 error,
// 2 usage error, 3 no update available, 4 an update exists but this host's
// wave has not come yet, 5 another updog holds the lock (past --lock-wait),
// 6 the update is written and verified but the reboot strategy holds the
// switch. reboot-needed: 0 a reboot is needed, 1 not.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

// memoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT says
// otherwise: updog streams everything, and its live heap stays well below
// this whatever the image size, so the limit only makes the garbage
// collector return memory sooner on small hosts.
const memoryLimit = 48 << 20

// hugeHeap is the heap updog advises for huge pages (huge_pages): about what
// an install uses.
const hugeHeap = 48 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, env{now: time.Now}))
}
