package main

// The tuf-conformance suite's client tests, ported to Go against
// tuftest.Sim (a Go port of the suite's repository simulator): the suite
// itself is Python and needs python-tuf, which this project's machines
// cannot install. Each test names the suite's test it follows.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/internal/tufclient/tuftest"
	"github.com/updog/updog/signing"
)

type harness struct {
	t               *testing.T
	s               *tuftest.Sim
	dir, targetDir  string
	metaURL, tgtURL string
	stderr          bytes.Buffer
}

func newHarness(t *testing.T) *harness { return newHarnessKeys(t, signing.Ed25519) }

// newHarnessKeys is newHarness over a repository whose keys are of type kt.
func newHarnessKeys(t *testing.T, kt signing.KeyType) *harness {
	s := tuftest.NewWithKeyType(t, kt)
	tmp := t.TempDir()
	h := &harness{t: t, s: s, dir: filepath.Join(tmp, "metadata"), targetDir: filepath.Join(tmp, "targets"),
		metaURL: s.MetadataURL(), tgtURL: s.TargetsURL()}
	os.Mkdir(h.dir, 0o755)
	os.Mkdir(h.targetDir, 0o755)
	return h
}

func (h *harness) run(now time.Time, args ...string) int {
	h.t.Helper()
	h.stderr.Reset()
	code := run(context.Background(), args, io.Discard, &h.stderr, func() time.Time { return now })
	if testing.Verbose() && h.stderr.Len() > 0 {
		h.t.Logf("tufconf %s: %s", args[len(args)-1], h.stderr.String())
	}
	return code
}

func (h *harness) init() int { return h.initWith(h.s.TrustedRoot()) }

func (h *harness) initWith(root []byte) int {
	p := filepath.Join(h.t.TempDir(), "initial_root.json")
	os.WriteFile(p, root, 0o644)
	return h.run(h.s.Now, "--metadata-dir", h.dir, "init", p)
}

func (h *harness) refreshAt(now time.Time) int {
	return h.run(now, "--metadata-url", h.metaURL, "--metadata-dir", h.dir, "refresh")
}

func (h *harness) refresh() int { return h.refreshAt(h.s.Now) }

func (h *harness) downloadAt(now time.Time, names ...string) int {
	args := []string{"--metadata-url", h.metaURL, "--metadata-dir", h.dir}
	for _, n := range names {
		args = append(args, "--target-name", n)
	}
	return h.run(now, append(args, "--target-dir", h.targetDir, "--target-base-url", h.tgtURL, "download")...)
}

func (h *harness) download(names ...string) int { return h.downloadAt(h.s.Now, names...) }

// version is the trusted version of role, 0 when there is none.
func (h *harness) version(role string) int64 {
	b, err := os.ReadFile(filepath.Join(h.dir, tufclient.EscapeRole(role)+".json"))
	if err != nil {
		return 0
	}
	var md struct {
		Signed struct {
			Version int64 `json:"version"`
		} `json:"signed"`
	}
	if err := json.Unmarshal(b, &md); err != nil {
		h.t.Fatal(err)
	}
	return md.Signed.Version
}

// trustedRoles lists role@version for every .json file in the metadata
// directory, sorted by file name, as the suite's trusted_roles does.
func (h *harness) trustedRoles() []string {
	ents, _ := os.ReadDir(h.dir)
	var out []string
	for _, e := range ents {
		n, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		out = append(out, fmt.Sprintf("%s@%d", n, h.version(n)))
	}
	return out
}

// downloaded lists the contents of the files in the target directory by
// modification time, as the suite's get_downloaded_target_bytes does.
func (h *harness) downloaded() []string {
	type f struct {
		mod  time.Time
		name string
		data string
	}
	var fs []f
	filepath.Walk(h.targetDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			fs = append(fs, f{fi.ModTime(), p, string(b)})
		}
		return nil
	})
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].mod.Before(fs[j].mod) })
	var out []string
	for _, x := range fs {
		out = append(out, x.data)
	}
	return out
}

func (h *harness) requests() []string {
	var out []string
	for _, r := range h.s.Requests() {
		out = append(out, r.String())
	}
	return out
}

func expect[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

func expectSlice[T comparable](t *testing.T, what string, got, want []T) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

// test_basic.py

func TestBasicInitAndRefresh(t *testing.T) {
	h := newHarness(t)
	expect(t, "init", h.init(), 0)
	expect(t, "refresh", h.refresh(), 0)
	expectSlice(t, "requests", h.requests(), []string{"root@2", "timestamp", "snapshot@1", "targets@1"})
	for _, r := range []string{"root", "timestamp", "snapshot", "targets"} {
		expect(t, r, h.version(r), 1)
	}
}

func TestImplicitRefresh(t *testing.T) {
	h := newHarness(t)
	h.init()
	expect(t, "download", h.download("nonexistent artifact"), 1)
	expectSlice(t, "requests", h.requests(), []string{"root@2", "timestamp", "snapshot@1", "targets@1"})
	expect(t, "targets", h.version("targets"), 1)
}

func TestInvalidInitialRoot(t *testing.T) {
	for name, edit := range map[string]func(map[string]any){
		"no version": func(m map[string]any) { delete(m["signed"].(map[string]any), "version") },
		"bad signature": func(m map[string]any) {
			m["signatures"].([]any)[0].(map[string]any)["sig"] = strings.Repeat("ab", 64)
		},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			var m map[string]any
			json.Unmarshal(h.s.TrustedRoot(), &m)
			edit(m)
			b, _ := json.Marshal(m)
			h.initWith(b)
			expect(t, "refresh", h.refresh(), 1)
			expectSlice(t, "requests", h.requests(), nil)
		})
	}
}

