package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/tufclient"
)

// Limits on metadata read from a repository (go-tuf's defaults).
const (
	maxRootBytes      = 512000
	maxTimestampBytes = 16384
	maxSnapshotBytes  = 2000000
	maxTargetsBytes   = 5000000
	maxRootVersions   = 1024
)

// existing is a repository as read from its metadata location, its
// signatures checked against its own root chain but its expiry not
// enforced: refreshing an expired timestamp is what updates are for.
type existing struct {
	roots       map[int64][]byte
	latest      *Root
	timestamp   *metadata.Metadata[metadata.TimestampType]
	snapshot    *metadata.Metadata[metadata.SnapshotType]
	snapshotRaw []byte
	targets     *metadata.Metadata[metadata.TargetsType]
	targetsRaw  []byte
	// delegated are the delegated roles reachable from targets, verified
	// against the delegation that first reaches them; order is the order
	// they were reached in (breadth first).
	delegated map[string]*delegatedRole
	order     []string
	// targetsDir is the local directory of stored targets, when the
	// metadata came from a local REPO/metadata.
	targetsDir string
}

// delegatedRole is a delegated targets role as published.
type delegatedRole struct {
	md  *metadata.Metadata[metadata.TargetsType]
	raw []byte
}

func isNotFound(err error) bool {
	var he *metadata.ErrDownloadHTTP
	return errors.As(err, &he) && he.StatusCode == http.StatusNotFound
}

// loadExisting reads the root chain from 1.root.json up, then timestamp,
// snapshot and targets, verifying each signature and hash on the way.
func loadExisting(ctx context.Context, f *fetch.Fetcher, metaURL string) (*existing, error) {
	get := func(name string, max int64) ([]byte, error) {
		return f.Fetch(ctx, fetch.Join(metaURL, name), max)
	}
	ex := &existing{roots: map[int64][]byte{}}
	for v := int64(1); v <= maxRootVersions; v++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := get(strconv.FormatInt(v, 10)+".root.json", maxRootBytes)
		if isNotFound(err) && v > 1 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading root version %d from %s: %w", v, metaURL, err)
		}
		r, err := ParseRoot(b)
		if err != nil {
			return nil, fmt.Errorf("root version %d: %w", v, err)
		}
		if r.Signed.Version != v {
			return nil, fmt.Errorf("%w: %d.root.json says it is version %d", ErrRoot, v, r.Signed.Version)
		}
		if err := Verify(r, ex.latest); err != nil {
			return nil, err
		}
		ex.roots[v], ex.latest = b, r
	}
	tsRaw, err := get("timestamp.json", maxTimestampBytes)
	if err != nil {
		return nil, fmt.Errorf("reading timestamp.json from %s: %w", metaURL, err)
	}
	if ex.timestamp, err = verifiedRole(ex.latest, metadata.TIMESTAMP, tsRaw, metadata.Timestamp().FromBytes); err != nil {
		return nil, err
	}
	if ex.snapshotRaw, err = fetchListed(ex.latest, ex.timestamp.Signed.Meta, "snapshot.json", "timestamp.json", maxSnapshotBytes, get); err != nil {
		return nil, err
	}
	if ex.snapshot, err = verifiedRole(ex.latest, metadata.SNAPSHOT, ex.snapshotRaw, metadata.Snapshot().FromBytes); err != nil {
		return nil, err
	}
	if ex.targetsRaw, err = fetchListed(ex.latest, ex.snapshot.Signed.Meta, "targets.json", "the snapshot", maxTargetsBytes, get); err != nil {
		return nil, err
	}
	if ex.targets, err = verifiedRole(ex.latest, metadata.TARGETS, ex.targetsRaw, metadata.Targets().FromBytes); err != nil {
		return nil, err
	}
	if err := ex.loadDelegated(ctx, get); err != nil {
		return nil, err
	}
	if fetch.IsLocal(metaURL) {
		ex.targetsDir = filepath.Join(filepath.Dir(filepath.Clean(localDir(metaURL))), "targets")
	}
	return ex, nil
}

// maxRoles bounds the delegated roles a publisher reads.
const maxRoles = 4096

