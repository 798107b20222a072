package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/signing"
)

// Delegations, the way tough's tuftool does them, in two steps so that a
// team signing a delegated role never needs the snapshot or timestamp
// keys:
//
//  1. A delegation command (CreateRole, AddRole, AddDelegatedKey,
//     RemoveDelegatedKey, RemoveRole, UpdateDelegatedTargets) reads the
//     published repository, edits one role, signs it with that role's keys
//     and writes it as incoming metadata: INCOMING/metadata/<role>.json
//     (the role's name percent-encoded), and for UpdateDelegatedTargets the
//     new targets as INCOMING/targets/<sha256>.<name>.
//  2. The repository owner publishes it with Update and
//     Options.Incoming: each incoming role must be signed by the
//     delegation that leads to it and carry a higher version than the
//     published one; the snapshot lists every delegated role reachable
//     from targets; roles no longer delegated are dropped.
//
// Delegated roles that do not change are published byte for byte, never
// re-signed (their keys are not at hand).

// Incoming is signed role metadata waiting to be published.
type Incoming struct {
	Roles map[string]*metadata.Metadata[metadata.TargetsType]
	// raw keeps the bytes read from disk (so they are published as signed).
	raw map[string][]byte
	// targetsDir holds new targets, when any.
	targetsDir string
}

// Incoming layout.
const (
	incomingMetadata = "metadata"
	incomingTargets  = "targets"
)

// RoleEdit controls a delegation command.
type RoleEdit struct {
	// Signers are the keys of the role being signed.
	Signers []signing.Signer
	// Version of the signed role (default: the published version + 1, or
	// 1 for a new role).
	Version int64
	// Expires is its expiry (default now + DefaultTargetsLifetime).
	Expires time.Time
	Now     func() time.Time
	Fetcher *fetch.Fetcher
}

func (e *RoleEdit) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Published is a repository read for delegation edits: its metadata
// verified from its root chain, its delegated roles reachable from
// targets verified against their delegators.
type Published struct {
	ex *existing
}

// LoadPublished reads the repository at metaURL (a URL or a local
// REPO/metadata). root, when given, must be the repository's newest root
// (an anchor: the repository's own 1.root.json is not trusted alone).
func LoadPublished(ctx context.Context, root *Root, metaURL string, f *fetch.Fetcher) (*Published, error) {
	if f == nil {
		f = fetch.New()
	}
	ex, err := loadExisting(ctx, f, metaURL)
	if err != nil {
		return nil, err
	}
	if root != nil && !sameSigned(root, ex.latest) {
		return nil, fmt.Errorf("%w: the repository's newest root (version %d) is not the root given (version %d)", ErrRoot, ex.latest.Signed.Version, root.Signed.Version)
	}
	return &Published{ex: ex}, nil
}

// Role returns a copy of a published targets role (targets or delegated).
func (p *Published) Role(name string) (*metadata.Metadata[metadata.TargetsType], error) {
	var raw []byte
	if name == metadata.TARGETS {
		raw = p.ex.targetsRaw
	} else if d, ok := p.ex.delegated[name]; ok {
		raw = d.raw
	} else {
		return nil, fmt.Errorf("%w: no published role %q", ErrDelegation, name)
	}
	return metadata.Targets().FromBytes(raw)
}

// Roles lists the delegated roles, in the order reached from targets.
func (p *Published) Roles() []string { return slices.Clone(p.ex.order) }

// delegatorOf finds the role that delegates to name (the first reached).
func (p *Published) delegatorOf(name string) (*metadata.Metadata[metadata.TargetsType], string, bool) {
	for _, from := range append([]string{metadata.TARGETS}, p.ex.order...) {
		md, _ := p.Role(from)
		if md != nil && slices.Contains(delegatedNames(md), name) {
			return md, from, true
		}
	}
	return nil, "", false
}

