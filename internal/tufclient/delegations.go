package tufclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"sort"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// EscapeRole percent-encodes a role name for use in a file name or a URL
// path segment: every byte but ASCII letters, digits and "-._~" becomes
// %XX (as Python's urllib.parse.quote(name, safe="") and tough do), so no
// name can hold a path separator. Role names that are only dots are fine:
// ".json" is appended to them.
func EscapeRole(name string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		default:
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

// topLevel are the names no delegated role may take (they would share
// the top-level roles' files).
var topLevel = []string{metadata.ROOT, metadata.TIMESTAMP, metadata.SNAPSHOT, metadata.TARGETS}

// checkDelegations refuses malformed delegations, as python-tuf does when
// it reads them: both or neither of roles and succinct_roles, a role with
// both or neither of paths and path_hash_prefixes, an empty or top-level
// role name, a name listed twice, a key id the delegator does not define.
func checkDelegations(delegator string, d *metadata.Delegations) error {
	if d == nil {
		return nil
	}
	bad := func(format string, a ...any) error {
		return &Error{ErrMetadata, fmt.Errorf("delegations of %s: "+format, append([]any{delegator}, a...)...)}
	}
	if (d.Roles != nil) == (d.SuccinctRoles != nil) {
		if d.Roles == nil {
			return nil // no delegated roles: only keys, or nothing
		}
		return bad("both roles and succinct_roles")
	}
	if s := d.SuccinctRoles; s != nil {
		if s.BitLength < 1 || s.BitLength > 32 {
			return bad("succinct_roles bit_length %d is not between 1 and 32", s.BitLength)
		}
		return checkKeys(bad, d.Keys, s.KeyIDs, s.NamePrefix)
	}
	seen := map[string]bool{}
	for _, r := range d.Roles {
		switch {
		case r.Name == "":
			return bad("a role without a name")
		case slices.Contains(topLevel, r.Name):
			return bad("role %q takes a top-level role's name", r.Name)
		case seen[r.Name]:
			return bad("role %q is listed twice", r.Name)
		case (r.Paths != nil) == (r.PathHashPrefixes != nil):
			return bad("role %q needs exactly one of paths and path_hash_prefixes", r.Name)
		}
		seen[r.Name] = true
		if err := checkKeys(bad, d.Keys, r.KeyIDs, r.Name); err != nil {
			return err
		}
	}
	return nil
}

func checkKeys(bad func(string, ...any) error, keys map[string]*metadata.Key, ids []string, role string) error {
	for _, id := range ids {
		if _, ok := keys[id]; !ok {
			return bad("role %q names key %s, which is not among the delegation keys", role, id)
		}
	}
	return nil
}

// delegatedPath reports whether role is trusted for target: one of its
// path patterns matches (shell patterns, "/" matched only by "/", so the
// pattern and the path have as many parts), or the hex SHA-256 of the path
// starts with one of its path_hash_prefixes (the specification's hex
// digest; go-tuf v2.4.2 compares base64 and so never matches).
func delegatedPath(role *metadata.DelegatedRole, target string) bool {
	if role.Paths != nil {
		parts := strings.Split(target, "/")
		for _, pattern := range role.Paths {
			pp := strings.Split(pattern, "/")
			if len(pp) != len(parts) {
				continue
			}
			match := true
			for i := range pp {
				if ok, err := path.Match(fnmatchPattern(pp[i]), parts[i]); err != nil || !ok {
					match = false
					break
				}
			}
			if match {
				return true
			}
		}
		return false
	}
	sum := sha256.Sum256([]byte(target))
	digest := hex.EncodeToString(sum[:])
	for _, p := range role.PathHashPrefixes {
		if strings.HasPrefix(digest, strings.ToLower(p)) {
			return true
		}
	}
	return false
}

// fnmatchPattern turns fnmatch's "[!...]" negation, which the
// specification's patterns use, into path.Match's "[^...]".
func fnmatchPattern(p string) string { return strings.ReplaceAll(p, "[!", "[^") }

// edge is one delegation the walk follows: the role it names, and the
// delegator's keys, ids and threshold for it.
type edge struct {
	name     string
	parent   string
	keys     map[string]*metadata.Key
	role     *metadata.DelegatedRole // nil for succinct_roles
	succinct *metadata.SuccinctRoles
}

// children lists the delegations of md that are trusted for target, in
// order, and whether one of them is terminating (which ends the search of
// everything after it).
func children(parent string, md *metadata.Metadata[metadata.TargetsType], target string) (out []edge, terminating bool) {
	d := md.Signed.Delegations
	if d == nil {
		return nil, false
	}
	if s := d.SuccinctRoles; s != nil {
		// TAP 15: one bin per path, every bin terminating.
		for _, r := range s.GetRolesForTarget(target) {
			out = append(out, edge{name: r.Name, parent: parent, keys: d.Keys, succinct: s})
		}
		return out, len(out) > 0
	}
	for i := range d.Roles {
		r := &d.Roles[i]
		if !delegatedPath(r, target) {
			continue
		}
		out = append(out, edge{name: r.Name, parent: parent, keys: d.Keys, role: r})
		if r.Terminating {
			return out, true
		}
	}
	return out, false
}

// verifier is a delegator holding only this delegation, so that go-tuf's
// VerifyDelegate checks the role against exactly the keys and threshold of
// the edge followed (not the first role of that name the delegator lists).
func (e edge) verifier() *metadata.Metadata[metadata.TargetsType] {
	d := &metadata.Delegations{Keys: e.keys}
	if e.succinct != nil {
		s := *e.succinct
		d.SuccinctRoles = &s
	} else {
		d.Roles = []metadata.DelegatedRole{*e.role}
	}
	m := metadata.Targets()
	m.Signed.Delegations = d
	return m
}

// verifyRole checks a delegated role's bytes against the snapshot (length,
// hashes, version) and against the delegation e (signatures, threshold),
// and that it has not expired (no grace: it is a targets role).
func (c *Client) verifyRole(raw []byte, e edge) (*metadata.Metadata[metadata.TargetsType], error) {
	meta := c.tm.Snapshot.Signed.Meta[e.name+".json"]
	if meta == nil {
		return nil, &metadata.ErrRepository{Msg: fmt.Sprintf("the snapshot does not list role %s", e.name)}
	}
	if err := meta.VerifyLengthHashes(raw); err != nil {
		return nil, fmt.Errorf("role %s: %w", e.name, err)
	}
	md, err := metadata.Targets().FromBytes(raw)
	if err != nil {
		return nil, &Error{ErrMetadata, fmt.Errorf("role %s: %w", e.name, err)}
	}
	if err := e.verifier().VerifyDelegate(e.name, md); err != nil {
		return nil, fmt.Errorf("role %s as delegated by %s: %w", e.name, e.parent, err)
	}
	if md.Signed.Version != meta.Version {
		return nil, &metadata.ErrBadVersionNumber{Msg: fmt.Sprintf("role %s: version %d, the snapshot says %d", e.name, md.Signed.Version, meta.Version)}
	}
	if md.Signed.IsExpired(c.now) {
		return nil, &ExpiredError{Role: e.name, Version: md.Signed.Version, Expires: md.Signed.Expires, Now: c.now}
	}
	if err := checkDelegations(e.name, md.Signed.Delegations); err != nil {
		return nil, err
	}
	return md, nil
}

// loadRole returns role e.name verified against e: from the bytes already
// read in this client, else the cache, else the repository. Bytes that do
// not verify are fetched again once from the repository (a newer copy may
// be there), never trusted.
func (c *Client) loadRole(ctx context.Context, e edge) (*metadata.Metadata[metadata.TargetsType], error) {
	if slices.Contains(topLevel, e.name) {
		return nil, &Error{ErrMetadata, fmt.Errorf("%s delegates to %q, a top-level role's name", e.parent, e.name)}
	}
	rb := c.roles[e.name]
	if rb == nil {
		if local := c.readCache(e.name, TargetsMaxLength); local != nil {
			rb = &roleBytes{raw: local}
		}
	}
	if rb != nil {
		md, err := c.verifyRole(rb.raw, e)
		if err == nil {
			c.roles[e.name] = rb
			c.files[c.roleFile(e.name, md.Signed.Version)] = rb.raw
			return md, nil
		}
		if rb.remote {
			return nil, err
		}
		c.log.Debug("cached role does not verify; fetching it", "role", e.name, "err", err)
	}
	meta := c.tm.Snapshot.Signed.Meta[e.name+".json"]
	if meta == nil {
		return nil, &metadata.ErrRepository{Msg: fmt.Sprintf("the snapshot does not list role %s", e.name)}
	}
	file := c.roleFile(e.name, meta.Version)
	raw, err := c.fetchMeta(ctx, file, lengthOr(meta.Length, TargetsMaxLength))
	if err != nil {
		return nil, err
	}
	rb = &roleBytes{raw: raw, remote: true}
	c.roles[e.name] = rb
	md, err := c.verifyRole(raw, e)
	if err != nil {
		return nil, err
	}
	c.files[file] = raw
	if err := c.persist(e.name, raw); err != nil {
		return nil, err
	}
	return md, nil
}

// Found is where a search found a target.
type Found struct {
	Target *metadata.TargetFiles
	// Role is the role that lists it; Path is the chain of roles from
	// targets to it.
	Role string
	Path []string
}

// search walks the delegations for target (5.6.7): pre-order depth first,
// skipping roles already visited in this search, stopping at terminating
// roles, visiting at most MaxDelegations roles. Visited, when not nil, is
// told each role as it is visited (tests use it).
func (c *Client) search(ctx context.Context, target string, visited func(string)) (*Found, error) {
	if !c.refreshed {
		return nil, ErrNotRefreshed
	}
	top := c.tm.Targets[metadata.TARGETS]
	type item struct {
		e    edge
		path []string
		top  bool
	}
	stack := []item{{e: edge{name: metadata.TARGETS, parent: metadata.ROOT}, top: true}}
	seen := map[string]bool{}
	for len(seen) <= c.o.MaxDelegations && len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.e.name] {
			continue
		}
		md := top
		if !it.top {
			var err error
			if md, err = c.loadRole(ctx, it.e); err != nil {
				return nil, classify(err)
			}
		}
		if visited != nil {
			visited(it.e.name)
		}
		path := append(slices.Clone(it.path), it.e.name)
		if tf, ok := md.Signed.Targets[target]; ok {
			return &Found{Target: tf, Role: it.e.name, Path: path}, nil
		}
		seen[it.e.name] = true
		kids, terminating := children(it.e.name, md, target)
		if terminating {
			stack = stack[:0]
		}
		for i := len(kids) - 1; i >= 0; i-- {
			stack = append(stack, item{e: kids[i], path: path})
		}
	}
	if len(stack) > 0 {
		c.log.Warn("stopped searching delegations: too many roles", "target", target, "visited", len(seen), "max", c.o.MaxDelegations)
	}
	return nil, &Error{ErrNoTarget, fmt.Errorf("target %s: no trusted role lists it", target)}
}