// test_timestamp_content_changes (formerly test_timestamp_eq_versions_check):
// the repository changes the timestamp's content without a new version;
// the client keeps the timestamp it has and does not ask for the
// snapshot the new content names.
func TestTimestampContentChanges(t *testing.T) {
	h := newHarness(t)
	expect(t, "init", h.init(), 0)
	expect(t, "refresh", h.refresh(), 0)
	h.s.Timestamp.Signed.Meta["snapshot.json"].Version = 100 // still timestamp v1, re-signed when served
	expect(t, "refresh", h.refresh(), 0)
	r := h.requests()
	expect(t, "last request", r[len(r)-1], "timestamp")
	if slices.Contains(r, "snapshot@100") {
		t.Errorf("the client asked for the snapshot the changed timestamp names: %v", r)
	}
	b, _ := os.ReadFile(filepath.Join(h.dir, "timestamp.json"))
	ts, err := metadata.Timestamp().FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, "snapshot meta version", ts.Signed.Meta["snapshot.json"].Version, 1)
}

func TestNewTargetsHashMismatch(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.refresh()
	h.s.ComputeHashes = true
	h.s.UpdateSnapshot()
	h.refresh()
	// targets changes without the snapshot's hashes following.
	h.s.Targets.Signed.Version++
	h.s.Snapshot.Signed.Meta["targets.json"].Version = h.s.Targets.Signed.Version
	h.s.Snapshot.Signed.Version++
	h.s.UpdateTimestamp()
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "snapshot", h.version("snapshot"), 3)
	expect(t, "targets", h.version("targets"), 1)
}

func TestNewTargetsVersionMismatch(t *testing.T) {
	h := newHarness(t)
	h.s.Root.Signed.ConsistentSnapshot = false // targets.json is served whatever its version
	h.s.SignedRoots = nil
	h.s.PublishRoot()
	h.init()
	expect(t, "refresh", h.refresh(), 0)
	h.s.Targets.Signed.Version++ // not what the snapshot says
	expect(t, "refresh with the cached targets", h.refresh(), 0)
	expect(t, "targets", h.version("targets"), 1)
	os.Remove(filepath.Join(h.dir, "targets.json"))
	expect(t, "refresh without", h.refresh(), 1)
	expect(t, "targets", h.version("targets"), 0)
}

func TestCustomFields(t *testing.T) {
	h := newHarness(t)
	h.init()
	expect(t, "refresh", h.refresh(), 0)
	h.s.Root.Signed.UnrecognizedFields = map[string]any{"custom-field": "value"}
	h.s.BumpRoot()
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "root", h.version("root"), 2)
}

// test_rollback.py

func TestSimpleSnapshotRollback(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.UpdateSnapshot() // v2
	expect(t, "refresh", h.refresh(), 0)
	h.s.Snapshot.Signed.Version-- // served, but the timestamp still names v2
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "snapshot", h.version("snapshot"), 2)
	r := h.requests()
	expect(t, "last request", r[len(r)-1], "timestamp")
}

func TestNewTimestampVersionRollback(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.UpdateTimestamp()
	expect(t, "refresh", h.refresh(), 0)
	h.s.Timestamp.Signed.Version--
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "timestamp", h.version("timestamp"), 2)
}

func TestSnapshotRollback(t *testing.T) {
	for _, hashes := range []bool{false, true} {
		t.Run(fmt.Sprint("hashes=", hashes), func(t *testing.T) {
			h := newHarness(t)
			h.s.ComputeHashes = hashes
			h.init()
			h.s.UpdateSnapshot() // v2
			expect(t, "refresh", h.refresh(), 0)
			h.s.Snapshot.Signed.Version = 0
			h.s.UpdateSnapshot() // snapshot v1 named by timestamp v3
			expect(t, "refresh", h.refresh(), 1)
			expect(t, "timestamp", h.version("timestamp"), 2)
			expect(t, "snapshot", h.version("snapshot"), 2)
		})
	}
}

func TestTargetsRollback(t *testing.T) {
	for _, hashes := range []bool{false, true} {
		t.Run(fmt.Sprint("hashes=", hashes), func(t *testing.T) {
			h := newHarness(t)
			h.s.ComputeHashes = hashes
			h.init()
			h.s.Publish("targets")
			h.s.Publish("targets")
			expect(t, "refresh", h.refresh(), 0)
			expect(t, "targets", h.version("targets"), 3)
			h.s.Targets.Signed.Version = 1
			h.s.UpdateSnapshot()
			expect(t, "refresh", h.refresh(), 1)
			expect(t, "targets", h.version("targets"), 3)
		})
	}
}

func TestNewTargetsFastForwardRecovery(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.Targets.Signed.Version = 99
	h.s.Publish("targets")
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "targets", h.version("targets"), 100)
	h.s.RotateKeys("snapshot")
	h.s.BumpRoot()
	h.s.Targets.Signed.Version = 1
	h.s.UpdateSnapshot()
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "targets", h.version("targets"), 1)
}

func TestNewSnapshotFastForwardRecovery(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.Snapshot.Signed.Version = 99998
	h.s.UpdateSnapshot()
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "snapshot", h.version("snapshot"), 99999)
	h.s.RotateKeys("snapshot")
	h.s.RotateKeys("timestamp")
	h.s.BumpRoot()
	h.s.Snapshot.Signed.Version = 0
	h.s.UpdateSnapshot()
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "snapshot", h.version("snapshot"), 1)
}

