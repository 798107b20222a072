package repo

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// ErrRollback means a requested version is not above the published one.
var ErrRollback = errors.New("repo: version would go backwards")

// Update publishes into outdir (absent or empty) a new version of the
// repository whose metadata is at metaURL (a directory or a URL): with
// root, which must be the repository's newest root or its successor (a
// rotation, signed by the old and the new root threshold); the regular
// files of addTargetsDir added or replaced; targets, snapshot and
// timestamp re-signed with versions one above the published ones. With
// timestampOnly, only a new timestamp is signed (for a cron job) and the
// published targets and snapshot are kept byte for byte.
//
// When metaURL is a local REPO/metadata, the stored targets of REPO/targets
// are linked into outdir too, so outdir is a whole repository; from a URL,
// outdir holds the metadata and the new targets, to sync beside the rest.
func Update(ctx context.Context, root *Root, metaURL, addTargetsDir string, timestampOnly bool, outdir string, o Options) (*Result, error) {
	now := o.now()
	if err := Check(root, now); err != nil {
		return nil, err
	}
	ex, err := loadExisting(ctx, o.fetcher(), metaURL)
	if err != nil {
		return nil, err
	}
	roots := maps.Clone(ex.roots)
	latestNext, nextErr := nextVersion(ex.latest.Signed.Version)
	switch v := root.Signed.Version; {
	case v == ex.latest.Signed.Version:
		if !sameSigned(root, ex.latest) {
			return nil, fmt.Errorf("%w: root version %d differs from the repository's root version %d; bump its version to rotate", ErrRoot, v, v)
		}
	case nextErr == nil && v == latestNext:
		if err := Verify(root, ex.latest); err != nil {
			return nil, err
		}
		b, err := rootBytes(root)
		if err != nil {
			return nil, err
		}
		roots[v] = b
	default:
		return nil, fmt.Errorf("%w: root version %d, but the repository's newest root is version %d", ErrRoot, v, ex.latest.Signed.Version)
	}
	if timestampOnly && (addTargetsDir != "" || len(o.Incoming) > 0) {
		return nil, errors.New("repo: --timestamp-only cannot add targets or incoming metadata")
	}
	var names []string
	if addTargetsDir != "" {
		if names, err = listTargets(addTargetsDir); err != nil {
			return nil, err
		}
	}
	next := func(requested, old int64, role string) (int64, error) {
		if requested == 0 {
			v, err := nextVersion(old)
			if err != nil {
				return 0, fmt.Errorf("%s: the published version %d: %w", role, old, err)
			}
			return v, nil
		}
		if requested < 0 {
			return 0, fmt.Errorf("%w: %s version %d is not positive", ErrVersion, role, requested)
		}
		if requested <= old {
			return 0, fmt.Errorf("%w: %s version %d is not above the published %d", ErrRollback, role, requested, old)
		}
		return requested, nil
	}
	p := &plan{roots: roots, root: root, targets: ex.targets, snapshot: ex.snapshot,
		timestamp: metadata.Timestamp(expiry(o.TimestampExpires, now, DefaultTimestampLifetime)),
		delegated: maps.Clone(ex.delegated)}
	// Incoming roles replace the published ones, newer versions only.
	var incomingTargets *delegatedRole
	var incomingDirs []string
	for _, in := range o.Incoming {
		for name, md := range in.Roles {
			raw, ok := in.raw[name]
			if !ok {
				if raw, err = md.ToBytes(true); err != nil {
					return nil, err
				}
			}
			old := int64(0)
			if name == metadata.TARGETS {
				old = ex.targets.Signed.Version
			} else if d, ok := ex.delegated[name]; ok {
				old = d.md.Signed.Version
			}
			if md.Signed.Version <= old {
				return nil, fmt.Errorf("%w: incoming %s version %d is not above the published %d", ErrRollback, name, md.Signed.Version, old)
			}
			if name == metadata.TARGETS {
				incomingTargets = &delegatedRole{md: md, raw: raw}
				continue
			}
			p.delegated[name] = &delegatedRole{md: md, raw: raw}
		}
		if in.targetsDir != "" {
			incomingDirs = append(incomingDirs, in.targetsDir)
		}
	}
	if p.timestamp.Signed.Version, err = next(o.TimestampVersion, ex.timestamp.Signed.Version, "timestamp"); err != nil {
		return nil, err
	}
	if timestampOnly {
		p.targetsRaw, p.snapshotRaw = ex.targetsRaw, ex.snapshotRaw
	} else {
		old := ex.targets
		if incomingTargets != nil {
			old = incomingTargets.md
		}
		p.targets = metadata.Targets(expiry(o.TargetsExpires, now, DefaultTargetsLifetime))
		p.targets.Signed.Targets = maps.Clone(old.Signed.Targets)
		p.targets.Signed.Delegations = old.Signed.Delegations
		if incomingTargets != nil && len(names) == 0 && o.TargetsVersion == 0 && o.TargetsExpires.IsZero() {
			// Published as its delegator signed it.
			p.targets, p.targetsRaw = incomingTargets.md, incomingTargets.raw
		} else if p.targets.Signed.Version, err = next(o.TargetsVersion, old.Signed.Version, "targets"); err != nil {
			return nil, err
		}
		p.snapshot = metadata.Snapshot(expiry(o.SnapshotExpires, now, DefaultSnapshotLifetime))
		if p.snapshot.Signed.Version, err = next(o.SnapshotVersion, ex.snapshot.Signed.Version, "snapshot"); err != nil {
			return nil, err
		}
	}
	s, err := stage(outdir)
	if err != nil {
		return nil, err
	}
	res := &Result{Dir: outdir}
	err = func() error {
		for _, name := range names {
			tf, sum, err := s.addTarget(ctx, name, filepath.Join(addTargetsDir, name), o.Progress)
			if err != nil {
				return err
			}
			p.targets.Signed.Targets[name] = tf
			res.Added = append(res.Added, Target{Name: name, Length: tf.Length, SHA256: sum})
		}
		published, err := p.reachable(now)
		if err != nil {
			return err
		}
		roles := []*metadata.Metadata[metadata.TargetsType]{p.targets}
		for _, n := range published {
			roles = append(roles, p.delegated[n].md)
		}
		if err := linkTargets(ctx, s, ex.targetsDir, incomingDirs, roles); err != nil {
			return err
		}
		return p.finish(ctx, s, outdir, &o)
	}()
	if err != nil {
		s.abort()
		return nil, err
	}
	res.fill(p)
	return res, nil
}

