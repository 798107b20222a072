// Package tuftest is a TUF repository simulator for tests, modelled on the
// tuf-conformance suite's RepositorySimulator: it keeps every role's
// metadata in memory, signs it when it is fetched, serves it over HTTP
// (httptest, 127.0.0.1 only) or writes it to a directory, and records the
// metadata requests it answers, so a test can assert what a client asked
// for and in which order. Import it from tests only.
package tuftest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/signing"
)

// Request is one metadata request: the role (unescaped) and the version
// asked for (0: unversioned).
type Request struct {
	Role    string
	Version int64
}

func (r Request) String() string {
	if r.Version == 0 {
		return r.Role
	}
	return fmt.Sprintf("%s@%d", r.Role, r.Version)
}

// Sim is a repository. Its exported fields may be changed between client
// runs (hold no lock: tests are sequential around the server).
type Sim struct {
	t   testing.TB
	mu  sync.Mutex
	Now time.Time

	Root      *metadata.Metadata[metadata.RootType]
	Timestamp *metadata.Metadata[metadata.TimestampType]
	Snapshot  *metadata.Metadata[metadata.SnapshotType]
	Targets   *metadata.Metadata[metadata.TargetsType]
	// Delegated are the delegated roles by name.
	Delegated map[string]*metadata.Metadata[metadata.TargetsType]
	// Signers sign each role by name (top-level and delegated).
	Signers map[string][]signing.Signer
	// SignedRoots are the published roots, version 1 first.
	SignedRoots [][]byte
	// Artifacts are the target contents by target path.
	Artifacts map[string][]byte
	// ComputeHashes puts lengths and hashes in the timestamp's and the
	// snapshot's meta.
	ComputeHashes bool
	// KeyType is the type of the keys New, AddKey, RotateKeys and
	// Delegate make (ed25519 unless NewWithKeyType chose another).
	KeyType signing.KeyType
	// Override, when it holds a file name (as requested, e.g.
	// "2.snapshot.json" or "targets/abc.x"), serves those bytes instead.
	Override map[string][]byte

	sigMu    sync.Mutex
	sigCache map[string][]metadata.Signature

	requests       []Request
	targetRequests []string
	// Server serves /metadata/ and /targets/.
	Server *httptest.Server
}

// Safe expiry for new metadata: far in the future.
func (s *Sim) safeExpiry() time.Time {
	return s.Now.Add(10 * 365 * 24 * time.Hour).UTC().Truncate(time.Second)
}

// Key makes a new ed25519 signer.
func Key(t testing.TB) signing.Signer {
	t.Helper()
	return KeyOfType(t, signing.Ed25519)
}

