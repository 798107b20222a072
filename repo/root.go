package repo

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/signing"
)

// Sentinel errors.
var (
	// ErrThreshold means a role's signatures do not meet its threshold.
	ErrThreshold = errors.New("repo: signature threshold not met")
	// ErrExpired means metadata has expired (or would be written expired).
	ErrExpired = errors.New("repo: metadata expired")
	// ErrNotRoleKey means a key was used to sign a role it is not listed for.
	ErrNotRoleKey = errors.New("repo: key is not listed for the role")
	// ErrRoot means a root is malformed or inconsistent.
	ErrRoot = errors.New("repo: bad root")
	// ErrVersion means a metadata version is out of range: not positive,
	// or with no successor (incrementing it would overflow).
	ErrVersion = errors.New("repo: version out of range")
	// ErrDelegation means a delegation is malformed, missing, or points at
	// a role that is not published.
	ErrDelegation = errors.New("repo: bad delegation")
)

// nextVersion is the version after v, refusing to wrap around.
func nextVersion(v int64) (int64, error) {
	if v < 1 {
		return 0, fmt.Errorf("%w: version %d is not positive", ErrVersion, v)
	}
	if v == math.MaxInt64 {
		return 0, fmt.Errorf("%w: version %d is the largest there is; it has no successor", ErrVersion, v)
	}
	return v + 1, nil
}

// TopLevelRoles are the four roles a root delegates.
var TopLevelRoles = []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP}

// Root is root metadata.
type Root = metadata.Metadata[metadata.RootType]

// wholeSeconds drops fractions of a second: go-tuf's signature checks fail
// on them, because the time does not round-trip through its JSON.
func wholeSeconds(t time.Time) time.Time { return t.UTC().Truncate(time.Second) }

// NewRoot returns version 1 of a root with consistent snapshots on, every
// role at threshold 1 and no keys yet.
func NewRoot(expires time.Time) *Root {
	r := metadata.Root(wholeSeconds(expires))
	r.Signed.ConsistentSnapshot = true
	return r
}

// ParseRoot reads root.json bytes, refusing duplicate JSON keys (a
// duplicated key ID could hide a key).
func ParseRoot(data []byte) (*Root, error) {
	if err := checkDuplicates(data); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRoot, err)
	}
	r, err := metadata.Root().FromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRoot, err)
	}
	if r.Signed.Version < 1 {
		return nil, fmt.Errorf("%w: %w: root version %d", ErrRoot, ErrVersion, r.Signed.Version)
	}
	return r, nil
}