func TestNewSnapshotVersionMismatch(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.Snapshot.Signed.Version++ // the timestamp still names v1
	expect(t, "refresh", h.refresh(), 1)
	expectSlice(t, "trusted", h.trustedRoles(), []string{"root@1", "timestamp@1"})
	r := h.requests()
	expect(t, "last request", r[len(r)-1], "snapshot@1")
}

func TestNewTimestampFastForwardRecovery(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.Timestamp.Signed.Version = 99
	h.s.UpdateTimestamp()
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "timestamp", h.version("timestamp"), 100)
	h.s.RotateKeys("timestamp")
	h.s.BumpRoot()
	h.s.Timestamp.Signed.Version = 0
	h.s.UpdateTimestamp()
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "timestamp", h.version("timestamp"), 1)
}

// test_expiration.py

func TestRootExpired(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.refresh()
	h.s.BumpRoot()
	h.refresh()
	h.s.Root.Signed.Expires = h.s.Now.Add(-days(1))
	h.s.BumpRoot()
	h.s.Publish("targets")
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "root", h.version("root"), 3)
	expect(t, "timestamp", h.version("timestamp"), 1)
	expect(t, "snapshot", h.version("snapshot"), 1)
}

func TestSnapshotExpired(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.refresh()
	h.s.Snapshot.Signed.Expires = h.s.Now.Add(-days(5))
	h.s.UpdateSnapshot()
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "snapshot", h.version("snapshot"), 1)
}

func TestTargetsExpired(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.refresh()
	h.s.Targets.Signed.Expires = h.s.Now.Add(-days(5))
	h.s.Publish("targets")
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "targets", h.version("targets"), 1)
}

func TestExpiredMetadata(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.Timestamp.Signed.Expires = h.s.Now.Add(days(7))
	h.s.UpdateTimestamp()
	h.refresh()
	h.s.Targets.Signed.Version++
	h.s.Timestamp.Signed.Expires = h.s.Now.Add(days(21))
	h.s.UpdateSnapshot()
	// Day 18: the cached timestamp has expired, the new one has not.
	expect(t, "refresh", h.refreshAt(h.s.Now.Add(days(18))), 0)
	expect(t, "targets", h.version("targets"), 2)
	expect(t, "timestamp", h.version("timestamp"), 3)
	expect(t, "snapshot", h.version("snapshot"), 2)
}

func TestTimestampExpired(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.refresh()
	h.s.Timestamp.Signed.Expires = h.s.Now.Add(-days(5))
	h.s.UpdateTimestamp()
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "timestamp", h.version("timestamp"), 1)
}

// test_delegated_expiration.py

func delegate(s *tuftest.Sim, name string, paths ...string) {
	s.Delegate("targets", metadata.DelegatedRole{Name: name, Paths: paths, Threshold: 1})
}

func TestDelegatedTargetsExpired(t *testing.T) {
	h := newHarness(t)
	h.init()
	delegate(h.s, "delegated", "delegatedpath/*")
	h.s.Delegated["delegated"].Signed.Expires = h.s.Now.Add(-days(1))
	h.s.AddTarget("delegated", "delegatedpath/target", []byte("delegated content"))
	h.s.Publish("targets", "delegated")
	expect(t, "refresh", h.refresh(), 0)
	expect(t, "download", h.download("delegatedpath/target"), 1)
	expectSlice(t, "downloaded", h.downloaded(), nil)
	expectSlice(t, "trusted", h.trustedRoles(), []string{"root@1", "snapshot@2", "targets@2", "timestamp@2"})
}

func TestExpiredLocalDelegatedTargets(t *testing.T) {
	for _, renewed := range []bool{false, true} {
		t.Run(fmt.Sprint("renewed=", renewed), func(t *testing.T) {
			h := newHarness(t)
			h.init()
			delegate(h.s, "delegated", "delegatedpath/*")
			h.s.Delegated["delegated"].Signed.Expires = h.s.Now.Add(days(7))
			h.s.AddTarget("delegated", "delegatedpath/first", []byte("first"))
			h.s.AddTarget("delegated", "delegatedpath/second", []byte("second"))
			h.s.Publish("targets", "delegated")
			expect(t, "first", h.download("delegatedpath/first"), 0)
			want := []string{"first"}
			code := 1
			if renewed {
				h.s.Delegated["delegated"].Signed.Expires = h.s.Now.Add(days(21))
				h.s.Publish("delegated")
				want, code = append(want, "second"), 0
			}
			expect(t, "second on day 18", h.downloadAt(h.s.Now.Add(days(18)), "delegatedpath/second"), code)
			expectSlice(t, "downloaded", h.downloaded(), want)
		})
	}
}

// test_keys.py

func TestSnapshotThreshold(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.refresh()
	for range 4 {
		h.s.AddKey("snapshot", "root")
	}
	h.s.Root.Signed.Roles["snapshot"].Threshold = 6
	h.s.BumpRoot()
	h.s.UpdateSnapshot()
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "snapshot", h.version("snapshot"), 1)
}

func TestDuplicateKeysRoot(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.refresh()
	k := tuftest.Key(t)
	// One key listed under ten ids: a threshold of 6 is not met by it.
	key := k.Key()
	base, _ := key.ID()
	r := h.s.Root.Signed
	for i := range 9 {
		id := fmt.Sprintf("%s%02d", base[:62], i)
		r.Keys[id] = key
		r.Roles["snapshot"].KeyIDs = append(r.Roles["snapshot"].KeyIDs, id)
	}
	r.Keys[base] = key
	r.Roles["snapshot"].KeyIDs = append(r.Roles["snapshot"].KeyIDs, base)
	h.s.Signers["snapshot"] = append(h.s.Signers["snapshot"], k)
	r.Roles["snapshot"].Threshold = 6
	h.s.BumpRoot()
	h.s.UpdateSnapshot()
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "snapshot", h.version("snapshot"), 1)
}