// sign bumps, dates and signs a role edited in place, then checks that it
// meets the threshold of the delegation that leads to it (root's for
// targets).
func (p *Published) sign(ctx context.Context, name string, md *metadata.Metadata[metadata.TargetsType], e RoleEdit) error {
	old := int64(0)
	if pub, err := p.Role(name); err == nil {
		old = pub.Signed.Version
	}
	switch {
	case e.Version < 0:
		return fmt.Errorf("%w: %s version %d is not positive", ErrVersion, name, e.Version)
	case e.Version == 0 && old == 0:
		md.Signed.Version = 1
	case e.Version == 0:
		v, err := nextVersion(old)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		md.Signed.Version = v
	case e.Version <= old:
		return fmt.Errorf("%w: %s version %d is not above the published %d", ErrRollback, name, e.Version, old)
	default:
		md.Signed.Version = e.Version
	}
	md.Signed.Expires = expiry(e.Expires, e.now(), DefaultTargetsLifetime)
	if !md.Signed.Expires.After(e.now()) {
		return fmt.Errorf("%w: %s would expire at %s", ErrExpired, name, md.Signed.Expires.Format(time.RFC3339))
	}
	md.Signatures = []metadata.Signature{}
	for _, s := range e.Signers {
		if err := signing.SignMetadata(ctx, md, s); err != nil {
			return fmt.Errorf("signing %s: %w", name, err)
		}
	}
	if name == metadata.TARGETS {
		if err := p.ex.latest.VerifyDelegate(name, md); err != nil {
			return fmt.Errorf("%w: targets needs the threshold of its root keys: %w", ErrThreshold, err)
		}
		return nil
	}
	parent, from, ok := p.delegatorOf(name)
	if !ok {
		return nil // a new role: AddRole checks it against its delegation
	}
	if err := verifyDelegation(parent, name, md); err != nil {
		return fmt.Errorf("%w: %s needs the threshold of the keys %s delegates it to: %w", ErrThreshold, name, from, err)
	}
	return nil
}

// CreateRole makes version 1 (or e.Version) of a new, empty delegated
// role signed by its own keys, with those public keys listed in its
// delegations (without roles) so that AddRole can find them, as tough does.
func CreateRole(ctx context.Context, name string, e RoleEdit) (*Incoming, error) {
	if err := checkRoleName(name); err != nil {
		return nil, err
	}
	if len(e.Signers) == 0 {
		return nil, fmt.Errorf("%w: a new role needs its keys", ErrThreshold)
	}
	md := metadata.Targets(expiry(e.Expires, e.now(), DefaultTargetsLifetime))
	md.Signed.Version = orDefault(e.Version, 1)
	if e.Version < 0 {
		return nil, fmt.Errorf("%w: version %d", ErrVersion, e.Version)
	}
	md.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}, Roles: []metadata.DelegatedRole{}}
	for _, s := range e.Signers {
		id, err := s.Key().ID()
		if err != nil {
			return nil, err
		}
		md.Signed.Delegations.Keys[id] = s.Key()
	}
	for _, s := range e.Signers {
		if err := signing.SignMetadata(ctx, md, s); err != nil {
			return nil, err
		}
	}
	return newIncoming(name, md), nil
}

func checkRoleName(name string) error {
	if name == "" || slices.Contains(TopLevelRoles, name) {
		return fmt.Errorf("%w: %q cannot be a delegated role's name", ErrDelegation, name)
	}
	return nil
}

func newIncoming(roles ...any) *Incoming {
	in := &Incoming{Roles: map[string]*metadata.Metadata[metadata.TargetsType]{}, raw: map[string][]byte{}}
	for i := 0; i+1 < len(roles); i += 2 {
		in.Roles[roles[i].(string)] = roles[i+1].(*metadata.Metadata[metadata.TargetsType])
	}
	return in
}

// Delegation describes a role to delegate to.
type Delegation struct {
	Name string
	// Keys of the role (default: those its incoming metadata lists).
	Keys      []*metadata.Key
	Threshold int
	// Exactly one of Paths and PathHashPrefixes.
	Paths            []string
	PathHashPrefixes []string
	Terminating      bool
}

