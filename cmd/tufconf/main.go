// tufconf is the TUF conformance suite's client under test
// (theupdateframework/tuf-conformance, CLIENT-CLI.md), built on the same
// client package (internal/tufclient) that updog and tuftool use.
//
// Synopsis:
//
//	tufconf --metadata-dir DIR init TRUSTED_ROOT
//	tufconf --metadata-url URL --metadata-dir DIR refresh
//	tufconf --metadata-url URL --metadata-dir DIR --target-name NAME [--target-name NAME ...] \
//	        --target-base-url URL --target-dir DIR download
//
// Description:
//
//	init copies TRUSTED_ROOT to DIR/root.json (no request is made, no check
//	is done). refresh runs the TUF client workflow for the top-level roles
//	from DIR's trusted metadata. download refreshes, then downloads each
//	named target with the one client, in order, stopping at the first that
//	fails; a target whose copy in the target directory already matches its
//	signed length and hashes is not downloaded again.
//
//	DIR holds the trusted metadata under unversioned names: root.json,
//	timestamp.json, snapshot.json, targets.json, and each delegated role as
//	its percent-encoded name + ".json". Targets are stored in the target
//	directory under their percent-encoded names (one flat directory; a
//	name can never lead outside it).
//
//	The reference time for expiry is read from `date +%s`, as the suite's
//	Go client does: the suite fakes time with faketime, whose LD_PRELOAD
//	reaches a C program like date but not Go's own clock. If date cannot
//	be run, the system clock is used.
//
// Exit status: 0 success, 1 any failure, usage mistakes included (the
// protocol knows no other status).
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
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, dateClock))
}