// initialSetupForKeyThreshold is the suite's initial_setup_for_key_threshold:
// the snapshot threshold goes to 3 (root v2), a second key is added (root
// v3, snapshot v2 signed by two: refused), then two more (root v4,
// snapshot v3 signed by four: accepted).
func initialSetupForKeyThreshold(t *testing.T, h *harness) {
	t.Helper()
	h.s.Root.Signed.Roles["snapshot"].Threshold = 3
	h.s.BumpRoot() // v2
	h.s.AddKey("snapshot", "root")
	h.s.UpdateTimestamp()
	h.s.UpdateSnapshot()
	h.s.BumpRoot() // v3
	expect(t, "refresh below the threshold", h.refresh(), 1)
	h.s.AddKey("snapshot", "root")
	h.s.AddKey("snapshot", "root")
	h.s.UpdateTimestamp()
	h.s.UpdateSnapshot()
	h.s.BumpRoot() // v4
	expect(t, "snapshot keys", len(h.s.Root.Signed.Roles["snapshot"].KeyIDs), 4)
	expect(t, "refresh at the threshold", h.refresh(), 0)
	expect(t, "snapshot", h.version("snapshot"), 3)
	expect(t, "root", h.version("root"), 4)
}

// signatures counts the signatures on a served metadata file.
func signatures(t *testing.T, b []byte) int {
	t.Helper()
	var md struct {
		Signatures []json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(b, &md); err != nil {
		t.Fatal(err)
	}
	return len(md.Signatures)
}

// test_root_has_keys_but_not_snapshot: the root lists more snapshot keys
// than sign the snapshot; the threshold counts signatures by listed keys,
// never the keys the root lists.
func TestRootHasKeysButNotSnapshot(t *testing.T) {
	h := newHarness(t)
	expect(t, "init", h.init(), 0)
	h.refresh()
	expectSlice(t, "trusted", h.trustedRoles(), []string{"root@1", "snapshot@1", "targets@1", "timestamp@1"})
	expect(t, "snapshot", h.version("snapshot"), 1)
	expect(t, "snapshot signatures", signatures(t, h.s.Fetch("1.snapshot.json")), 1)

	initialSetupForKeyThreshold(t, h)

	h.s.Root.Signed.Roles["snapshot"].Threshold = 5
	h.s.BumpRoot() // v5
	expect(t, "refresh with threshold 5", h.refresh(), 1)
	expect(t, "root", h.version("root"), 5)
	expect(t, "snapshot", h.version("snapshot"), 3)

	// An ECDSA key id listed for the snapshot only in the repository's
	// root (upstream does not publish it: the served root stays v5).
	k := tuftest.KeyOfType(t, signing.ECDSA)
	id, _ := k.Key().ID()
	h.s.Root.Signed.Roles["snapshot"].KeyIDs = append(h.s.Root.Signed.Roles["snapshot"].KeyIDs, id)
	expect(t, "snapshot keys", len(h.s.Root.Signed.Roles["snapshot"].KeyIDs), 5)
	expect(t, "refresh", h.refresh(), 1)
	expect(t, "root", h.version("root"), 5)
	expect(t, "snapshot", h.version("snapshot"), 3)

	// Beyond upstream: published too (root v6, five key ids of which one
	// has no key and never signs, threshold 5), with a new snapshot signed
	// by the four: still refused.
	h.s.BumpRoot()
	h.s.UpdateSnapshot()
	expect(t, "refresh with the id published", h.refresh(), 1)
	expect(t, "snapshot", h.version("snapshot"), 3)
}

// test_wrong_hashing_algorithm: a key's keyid_hash_algorithms (not part of
// the specification) names md5; the client ignores it and updates.
func TestWrongHashingAlgorithm(t *testing.T) {
	h := newHarness(t)
	expect(t, "init", h.init(), 0)
	h.refresh()

	initialSetupForKeyThreshold(t, h)
	h.s.AddKey("snapshot", "root")
	expect(t, "snapshot keys", len(h.s.Root.Signed.Roles["snapshot"].KeyIDs), 5)
	h.s.Root.Signed.Roles["snapshot"].Threshold = 5 // met: five signers

	id := h.s.Root.Signed.Roles["snapshot"].KeyIDs[0]
	key := *h.s.Root.Signed.Keys[id] // a copy: the signer's key stays as it is
	key.UnrecognizedFields = map[string]any{"keyid_hash_algorithms": []any{"md5"}}
	h.s.Root.Signed.Keys[id] = &key
	h.s.BumpRoot()       // v5
	h.s.UpdateSnapshot() // v4
	expect(t, "repository root", h.s.Root.Signed.Version, 5)
	expect(t, "repository snapshot", h.s.Snapshot.Signed.Version, 4)
	if !bytes.Contains(h.s.SignedRoots[4], []byte(`"keyid_hash_algorithms"`)) {
		t.Fatal("root v5 does not carry keyid_hash_algorithms")
	}

	expect(t, "refresh", h.refresh(), 0)
	expect(t, "root", h.version("root"), h.s.Root.Signed.Version)
	expect(t, "snapshot", h.version("snapshot"), h.s.Snapshot.Signed.Version)
}

// test_updater_key_rotations.py

type mdVersion struct {
	keys, sigs []int
	threshold  int
	ok         bool
}

func TestRootRotations(t *testing.T) {
	cases := map[string][]mdVersion{
		"1-of-1-key-rotation":                          {{[]int{1}, []int{1}, 1, true}, {[]int{2}, []int{2, 1}, 1, true}, {[]int{2}, []int{2}, 1, true}},
		"1-of-1-key-rotation-unused-signatures":        {{[]int{1}, []int{3, 1, 4}, 1, true}, {[]int{2}, []int{3, 2, 1, 4}, 1, true}, {[]int{2}, []int{3, 2, 4}, 1, true}},
		"3-of-5-sign-with-different-keycombos":         {{[]int{0, 1, 2, 3, 4}, []int{0, 2, 4}, 3, true}, {[]int{0, 1, 2, 3, 4}, []int{0, 4, 1}, 3, true}, {[]int{0, 1, 2, 3, 4}, []int{0, 1, 3}, 3, true}},
		"3-of-5-one-key-rotated":                       {{[]int{0, 1, 2, 3, 4}, []int{0, 2, 4}, 3, true}, {[]int{0, 1, 3, 4, 5}, []int{0, 4, 1}, 3, true}},
		"3-of-5-all-keys-rotated-with-intermediate":    {{[]int{0, 1, 2, 3, 4}, []int{0, 2, 4}, 3, true}, {[]int{5, 6, 7, 8, 9}, []int{0, 2, 4, 5, 6, 7}, 3, true}, {[]int{5, 6, 7, 8, 9}, []int{5, 6, 7}, 3, true}},
		"1-of-3-threshold-increase-to-2-of-3":          {{[]int{1, 2, 3}, []int{1}, 1, true}, {[]int{1, 2, 3}, []int{1, 2}, 2, true}},
		"2-of-3-threshold-decrease-to-1-of-3":          {{[]int{1, 2, 3}, []int{1, 2}, 2, true}, {[]int{1, 2, 3}, []int{1, 2}, 1, true}, {[]int{1, 2, 3}, []int{1}, 1, true}},
		"1-of-1-rotation-fail-not-signed-with-old-key": {{[]int{1}, []int{1}, 1, true}, {[]int{2}, []int{2, 3, 4}, 1, false}},
		"1-of-1-rotation-fail-not-signed-with-new-key": {{[]int{1}, []int{1}, 1, true}, {[]int{2}, []int{1, 3, 4}, 1, false}},
		"3-of-5-rotate-fails-not-3-new-keys":           {{[]int{0, 1, 2, 3, 4}, []int{0, 2, 4}, 3, true}, {[]int{0, 1, 3, 4, 5}, []int{0, 2, 4}, 3, false}},
		"3-of-5-rotate-fails-not-3-old-keys":           {{[]int{0, 1, 2, 3, 4}, []int{0, 2, 4}, 3, true}, {[]int{0, 1, 3, 4, 5}, []int{0, 4, 5}, 3, false}},
		"1-of-3-bump-to-2-of-3-fails":                  {{[]int{1, 2, 3}, []int{1}, 1, true}, {[]int{1, 2, 3}, []int{2}, 2, false}},
		"2-of-3-decrease-to-1-of-3-fails":              {{[]int{1, 2, 3}, []int{1, 2}, 2, true}, {[]int{1, 2, 3}, []int{1}, 1, false}},
	}
	for _, kt := range keyTypes {
		t.Run(string(kt), func(t *testing.T) { testRootRotations(t, kt, cases) })
	}
}

// keyTypes are the key types the suite generates keys of.
var keyTypes = []signing.KeyType{signing.Ed25519, signing.ECDSA}

func testRootRotations(t *testing.T, kt signing.KeyType, cases map[string][]mdVersion) {
	signers := make([]signing.Signer, 10)
	for i := range signers {
		signers[i] = tuftest.KeyOfType(t, kt)
	}
	for name, versions := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarnessKeys(t, kt)
			h.s.SignedRoots = nil
			h.s.Root.Signed.Version = 0
			for _, v := range versions {
				rr := h.s.Root.Signed.Roles["root"]
				for _, id := range slices.Clone(rr.KeyIDs) {
					h.s.Root.Signed.RevokeKey(id, "root")
				}
				rr.Threshold = v.threshold
				for _, i := range v.keys {
					h.s.Root.Signed.AddKey(signers[i].Key(), "root")
				}
				h.s.Signers["root"] = nil
				for _, i := range v.sigs {
					h.s.Signers["root"] = append(h.s.Signers["root"], signers[i])
				}
				h.s.Root.Signed.Version++
				h.s.PublishRoot()
			}
			h.init()
			last := versions[len(versions)-1]
			want := h.s.SignedRoots[len(h.s.SignedRoots)-1]
			code := 0
			if !last.ok {
				want, code = h.s.SignedRoots[len(h.s.SignedRoots)-2], 1
			}
			expect(t, "refresh", h.refresh(), code)
			got, _ := os.ReadFile(filepath.Join(h.dir, "root.json"))
			if !bytes.Equal(got, want) {
				t.Errorf("trusted root is not the expected version (have %d)", h.version("root"))
			}
		})
	}
}