// AddRole delegates from delegator (targets or a delegated role) to a new
// role, whose metadata (from CreateRole) must be signed by the threshold
// of the delegation's keys. The delegator is re-signed with e; the result
// holds both roles.
func AddRole(ctx context.Context, p *Published, delegator string, d Delegation, role *Incoming, e RoleEdit) (*Incoming, error) {
	if err := checkRoleName(d.Name); err != nil {
		return nil, err
	}
	rmd, ok := role.Roles[d.Name]
	if !ok {
		return nil, fmt.Errorf("%w: the incoming metadata has no role %s", ErrDelegation, d.Name)
	}
	if _, ok := p.ex.delegated[d.Name]; ok {
		return nil, fmt.Errorf("%w: role %s is already delegated", ErrDelegation, d.Name)
	}
	if (d.Paths == nil) == (d.PathHashPrefixes == nil) {
		return nil, fmt.Errorf("%w: give paths or path hash prefixes, not both or neither", ErrDelegation)
	}
	for _, h := range d.PathHashPrefixes {
		if _, err := hex.DecodeString(h + strings.Repeat("0", len(h)%2)); err != nil || h == "" {
			return nil, fmt.Errorf("%w: path hash prefix %q is not hex", ErrDelegation, h)
		}
	}
	keys := d.Keys
	if len(keys) == 0 && rmd.Signed.Delegations != nil {
		for _, id := range slices.Sorted(maps.Keys(rmd.Signed.Delegations.Keys)) {
			keys = append(keys, rmd.Signed.Delegations.Keys[id])
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys for role %s (give them, or create the role with tuftool delegation create-role)", ErrDelegation, d.Name)
	}
	if d.Threshold == 0 {
		d.Threshold = 1
	}
	if d.Threshold < 1 || d.Threshold > len(keys) {
		return nil, fmt.Errorf("%w: threshold %d with %d key(s)", ErrThreshold, d.Threshold, len(keys))
	}
	md, err := p.Role(delegator)
	if err != nil {
		return nil, err
	}
	if md.Signed.Delegations == nil {
		md.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}}
	}
	dl := md.Signed.Delegations
	if dl.SuccinctRoles != nil {
		return nil, fmt.Errorf("%w: %s delegates to succinct hashed bins; roles cannot be added beside them", ErrDelegation, delegator)
	}
	if dl.Keys == nil {
		dl.Keys = map[string]*metadata.Key{}
	}
	if slices.ContainsFunc(dl.Roles, func(r metadata.DelegatedRole) bool { return r.Name == d.Name }) {
		return nil, fmt.Errorf("%w: %s already delegates to %s", ErrDelegation, delegator, d.Name)
	}
	dr := metadata.DelegatedRole{Name: d.Name, Threshold: d.Threshold, Terminating: d.Terminating, KeyIDs: []string{},
		Paths: slices.Clone(d.Paths), PathHashPrefixes: slices.Clone(d.PathHashPrefixes)}
	for _, k := range keys {
		id, err := k.ID()
		if err != nil {
			return nil, err
		}
		dl.Keys[id] = k
		if !slices.Contains(dr.KeyIDs, id) {
			dr.KeyIDs = append(dr.KeyIDs, id)
		}
	}
	dl.Roles = append(dl.Roles, dr)
	if err := verifyDelegation(md, d.Name, rmd); err != nil {
		return nil, fmt.Errorf("%w: the incoming %s is not signed by the threshold of its keys: %w", ErrThreshold, d.Name, err)
	}
	if err := p.sign(ctx, delegator, md, e); err != nil {
		return nil, err
	}
	in := newIncoming(delegator, md, d.Name, rmd)
	if b, ok := role.raw[d.Name]; ok {
		in.raw[d.Name] = b
	}
	return in, nil
}

// editDelegation re-signs delegator after f edits its delegation to role.
func editDelegation(ctx context.Context, p *Published, delegator, role string, e RoleEdit, f func(d *metadata.Delegations, r *metadata.DelegatedRole) error) (*Incoming, error) {
	md, err := p.Role(delegator)
	if err != nil {
		return nil, err
	}
	dl := md.Signed.Delegations
	if dl == nil {
		return nil, fmt.Errorf("%w: %s delegates to no role", ErrDelegation, delegator)
	}
	i := slices.IndexFunc(dl.Roles, func(r metadata.DelegatedRole) bool { return r.Name == role })
	if i < 0 {
		return nil, fmt.Errorf("%w: %s does not delegate to %s", ErrDelegation, delegator, role)
	}
	if err := f(dl, &dl.Roles[i]); err != nil {
		return nil, err
	}
	// Keys no role uses any more leave the delegations.
	used := map[string]bool{}
	for _, r := range dl.Roles {
		for _, id := range r.KeyIDs {
			used[id] = true
		}
	}
	for id := range dl.Keys {
		if !used[id] {
			delete(dl.Keys, id)
		}
	}
	if err := p.sign(ctx, delegator, md, e); err != nil {
		return nil, err
	}
	return newIncoming(delegator, md), nil
}

// AddDelegatedKey lists more keys for role in delegator's delegation.
func AddDelegatedKey(ctx context.Context, p *Published, delegator, role string, keys []*metadata.Key, e RoleEdit) (*Incoming, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key to add", ErrDelegation)
	}
	return editDelegation(ctx, p, delegator, role, e, func(d *metadata.Delegations, r *metadata.DelegatedRole) error {
		for _, k := range keys {
			id, err := k.ID()
			if err != nil {
				return err
			}
			if slices.Contains(r.KeyIDs, id) {
				return fmt.Errorf("%w: key %s is already listed for %s", ErrDelegation, id, role)
			}
			d.Keys[id] = k
			r.KeyIDs = append(r.KeyIDs, id)
		}
		return nil
	})
}

