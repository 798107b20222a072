// updata edits manifest.json, the list of releases a TUF repository serves.
//
// Synopsis:
//
//	updata init MANIFEST [--force]
//	updata add-update MANIFEST --variant V --arch A --version X [--max-version M]
//	    --boot NAME --root NAME --hash NAME [--boot-size N --root-size N --hash-size N]
//	    [--verity-root-hash HEX --verity-salt HEX ...] [--delta-seekable NAME --delta-index NAME]
//	updata add-update MANIFEST --from-release release.json [--max-version M] [any option above, to override]
//	updata remove-update MANIFEST --variant V --arch A --version X
//	updata set-waves MANIFEST --variant V --arch A --version X --wave-policy FILE --start-at TIME [--json]
//	updata set-max-version MANIFEST --max-version M [--variant V] [--arch A]
//	updata pause|resume MANIFEST --variant V --arch A --version X [--at TIME]
//	updata validate MANIFEST [--json]
//	updata waves MANIFEST --variant V --arch A --version X [--json]
//
// Every editing command also takes --lock-wait DURATION (default 10s).
//
// Description:
//
//	Every edit holds an exclusive lock on a hidden lock file beside the
//	manifest (.manifest.json.lock), waiting at most --lock-wait for
//	another updata, and re-reads the manifest under it, so concurrent
//	edits are never lost. The new manifest is validated (and validated
//	again as it will be read back), written to a temporary file in the
//	manifest's directory, synced and renamed over the old one, so a
//	failed edit leaves the old manifest exactly as it was. A MANIFEST
//	that is a symlink is followed: the file it names is replaced and the
//	link stays. The manifest keeps its owner and mode.
//
//	MANIFEST and --wave-policy must be regular files: a FIFO, a
//	directory or a device is refused at once. SIGINT and SIGTERM stop a
//	command, the wait for the lock included, with nothing written.
//
//	Variants and arches are letters, digits, '.', '_' and '-' (at most 64
//	bytes); image names are plain file names. set-waves refuses a
//	schedule past the year 9999, and warns (stderr, and in its output)
//	when the start is in the past.
//
// Exit status: 0 success, 1 error (including an invalid manifest), 2 usage
// error.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, time.Now))
}