func TestNonRootRotations(t *testing.T) {
	cases := map[string]mdVersion{
		"1-of-1-key-rotation":                  {[]int{2}, []int{2}, 1, true},
		"1-of-1-unused-signatures":             {[]int{1}, []int{3, 1, 4}, 1, true},
		"1-of-1-fail-not-signed-with-new-key":  {[]int{2}, []int{1, 3, 4}, 1, false},
		"3-of-5-not-signed-with-3-listed-keys": {[]int{0, 1, 3, 4, 5}, []int{0, 2, 4}, 3, false},
		"2-signatures-threshold-3":             {[]int{0, 1, 3, 4, 5}, []int{0, 4}, 3, false},
		"3-of-5-first-combo":                   {[]int{0, 1, 2, 3, 4}, []int{0, 2, 4}, 3, true},
		"3-of-5-fifth-combo":                   {[]int{0, 1, 2, 3, 4}, []int{2, 3, 4}, 3, true},
	}
	for _, kt := range keyTypes {
		t.Run(string(kt), func(t *testing.T) { testNonRootRotations(t, kt, cases) })
	}
}

func testNonRootRotations(t *testing.T, kt signing.KeyType, cases map[string]mdVersion) {
	signers := make([]signing.Signer, 10)
	for i := range signers {
		signers[i] = tuftest.KeyOfType(t, kt)
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarnessKeys(t, kt)
			h.init()
			for _, role := range []string{"timestamp", "snapshot", "targets"} {
				rr := h.s.Root.Signed.Roles[role]
				for _, id := range slices.Clone(rr.KeyIDs) {
					h.s.Root.Signed.RevokeKey(id, role)
				}
				rr.Threshold = v.threshold
				for _, i := range v.keys {
					h.s.Root.Signed.AddKey(signers[i].Key(), role)
				}
				h.s.Signers[role] = nil
				for _, i := range v.sigs {
					h.s.Signers[role] = append(h.s.Signers[role], signers[i])
				}
				h.s.BumpRoot()
				if !v.ok {
					expect(t, "refresh "+role, h.refresh(), 1)
					continue
				}
				expect(t, "refresh "+role, h.refresh(), 0)
				file := role + ".json"
				switch role {
				case "snapshot":
					file = fmt.Sprintf("%d.snapshot.json", h.s.Snapshot.Signed.Version)
				case "targets":
					file = fmt.Sprintf("%d.targets.json", h.s.Targets.Signed.Version)
				}
				got, _ := os.ReadFile(filepath.Join(h.dir, role+".json"))
				if !bytes.Equal(got, h.s.Fetch(file)) {
					t.Errorf("%s on disk is not the repository's", role)
				}
			}
		})
	}
}