// RemoveDelegatedKey unlists a key for role; the threshold must stay
// reachable.
func RemoveDelegatedKey(ctx context.Context, p *Published, delegator, role, keyID string, e RoleEdit) (*Incoming, error) {
	return editDelegation(ctx, p, delegator, role, e, func(d *metadata.Delegations, r *metadata.DelegatedRole) error {
		i := slices.Index(r.KeyIDs, keyID)
		if i < 0 {
			return fmt.Errorf("%w: key %s is not listed for %s", ErrDelegation, keyID, role)
		}
		r.KeyIDs = slices.Delete(r.KeyIDs, i, i+1)
		if len(r.KeyIDs) < r.Threshold {
			return fmt.Errorf("%w: %s would keep %d key(s) for a threshold of %d", ErrThreshold, role, len(r.KeyIDs), r.Threshold)
		}
		return nil
	})
}

// RemoveRole removes delegator's delegation to role. The role (and any
// role only it delegates to) leaves the snapshot when the result is
// published.
func RemoveRole(ctx context.Context, p *Published, delegator, role string, e RoleEdit) (*Incoming, error) {
	return editDelegation(ctx, p, delegator, role, e, func(d *metadata.Delegations, r *metadata.DelegatedRole) error {
		d.Roles = slices.DeleteFunc(d.Roles, func(x metadata.DelegatedRole) bool { return x.Name == role })
		return nil
	})
}

// UpdateDelegatedTargets adds (or replaces) in role the regular files of
// dir, named prefix + file name, which role must be trusted for by its
// delegation; they are hashed while copied into outdir/targets, and the
// role is re-signed into outdir/metadata. prefix is "" or a relative path
// ending in "/".
func UpdateDelegatedTargets(ctx context.Context, p *Published, role, dir, prefix, outdir string, e RoleEdit) (*Incoming, error) {
	md, err := p.Role(role)
	if err != nil {
		return nil, err
	}
	var dr *metadata.DelegatedRole
	if role != metadata.TARGETS {
		parent, _, ok := p.delegatorOf(role)
		if !ok {
			return nil, fmt.Errorf("%w: nothing delegates to %s", ErrDelegation, role)
		}
		if d := parent.Signed.Delegations; d.Roles != nil {
			dr = &d.Roles[slices.IndexFunc(d.Roles, func(r metadata.DelegatedRole) bool { return r.Name == role })]
		}
	}
	if prefix != "" && (!strings.HasSuffix(prefix, "/") || path.IsAbs(prefix)) {
		return nil, fmt.Errorf("%w: prefix %q must be a relative directory ending in /", ErrTargetName, prefix)
	}
	names, err := listTargets(dir)
	if err != nil {
		return nil, err
	}
	// The targets are staged beside outdir/targets and moved into it only
	// once the role is signed: a refusal (a wrong key, a name the
	// delegation does not trust) leaves nothing behind.
	_, statErr := os.Lstat(outdir)
	if err := os.MkdirAll(outdir, PublicDirMode); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp(outdir, ".targets-")
	if err != nil {
		return nil, err
	}
	done := false
	defer func() {
		os.RemoveAll(stage)
		if !done && errors.Is(statErr, os.ErrNotExist) {
			os.Remove(outdir) // only when empty: it did not exist before
		}
	}()
	s := &staged{targetsDir: stage}
	for _, n := range names {
		name := prefix + n
		if _, err := tufclient.CheckTargetPath(name); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTargetName, err)
		}
		if dr != nil && !delegatedFor(dr, name) {
			return nil, fmt.Errorf("%w: %s is not trusted for %s by its delegation (paths %v, path hash prefixes %v): clients would never find it",
				ErrDelegation, role, name, dr.Paths, dr.PathHashPrefixes)
		}
		tf, _, err := s.addTargetAt(ctx, name, filepath.Join(dir, n), nil)
		if err != nil {
			return nil, err
		}
		md.Signed.Targets[name] = tf
	}
	if err := p.sign(ctx, role, md, e); err != nil {
		return nil, err
	}
	final := filepath.Join(outdir, incomingTargets)
	if err := mkdirPublic(outdir, final); err != nil {
		return nil, err
	}
	err = filepath.WalkDir(stage, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(stage, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(final, rel)
		if err := mkdirPublic(final, filepath.Dir(dst)); err != nil {
			return err
		}
		return os.Rename(path, dst)
	})
	if err != nil {
		return nil, err
	}
	done = true
	in := newIncoming(role, md)
	in.targetsDir = final
	return in, nil
}