// KeyOfType makes a new signer of a key type: ed25519 or ECDSA (P-256,
// scheme ecdsa-sha2-nistp256, as the conformance suite's
// CryptoSigner.generate_ecdsa makes).
func KeyOfType(t testing.TB, kt signing.KeyType) signing.Signer {
	t.Helper()
	k, err := signing.Generate(kt, 0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signing.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newKey makes a signer of the repository's key type.
func (s *Sim) newKey() signing.Signer {
	s.t.Helper()
	return KeyOfType(s.t, s.KeyType)
}

// New makes a repository with one ed25519 key per top-level role,
// consistent snapshots, every role at version 1, root version 1 published,
// and starts its server.
func New(t testing.TB) *Sim { return NewWithKeyType(t, signing.Ed25519) }

// NewWithKeyType is New with keys of another type (signing.ECDSA): for
// the top-level roles, and for the keys AddKey, RotateKeys and Delegate
// make later.
func NewWithKeyType(t testing.TB, kt signing.KeyType) *Sim {
	s := &Sim{t: t, Now: time.Now().UTC().Truncate(time.Second), KeyType: kt,
		Delegated: map[string]*metadata.Metadata[metadata.TargetsType]{},
		Signers:   map[string][]signing.Signer{}, Artifacts: map[string][]byte{}, Override: map[string][]byte{}}
	exp := s.safeExpiry()
	s.Root = metadata.Root(exp)
	s.Root.Signed.ConsistentSnapshot = true
	s.Timestamp = metadata.Timestamp(exp)
	s.Snapshot = metadata.Snapshot(exp)
	s.Targets = metadata.Targets(exp)
	for _, role := range []string{"root", "timestamp", "snapshot", "targets"} {
		k := s.newKey()
		if err := s.Root.Signed.AddKey(k.Key(), role); err != nil {
			t.Fatal(err)
		}
		s.Signers[role] = []signing.Signer{k}
	}
	s.PublishRoot()
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Server.Close)
	return s
}

// MetadataURL and TargetsURL are the server's locations.
func (s *Sim) MetadataURL() string { return s.Server.URL + "/metadata" }
func (s *Sim) TargetsURL() string  { return s.Server.URL + "/targets" }

// TrustedRoot is root version 1, as a client is initialised with.
func (s *Sim) TrustedRoot() []byte { return s.SignedRoots[0] }

// sign signs md with signers and serialises it. The signatures of a given
// content by a given set of keys are kept and reused, so that a role
// served twice unchanged is the same bytes whatever the key type (ECDSA
// signatures are randomised; ed25519's are not), as the suite's simulator,
// which keeps each role's signed bytes until it is published again.
func sign[T metadata.Roles](s *Sim, md *metadata.Metadata[T], signers []signing.Signer) []byte {
	s.t.Helper()
	payload, err := cjson.EncodeCanonical(md.Signed)
	if err != nil {
		s.t.Fatal(err)
	}
	var key strings.Builder
	key.Write(payload)
	for _, k := range signers {
		id, _ := k.Key().ID()
		key.WriteString("\x00" + id)
	}
	s.sigMu.Lock()
	sigs, ok := s.sigCache[key.String()]
	s.sigMu.Unlock()
	if ok {
		md.Signatures = slices.Clone(sigs)
	} else {
		md.Signatures = []metadata.Signature{}
		for _, k := range signers {
			if err := signing.SignMetadata(context.Background(), md, k); err != nil {
				s.t.Fatal(err)
			}
		}
		s.sigMu.Lock()
		if s.sigCache == nil {
			s.sigCache = map[string][]metadata.Signature{}
		}
		s.sigCache[key.String()] = slices.Clone(md.Signatures)
		s.sigMu.Unlock()
	}
	b, err := md.ToBytes(false)
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// PublishRoot signs the current root with the root signers and publishes
// it as the next version (its version must be len(SignedRoots)+1).
func (s *Sim) PublishRoot() {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := sign(s, s.Root, s.Signers["root"])
	s.SignedRoots = append(s.SignedRoots, b)
}

// BumpRoot increments the root version and publishes it.
func (s *Sim) BumpRoot() {
	s.Root.Signed.Version++
	s.PublishRoot()
}

// AddKey adds a new key for role: to the root for a top-level role, to the
// delegator's delegations otherwise. It returns the signer.
func (s *Sim) AddKey(role, delegator string) signing.Signer {
	k := s.newKey()
	if delegator == "" || delegator == "root" {
		if err := s.Root.Signed.AddKey(k.Key(), role); err != nil {
			s.t.Fatal(err)
		}
	} else {
		if err := s.TargetsRole(delegator).Signed.AddKey(k.Key(), role); err != nil {
			s.t.Fatal(err)
		}
	}
	s.Signers[role] = append(s.Signers[role], k)
	return k
}

// RotateKeys replaces a top-level role's keys with one new key.
func (s *Sim) RotateKeys(role string) {
	for _, id := range slices.Clone(s.Root.Signed.Roles[role].KeyIDs) {
		if err := s.Root.Signed.RevokeKey(id, role); err != nil {
			s.t.Fatal(err)
		}
	}
	s.Signers[role] = nil
	s.AddKey(role, "root")
}

// TargetsRole returns targets or a delegated role by name.
func (s *Sim) TargetsRole(name string) *metadata.Metadata[metadata.TargetsType] {
	if name == "targets" {
		return s.Targets
	}
	md, ok := s.Delegated[name]
	if !ok {
		s.t.Fatalf("tuftest: no role %q", name)
	}
	return md
}

// Delegate adds a delegation from delegator to a role (with a new key and
// its signer unless keys are given: then those keys are listed and the
// role is signed by whatever Signers[role] holds). A role already there
// keeps its metadata. paths nil means path_hash_prefixes must be set by
// the caller.
func (s *Sim) Delegate(delegator string, role metadata.DelegatedRole, keys ...signing.Signer) {
	d := s.TargetsRole(delegator)
	if d.Signed.Delegations == nil {
		d.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{}, Roles: []metadata.DelegatedRole{}}
	}
	if role.Threshold == 0 {
		role.Threshold = 1
	}
	if role.KeyIDs == nil {
		role.KeyIDs = []string{}
	}
	if len(keys) == 0 {
		k := s.newKey()
		keys = []signing.Signer{k}
		s.Signers[role.Name] = append(s.Signers[role.Name], k)
	}
	for _, k := range keys {
		id, _ := k.Key().ID()
		d.Signed.Delegations.Keys[id] = k.Key()
		if !slices.Contains(role.KeyIDs, id) {
			role.KeyIDs = append(role.KeyIDs, id)
		}
	}
	d.Signed.Delegations.Roles = append(d.Signed.Delegations.Roles, role)
	if _, ok := s.Delegated[role.Name]; !ok {
		s.Delegated[role.Name] = metadata.Targets(s.safeExpiry())
	}
}

// AddTarget lists data as target path in role and stores it.
func (s *Sim) AddTarget(role, p string, data []byte) {
	sum := sha256.Sum256(data)
	s.TargetsRole(role).Signed.Targets[p] = &metadata.TargetFiles{Length: int64(len(data)), Hashes: metadata.Hashes{"sha256": sum[:]}, Path: p}
	s.Artifacts[p] = data
}

// roleBytes signs a targets role as it is now.
func (s *Sim) roleBytes(name string) []byte {
	return sign(s, s.TargetsRole(name), s.Signers[name])
}

// UpdateSnapshot lists every targets role at its current version (with
// hashes if ComputeHashes), bumps the snapshot version, then the
// timestamp's.
func (s *Sim) UpdateSnapshot() {
	meta := map[string]*metadata.MetaFiles{}
	roles := append([]string{"targets"}, s.delegatedNames()...)
	for _, r := range roles {
		m := &metadata.MetaFiles{Version: s.TargetsRole(r).Signed.Version}
		if s.ComputeHashes {
			b := s.roleBytes(r)
			sum := sha256.Sum256(b)
			m.Length, m.Hashes = int64(len(b)), metadata.Hashes{"sha256": sum[:]}
		}
		meta[r+".json"] = m
	}
	s.Snapshot.Signed.Meta = meta
	s.Snapshot.Signed.Version++
	s.UpdateTimestamp()
}

// UpdateTimestamp names the current snapshot and bumps the timestamp
// version.
func (s *Sim) UpdateTimestamp() {
	m := &metadata.MetaFiles{Version: s.Snapshot.Signed.Version}
	if s.ComputeHashes {
		b := sign(s, s.Snapshot, s.Signers["snapshot"])
		sum := sha256.Sum256(b)
		m.Length, m.Hashes = int64(len(b)), metadata.Hashes{"sha256": sum[:]}
	}
	s.Timestamp.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": m}
	s.Timestamp.Signed.Version++
}

// Publish bumps the versions of the named targets roles, then the
// snapshot and the timestamp.
func (s *Sim) Publish(roles ...string) {
	for _, r := range roles {
		s.TargetsRole(r).Signed.Version++
	}
	s.UpdateSnapshot()
}

func (s *Sim) delegatedNames() []string {
	var out []string
	for n := range s.Delegated {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Requests returns the metadata requests answered so far (including
// those answered 404), in order.
func (s *Sim) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// DelegatedRequests are the requests for roles other than the top-level
// four.
func (s *Sim) DelegatedRequests() []Request {
	var out []Request
	for _, r := range s.Requests() {
		switch r.Role {
		case "root", "timestamp", "snapshot", "targets":
		default:
			out = append(out, r)
		}
	}
	return out
}

// TargetRequests are the target paths requested.
func (s *Sim) TargetRequests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.targetRequests)
}

// ResetRequests forgets the requests recorded.
func (s *Sim) ResetRequests() {
	s.mu.Lock()
	s.requests, s.targetRequests = nil, nil
	s.mu.Unlock()
}

// Fetch returns the bytes the server would serve for a metadata file name
// ("1.root.json", "timestamp.json", "3.targets.json"), or nil.
func (s *Sim) Fetch(file string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, _ := s.metadataLocked(file, false)
	return b
}

// metadataLocked answers a metadata file name.
func (s *Sim) metadataLocked(file string, record bool) ([]byte, bool) {
	if b, ok := s.Override[file]; ok {
		return b, true
	}
	base, ok := strings.CutSuffix(file, ".json")
	if !ok {
		return nil, false
	}
	var version int64
	if v, rest, ok := strings.Cut(base, "."); ok {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			version, base = n, rest
		}
	}
	role, err := url.PathUnescape(base)
	if err != nil {
		return nil, false
	}
	if record {
		s.requests = append(s.requests, Request{Role: role, Version: version})
	}
	switch role {
	case "root":
		if version < 1 || version > int64(len(s.SignedRoots)) {
			return nil, false
		}
		return s.SignedRoots[version-1], true
	case "timestamp":
		if version != 0 {
			return nil, false
		}
		return sign(s, s.Timestamp, s.Signers["timestamp"]), true
	case "snapshot":
		if s.Root.Signed.ConsistentSnapshot && version != s.Snapshot.Signed.Version {
			return nil, false
		}
		return sign(s, s.Snapshot, s.Signers["snapshot"]), true
	}
	md := s.Targets
	if role != "targets" {
		if md = s.Delegated[role]; md == nil {
			return nil, false
		}
	}
	if s.Root.Signed.ConsistentSnapshot && version != md.Signed.Version {
		return nil, false
	}
	return sign(s, md, s.Signers[role]), true
}

func (s *Sim) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := r.URL.EscapedPath()
	switch {
	case strings.HasPrefix(p, "/metadata/"):
		b, ok := s.metadataLocked(strings.TrimPrefix(p, "/metadata/"), true)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	case strings.HasPrefix(p, "/targets/"):
		file, err := url.PathUnescape(strings.TrimPrefix(p, "/targets/"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		s.targetRequests = append(s.targetRequests, file)
		if b, ok := s.Override["targets/"+file]; ok {
			w.Write(b)
			return
		}
		dir, base := path.Split(file)
		name := file
		if s.Root.Signed.ConsistentSnapshot {
			h, rest, ok := strings.Cut(base, ".")
			if !ok {
				http.NotFound(w, r)
				return
			}
			name = dir + rest
			data, ok := s.Artifacts[name]
			if sum := sha256.Sum256(data); !ok || fmt.Sprintf("%x", sum) != h {
				http.NotFound(w, r)
				return
			}
		}
		data, ok := s.Artifacts[name]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	default:
		http.NotFound(w, r)
	}
}

// WriteTo writes the repository as tough lays it out into dir/metadata
// and dir/targets (every root version, the current version of every other
// role, every artifact).
func (s *Sim) WriteTo(dir string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	meta, targets := filepath.Join(dir, "metadata"), filepath.Join(dir, "targets")
	for _, d := range []string{meta, targets} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			s.t.Fatal(err)
		}
	}
	write := func(p string, b []byte) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			s.t.Fatal(err)
		}
	}
	for i, b := range s.SignedRoots {
		write(filepath.Join(meta, fmt.Sprintf("%d.root.json", i+1)), b)
	}
	cs := s.Root.Signed.ConsistentSnapshot
	name := func(role string, v int64) string {
		n := url.PathEscape(role) + ".json"
		if cs {
			return fmt.Sprintf("%d.%s", v, n)
		}
		return n
	}
	write(filepath.Join(meta, "timestamp.json"), sign(s, s.Timestamp, s.Signers["timestamp"]))
	write(filepath.Join(meta, name("snapshot", s.Snapshot.Signed.Version)), sign(s, s.Snapshot, s.Signers["snapshot"]))
	for _, r := range append([]string{"targets"}, s.delegatedNames()...) {
		write(filepath.Join(meta, name(r, s.TargetsRole(r).Signed.Version)), s.roleBytes(r))
	}
	for p, data := range s.Artifacts {
		dir, base := path.Split(p)
		if cs {
			base = fmt.Sprintf("%x.%s", sha256.Sum256(data), base)
		}
		write(filepath.Join(targets, filepath.FromSlash(dir+base)), data)
	}
}
