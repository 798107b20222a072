// tuftool makes keys, signs roots and publishes TUF repositories, with
// flags that follow tough's tuftool.
//
// Synopsis:
//
//	tuftool gen-key --type ed25519|ecdsa|rsa --out FILE
//	tuftool root init|add-key|remove-key|set-threshold|expire|bump-version|sign ROOT.json ...
//	tuftool create --root ROOT.json -k KEY... --add-targets DIR --outdir REPO [expiry and version options]
//	tuftool update --root ROOT.json -k KEY... --metadata-url URL|DIR [--add-targets DIR] [--incoming-metadata DIR...] [--timestamp-only] --outdir REPO
//	tuftool download --root ROOT.json --metadata-url URL|DIR --targets-url URL|DIR [--target-name NAME...] OUTDIR
//	tuftool check-expiry --metadata-url URL|DIR --within DURATION
//	tuftool delegation --signing-role ROLE create-role|add-role|add-key|remove-key|remove-role|update-delegated-targets [options]
//	tuftool export --root ROOT.json --metadata-url URL|DIR --targets-url URL|DIR [--target-name NAME...] --out FILE.tar|DIR
//	tuftool mirror --root ROOT.json --metadata-url URL|DIR --targets-url URL|DIR --outdir DIR
//
// Description:
//
//	Repositories use consistent snapshots and tough's layout:
//	REPO/metadata/N.root.json, N.targets.json, N.snapshot.json,
//	timestamp.json, and REPO/targets/<sha256>.<name>. A repository is
//	written to a temporary directory and renamed into place, so a failure,
//	SIGINT or SIGTERM leaves nothing behind. Published directories are
//	0755 and files 0644 whatever the umask, so a web server running as
//	another user can serve them; private keys are PEM PKCS#8 files, 0600.
//	Key, root and target files must be regular files: a FIFO, a directory
//	or a device is refused at once.
//
//	A key held elsewhere signs through --key-command PUBKEY=COMMAND: the
//	command reads the bytes to sign on stdin and prints the signature (at
//	most 64 KiB). It runs in its own process group, which is killed after
//	--key-command-timeout (default 60s) or on SIGINT/SIGTERM; its stderr
//	goes into the error message.
//
//	Versions never wrap: a version with no successor (9223372036854775807)
//	or a non-positive one is refused. root set-threshold above the role's
//	key count warns at once, and root sign refuses such a root unless
//	--ignore-threshold is given.
//
//	Delegations follow tough's tuftool in two steps, so that a team signing
//	a delegated role never holds the snapshot or timestamp keys: a
//	delegation command signs one role (ROLE, with its own keys) into
//	--outdir, as "incoming metadata"; the repository owner publishes it
//	with update --incoming-metadata DIR, which checks each incoming role
//	against the delegation that leads to it and that its version goes up,
//	lists every delegated role reachable from targets in the snapshot,
//	drops roles no longer delegated, and carries unchanged delegated roles
//	over byte for byte (never re-signed). A delegated role that has expired
//	is refused: it must be re-signed by its keys.
//
//	export writes a self-contained, verified copy for hosts without a
//	network (updog update --from FILE.tar|DIR): the metadata from --root's
//	version up and the chosen targets (all by default) plus manifest.json,
//	each target checked while copied; a .tar is written to a temporary
//	file and renamed, a directory staged and renamed. mirror brings a
//	directory copy up to date, verifying as it copies, targets first and
//	timestamp.json last (a client sees the old version or the new, whole);
//	it keeps its trusted metadata in DIR/.tuf-mirror, so a source that
//	rolls back or freezes is refused, and DIR/.mirror.lock stops a second
//	mirror of the same directory. It needs consistent snapshots.
//
//	Repositories are read over HTTP through HTTPS_PROXY (else HTTP_PROXY)
//	and NO_PROXY from the environment, for http and https URLs alike.
//
// Exit status: 0 success, 1 error, 2 usage error, 3 (check-expiry) some
// metadata expires within the window (a --within longer than a duration
// holds is the longest window: everything that expires expires within it).
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