// delegatedFor is the client's path test (tufclient): shell patterns per
// path part, or hex prefixes of the path's SHA-256.
func delegatedFor(r *metadata.DelegatedRole, name string) bool {
	if r.Paths != nil {
		parts := strings.Split(name, "/")
		for _, pat := range r.Paths {
			pp := strings.Split(pat, "/")
			if len(pp) != len(parts) {
				continue
			}
			ok := true
			for i := range pp {
				if m, err := path.Match(strings.ReplaceAll(pp[i], "[!", "[^"), parts[i]); err != nil || !m {
					ok = false
					break
				}
			}
			if ok {
				return true
			}
		}
		return false
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])
	for _, p := range r.PathHashPrefixes {
		if strings.HasPrefix(h, strings.ToLower(p)) {
			return true
		}
	}
	return false
}

// Write saves the incoming roles into outdir/metadata (created if need
// be), each atomically, as the bytes they were signed as.
func (in *Incoming) Write(outdir string) error {
	dir := filepath.Join(outdir, incomingMetadata)
	if err := os.MkdirAll(dir, PublicDirMode); err != nil {
		return err
	}
	for name, md := range in.Roles {
		b, ok := in.raw[name]
		if !ok {
			var err error
			if b, err = md.ToBytes(true); err != nil {
				return err
			}
		}
		f := filepath.Join(dir, tufclient.EscapeRole(name)+".json")
		if err := writeReplace(f, b); err != nil {
			return err
		}
	}
	return nil
}

func writeReplace(p string, b []byte) error {
	os.Remove(p)
	return writeNew(context.Background(), p, strings.NewReader(string(b)))
}

// ReadIncoming reads what Write wrote (and UpdateDelegatedTargets'
// targets).
func ReadIncoming(dir string) (*Incoming, error) {
	in := newIncoming()
	mdir := filepath.Join(dir, incomingMetadata)
	fi, err := os.Stat(mdir)
	if err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s has no %s directory", ErrDelegation, dir, incomingMetadata)
	}
	ents, err := os.ReadDir(mdir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		base, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		name, err := url.PathUnescape(base)
		if err != nil || tufclient.EscapeRole(name) != base {
			return nil, fmt.Errorf("%w: %s is not a role's file name", ErrDelegation, e.Name())
		}
		b, err := safefile.ReadFile(filepath.Join(mdir, e.Name()), maxTargetsBytes)
		if err != nil {
			return nil, err
		}
		md, err := metadata.Targets().FromBytes(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		in.Roles[name], in.raw[name] = md, b
	}
	if len(in.Roles) == 0 {
		return nil, fmt.Errorf("%w: %s holds no role", ErrDelegation, mdir)
	}
	if fi, err := os.Stat(filepath.Join(dir, incomingTargets)); err == nil && fi.IsDir() {
		in.targetsDir = filepath.Join(dir, incomingTargets)
	}
	return in, nil
}

// storedName is where a target is stored under targets/: its cleaned name
// with the base name prefixed by its sha256.
func storedName(name string, tf *metadata.TargetFiles) (string, error) {
	clean, err := tufclient.CheckTargetPath(name)
	if err != nil {
		return "", err
	}
	sum, ok := tf.Hashes["sha256"]
	if !ok {
		return "", fmt.Errorf("%w: target %s has no sha256", ErrTargetName, name)
	}
	dir, base := path.Split(clean)
	return dir + hex.EncodeToString(sum) + "." + base, nil
}

// copyVerified copies a stored target into the staged repository,
// checking its signed length and hashes on the way.
func (s *staged) copyVerified(ctx context.Context, src, stored string, tf *metadata.TargetFiles) error {
	in, err := safefile.Open(src, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	h := map[string][]byte{}
	for a, v := range tf.Hashes {
		h[a] = v
	}
	v, err := fetch.NewVerifier(in, tf.Length, h)
	if err != nil {
		return err
	}
	dst := filepath.Join(s.targetsDir, filepath.FromSlash(stored))
	if err := mkdirPublic(s.targetsDir, filepath.Dir(dst)); err != nil {
		return err
	}
	if err := writeNew(ctx, dst, v); err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return nil
}