// The suite's repository simulator signs with ECDSA (P-256) keys as well
// as ed25519: the basic refresh and downloads (top-level and delegated)
// with every key ECDSA, then a rotation of every top-level role's key to
// a new ECDSA key.
func TestECDSARepository(t *testing.T) {
	h := newHarnessKeys(t, signing.ECDSA)
	for id, k := range h.s.Root.Signed.Keys {
		if k.Type != metadata.KeyTypeECDSA_SHA2_P256 || k.Scheme != metadata.KeySchemeECDSA_SHA2_P256 {
			t.Fatalf("key %s is %s/%s", id, k.Type, k.Scheme)
		}
	}
	expect(t, "init", h.init(), 0)
	expect(t, "refresh", h.refresh(), 0)
	expectSlice(t, "requests", h.requests(), []string{"root@2", "timestamp", "snapshot@1", "targets@1"})
	h.s.AddTarget("targets", "top", []byte("top-level target"))
	delegate(h.s, "delegated", "delegatedpath/*")
	h.s.AddTarget("delegated", "delegatedpath/file", []byte("delegated target"))
	h.s.Publish("targets", "delegated")
	expect(t, "download", h.download("top", "delegatedpath/file"), 0)
	expectSlice(t, "downloaded", h.downloaded(), []string{"top-level target", "delegated target"})
	expectSlice(t, "trusted", h.trustedRoles(), []string{"delegated@2", "root@1", "snapshot@2", "targets@2", "timestamp@2"})

	for _, role := range []string{"root", "timestamp", "snapshot", "targets"} {
		old := h.s.Signers["root"]
		h.s.RotateKeys(role)
		if role == "root" { // the new root is signed by the old key and the new
			h.s.Signers["root"] = append(old, h.s.Signers["root"]...)
		}
		h.s.BumpRoot()
		if role == "root" {
			h.s.Signers["root"] = h.s.Signers["root"][len(old):]
		}
	}
	h.s.AddTarget("targets", "after", []byte("after the rotation"))
	h.s.Publish("targets")
	expect(t, "download after the rotation", h.download("after"), 0)
	expect(t, "root", h.version("root"), 5)
	expect(t, "targets", h.version("targets"), 3)

	// A signature by the retired ECDSA key no longer counts.
	stale := tuftest.KeyOfType(t, signing.ECDSA)
	h.s.Signers["targets"] = []signing.Signer{stale}
	h.s.Publish("targets")
	expect(t, "refresh with targets signed by an unlisted key", h.refresh(), 1)
	expect(t, "targets", h.version("targets"), 3)
}

// test_file_download.py

func TestClientDownloadsExpectedFile(t *testing.T) {
	for _, p := range []string{"target_file.txt", "path/to/a/target_file.txt"} {
		h := newHarness(t)
		h.init()
		h.s.AddTarget("targets", p, []byte("target file contents"))
		h.s.Publish("targets")
		expect(t, "refresh", h.refresh(), 0)
		expectSlice(t, "downloaded", h.downloaded(), nil)
		expect(t, "download", h.download(p), 0)
		expectSlice(t, "downloaded", h.downloaded(), []string{"target file contents"})
	}
}