// Target returns the signed description of a target, delegations
// included, or an error matching ErrNoTarget. It uses the context given to
// Refresh.
func (c *Client) Target(name string) (*metadata.TargetFiles, error) {
	ctx := c.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	return c.TargetContext(ctx, name)
}

// TargetContext is Target with a context for the delegated roles it may
// fetch.
func (c *Client) TargetContext(ctx context.Context, name string) (*metadata.TargetFiles, error) {
	f, err := c.Find(ctx, name)
	if err != nil {
		return nil, err
	}
	return f.Target, nil
}

// Find searches for a target and says which role lists it.
func (c *Client) Find(ctx context.Context, name string) (*Found, error) {
	f, err := c.search(ctx, name, nil)
	if err != nil {
		return nil, err
	}
	tf := *f.Target
	tf.Path = name // go-tuf sets it from the map key; make sure
	f.Target = &tf
	return f, nil
}

// AllTargets lists every target some trusted role delivers: the names
// listed by the roles reachable from targets (at most MaxDelegations of
// them, in the walk's order), each then searched for as Target does, so a
// name is listed with what the search would find, and a name listed only by
// a role not trusted for it is left out.
func (c *Client) AllTargets(ctx context.Context) ([]*Found, error) {
	if !c.refreshed {
		return nil, ErrNotRefreshed
	}
	names := map[string]bool{}
	for n := range c.tm.Targets[metadata.TARGETS].Signed.Targets {
		names[n] = true
	}
	// Every role reachable through delegations (whatever the paths), once.
	queue := []edge{}
	addKids := func(parent string, md *metadata.Metadata[metadata.TargetsType]) {
		d := md.Signed.Delegations
		if d == nil {
			return
		}
		if s := d.SuccinctRoles; s != nil {
			for _, n := range s.GetRoles() {
				queue = append(queue, edge{name: n, parent: parent, keys: d.Keys, succinct: s})
			}
			return
		}
		for i := range d.Roles {
			queue = append(queue, edge{name: d.Roles[i].Name, parent: parent, keys: d.Keys, role: &d.Roles[i]})
		}
	}
	addKids(metadata.TARGETS, c.tm.Targets[metadata.TARGETS])
	seen := map[string]bool{metadata.TARGETS: true}
	for len(queue) > 0 && len(seen) <= c.o.MaxDelegations {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := queue[0]
		queue = queue[1:]
		if seen[e.name] {
			continue
		}
		seen[e.name] = true
		if c.tm.Snapshot.Signed.Meta[e.name+".json"] == nil {
			continue // a succinct bin with nothing published
		}
		md, err := c.loadRole(ctx, e)
		if err != nil {
			return nil, classify(err)
		}
		for n := range md.Signed.Targets {
			names[n] = true
		}
		addKids(e.name, md)
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	var out []*Found
	for _, n := range sorted {
		f, err := c.Find(ctx, n)
		if errors.Is(err, ErrNoTarget) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}
