package updater

import "errors"

// Sentinel errors. Callers (cmd/updog) branch on these; the detail is in the
// wrapped chain.
var (
	// ErrNoUpdate means no release applies to this host (or every newer one
	// is pulled back or failed here before).
	ErrNoUpdate = errors.New("updater: no update available")
	// ErrNotInWave means a release exists but this host's wave has not come.
	ErrNotInWave = errors.New("updater: the update is not yet available to this host's wave")
	// ErrLocked means another updog holds the state directory's lock.
	ErrLocked = errors.New("updater: another updog is running")
	// ErrMetadataExpired means trusted metadata has expired (a frozen
	// repository or a wrong clock).
	ErrMetadataExpired = errors.New("updater: repository metadata has expired")
	// ErrRollback means the repository served metadata older than what this
	// host already trusts.
	ErrRollback = errors.New("updater: repository metadata was rolled back")
	// ErrUntrusted means metadata or a target failed a signature, hash or
	// length check.
	ErrUntrusted = errors.New("updater: repository content failed verification")
	// ErrImageTooLarge means an image does not fit its partition.
	ErrImageTooLarge = errors.New("updater: image larger than its partition")
	// ErrTrailingData means a compressed image had bytes after its end.
	ErrTrailingData = errors.New("updater: data after the end of the compressed image")
	// ErrCorrupt means what was written does not verify (dm-verity root
	// hash, read-back hash).
	ErrCorrupt = errors.New("updater: written image does not verify")
	// ErrNoInactiveSet means the disk has no second partition set.
	ErrNoInactiveSet = errors.New("updater: the disk has no inactive partition set to update")
	// ErrActiveUnknown means the running set cannot be told (an image file
	// without --active).
	ErrActiveUnknown = errors.New("updater: the active partition set is not known")
	// ErrNotStaged means update-apply found no written and verified update
	// in the inactive set.
	ErrNotStaged = errors.New("updater: no verified update is staged in the inactive set")
	// ErrNotPending means update-revert found no switch to undo.
	ErrNotPending = errors.New("updater: no pending switch to undo")
	// ErrUnproven means the running set is not marked good yet: the other
	// set is the only known-good one and must not be overwritten.
	ErrUnproven = errors.New("updater: the running set has not been marked good")
	// ErrWontBoot means rollback was refused: the other set would not boot.
	ErrWontBoot = errors.New("updater: the other partition set would not boot")
	// ErrHealth means a health check failed, so the set was not marked good.
	ErrHealth = errors.New("updater: health check failed")
	// ErrConfig means the configuration file is missing or invalid.
	ErrConfig = errors.New("updater: bad configuration")
	// ErrFailedBefore means the requested release failed to boot here before.
	ErrFailedBefore = errors.New("updater: this release failed to boot on this host before")
)
