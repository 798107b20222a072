// updata edits manifest.json, the list of releases a TUF repository serves.
//
// Synopsis:
//
//	updata init MANIFEST
//	updata add-update MANIFEST --variant V --arch A --version X [--max-version M]
//	    --boot NAME --root NAME --hash NAME [--boot-size N --root-size N --hash-size N]
//	    [--verity-root-hash HEX --verity-salt HEX ...]
//	updata remove-update MANIFEST --variant V --arch A --version X
//	updata set-waves MANIFEST --variant V --arch A --version X --wave-policy FILE --start-at TIME
//	updata set-max-version MANIFEST --max-version M [--variant V] [--arch A]
//	updata pause|resume MANIFEST --variant V --arch A --version X [--at TIME]
//	updata validate MANIFEST [--json]
//	updata waves MANIFEST --variant V --arch A --version X [--json]
//
// Description:
//
//	Every edit is atomic: the new manifest is validated, written to a
//	temporary file, synced and renamed over the old one, so a failed edit
//	leaves the old manifest exactly as it was.
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