// linkTargets puts into the staged repository the stored targets the
// published roles list: copied from an incoming directory (checked against
// their signed length and hashes on the way), else linked from a local
// source repository. From a URL source, targets not added here are left
// out: outdir is then synced beside the published repository.
func linkTargets(ctx context.Context, s *staged, targetsDir string, incoming []string, roles []*metadata.Metadata[metadata.TargetsType]) error {
	for _, md := range roles {
		for name, tf := range md.Signed.Targets {
			stored, err := storedName(name, tf)
			if err != nil {
				continue // not ours to store; left out rather than written outside targets/
			}
			if _, err := os.Stat(filepath.Join(s.targetsDir, filepath.FromSlash(stored))); err == nil {
				continue // just added
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			done := false
			for _, dir := range incoming {
				src := filepath.Join(dir, filepath.FromSlash(stored))
				if _, err := os.Stat(src); err != nil {
					continue
				}
				if err := s.copyVerified(ctx, src, stored, tf); err != nil {
					return fmt.Errorf("incoming target %s: %w", name, err)
				}
				done = true
				break
			}
			if done || targetsDir == "" {
				continue
			}
			src := filepath.Join(targetsDir, filepath.FromSlash(stored))
			if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err := s.linkTarget(ctx, src, stored); err != nil {
				return fmt.Errorf("carrying target %s over: %w", name, err)
			}
		}
	}
	return nil
}
