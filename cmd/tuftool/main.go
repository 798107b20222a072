// tuftool makes keys, signs roots and publishes TUF repositories, with
// flags that follow tough's tuftool.
//
// Synopsis:
//
//	tuftool gen-key --type ed25519|ecdsa|rsa --out FILE
//	tuftool root init|add-key|remove-key|set-threshold|expire|bump-version|sign ROOT.json ...
//	tuftool create --root ROOT.json -k KEY... --add-targets DIR --outdir REPO [expiry and version options]
//	tuftool update --root ROOT.json -k KEY... --metadata-url URL|DIR [--add-targets DIR] [--timestamp-only] --outdir REPO
//	tuftool download --root ROOT.json --metadata-url URL|DIR --targets-url URL|DIR [--target-name NAME...] OUTDIR
//	tuftool check-expiry --metadata-url URL|DIR --within DURATION
//
// Description:
//
//	Repositories use consistent snapshots and tough's layout:
//	REPO/metadata/N.root.json, N.targets.json, N.snapshot.json,
//	timestamp.json, and REPO/targets/<sha256>.<name>. A repository is
//	written to a temporary directory and renamed into place, so a failure
//	leaves nothing behind. Private keys are PEM PKCS#8 files, written 0600.
//	A key held elsewhere signs through --key-command PUBKEY=COMMAND: the
//	command reads the bytes to sign on stdin and prints the signature.
//
// Exit status: 0 success, 1 error, 2 usage error, 3 (check-expiry) some
// metadata expires within the window.
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