func TestHostileRepositorySubstitutesTargetFile(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.AddTarget("targets", "target_file.txt", []byte("target file contents"))
	h.s.AddTarget("targets", "another_target_file.txt", []byte("content"))
	h.s.Publish("targets")
	expect(t, "download", h.download("target_file.txt"), 0)
	h.s.Artifacts["target_file.txt"] = []byte("malicious data - should not download")
	h.s.Artifacts["another_target_file.txt"] = []byte("malicious data - should not download")
	h.s.ResetRequests()
	expect(t, "cached download", h.download("target_file.txt"), 0)
	expectSlice(t, "target requests", h.s.TargetRequests(), nil)
	expect(t, "substituted download", h.download("another_target_file.txt"), 1)
	expectSlice(t, "downloaded", h.downloaded(), []string{"target file contents"})
	if ents, _ := os.ReadDir(h.targetDir); len(ents) != 1 {
		t.Errorf("target directory holds %v", ents)
	}
}

func TestMultipleChangesToTarget(t *testing.T) {
	h := newHarness(t)
	h.init()
	const p = "target_file.txt"
	stored := func() string {
		b, _ := os.ReadFile(filepath.Join(h.targetDir, tufclient.EscapeRole(p)))
		return string(b)
	}
	h.s.AddTarget("targets", p, []byte("target file contents"))
	h.s.Publish("targets")
	expect(t, "download", h.download(p), 0)
	for i := range 11 {
		mod := fmt.Sprintf("modified file contents %d", i)
		h.s.AddTarget("targets", p, []byte(mod))
		newName, newContent := fmt.Sprintf("new-target-%d", i), fmt.Sprintf("new file contents %d", i)
		h.s.AddTarget("targets", newName, []byte(newContent))
		h.s.Publish("targets")
		if i%5 != 0 { // the client sees every fifth version
			continue
		}
		expect(t, "download", h.download(p), 0)
		expect(t, "stored", stored(), mod)
		expect(t, "new target", h.download(newName), 0)
		// The repository swaps the content without new hashes.
		h.s.Artifacts[p] = []byte(fmt.Sprintf("malicious contents %d", i))
		h.s.Publish("targets")
		h.download(p) // may succeed (cached) or fail; never stores it
		expect(t, "stored after the swap", stored(), mod)
		for _, b := range h.downloaded() {
			if strings.HasPrefix(b, "malicious") {
				t.Fatalf("round %d: malicious content stored", i)
			}
		}
	}
}

// The diamond, through the protocol: two targets in one download, the
// second reached through a delegator whose keys the shared role does not
// meet.
func TestHostileDiamondInOneDownload(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.Delegate("targets", metadata.DelegatedRole{Name: "A", Paths: []string{"*/*"}})
	h.s.Delegate("targets", metadata.DelegatedRole{Name: "B", Paths: []string{"*/*"}})
	h.s.Delegate("A", metadata.DelegatedRole{Name: "C", Paths: []string{"x/*"}})
	h.s.Delegate("B", metadata.DelegatedRole{Name: "C", Paths: []string{"y/*"}}, tuftest.Key(t))
	h.s.Signers["C"] = h.s.Signers["C"][:1]
	h.s.AddTarget("C", "x/file", []byte("through A"))
	h.s.AddTarget("C", "y/file", []byte("through B"))
	h.s.Publish("targets", "A", "B", "C")
	expect(t, "download", h.download("x/file", "y/file"), 1)
	expectSlice(t, "downloaded", h.downloaded(), []string{"through A"})
	expect(t, "y alone", h.download("y/file"), 1)
}

// Several --target-name: one client, in order, stopping at the first
// failure.
func TestDownloadSeveralStopsAtFirstFailure(t *testing.T) {
	h := newHarness(t)
	h.init()
	h.s.AddTarget("targets", "a", []byte("A"))
	h.s.AddTarget("targets", "c", []byte("C"))
	h.s.Publish("targets")
	expect(t, "download", h.download("a", "missing", "c"), 1)
	expectSlice(t, "downloaded", h.downloaded(), []string{"A"})
	expect(t, "download", h.download("a", "c"), 0)
	if n := strings.Count(strings.Join(h.requests(), " "), "timestamp"); n != 2 {
		t.Errorf("%d refreshes for two runs: %v", n, h.requests())
	}
}

// test_quoting_issues.py

func TestUnusualRoleName(t *testing.T) {
	for _, role := range []string{"?", "#", "/delegatedrole", "../delegatedrole"} {
		t.Run(role, func(t *testing.T) {
			h := newHarness(t)
			delegate(h.s, role, "*")
			h.s.Publish("targets")
			h.init()
			expect(t, "download", h.download("nonexistent target"), 1)
			if !slices.Contains(h.requests(), role+"@1") {
				t.Errorf("requests %v", h.requests())
			}
			expect(t, "trusted roles", len(h.trustedRoles()), 5)
		})
	}
}

// test_updater_delegation_graphs.py: the order roles are fetched in.
func TestGraphTraversal(t *testing.T) {
	type d struct{ from, to string }
	for name, c := range map[string]struct {
		ds   []d
		term string
		want []string
	}{
		"two-level-test-DFS-order":      {[]d{{"targets", "A"}, {"targets", "B"}, {"A", "C"}, {"A", "D"}}, "", []string{"A", "C", "D", "B"}},
		"cyclic-graph":                  {[]d{{"targets", "A"}, {"targets", "B"}, {"B", "C"}, {"C", "D"}, {"D", "B"}}, "", []string{"A", "B", "C", "D"}},
		"two-roles-delegating-to-third": {[]d{{"targets", "A"}, {"targets", "B"}, {"B", "C"}, {"A", "C"}}, "", []string{"A", "C", "B"}},
		"terminating":                   {[]d{{"targets", "A"}, {"targets", "B"}, {"A", "C"}, {"A", "D"}}, "C", []string{"A", "C"}},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			h.init()
			for _, x := range c.ds {
				r := metadata.DelegatedRole{Name: x.to, Paths: []string{"*"}, Threshold: 1, Terminating: x.to == c.term}
				if _, ok := h.s.Delegated[x.to]; ok {
					h.s.Delegate(x.from, r, h.s.Signers[x.to]...)
				} else {
					h.s.Delegate(x.from, r)
				}
			}
			h.s.Publish("targets", "A", "B")
			expect(t, "download", h.download("missingpath"), 1)
			var got []string
			for _, r := range h.s.DelegatedRequests() {
				got = append(got, r.Role)
			}
			expectSlice(t, "fetched", got, c.want)
		})
	}
}