// LoadRoot reads a root.json file (a regular file of at most
// safefile.MaxMetadata bytes: never a FIFO or a device).
func LoadRoot(path string) (*Root, error) {
	b, err := safefile.ReadFile(path, safefile.MaxMetadata)
	if err != nil {
		return nil, err
	}
	r, err := ParseRoot(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// WriteRoot writes a root atomically.
func WriteRoot(path string, r *Root) error {
	b, err := r.ToBytes(true)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o644)
}

// changed clears the signatures of a root whose signed part changed: they
// no longer sign anything.
func changed(r *Root) { r.Signatures = []metadata.Signature{} }

// AddKey lists key for each of roles (and adds it to the root's keys).
func AddKey(r *Root, key *metadata.Key, roles ...string) error {
	if len(roles) == 0 {
		return fmt.Errorf("%w: no role given for the key", ErrRoot)
	}
	for _, role := range roles {
		if !slices.Contains(TopLevelRoles, role) {
			return fmt.Errorf("%w: %q is not a top-level role (root, targets, snapshot, timestamp)", ErrRoot, role)
		}
		if err := r.Signed.AddKey(key, role); err != nil {
			return fmt.Errorf("%w: %w", ErrRoot, err)
		}
	}
	changed(r)
	return nil
}

// RemoveKey unlists a key from roles (all roles when none are given); a key
// listed for no role any more leaves the root's keys.
func RemoveKey(r *Root, keyID string, roles ...string) error {
	if len(roles) == 0 {
		roles = TopLevelRoles
	}
	found := false
	for _, role := range roles {
		rl, ok := r.Signed.Roles[role]
		if !ok || !slices.Contains(rl.KeyIDs, keyID) {
			continue
		}
		if err := r.Signed.RevokeKey(keyID, role); err != nil {
			return fmt.Errorf("%w: %w", ErrRoot, err)
		}
		found = true
	}
	if !found {
		return fmt.Errorf("%w: key %s is not listed for %s", ErrRoot, keyID, strings.Join(roles, ", "))
	}
	changed(r)
	return nil
}

// SetThreshold sets a role's threshold. A threshold above the number of
// keys the role lists is allowed (the keys may be added next), but
// CheckThresholds reports it and SignRoot refuses to sign such a root
// unless asked for a partial signature.
func SetThreshold(r *Root, role string, n int) error {
	rl, ok := r.Signed.Roles[role]
	if !ok {
		return fmt.Errorf("%w: no role %q", ErrRoot, role)
	}
	if n < 1 {
		return fmt.Errorf("%w: threshold %d is below 1", ErrRoot, n)
	}
	rl.Threshold = n
	changed(r)
	return nil
}

// SetExpires sets the root's expiry (whole seconds, UTC).
func SetExpires(r *Root, t time.Time) {
	r.Signed.Expires = wholeSeconds(t)
	changed(r)
}

// BumpVersion increments the root's version, the first step of a rotation.
// A version that would overflow is refused (ErrVersion).
func BumpVersion(r *Root) error {
	v, err := nextVersion(r.Signed.Version)
	if err != nil {
		return err
	}
	r.Signed.Version = v
	changed(r)
	return nil
}

// ThresholdError names the roles whose threshold is above the number of
// keys they list: no set of signatures can meet it.
type ThresholdError struct {
	Roles []RoleKeys
}

// RoleKeys is a role's threshold and key count.
type RoleKeys struct {
	Role      string
	Threshold int
	Keys      int
}

func (e *ThresholdError) Error() string {
	parts := make([]string, len(e.Roles))
	for i, r := range e.Roles {
		parts[i] = fmt.Sprintf("%s has threshold %d but lists %d key(s)", r.Role, r.Threshold, r.Keys)
	}
	return "repo: signature threshold cannot be met: " + strings.Join(parts, "; ")
}

// Is makes a ThresholdError match ErrThreshold.
func (e *ThresholdError) Is(target error) bool { return target == ErrThreshold }

// CheckThresholds returns a *ThresholdError (matching ErrThreshold) when a
// top-level role's threshold is above the number of keys it lists.
func CheckThresholds(r *Root) error {
	var bad []RoleKeys
	for _, role := range TopLevelRoles {
		rl, ok := r.Signed.Roles[role]
		if !ok {
			continue
		}
		if rl.Threshold > len(rl.KeyIDs) {
			bad = append(bad, RoleKeys{Role: role, Threshold: rl.Threshold, Keys: len(rl.KeyIDs)})
		}
	}
	if bad != nil {
		return &ThresholdError{Roles: bad}
	}
	return nil
}

// Check verifies a root's structure: every top-level role has a threshold
// of at least 1 and at least that many keys, every listed key exists, and
// the root has not expired at now.
func Check(r *Root, now time.Time) error {
	for _, role := range TopLevelRoles {
		rl, ok := r.Signed.Roles[role]
		if !ok {
			return fmt.Errorf("%w: role %s is missing", ErrRoot, role)
		}
		if rl.Threshold < 1 {
			return fmt.Errorf("%w: role %s has threshold %d", ErrRoot, role, rl.Threshold)
		}
		if len(rl.KeyIDs) < rl.Threshold {
			return fmt.Errorf("%w: role %s has %d key(s), fewer than its threshold %d", ErrRoot, role, len(rl.KeyIDs), rl.Threshold)
		}
		for _, id := range rl.KeyIDs {
			if _, ok := r.Signed.Keys[id]; !ok {
				return fmt.Errorf("%w: role %s lists key %s, which the root does not define", ErrRoot, role, id)
			}
		}
	}
	if r.Signed.IsExpired(now) {
		return fmt.Errorf("%w: root version %d expired at %s", ErrExpired, r.Signed.Version, r.Signed.Expires.Format(time.RFC3339))
	}
	return nil
}

// Verify checks that r is signed by the threshold of its own root keys and,
// when prev is given (a rotation), by the threshold of prev's root keys
// too, with a version one above prev's.
func Verify(r, prev *Root) error {
	if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
		return fmt.Errorf("%w: root version %d: %w", ErrThreshold, r.Signed.Version, err)
	}
	if prev != nil {
		if next, err := nextVersion(prev.Signed.Version); err != nil || r.Signed.Version != next {
			return fmt.Errorf("%w: root version %d does not follow version %d", ErrRoot, r.Signed.Version, prev.Signed.Version)
		}
		if err := prev.VerifyDelegate(metadata.ROOT, r); err != nil {
			return fmt.Errorf("%w: root version %d is not signed by the threshold of version %d's root keys: %w",
				ErrThreshold, r.Signed.Version, prev.Signed.Version, err)
		}
	}
	return nil
}

// SignRoot adds signatures by signers, each of which must be a root key of
// r or of prev (when rotating from prev). Unless partial is set, every role
// must list at least as many keys as its threshold (else a
// *ThresholdError) and the result must meet the root threshold (and
// prev's, when rotating), or nothing is changed and ErrThreshold is
// returned; partial lets several people sign the same file in turn.
func SignRoot(ctx context.Context, r, prev *Root, signers []signing.Signer, partial bool) error {
	if !partial {
		if err := CheckThresholds(r); err != nil {
			return err
		}
	}
	work := *r
	work.Signatures = slices.Clone(r.Signatures)
	for _, s := range signers {
		id, err := s.Key().ID()
		if err != nil {
			return err
		}
		listed := slices.Contains(r.Signed.Roles[metadata.ROOT].KeyIDs, id)
		if prev != nil {
			listed = listed || slices.Contains(prev.Signed.Roles[metadata.ROOT].KeyIDs, id)
		}
		if !listed {
			return fmt.Errorf("%w: key %s is not a root key", ErrNotRoleKey, id)
		}
		if err := signing.SignMetadata(ctx, &work, s); err != nil {
			return fmt.Errorf("signing root with key %s: %w", id, err)
		}
	}
	if !partial {
		if err := Verify(&work, prev); err != nil {
			return err
		}
	}
	*r = work
	return nil
}