// loadDelegated reads every delegated role reachable from targets that
// the snapshot lists, breadth first, each checked against the snapshot and
// verified against the delegation that reaches it (signatures only: an
// expired role is reported when publishing).
func (ex *existing) loadDelegated(ctx context.Context, get func(string, int64) ([]byte, error)) error {
	ex.delegated = map[string]*delegatedRole{}
	type edge struct {
		name   string
		parent *metadata.Metadata[metadata.TargetsType]
		from   string
	}
	var queue []edge
	push := func(from string, md *metadata.Metadata[metadata.TargetsType]) {
		for _, n := range delegatedNames(md) {
			queue = append(queue, edge{n, md, from})
		}
	}
	push(metadata.TARGETS, ex.targets)
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := queue[0]
		queue = queue[1:]
		if _, ok := ex.delegated[e.name]; ok {
			continue
		}
		if len(ex.delegated) >= maxRoles {
			return fmt.Errorf("%w: more than %d delegated roles", ErrDelegation, maxRoles)
		}
		meta, ok := ex.snapshot.Signed.Meta[e.name+".json"]
		if !ok {
			if e.parent.Signed.Delegations.SuccinctRoles != nil {
				continue // a hashed bin with nothing published
			}
			return fmt.Errorf("%w: %s delegates to %s, which the snapshot does not list", ErrDelegation, e.from, e.name)
		}
		raw, err := fetchListed(ex.latest, ex.snapshot.Signed.Meta, e.name+".json", "the snapshot", lengthOr(meta.Length, maxTargetsBytes), get)
		if err != nil {
			return err
		}
		md, err := metadata.Targets().FromBytes(raw)
		if err != nil {
			return fmt.Errorf("role %s: %w", e.name, err)
		}
		if err := verifyDelegation(e.parent, e.name, md); err != nil {
			return fmt.Errorf("%w: role %s as delegated by %s: %w", ErrThreshold, e.name, e.from, err)
		}
		ex.delegated[e.name] = &delegatedRole{md: md, raw: raw}
		ex.order = append(ex.order, e.name)
		push(e.name, md)
	}
	return nil
}

// delegatedNames lists the roles md delegates to, in order (every bin of
// succinct roles).
func delegatedNames(md *metadata.Metadata[metadata.TargetsType]) []string {
	d := md.Signed.Delegations
	switch {
	case d == nil:
		return nil
	case d.SuccinctRoles != nil:
		return d.SuccinctRoles.GetRoles()
	}
	out := make([]string, 0, len(d.Roles))
	for _, r := range d.Roles {
		out = append(out, r.Name)
	}
	return out
}

// verifyDelegation checks md against the delegation to name in parent:
// exactly that role's keys and threshold (the first of the name).
func verifyDelegation(parent *metadata.Metadata[metadata.TargetsType], name string, md *metadata.Metadata[metadata.TargetsType]) error {
	d := parent.Signed.Delegations
	if d == nil {
		return fmt.Errorf("%w: no delegation to %s", ErrDelegation, name)
	}
	one := &metadata.Delegations{Keys: d.Keys}
	if d.SuccinctRoles != nil {
		if !d.SuccinctRoles.IsDelegatedRole(name) {
			return fmt.Errorf("%w: no delegation to %s", ErrDelegation, name)
		}
		one.SuccinctRoles = d.SuccinctRoles
	} else {
		i := slices.IndexFunc(d.Roles, func(r metadata.DelegatedRole) bool { return r.Name == name })
		if i < 0 {
			return fmt.Errorf("%w: no delegation to %s", ErrDelegation, name)
		}
		one.Roles = []metadata.DelegatedRole{d.Roles[i]}
	}
	v := metadata.Targets()
	v.Signed.Delegations = one
	return v.VerifyDelegate(name, md)
}

// fetchListed reads the metadata file that lister's meta lists under name
// (N.name with consistent snapshots) and checks it against the listed
// length and hashes.
func fetchListed(root *Root, meta map[string]*metadata.MetaFiles, name, lister string, max int64, get func(string, int64) ([]byte, error)) ([]byte, error) {
	m, ok := meta[name]
	if !ok {
		return nil, fmt.Errorf("repo: %s lists no %s", lister, name)
	}
	file := tufclient.EscapeRole(strings.TrimSuffix(name, ".json")) + ".json"
	if root.Signed.ConsistentSnapshot {
		file = strconv.FormatInt(m.Version, 10) + "." + file
	}
	b, err := get(file, max)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	if err := m.VerifyLengthHashes(b); err != nil {
		return nil, fmt.Errorf("%s does not match %s: %w", file, lister, err)
	}
	return b, nil
}

// verifiedRole parses a role's metadata and checks its signatures against
// root (not its expiry).
func verifiedRole[T metadata.Roles](root *Root, role string, raw []byte, parse func([]byte) (*metadata.Metadata[T], error)) (*metadata.Metadata[T], error) {
	md, err := parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s metadata: %w", role, err)
	}
	if err := root.VerifyDelegate(role, md); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrThreshold, role, err)
	}
	return md, nil
}

func localDir(loc string) string {
	if len(loc) > 7 && loc[:7] == "file://" {
		return loc[7:]
	}
	return loc
}

// sameSigned reports whether two roots sign the same content.
func sameSigned(a, b *Root) bool {
	ca, err1 := cjson.EncodeCanonical(a.Signed)
	cb, err2 := cjson.EncodeCanonical(b.Signed)
	return err1 == nil && err2 == nil && bytes.Equal(ca, cb)
}

func lengthOr(n, max int64) int64 {
	if n > 0 {
		return n
	}
	return max
}