// tough's test repositories, served over HTTP (test_static_repositories).
func TestToughRepositories(t *testing.T) {
	for _, c := range []struct {
		dir, target, want string
		now               time.Time
	}{
		{"consistent-snapshots", "data1.txt", "123\n456\n", time.Time{}},
		{"tuf-reference-impl", "file3.txt", "", time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"dubious-role-names", "1.txt", "", time.Time{}},
	} {
		t.Run(c.dir, func(t *testing.T) {
			repo := testutil.Bottlerocket(t, "tough", c.dir)
			srv := httptest.NewServer(http.FileServer(http.Dir(repo)))
			defer srv.Close()
			h := newHarness(t)
			h.metaURL, h.tgtURL = srv.URL+"/metadata", srv.URL+"/targets"
			root, _ := os.ReadFile(filepath.Join(repo, "metadata", "1.root.json"))
			now := c.now
			if now.IsZero() {
				now = time.Now()
			}
			expect(t, "init", h.initWith(root), 0)
			expect(t, "refresh", h.refreshAt(now), 0)
			expect(t, "download", h.downloadAt(now, c.target), 0)
			if got := h.downloaded(); len(got) != 1 || !strings.HasPrefix(got[0], c.want) {
				t.Errorf("downloaded %q", got)
			}
		})
	}
}

// test_static_repositories.py: the suite's static repositories, made by
// real repository tools, served as they are (testdata/README.md says
// where they come from): init from initial_root.json, refresh and download
// targetpath at the time in faketime.
func TestStaticRepositories(t *testing.T) {
	for _, c := range []struct {
		dir   string
		want  string   // the artifact's content
		roles []string // trusted afterwards
	}{
		{"tuf-on-ci-0.11", "artifact for tuf-on-ci repository\n",
			[]string{"delegatedrole@2", "root@1", "snapshot@2", "targets@1", "timestamp@2"}},
	} {
		t.Run(c.dir, func(t *testing.T) {
			repo := filepath.Join("testdata", c.dir)
			read := func(name string) string {
				b, err := os.ReadFile(filepath.Join(repo, name))
				if err != nil {
					t.Fatal(err)
				}
				return strings.TrimSpace(string(b))
			}
			now, err := time.Parse("2006-01-02 15:04:05Z07:00", read("faketime"))
			if err != nil {
				t.Fatal(err)
			}
			target := read("targetpath")
			srv := httptest.NewServer(http.FileServer(http.Dir(repo)))
			defer srv.Close()
			h := newHarness(t)
			h.metaURL, h.tgtURL = srv.URL+"/metadata", srv.URL+"/targets"
			root, _ := os.ReadFile(filepath.Join(repo, "initial_root.json"))
			expect(t, "init", h.run(now, "--metadata-dir", h.dir, "init", filepath.Join(repo, "initial_root.json")), 0)
			if got, _ := os.ReadFile(filepath.Join(h.dir, "root.json")); !bytes.Equal(got, root) {
				t.Fatal("init did not trust initial_root.json as it is")
			}
			expect(t, "refresh", h.refreshAt(now), 0)
			expect(t, "download", h.downloadAt(now, target), 0)
			expectSlice(t, "downloaded", h.downloaded(), []string{c.want})
			expectSlice(t, "trusted", h.trustedRoles(), c.roles)
			// Again: the artifact already there matches and is kept.
			expect(t, "second download", h.downloadAt(now, target), 0)
			expectSlice(t, "downloaded", h.downloaded(), []string{c.want})
			// The repository's metadata expires in 2044.
			expect(t, "refresh in 2045", h.refreshAt(time.Date(2045, 1, 1, 0, 0, 0, 0, time.UTC)), 1)
		})
	}
}

// The reference time comes from date(1): a fake date on PATH moves it.
func TestDateClock(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\necho 4102444800\n" // 2100-01-01
	if err := os.WriteFile(filepath.Join(bin, "date"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if got := dateClock(); !got.Equal(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("dateClock %s", got)
	}
	// With that clock the simulator's metadata (ten years) has expired.
	h := newHarness(t)
	h.init()
	code := run(context.Background(), []string{"--metadata-url", h.metaURL, "--metadata-dir", h.dir, "refresh"}, io.Discard, io.Discard, dateClock)
	expect(t, "refresh in 2100", code, 1)
	t.Setenv("PATH", bin) // date that cannot run: falls back to the clock
	os.WriteFile(filepath.Join(bin, "date"), []byte("#!/bin/sh\nexit 1\n"), 0o755)
	if got := dateClock(); time.Since(got) > time.Hour || time.Since(got) < -time.Hour {
		t.Errorf("fallback clock %s", got)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"refresh"}, {"--metadata-dir", "x"}, {"--metadata-dir", "x", "bogus"}, {"--bogus"}, {"--metadata-dir", "x", "download"}} {
		if code := run(context.Background(), args, io.Discard, io.Discard, time.Now); code != 1 {
			t.Errorf("%v: exit %d, want 1", args, code)
		}
	}
	if code := run(context.Background(), []string{"--help"}, io.Discard, io.Discard, time.Now); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
}
