// Package repo publishes TUF repositories: it manages root metadata
// (keys, thresholds, expiry, multi-party signing, rotation), creates and
// updates repositories from directories of targets, refreshes timestamps,
// reports expiry, delegates targets to other keys (delegation.go, in
// tough's two steps: a role signed into incoming metadata, then published
// by Update), and, as a verifying client (internal/tufclient), downloads,
// exports offline bundles and keeps mirrors (export.go).
//
// Layout, as tough writes it so either side's clients read the other's
// repositories: consistent snapshots on; REPO/metadata/N.root.json,
// N.targets.json, N.snapshot.json and timestamp.json; targets stored as
// REPO/targets/<sha256>.<name>.
//
// Guarantees: target lengths and hashes are computed while the file is
// copied, in one streaming pass, never holding a target in memory; a
// repository is built in a temporary directory beside the output and
// renamed into place only after it verifies as a client would verify it, so
// a failure leaves nothing behind; expiry times are whole seconds, UTC
// (go-tuf's signature checks break on fractional seconds); a role is signed
// only when its threshold can be met; the published tree is 0755/0644
// whatever the umask, so a web server running as another user can serve
// it; no version wraps around (ErrVersion); targets and roots are opened
// with internal/safefile, so a FIFO or a device is refused, never read; a
// cancelled context stops the copy and removes the staging directory.
// Errors wrap go-tuf's with %w, so errors.As finds its types.
//
// It uses go-tuf's metadata package for the formats and its client for
// downloads; go-tuf has no publisher, so the publishing logic is here.
package repo
